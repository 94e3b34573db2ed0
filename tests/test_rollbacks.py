"""The rollback service without Slack: roles, the gate's lease, the command and the verify check
run for real, the release moved to rolled_back and audited with the time since its decision."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import aiohttp
import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.core import announcements
from bot.core.errors import Conflict, Forbidden
from bot.core.gateset import GateSet
from bot.core.masking import MASK
from bot.core.notices import Notice
from bot.core.release import Release, State
from bot.services.drills import DrillService
from bot.services.membership import Membership
from bot.services.releases import ReleaseService
from bot.services.rollbacks import INTERRUPTED, RollbackService
from bot.store import keys
from bot.store.gatestore import GateStore
from bot.store.store import AuditEvent, Store
from tests.bot_harness import write_gate
from tests.delivery_kit import until

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
  run: ["{PY}", "-c", "import os, pathlib, time; hold = pathlib.Path('{tmp_path}/hold'); \\
    pathlib.Path('{tmp_path}/begun').touch(); [time.sleep(0.05) for _ in range(400) if hold.exists()]; \\
    print('rolled back with', os.environ.get('SLACK_BOT_TOKEN', 'no token'), '{TOKEN}')"]
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


async def test_a_rollback_stopped_mid_way_says_so_and_a_later_attempt_is_announced_again(
    service: RollbackService, tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    """SIGTERM's last resort cancels a rollback still running: the release does not move (whether the
    service is rolled back is unknown), the audit and the announcement's thread say it was interrupted,
    and a new attempt after the first was posted gets its own announcement (not deduplicated away)."""
    (tmp_path / "hold").touch()
    started = await service.begin(RID, "U0SRE", "bad deploy", run_command=True, announce=True)
    assert started.attempt is None
    task = asyncio.create_task(service.execute(started))
    await until(lambda: (tmp_path / "begun").exists(), timeout=20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    release = await service.releases.store.get_release(RID)
    assert release is not None and release.state is State.DECIDED
    assert [e.type for e in await service.releases.store.audit(RID)][-1] == "rollback_interrupted"
    first_key = announcements.rollback_key(RID)
    outputs = [n for n in await queued(redis_client) if n.kind == announcements.ROLLBACK_OUTPUT]
    assert [(n.payload["summary"], n.target.thread_of) for n in outputs] == [(INTERRUPTED, first_key)]
    assert await service.gatestore.current_operation("payments") is None

    await redis_client.set(keys.delivered("payments", first_key), "1700000000.000100")  # the deliverer posted it
    (tmp_path / "hold").unlink()
    again = await service.begin(RID, "U0SRE", "bad deploy, again", run_command=True, announce=True)
    assert again.attempt is not None
    done = await service.execute(again)
    assert done.release.state is State.ROLLED_BACK
    notices = await queued(redis_client)
    [second] = [n for n in notices if n.kind == announcements.ROLLBACK_STARTED and n.key != first_key]
    assert second.payload["reason"] == "bad deploy, again"
    outputs = [n for n in notices if n.kind == announcements.ROLLBACK_OUTPUT and n.target.thread_of == second.key]
    assert [n.payload["passed"] for n in outputs] == [True]


async def queued(redis_client: aioredis.Redis) -> list[Notice]:
    raw = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.outbox("payments")))
    return [Notice.from_json(fields["notice"]) for _, fields in raw]
