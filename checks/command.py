"""`command`: run a program; exit 0 passes. argv by default, /bin/sh only with `shell: true`.

The child runs in a session (and process group) of its own, so that a timeout, a cancelled run
or a background process left behind can be dealt with in one `killpg`: nothing a check starts
outlives it. Its output (stdout and stderr merged, in the order written) is read as it comes and
only the last `TAIL_BYTES` are kept, so a test suite printing gigabytes costs no memory; that tail
is the result's details (the runner masks secrets and cuts it to Slack size afterwards).

The child gets the bot's environment minus the bot's own secrets (Slack tokens, the Redis URL,
GONOGO_* settings and anything whose name looks like a credential), plus the check's `env`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from bot.core.durations import format_duration
from bot.core.masking import is_bots_own, is_secret_name
from bot.core.results import CheckResult, Status
from checks.base import CheckContext, SpecBase, result, seconds
from checks.scoring import NoScore, RegexScore, from_output, unreadable, with_score


class Spec(SpecBase):
    kind: Literal["command"] = "command"
    run: list[str] | str = Field(description="argv list (no shell), or a string with shell: true")
    shell: bool = False
    cwd: str | None = Field(default=None, description="Working directory, relative to the gate working directory")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the child")
    pass_env: list[str] = Field(
        default_factory=list,
        description="Variables of gonogo's environment passed on although their names look secret (e.g. VAULT_TOKEN)",
    )
    score: RegexScore | None = Field(default=None, description="Graded score read from the output: {regex, max}")

    default_timeout: ClassVar[timedelta] = timedelta(minutes=10)

    @model_validator(mode="after")
    def _shell_only_when_asked(self) -> Spec:
        if isinstance(self.run, str) and not self.shell:
            raise ValueError("run is a string: use an argv list, or set shell: true to run it through /bin/sh")
        if isinstance(self.run, list) and not self.run:
            raise ValueError("run must not be empty")
        return self


SHELL = "/bin/sh"
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


def is_withheld(name: str) -> bool:
    """Whether an environment variable of the bot must not reach a check's child process."""
    return is_bots_own(name) or is_secret_name(name)


def child_env(env: Mapping[str, str], extra: Mapping[str, str], passed: Sequence[str] = ()) -> dict[str, str]:
    """The child's environment: `env` without the bot's secrets, then `extra` on top.

    A variable the check sets in `extra` is passed even when its name looks secret: the gate's
    author asked for it explicitly (e.g. `env: {NPM_TOKEN: ...}` for a private registry).
    """
    # `pass_env` opens secret-looking names the gate needs (VAULT_TOKEN), never the bot's own.
    kept = {
        name: value
        for name, value in env.items()
        if not is_withheld(name) or (name in passed and not is_bots_own(name))
    }
    kept.update(extra)
    return kept


def argv_of(spec: Spec) -> list[str]:
    """What to execute. With `shell: true` a list is joined with spaces into one script."""
    if spec.shell:
        script = spec.run if isinstance(spec.run, str) else " ".join(spec.run)
        return [SHELL, "-c", script]
    assert isinstance(spec.run, list)  # the Spec validator rejects a string without shell: true
    return list(spec.run)


def describe_exit(returncode: int, elapsed: timedelta, *, shell: bool) -> str:
    """ "exit 1 after 41 s", "killed by SIGKILL after 3.0 s"."""
    took = seconds(elapsed)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name} after {took}"
    # /bin/sh's own codes for "could not run it"; without the hint 127 reads like a test failure.
    hint = {126: " (not executable)", 127: " (command not found)"}.get(returncode, "") if shell else ""
    return f"exit {returncode}{hint} after {took}"


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


class _Child(asyncio.SubprocessProtocol):
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


async def _end_group(transport: asyncio.SubprocessTransport, child: _Child, term_grace: float) -> None:
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


def _start_failure(program: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {program}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {program} (is it executable?)"
    return f"cannot start {program}: {exc.strerror or exc}"


async def run(spec: Spec, ctx: CheckContext) -> CheckResult:
    started = ctx.clock()
    argv = argv_of(spec)
    cwd: Path = ctx.resolve(spec.cwd) if spec.cwd else ctx.base_dir
    if not await asyncio.to_thread(cwd.is_dir):
        # Checked first: exec reports a missing cwd as FileNotFoundError too, which would read
        # as "command not found".
        return result(
            spec,
            Status.ERROR,
            f"working directory {spec.cwd or cwd} does not exist",
            started_at=started,
            finished_at=ctx.clock(),
        )
    limit = spec.timeout or Spec.default_timeout
    # Durations on the monotonic clock: ctx.clock() is wall time (and may be faked).
    begin = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        transport, child = await loop.subprocess_exec(
            _Child,
            *argv,
            cwd=cwd,
            env=child_env(ctx.env, spec.env, spec.pass_env),
            stdin=subprocess.DEVNULL,  # nothing may sit waiting for a prompt's answer
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        # The program is missing or not executable: the gate's config (or this machine) is wrong,
        # no verdict on the release was reached.
        return result(spec, Status.ERROR, _start_failure(argv[0], exc), started_at=started, finished_at=ctx.clock())

    timed_out = False
    term_grace = CANCEL_TERM_GRACE  # unless the command ends (or times out) without being cancelled
    try:
        try:
            async with asyncio.timeout(limit.total_seconds()):
                await child.exited.wait()
        except TimeoutError:
            timed_out = True
        else:
            # Anything still holding the pipe now is a background process the command left
            # behind: wait a little for its output rather than until the timeout.
            await _within(DRAIN_GRACE, child.output_closed.wait())
        term_grace = SHORT_TERM_GRACE
    finally:
        # Exit, timeout or cancellation alike: the group goes. On cancellation the
        # CancelledError propagates once this is done.
        await _end_group(transport, child, term_grace)

    elapsed = timedelta(seconds=time.monotonic() - begin)
    finished = ctx.clock()
    details = child.tail.text()
    if timed_out:
        return result(
            spec,
            Status.FAIL,
            f"timed out after {format_duration(limit)}",
            started_at=started,
            finished_at=finished,
            details=details,
        )
    returncode = transport.get_returncode()
    assert returncode is not None  # process_exited was called
    outcome = result(
        spec,
        Status.PASS if returncode == 0 else Status.FAIL,
        describe_exit(returncode, elapsed, shell=spec.shell),
        started_at=started,
        finished_at=finished,
        details=details,
        value=float(returncode),
    )
    if spec.score is None:
        return outcome
    try:
        raw, score = from_output(spec.score, details)
    except NoScore as exc:
        return unreadable(outcome, str(exc))
    return with_score(outcome, raw, spec.score, score)
