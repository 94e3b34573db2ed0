"""The engine of `command` checks (and so of drills and rollbacks): a child process in a session
(and process group) of its own, its output's tail kept, the whole group ended when it is done.

The child runs in a group of its own so that a timeout, a cancelled run or a background process
left behind can be dealt with in one `killpg`: nothing a check starts outlives it. Its output
(stdout and stderr merged, in the order written) is read as it comes and only the last
`TAIL_BYTES` are kept, so a test suite printing gigabytes costs no memory.

Kept apart from checks/command.py, which `command.run` imports it from when a command runs:
loading a gate (the `Spec`) does not import asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path

# Failures print their cause last; 64 KiB is far more than a Slack card shows (the runner keeps
# ~3000 characters) and leaves room for the masking to see whole secrets near the cut.
TAIL_BYTES = 64 * 1024
# After the main process exits, how long a background process that inherited the output pipe
# may keep writing to it before it is ended with the rest of the group.
DRAIN_GRACE = 1.0
# SIGTERM first so test runners can clean up (containers, temp dirs), then SIGKILL. When the run
# is cancelled there is time for that; on our own timeout there is not (the runner gives a check
# only 0.5 s past its timeout to report), nor for background processes a finished command left.
CANCEL_TERM_GRACE = 2.0
SHORT_TERM_GRACE = 0.3
# After SIGKILL the child is reaped within milliseconds; only a process stuck in the kernel (a
# dead NFS mount) takes longer, and the check does not wait for it forever.
_REAP_WAIT = 2.0
# Once the group is dead the pipe closes at once, unless something outside the group (a daemon
# that called setsid) still holds it; stop waiting for its output then.
_FINAL_DRAIN = 0.1


class _Tail:
    """The last `limit` bytes written to a stream."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        # The cut may fall inside a UTF-8 sequence: that shows as one replacement character.
        return self.data.decode("utf-8", errors="replace").rstrip()


class Child(asyncio.SubprocessProtocol):
    """Keeps the output's tail and tells apart "the child exited" from "the output ended".

    asyncio's `Process.wait()` only returns once the output pipe is closed too, and a background
    process the command left behind can hold that open for as long as it runs; hence this
    protocol instead of `create_subprocess_exec`. Output is taken as it arrives and all but the
    tail dropped, so there is no buffer to grow.
    """

    def __init__(self) -> None:
        self.tail = _Tail()
        self.exited = asyncio.Event()
        self.output_closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.tail.add(data.encode() if isinstance(data, str) else data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.output_closed.set()  # stdout is the only pipe: stderr goes into it, stdin is /dev/null

    def process_exited(self) -> None:
        self.exited.set()

    async def finished(self) -> None:
        await self.exited.wait()
        await self.output_closed.wait()


async def _within(seconds_: float, waiting: Awaitable[object]) -> None:
    """Wait for `waiting` at most `seconds_`; running out is fine."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(waiting, seconds_)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    # ProcessLookupError: every process of the group is gone already. PermissionError: the only
    # members left changed their user (setuid) and are beyond our reach.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _end_group(transport: asyncio.SubprocessTransport, child: Child, term_grace: float) -> None:
    """SIGTERM the child's whole process group, give it `term_grace` to finish, SIGKILL the group.

    "Finish" is the child's exit and the output pipe's closing, so grandchildren that clean up
    after SIGTERM get the grace too, as long as they hold the pipe; when all is over already,
    this costs two signals to an empty group. The SIGKILL goes out even if this is interrupted (a
    second cancellation, the runner's hard deadline), so grandchildren that ignore SIGTERM die
    too. asyncio's child watcher reaps the child; the transport is closed only after that, since
    closing it earlier would make asyncio kill and reap the child on its own.
    """
    pgid = transport.get_pid()  # start_new_session: the child leads a group whose id is its pid
    try:
        try:
            _signal_group(pgid, signal.SIGTERM)
            await _within(term_grace, child.finished())
        finally:
            _signal_group(pgid, signal.SIGKILL)
        await _within(_REAP_WAIT, child.exited.wait())
        await _within(_FINAL_DRAIN, child.output_closed.wait())
    finally:
        transport.close()


async def start_in_group(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]
) -> tuple[asyncio.SubprocessTransport, Child]:
    """Start `argv` in a new session; OSError when it cannot be started (missing, not executable)."""
    loop = asyncio.get_running_loop()
    return await loop.subprocess_exec(
        Child,
        *argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,  # nothing may sit waiting for a prompt's answer
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def wait_then_end_group(transport: asyncio.SubprocessTransport, child: Child, limit_s: float) -> bool:
    """Wait for the child's exit at most `limit_s`, then end its whole group (exit, timeout or
    cancellation alike; on cancellation the CancelledError propagates once that is done).
    True when it timed out."""
    timed_out = False
    term_grace = CANCEL_TERM_GRACE  # unless the command ends (or times out) without being cancelled
    try:
        try:
            async with asyncio.timeout(limit_s):
                await child.exited.wait()
        except TimeoutError:
            timed_out = True
        else:
            # Anything still holding the pipe now is a background process the command left
            # behind: wait a little for its output rather than until the timeout.
            await _within(DRAIN_GRACE, child.output_closed.wait())
        term_grace = SHORT_TERM_GRACE
    finally:
        await _end_group(transport, child, term_grace)
    return timed_out
