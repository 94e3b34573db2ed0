"""`file`: a file exists, is fresh enough and contains a pattern.

The path is resolved against the gate's working directory. All file-system work happens in a
worker thread: a slow network mount must not stall the event loop that runs the other checks.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from bot.core.durations import Duration, format_duration, humanize_age
from bot.core.results import CheckResult, Status
from checks.base import CheckContext, PatternTimeout, SpecBase, pattern_problem, pattern_search, result


class Spec(SpecBase):
    kind: Literal["file"] = "file"
    path: str = Field(min_length=1, description="Relative to the working directory (gonogo check --workdir)")
    max_age: Duration | None = Field(default=None, description="Oldest allowed modification time")
    contains: str | None = Field(default=None, description="Regex the content must match")

    default_timeout: ClassVar[timedelta] = timedelta(seconds=10)

    @field_validator("contains")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        problem = pattern_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value


# Runbooks and release notes are kilobytes; a pattern not found in the first 10 MiB of a log or a
# dump is reported as such rather than read into memory whole.
MAX_READ_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class _Inspection:
    """What the worker thread found: a problem (the file is not there to judge) or its facts."""

    problem: str | None = None
    unreadable: bool = False  # the problem is this machine's (permissions, I/O), not the file's
    mtime: float = 0.0
    matched: bool | None = None  # None: no pattern asked for
    truncated: bool = False  # the pattern was searched in the first MAX_READ_BYTES only


def _inspect(path: Path, label: str, pattern: str | None) -> _Inspection:
    try:
        info = path.stat()
    except FileNotFoundError:
        return _Inspection(problem=f"{label} does not exist")
    except NotADirectoryError:  # a parent of the path is a file
        return _Inspection(problem=f"{label} does not exist (a parent is not a directory)")
    except OSError as exc:
        return _Inspection(problem=f"cannot access {label}: {exc.strerror or exc}", unreadable=True)
    if stat.S_ISDIR(info.st_mode):
        return _Inspection(problem=f"{label} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or a device would block or never end when read.
        return _Inspection(problem=f"{label} is not a regular file")
    if pattern is None:
        return _Inspection(mtime=info.st_mtime)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_READ_BYTES + 1)
    except OSError as exc:
        return _Inspection(problem=f"cannot read {label}: {exc.strerror or exc}", unreadable=True)
    truncated = len(data) > MAX_READ_BYTES
    # errors="replace": a binary or Latin-1 file is still searched, never a crash.
    text = data[:MAX_READ_BYTES].decode("utf-8", errors="replace")
    try:
        matched = pattern_search(pattern, text)  # this thread; within the pattern time budget
    except PatternTimeout as exc:
        return _Inspection(problem=str(exc), unreadable=True)
    return _Inspection(mtime=info.st_mtime, matched=matched, truncated=truncated)


def _age_text(age: float) -> str:
    shown = humanize_age(age)
    return "modified just now" if shown == "just now" else f"{shown} old"


def _over_age(age: float, limit: timedelta) -> str:
    """The age of a too-old file, precise enough not to read like the limit ("7d" vs max 7d)."""
    shown = humanize_age(age)
    if shown != format_duration(limit):
        return shown
    return format_duration(timedelta(seconds=int(age)))


async def run(spec: Spec, ctx: CheckContext) -> CheckResult:
    import asyncio  # here, not at import: loading gates must not pay for it

    started = ctx.clock()
    path = ctx.resolve(spec.path)
    label = spec.path
    found = await asyncio.to_thread(_inspect, path, label, spec.contains)
    finished = ctx.clock()
    where = f"looked at {os.fspath(path)}"
    if found.problem is not None:
        # Unreadable (permissions, I/O errors) means no verdict; missing or the wrong type is one.
        status = Status.ERROR if found.unreadable else Status.FAIL
        return result(spec, status, found.problem, started_at=started, finished_at=finished, details=where)

    # A modification time in the future (clock skew, a copied file) counts as brand new.
    age = max(0.0, (finished - datetime.fromtimestamp(found.mtime, UTC)).total_seconds())
    problems: list[str] = []
    if spec.max_age is not None and age > spec.max_age.total_seconds():
        problems.append(f"is {_over_age(age, spec.max_age)} old (max {format_duration(spec.max_age)})")
    searched = f" (first {MAX_READ_BYTES // 1048576} MiB)" if found.truncated else ""
    if found.matched is False:
        problems.append(f"does not match /{spec.contains}/{searched}")
    if problems:
        return result(
            spec,
            Status.FAIL,
            f"{label} " + " and ".join(problems),
            started_at=started,
            finished_at=finished,
            details=where,
            value=age,
        )
    parts = [label, _age_text(age)]
    if found.matched:
        parts.append(f"matches /{spec.contains}/")
    return result(spec, Status.PASS, ", ".join(parts), started_at=started, finished_at=finished, value=age)
