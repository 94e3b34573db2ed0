"""`command`: run a program; exit 0 passes. argv by default, /bin/sh only with `shell: true`.

The child runs in a session (and process group) of its own, and only the tail of its output is
kept (checks/process.py, the engine): nothing a check starts outlives it, and a test suite
printing gigabytes costs no memory. That tail is the result's details (the runner masks secrets
and cuts it to Slack size afterwards).

The child gets the bot's environment minus the bot's own secrets (Slack tokens, the Redis URL,
GONOGO_* settings and anything whose name looks like a credential), plus the check's `env`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping, Sequence
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


def _start_failure(program: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {program}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {program} (is it executable?)"
    return f"cannot start {program}: {exc.strerror or exc}"


async def run(spec: Spec, ctx: CheckContext) -> CheckResult:
    import asyncio  # here, not at import: loading gates must not pay for it

    from checks.process import start_in_group, wait_then_end_group

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
    try:
        transport, child = await start_in_group(argv, cwd=cwd, env=child_env(ctx.env, spec.env, spec.pass_env))
    except OSError as exc:
        # The program is missing or not executable: the gate's config (or this machine) is wrong,
        # no verdict on the release was reached.
        return result(spec, Status.ERROR, _start_failure(argv[0], exc), started_at=started, finished_at=ctx.clock())
    timed_out = await wait_then_end_group(transport, child, limit.total_seconds())
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
