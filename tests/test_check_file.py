"""The `file` check on real files: existence, type, age against the context's clock, content regex."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.core.results import Status
from checks.base import CheckContext
from checks.file import MAX_READ_BYTES, Spec, run

NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
RUNBOOK = "docs/runbook.md"


def spec(**fields: Any) -> Spec:
    return Spec.model_validate({"id": "runbook", "path": RUNBOOK, **fields})


@pytest.fixture
def ctx(http_session: aiohttp.ClientSession, tmp_path: Path) -> CheckContext:
    return CheckContext(session=http_session, base_dir=tmp_path, env={}, clock=lambda: NOW)


def write(base: Path, content: str | bytes, *, age: timedelta = timedelta(hours=2), name: str = RUNBOOK) -> Path:
    path = base / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    modified = (NOW - age).timestamp()
    os.utime(path, (modified, modified))
    return path


async def test_an_existing_file_passes_with_its_age(ctx: CheckContext, tmp_path: Path) -> None:
    write(tmp_path, "# Runbook\n")
    outcome = await run(spec(), ctx)
    assert outcome.status is Status.PASS
    assert outcome.summary == "docs/runbook.md, 2h old"
    assert outcome.value == pytest.approx(7200)
    assert outcome.started_at == outcome.finished_at == NOW


async def test_an_absolute_path_is_used_as_is(ctx: CheckContext, tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere", "x")
    outcome = await run(Spec(id="abs", path=str(path)), ctx)
    assert outcome.status is Status.PASS
    assert outcome.summary == f"{path}, 2h old"


async def test_a_missing_file_fails_and_says_where_it_looked(ctx: CheckContext, tmp_path: Path) -> None:
    outcome = await run(spec(), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary == "docs/runbook.md does not exist"
    assert str(tmp_path / RUNBOOK) in outcome.details


async def test_a_directory_is_not_a_file(ctx: CheckContext, tmp_path: Path) -> None:
    (tmp_path / RUNBOOK).mkdir(parents=True)
    outcome = await run(spec(), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary == "docs/runbook.md is a directory, not a file"


async def test_a_fifo_fails_instead_of_blocking_on_read(ctx: CheckContext, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    os.mkfifo(tmp_path / RUNBOOK)
    outcome = await run(spec(contains="rollback"), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary == "docs/runbook.md is not a regular file"


@pytest.mark.parametrize(
    ("age", "max_age", "status", "summary"),
    [
        (timedelta(days=9), "7d", Status.FAIL, "docs/runbook.md is 9d old (max 7d)"),
        (timedelta(days=6, hours=23), "7d", Status.PASS, "docs/runbook.md, 6d old"),
        (timedelta(hours=30), "24h", Status.FAIL, "docs/runbook.md is 1d6h old (max 1d)"),
        (timedelta(days=3), "36h", Status.FAIL, "docs/runbook.md is 3d old (max 1d12h)"),
        # Just over the limit: an age that reads exactly like the limit would look like a bug.
        (timedelta(days=7, hours=1), "7d", Status.FAIL, "docs/runbook.md is 7d1h old (max 7d)"),
        (timedelta(seconds=2), "1h", Status.PASS, "docs/runbook.md, modified just now"),
        # A modification time in the future (clock skew) is not "negative age".
        (-timedelta(hours=3), "1h", Status.PASS, "docs/runbook.md, modified just now"),
    ],
)
async def test_max_age_compares_mtime_with_the_context_clock(
    ctx: CheckContext, tmp_path: Path, age: timedelta, max_age: str, status: Status, summary: str
) -> None:
    write(tmp_path, "# Runbook\n", age=age)
    outcome = await run(spec(max_age=max_age), ctx)
    assert outcome.status is status
    assert outcome.summary == summary
    assert outcome.value == pytest.approx(max(0.0, age.total_seconds()))


async def test_contains_matches(ctx: CheckContext, tmp_path: Path) -> None:
    write(tmp_path, "# Runbook\n\n## Rollback\nhelm rollback api 0\n")
    outcome = await run(spec(contains="(?i)rollback"), ctx)
    assert outcome.status is Status.PASS
    assert outcome.summary == "docs/runbook.md, 2h old, matches /(?i)rollback/"


async def test_contains_without_a_match_fails(ctx: CheckContext, tmp_path: Path) -> None:
    write(tmp_path, "# Runbook\n\nTODO\n")
    outcome = await run(spec(contains="(?i)rollback"), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary == "docs/runbook.md does not match /(?i)rollback/"
    assert outcome.value == pytest.approx(7200)


async def test_contains_is_a_regex_searched_across_lines(ctx: CheckContext, tmp_path: Path) -> None:
    write(tmp_path, "owner: sre\nreviewed: 2025-05-30\n")
    assert (await run(spec(contains=r"reviewed: \d{4}-\d\d-\d\d"), ctx)).status is Status.PASS
    assert (await run(spec(contains=r"^reviewed"), ctx)).status is Status.FAIL  # no (?m): ^ is the start
    assert (await run(spec(contains=r"(?m)^reviewed"), ctx)).status is Status.PASS


async def test_too_old_and_no_match_are_both_reported(ctx: CheckContext, tmp_path: Path) -> None:
    write(tmp_path, "TODO\n", age=timedelta(days=9))
    outcome = await run(spec(max_age="7d", contains="(?i)rollback"), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary == "docs/runbook.md is 9d old (max 7d) and does not match /(?i)rollback/"


async def test_binary_content_is_searched_without_crashing(ctx: CheckContext, tmp_path: Path) -> None:
    write(tmp_path, b"\xff\xfe\x00\x80 rollback \xc3\x28 \x00\x9f")
    assert (await run(spec(contains="rollback"), ctx)).status is Status.PASS
    outcome = await run(spec(contains="release notes"), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary == "docs/runbook.md does not match /release notes/"


async def test_only_the_first_bytes_of_a_huge_file_are_searched(ctx: CheckContext, tmp_path: Path) -> None:
    path = write(tmp_path, b"", name="dump.log")
    with path.open("r+b") as handle:
        handle.truncate(MAX_READ_BYTES)  # sparse: cheap to make
        handle.seek(MAX_READ_BYTES)
        handle.write(b"rollback\n")
    outcome = await run(Spec(id="dump", path="dump.log", contains="rollback"), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary == "dump.log does not match /rollback/ (first 10 MiB)"


async def test_a_path_through_a_file_does_not_exist(ctx: CheckContext, tmp_path: Path) -> None:
    write(tmp_path, "not a directory", name="docs")
    outcome = await run(spec(), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary == "docs/runbook.md does not exist (a parent is not a directory)"
