"""How fast the `gonogo` CLI starts, beside a bare `python -c pass`.

Goals (issue 11): `gonogo --help` and `gonogo validate examples/` within 150 ms, and `gonogo check`
reaching its first check within 300 ms of process start. The check measured is a `tcp` check
against a socket this script listens on: the moment the connection is accepted is the moment
the first check ran. Each figure is the median of N runs (default 7) of a fresh process.

Usage: python bench/cli_start.py [--runs N]
"""

from __future__ import annotations

import argparse
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
