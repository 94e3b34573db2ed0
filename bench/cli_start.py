"""How fast the `gonogo` CLI starts, beside a bare `python -c pass`.

Goals (issue 11): `gonogo --help` and `gonogo validate examples/` within 150 ms, and `gonogo check`
reaching its first check within 300 ms of process start. The check measured is a `tcp` check
against a socket this script listens on: the moment the connection is accepted is the moment
the first check ran. Each figure is the median of N runs (default 7) of a fresh process.

Usage: python bench/cli_start.py [--runs N]

On the shared 2-core box (--runs 15, medians, min in brackets; loads 2.9-3.9, numbers move
by 10-20 % from run to run), with PYTHONDONTWRITEBYTECODE set as in the worktrees:

    before (7a3efa9)                        after
    python -c pass        20-22 ms           20 ms
    gonogo --help         47-50 ms (45)      38 ms (36)
    gonogo validate       250-268 ms (242)   199-222 ms (191)   goal 150 ms: missed
    check: first check    348-359 ms (325)   181-205 ms (175)   goal 300 ms: ok

With cached bytecode (what an install has) validate is ~20-40 ms faster (~175-210 ms); the rest
is mostly imports we do not control: pydantic with its plugin lookup (importlib.metadata) and
first model ~75 ms, PyYAML ~8 ms, regex ~7 ms (the examples have patterns to validate), logging
and argparse ~5 ms; then gonogo's models (~20 ms) and validating six files, `Gate`'s validator
built once included (~20 ms). A gate whose first check is `http` waits ~0.1 s more for aiohttp
(which loads the CA bundle at import): ~0.3 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOALS_MS = {"gonogo --help": 150.0, "gonogo validate examples/": 150.0, "gonogo check: first check": 300.0}


def gonogo() -> list[str]:
    script = Path(sys.executable).parent / "gonogo"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - started) * 1000


def first_check_ms(gate: Path, listener: socket.socket) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(
        [*gonogo(), "check", str(gate), "--ignore-signoffs"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    connection, _ = listener.accept()
    reached = (time.perf_counter() - started) * 1000
    connection.close()
    process.wait(timeout=30)
    return reached


def bytecode_note() -> str | None:
    """Why the figures may be higher than an installed gonogo's: with no cached bytecode for our
    sources (PYTHONDONTWRITEBYTECODE in a checkout), every run compiles them first."""
    cached = Path(importlib.util.cache_from_source(str(ROOT / "bot" / "cli.py")))
    if cached.exists():
        return None
    why = " (PYTHONDONTWRITEBYTECODE is set)" if os.environ.get("PYTHONDONTWRITEBYTECODE") else ""
    return f"gonogo's sources have no cached bytecode{why}: each run compiles them (an install has it)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener, tempfile.TemporaryDirectory() as tmp:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(30)
        port = listener.getsockname()[1]
        gate = Path(tmp) / "bench.yml"
        gate.write_text(
            "id: bench\nname: CLI start bench\nchannel: C0BENCH\n"
            f"checks:\n  - {{id: first, kind: tcp, host: 127.0.0.1, port: {port}, timeout: 5s}}\n"
        )
        measures: dict[str, Callable[[], float]] = {
            "python -c pass": lambda: timed([sys.executable, "-c", "pass"]),
            "gonogo --help": lambda: timed([*gonogo(), "--help"]),
            "gonogo validate examples/": lambda: timed([*gonogo(), "validate", "examples"]),
            "gonogo check: first check": lambda: first_check_ms(gate, listener),
        }
        for measure in measures.values():  # warm the OS file cache once
            measure()
        print(f"cli start, median of {args.runs} runs ({os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}):")
        note = bytecode_note()
        if note:
            print(f"  note: {note}")
        failed = False
        for name, measure in measures.items():
            samples = [measure() for _ in range(args.runs)]
            median = statistics.median(samples)
            goal = GOALS_MS.get(name)
            verdict = "" if goal is None else (f"  goal <= {goal:.0f} ms " + ("ok" if median <= goal else "MISSED"))
            failed |= goal is not None and median > goal
            print(f"  {name:<28} {median:7.1f} ms  (min {min(samples):.1f}){verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
