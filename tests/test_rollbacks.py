"""The rollback service without Slack: roles, the gate's lease, the command and the verify check
run for real, the release moved to rolled_back and audited with the time since its decision."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.errors import Conflict, Forbidden
from bot.core.gateset import GateSet
from bot.core.masking import MASK
from bot.core.release import Release, State
from bot.services.drills import DrillService
from bot.services.membership import Membership
from bot.services.releases import ReleaseService
from bot.services.rollbacks import RollbackService
from bot.store.gatestore import GateStore
from bot.store.store import AuditEvent, Store
from tests.bot_harness import write_gate

PY = sys.executable
T0 = datetime(2026, 11, 22, 12, tzinfo=UTC)
TOKEN = "xoxb-5555555555-rollbackrollback"
RID = "payments@1.4.0"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def gate_text(tmp_path: Path) -> str:
    return f"""
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - id: health
    kind: command
    run: ["{PY}", "-c", "import pathlib; raise SystemExit(0 if pathlib.Path('{tmp_path}/healthy').exists() else 1)"]
signoffs:
  - {{role: sre, users: [U0SRE]}}
  - {{role: dev, users: [U0DEV]}}
drills:
  - {{id: redis-down, run: ["true"]}}
rollback:
  run: ["{PY}", "-c", "import os; print('rolled back with', os.environ.get('SLACK_BOT_TOKEN', 'no token'), '{TOKEN}')"]
  allowed_roles: [sre]
  verify: health
"""


@pytest.fixture
async def service(
    redis_client: aioredis.Redis, http_session: aiohttp.ClientSession, tmp_path: Path, clock: Clock
) -> AsyncIterator[RollbackService]:
    gates = GateSet(write_gate(tmp_path / "gates", gate_text(tmp_path), "payments.yml").parent)
    slack = AsyncWebClient(token="xoxb-unused", base_url="http://127.0.0.1:9/")  # never called here
    store = Store(redis_client)
    releases = ReleaseService(
        store=store,
        gates=gates,
        session=http_session,
        env={"PATH": os.environ["PATH"], "SLACK_BOT_TOKEN": TOKEN},
        clock=clock,
    )
    release = Release(id=RID, gate_id="payments", version="1.4.0", sha="abc1234", opened_by="U0DEV", opened_at=T0)
    await store.open_release(release, AuditEvent(type="opened", actor="U0DEV", at=T0))
    decided = await store.update_release(
        release, release.model_copy(update={"state": State.DECIDED}), AuditEvent(type="decided", actor="U0SRE", at=T0)
    )
    assert decided is not None
    yield RollbackService(releases, Membership(store, slack))


async def test_only_rollback_roles_may_roll_back(service: RollbackService) -> None:
    with pytest.raises(Forbidden, match="only members of sre"):
        await service.begin(RID, "U0DEV", "bad deploy", run_command=True)


async def test_rollback_runs_the_command_verifies_and_rolls_back(
    service: RollbackService, clock: Clock, tmp_path: Path, http_session: aiohttp.ClientSession
) -> None:
    (tmp_path / "healthy").touch()
    clock.now = T0 + timedelta(minutes=42)
    started = await service.begin(RID, "U0SRE", f"errors at 5% {TOKEN}", run_command=True)
    assert started.run_command and started.decided_at == T0 and TOKEN not in started.reason

    # While it holds the gate's lease, a drill of the gate is refused.
    drills = DrillService(store=GateStore(service.releases.store.redis), session=http_session, env={})
    with pytest.raises(Conflict, match=re.escape("a rollback of payments@1.4.0 is in progress")):
        await drills.begin(service.releases.gates.get("payments").gate, "redis-down", "U0DEV")

    done = await service.execute(started)
    assert done.status == "succeeded" and done.moved and done.release.state is State.ROLLED_BACK
    assert done.since_decision_s == 42 * 60
    assert done.command is not None and done.command.status.value == "pass"
    assert "no token" in done.command.details and TOKEN not in done.command.details and MASK in done.command.details
    assert done.verify is not None and done.verify.status.value == "pass"
    audit = [e for e in await service.releases.store.audit(RID) if e.type.startswith("rollback")]
    assert [(e.type, e.data["since_decision_s"], e.data["verify_status"]) for e in audit] == [
        ("rollback_succeeded", 2520.0, "pass")
    ]
    assert await service.gatestore.current_operation("payments") is None
    with pytest.raises(Conflict, match="rolled back already"):
        await service.begin(RID, "U0SRE", "again", run_command=False)


async def test_a_failing_verify_is_reported_and_the_release_is_still_rolled_back(service: RollbackService) -> None:
    started = await service.begin(RID, "U0SRE", "bad deploy", run_command=False)
    done = await service.execute(started)
    assert done.command is None  # not asked to run it
    assert done.status == "failed" and done.verify is not None and done.verify.status.value == "fail"
    assert done.release.state is State.ROLLED_BACK
    assert (await service.releases.store.results(RID))["health"].status.value == "fail"
