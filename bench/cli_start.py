"""How fast the `gonogo` CLI starts, beside a bare `python -c pass`.

Goals (issue 11): `gonogo --help` and `gonogo validate examples/` within 150 ms, and `gonogo check`
reaching its first check within 300 ms of process start. The check measured is a `tcp` check
against a socket this script listens on: the moment the connection is accepted is the moment
the first check ran (`--http` adds one whose first check is an `http` check against a local
server, which also pays for importing aiohttp). Each figure is the median of N runs of a fresh
process, with the fastest run in brackets; `cpu` is the median user+system time of the process
(less sensitive than wall time to what else runs on a shared machine).

Two set-ups, both printed:

- `installed`: gonogo as a wheel install has it: the packages copied into a scratch virtualenv
  (its dependencies are this environment's) and byte-compiled, run through a `gonogo` script.
  This is what users start, and what the goals are about.
- `checkout`: this environment's `gonogo` (an editable install). Its sources have no cached
  bytecode when PYTHONDONTWRITEBYTECODE is set, as in the worktrees, so every start compiles
  them first, and the editable install's import hook loads at every start of its Python.

Usage: python bench/cli_start.py [--runs N] [--only installed|checkout] [--http]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "checks", "commands")
GOALS_MS = {"gonogo --help": 150.0, "gonogo validate examples/": 150.0, "check: first check (tcp)": 300.0}


# What a gate file cannot be validated without (pydantic is fixed by design; its BaseModel loads
# its field and schema machinery; `import pydantic` alone is lazy and loads almost nothing).
FLOOR = "import yaml, regex; from pydantic import BaseModel, Field"


def checkout_gonogo() -> list[str]:
    script = Path(sys.executable).parent / "gonogo"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def installed_gonogo(scratch: Path) -> tuple[str, list[str]]:
    """(python, gonogo command) of a scratch virtualenv holding compiled copies of our packages,
    as `pip install gonogo-*.whl` leaves them (pip byte-compiles what it installs)."""
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies: this environment's site-packages, as a plain path entry (its own .pth
    # files, the editable install's hook among them, are not processed from there).
    (site / "gonogo-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
        compileall.compile_dir(site / package, quiet=1)
    script = venv / "bin" / "gonogo"
    # What pip writes for `[project.scripts] gonogo = "bot.cli:main"`.
    script.write_text(
        f"#!{python}\nimport sys\nfrom bot.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n"
    )
    script.chmod(0o755)
    return str(python), [str(script)]


def timed(command: list[str]) -> tuple[float, float]:
    """(wall ms, cpu ms) of one run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    return wall, cpu


def run(command: list[str], accepted: Callable[[], None] | None) -> tuple[float, float]:
    if accepted is None:
        return timed(command)
    return first_check(command, accepted)


def first_check(command: list[str], accepted: Callable[[], None]) -> tuple[float, float]:
    """(ms until the first check reached us, nan): the process keeps running after that point."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    accepted()
    reached = (time.perf_counter() - started) * 1000
    process.wait(timeout=30)
    return reached, float("nan")


class _Up(BaseHTTPRequestHandler):
    reached: threading.Event

    def do_GET(self) -> None:
        self.reached.set()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", choices=["installed", "checkout"], default=None)
    parser.add_argument("--http", action="store_true", help="also time a gate whose first check is http")
    args = parser.parse_args()

    reached = threading.Event()
    handler = type("Up", (_Up,), {"reached": reached})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener,
        tempfile.TemporaryDirectory() as tmp,
    ):
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(30)
        port = listener.getsockname()[1]

        def accept_tcp() -> None:
            connection, _ = listener.accept()
            connection.close()

        def accept_http() -> None:
            if not reached.wait(30):
                raise TimeoutError("the http check never came")
            reached.clear()

        tcp_gate = Path(tmp) / "tcp.yml"
        tcp_gate.write_text(
            "id: bench\nname: CLI start bench\nchannel: C0BENCH\n"
            f"checks:\n  - {{id: first, kind: tcp, host: 127.0.0.1, port: {port}, timeout: 5s}}\n"
        )
        http_gate = Path(tmp) / "http.yml"
        http_gate.write_text(
            "id: bench\nname: CLI start bench\nchannel: C0BENCH\n"
            f"checks:\n  - {{id: first, kind: http, url: 'http://127.0.0.1:{server.server_address[1]}/'}}\n"
        )
        setups: list[tuple[str, str, list[str], str]] = []
        if args.only in (None, "installed"):
            python, gonogo = installed_gonogo(Path(tmp))
            setups.append(("installed", python, gonogo, "compiled copies in a scratch virtualenv, as a wheel install"))
        if args.only in (None, "checkout"):
            why = " (PYTHONDONTWRITEBYTECODE is set)" if os.environ.get("PYTHONDONTWRITEBYTECODE") else ""
            note = f"this environment's editable install; sources compiled at each start{why}"
            setups.append(("checkout", sys.executable, checkout_gonogo(), note))

        print(f"cli start, median of {args.runs} runs [min] ({os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}):")
        failed = False
        for name, python, gonogo, note in setups:
            # (label, command, None: time it to its end | how to see its first check reach us)
            measures: list[tuple[str, list[str], Callable[[], None] | None]] = [
                ("python -c pass", [python, "-c", "pass"], None),
                # The floor under `validate`: the libraries a gate file cannot be validated without,
                # before any gonogo model exists (what this machine takes for them, today).
                ("floor: pydantic, yaml, regex", [python, "-c", FLOOR], None),
                ("gonogo --help", [*gonogo, "--help"], None),
                ("gonogo validate examples/", [*gonogo, "validate", "examples"], None),
                ("check: first check (tcp)", [*gonogo, "check", str(tcp_gate), "--ignore-signoffs"], accept_tcp),
            ]
            if args.http:
                http = [*gonogo, "check", str(http_gate), "--ignore-signoffs"]
                measures.append(("check: first check (http)", http, accept_http))
            for _, command, accepted in measures:  # warm the OS file cache once
                run(command, accepted)
            print(f" {name}: {note}")
            for label, command, accepted in measures:
                samples = [run(command, accepted) for _ in range(args.runs)]
                walls = [w for w, _ in samples]
                cpus = [c for _, c in samples if c == c]  # not nan
                median = statistics.median(walls)
                goal = GOALS_MS.get(label)
                verdict = "" if goal is None else (f"  goal <= {goal:.0f} ms " + ("ok" if median <= goal else "MISSED"))
                # The goals are about what users start: the checkout's figures are for comparison.
                failed |= goal is not None and median > goal and name == setups[0][0]
                cpu = f"  cpu {statistics.median(cpus):5.0f} ms" if cpus else " " * 14
                print(f"  {label:<27} {median:6.0f} ms [{min(walls):4.0f}]{cpu}{verdict}")
    server.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
