"""Runs whose process died mid-run (SIGKILL, OOM, a lost machine): their lock expires with no record.
Every replica's `runs:<gate>` tick sweeps them: recorded once as interrupted, in the history and the
audit, and the card marked dirty so the ⏳ it showed is redrawn."""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from bot.core.gateset import GateSet
from bot.core.release import Release, RunLease
from bot.core.results import CheckResult, Status
from bot.services.releases import PROCESS_DIED, ReleaseService
from bot.store import keys
from bot.store.outbox import Outbox
from bot.store.store import AuditEvent, Store
from tests.bot_harness import write_gate
from tests.delivery_kit import until

T0 = datetime(2026, 11, 23, 12, tzinfo=UTC)
RID = "payments@1.4.0"
GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - {id: unit, kind: command, run: ["true"]}
  - {id: lint, kind: command, run: ["true"]}
signoffs:
  - {role: sre, users: [U0SRE]}
"""


async def opened(redis_client: aioredis.Redis, tmp_path: Path) -> tuple[GateSet, Store]:
    """The gate, and its release payments@1.4.0 opened."""
    gates = GateSet(write_gate(tmp_path / "gates", GATE, "payments.yml").parent)
    store = Store(redis_client)
    release = Release(id=RID, gate_id="payments", version="1.4.0", sha="abc1234", opened_by="U0DEV", opened_at=T0)
    await store.open_release(release, AuditEvent(type="opened", actor="U0DEV", at=T0))
    return gates, store


def service(redis_client: aioredis.Redis, session: aiohttp.ClientSession, gates: GateSet) -> ReleaseService:
    return ReleaseService(
        store=Store(redis_client), gates=gates, session=session, env={"PATH": os.environ["PATH"]}, clock=lambda: T0
    )


async def test_a_run_whose_process_died_is_recorded_once_as_interrupted_and_its_card_redrawn(
    redis_client: aioredis.Redis, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gates, store = await opened(redis_client, tmp_path)
    replicas = [service(redis_client, http_session, gates) for _ in range(2)]

    # A run that got as far as one result, then its process was killed (nobody renews its lease).
    lease = RunLease(token=secrets.token_hex(16), actor="U0DEV", started_at=T0, check_ids=["unit", "lint"])
    assert await store.acquire_run_lock(RID, lease, 300) is None
    run_id = lease.token[:12]
    unit = CheckResult(
        check_id="unit",
        status=Status.PASS,
        summary="ok",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=3),
        sha="abc1234",
        run_id=run_id,
    )
    await store.save_result(RID, unit)
    assert await replicas[0].sweep_orphan_runs("payments") == []  # alive while its lock is held
    wanted_before = (await Outbox(redis_client).card(RID)).wanted

    await until(lambda: _lock_gone(redis_client), timeout=10, what="the killed run's lock to expire")
    swept = await asyncio.gather(*(r.sweep_orphan_runs("payments") for r in replicas))
    assert sorted(map(len, swept)) == [0, 1] and swept[0] + swept[1] == [run_id]  # once across replicas

    [record] = await store.runs(RID)
    assert (record.run_id, record.interrupted, record.counts) == (run_id, PROCESS_DIED, {"pass": 1})
    assert record.check_ids == ["unit", "lint"] and record.actor == "U0DEV"
    [audited] = [e for e in await store.audit(RID) if e.type == "run"]
    assert audited.data["interrupted"] == PROCESS_DIED and audited.data["run_id"] == run_id
    assert (await Outbox(redis_client).card(RID)).wanted > wanted_before  # the card is redrawn
    assert await redis_client.hlen(keys.runs_in_flight("payments")) == 0
    assert await replicas[1].sweep_orphan_runs("payments") == []  # and never again
    assert len(await store.runs(RID)) == 1


async def test_a_run_that_ends_leaves_nothing_to_sweep(
    redis_client: aioredis.Redis, http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gates, store = await opened(redis_client, tmp_path)
    lease = RunLease(token=secrets.token_hex(16), actor="U0DEV", started_at=T0, check_ids=["unit"])
    assert await store.acquire_run_lock(RID, lease, 30_000) is None
    assert await redis_client.hlen(keys.runs_in_flight("payments")) == 1
    await store.release_run_lock(RID, lease.token)
    assert await redis_client.hlen(keys.runs_in_flight("payments")) == 0
    assert await service(redis_client, http_session, gates).sweep_orphan_runs("payments") == []


async def _lock_gone(redis_client: aioredis.Redis) -> bool:
    return int(await redis_client.exists(keys.run_lock(RID))) == 0
