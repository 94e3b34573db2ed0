"""`gonogo drill FILE DRILL`: exit 0 passed / 1 failed / 2 usage, recorded for the gate with
REDIS_URL (and refused while the gate's lease is held); `external` checks from the CLI."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.cli import main
from bot.core.drills import OperationLease
from bot.core.results import Status
from bot.store.gatestore import GateStore
from checks import external

PY = sys.executable
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
TOKEN = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"


@pytest.fixture
def gate_file(tmp_path: Path) -> Path:
    path = tmp_path / "gate.yml"
    path.write_text(
        f"""id: payments
name: Payments
channel: C1
checks:
  - {{id: e2e, kind: external}}
drills:
  - {{id: ok, run: ["{PY}", "-c", "print('fine')"]}}
  - {{id: bad, run: ["{PY}", "-c", "print('broke with {TOKEN}'); raise SystemExit(2)"]}}
"""
    )
    return path


def test_exit_codes_without_redis(
    gate_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["drill", str(gate_file), "ok"]) == 0
    assert "✅ PASSED fire drill ok" in capsys.readouterr().out
    assert main(["drill", str(gate_file), "bad"]) == 1
    out = capsys.readouterr().out
    assert "❌ FAILED" in out and "broke with" in out and TOKEN not in out  # output masked
    assert main(["drill", str(gate_file), "nope"]) == 2
    assert "no drill 'nope'" in capsys.readouterr().err
    assert main(["drill", str(gate_file.parent / "missing.yml"), "ok"]) == 2


async def test_records_for_the_gate_with_redis(
    gate_file: Path, redis_client: aioredis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert await asyncio.to_thread(main, ["drill", str(gate_file), "ok", "--by", "gitlab-ci"]) == 0
    assert await asyncio.to_thread(main, ["drill", str(gate_file), "bad"]) == 1
    gates = GateStore(redis_client)
    latest = await gates.latest_drills("payments")
    assert (latest["ok"].passed, latest["ok"].by, latest["ok"].source) == (True, "gitlab-ci", "cli")
    assert latest["bad"].passed is False and TOKEN not in latest["bad"].details

    held = OperationLease(token="x" * 32, kind="rollback", subject="payments@1.4.0", actor="U1", started_at=NOW)
    assert await gates.acquire_operation("payments", held, 30_000) is None
    assert await asyncio.to_thread(main, ["drill", str(gate_file), "ok"]) == 2  # refused, not run
    assert len(await gates.drill_runs("payments", "ok")) == 1


def test_external_checks_wait_for_ci_in_gonogo_check(gate_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(gate_file), "--ignore-signoffs"]) == 1
    assert "waiting for CI" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("reported", "sha", "age", "status", "why"),
    [
        (None, "abc1234", timedelta(0), Status.PENDING, "waiting for CI"),
        ("abc1234", "abc1234", timedelta(minutes=5), Status.PASS, "212 passed"),
        ("abc1234", "def5678", timedelta(minutes=5), Status.PENDING, "reported for abc1234, release is at def5678"),
        ("abc1234", "abc1234", timedelta(hours=2), Status.PENDING, "older than 1h"),
        (None, None, timedelta(0), Status.PENDING, "waiting for CI"),
    ],
)
def test_external_results_count_for_their_commit_while_fresh(
    reported: str | None, sha: str | None, age: timedelta, status: Status, why: str
) -> None:
    spec = external.Spec(id="e2e", max_age=timedelta(hours=1))
    found = None
    if reported is not None or why != "waiting for CI":
        found = external.ExternalResult(
            check_id="e2e",
            status=Status.PASS,
            summary="212 passed",
            started_at=NOW - age,
            finished_at=NOW - age,
            sha=reported,
            event_id="c1",
        )
    effective = external.effective(spec, found, sha=sha, now=NOW)
    assert effective.status is status and why in effective.summary
