"""Running `gonogo playground` as a user does — a separate process tree — and stopping it with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

# Two roles and a blocker check, as the browser test asks. The SRE sign-off is optional,
# so that after the SRE's rejection (a warning) the checks alone can still move NO-GO to GO, and
# sign-offs follow the commit only (not the blocker results), so the Tech Lead's approval given
# before the run still counts after it.
GATE = """
id: payments
name: Payments API
channel: C0PAYMENTS
signoffs_invalidate_on: [commit]
checks:
  - id: unit-tests
    name: Unit tests
    kind: command
    run: ["python3", "-c", "print('12 passed')"]
    severity: blocker
signoffs:
  - {role: tech-lead, label: Tech Lead, users: [U01TECH]}
  - {role: sre, label: SRE, users: [U02SRE], required: false}
"""
TECH_LEAD, SRE, OUTSIDER = "U01TECH", "U02SRE", "U0OUTSIDER"
CHANNEL = "C0PAYMENTS"


def write_gates(directory: Path, text: str = GATE) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "payments.yml").write_text(textwrap.dedent(text))
    return directory


@dataclass
class Playground:
    process: subprocess.Popen[str]
    url: str
    data_dir: Path
    output: _Output | None = None

    def ctrl_c(self) -> int:
        """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.ctrl_c()
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_playground(tmp_path: Path, *args: str, port: int | None = None) -> Playground:
    """`gonogo playground` in its own process group, once it printed its URL."""
    data_dir = tmp_path / "data"
    env = {**os.environ, "GONOGO_DATA_DIR": str(data_dir), "GONOGO_LOG_LEVEL": "WARNING"}
    for name in ("REDIS_URL", "SLACK_APP_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        env.pop(name, None)
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "playground", "--port", str(port), *args],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, like a shell job
    )
    output = _Output(process)
    try:
        url = output.wait_for("open http://", STARTUP_TIMEOUT_S).split("open ", 1)[1].split()[0]
    except TimeoutError:
        Playground(process, "", data_dir, output).stop()
        raise RuntimeError("gonogo playground did not start:\n" + "".join(output.lines)) from None
    return Playground(process, url, data_dir, output)


class _Output:
    """Every line the playground prints, read by a thread: the pipe never fills, nothing is missed."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        assert process.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # EOF
            self._changed.notify_all()

    def wait_for(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if needle in line), None)
                if found is not None:
                    return found
                if (self.lines and self.lines[-1] == "") or time.monotonic() >= deadline:
                    raise TimeoutError(needle)
                self._changed.wait(timeout=max(0.0, deadline - time.monotonic()))


def processes_in_session(sid: int) -> list[str]:
    """Live processes of a session (zombies count as gone)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(f"{entry.name} {stat[: stat.rindex(')') + 1]}")
    return found


def processes_working_in(directory: Path) -> list[str]:
    """Live processes whose working directory is inside `directory` (redis-server chdirs to its data dir)."""
    found = []
    resolved = str(directory.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cwd.startswith(resolved) and state != "Z":
            found.append(f"{entry.name} {cwd}")
    return found
