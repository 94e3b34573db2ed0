"""Fire drills with real processes and a real Redis: recorded per gate (last 50), fed to the decision
of every release of the gate, one at a time per gate (a lease shared with runs)."""

from __future__ import annotations

import asyncio
import re
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.core import announcements
from bot.core.decision import Verdict, decide
from bot.core.drills import DrillRun, OperationLease
from bot.core.errors import Conflict, Forbidden, UsageError
from bot.core.gate import Gate
from bot.core.loader import load_gate
from bot.core.masking import MASK
from bot.core.notices import Notice
from bot.core.release import Release, RunLease, State
from bot.services.drills import INTERRUPTED, DrillService
from bot.services.membership import Membership
from bot.services.people import load_people
from bot.store import keys
from bot.store.gatestore import DRILL_RUNS_KEPT, GateStore
from bot.store.store import AuditEvent, Store

PY = sys.executable
T0 = datetime(2026, 11, 22, 12, tzinfo=UTC)
TOKEN = "xoxb-1234567890-abcdefghij"

GATE = f"""
id: payments
name: Payments API
channel: C0DEPLOYS
signoffs:
  - {{role: sre, users: [U0SRE]}}
  - {{role: dev, users: [U0DEV]}}
drills:
  - id: redis-down
    name: Redis down
    run: ["{PY}", "-c", "import os, pathlib; print('failover ok', os.environ.get('DRILL_TOKEN', '')); \
      raise SystemExit(0 if pathlib.Path('healthy').exists() else 1)"]
    max_age: 7d
  - id: failing
    run: ["{PY}", "-c", "print('leaked {TOKEN}'); raise SystemExit(3)"]
    allowed_roles: [sre]
  - id: slow
    run: ["{PY}", "-c", "import time; print('waiting', flush=True); time.sleep(60)"]
    timeout: 1s
    required: false
  - id: gated
    run: ["{PY}", "-c", "import pathlib, time; pathlib.Path('started').touch(); time.sleep(0.1); \\
      [time.sleep(0.05) for _ in range(400) if not pathlib.Path('go').exists()]"]
"""


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    path = tmp_path / "payments.yml"
    path.write_text(textwrap.dedent(GATE))
    return load_gate(path).gate


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def drills(
    redis_client: aioredis.Redis, http_session: aiohttp.ClientSession, tmp_path: Path, clock: Clock
) -> DrillService:
    import os

    (tmp_path / "healthy").touch()  # the redis-down drill passes while this file exists
    return DrillService(
        store=GateStore(redis_client),
        session=http_session,
        env={"PATH": os.environ["PATH"], "SLACK_BOT_TOKEN": TOKEN},
        clock=clock,
        base_dir=tmp_path,
    )


async def open_release(store: Store, version: str = "1.4.0") -> Release:
    release = Release(
        id=f"payments@{version}", gate_id="payments", version=version, sha="abc1234", opened_by="U0DEV", opened_at=T0
    )
    await store.open_release(release, AuditEvent(type="opened", actor="U0DEV", at=T0))
    return release


async def verdict(store: Store, gate: Gate, rid: str, now: datetime) -> Any:
    people = await load_people(store, rid)
    return decide(people.decision_input(gate, now, {}, "abc1234"))


async def test_pass_fail_and_timeout_are_recorded_for_the_gate(drills: DrillService, gate: Gate) -> None:
    passed = await drills.run(gate, "redis-down", "U0SRE", source="slack")
    assert passed.passed and passed.summary.startswith("exit 0") and "failover ok" in passed.details
    assert passed.by == "U0SRE" and passed.gate_id == "payments" and passed.source == "slack"

    failed = await drills.run(gate, "failing", "U0SRE")
    assert not failed.passed and failed.summary.startswith("exit 3")
    assert TOKEN not in failed.details and MASK in failed.details  # the bot's own token, masked

    timed_out = await drills.run(gate, "slow", "ci")
    assert not timed_out.passed and timed_out.summary == "timed out after 1s" and "waiting" in timed_out.details

    latest = await drills.store.latest_drills("payments")
    assert {k: v.passed for k, v in latest.items()} == {"redis-down": True, "failing": False, "slow": False}
    audit = await drills.store.gate_audit("payments")
    assert [(e.type, e.data["drill"], e.data["passed"]) for e in audit] == [
        ("drill", "redis-down", True),
        ("drill", "failing", False),
        ("drill", "slow", False),
    ]
    assert await drills.store.current_operation("payments") is None  # the lease is freed


async def test_the_child_never_sees_the_bots_secrets(drills: DrillService, gate: Gate) -> None:
    drills.env["DRILL_TOKEN"] = "drill-secret-value"
    run = await drills.run(gate, "redis-down", "U0SRE")
    assert run.passed and "drill-secret-value" not in run.details


async def test_history_keeps_the_last_50_newest_first(drills: DrillService, gate: Gate, clock: Clock) -> None:
    for index in range(DRILL_RUNS_KEPT + 5):
        clock.now = T0 + timedelta(minutes=index)
        run = DrillRun(
            gate_id="payments",
            drill_id="redis-down",
            run_id=f"r{index}",
            passed=True,
            summary="ok",
            started_at=clock.now,
            finished_at=clock.now,
            duration_s=0,
            by="ci",
        )
        await drills.store.record_drill_run(run, AuditEvent(type="drill", actor="ci", at=clock.now))
    history = await drills.history("payments", "redis-down", count=100)
    assert len(history) == DRILL_RUNS_KEPT
    assert history[0].run_id == f"r{DRILL_RUNS_KEPT + 4}" and history[-1].run_id == "r5"


async def test_required_drill_failing_makes_every_release_no_go_until_a_pass(
    drills: DrillService, gate: Gate, redis_client: aioredis.Redis, clock: Clock, tmp_path: Path
) -> None:
    store = Store(redis_client)
    release = await open_release(store)

    def drill_reasons(decision: Any) -> list[str]:
        return [r.text for r in decision.blocking if r.code == "drill_not_passing" and r.subject == "redis-down"]

    before = await verdict(store, gate, release.id, clock.now)
    assert drill_reasons(before) == ["drill Redis down has never run"]

    (tmp_path / "healthy").unlink()
    await drills.run(gate, "redis-down", "U0SRE")
    clock.now += timedelta(minutes=5)
    after_fail = await verdict(store, gate, release.id, clock.now)
    assert after_fail.verdict is Verdict.NO_GO
    [reason] = drill_reasons(after_fail)
    assert reason.startswith("drill Redis down failed 5m ago: exit 1 after ")

    (tmp_path / "healthy").touch()
    await drills.run(gate, "redis-down", "U0SRE")
    cleared = await verdict(store, gate, release.id, clock.now)
    assert drill_reasons(cleared) == []

    # A release opened later decides on the same gate-level result.
    await store.update_release(release, release.model_copy(update={"state": State.CLOSED}), None)
    later = await open_release(store, "1.5.0")
    assert drill_reasons(await verdict(store, gate, later.id, clock.now)) == []


async def test_a_pass_older_than_max_age_is_stale(
    drills: DrillService, gate: Gate, redis_client: aioredis.Redis, clock: Clock
) -> None:
    store = Store(redis_client)
    release = await open_release(store)
    await drills.run(gate, "redis-down", "U0SRE")
    fresh = await verdict(store, gate, release.id, clock.now + timedelta(days=6, hours=23))
    assert not [r for r in fresh.blocking if r.subject == "redis-down"]
    stale = await verdict(store, gate, release.id, clock.now + timedelta(days=8))
    assert [r.text for r in stale.blocking if r.subject == "redis-down"] == [
        "drill Redis down is stale: last passed 8d ago (max 7d)"
    ]


async def wait_for_file(path: Path, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not path.exists():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{path} never appeared")
        await asyncio.sleep(0.02)


async def test_one_operation_per_gate_drills_and_runs_exclude_each_other(
    drills: DrillService, gate: Gate, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    store = Store(redis_client)
    release = await open_release(store)
    first = asyncio.create_task(drills.run(gate, "gated", "U0SRE"))
    await wait_for_file(tmp_path / "started")

    with pytest.raises(Conflict, match="fire drill gated of gate payments is running"):
        await drills.run(gate, "redis-down", "U0DEV")
    run_lease = RunLease(token="t" * 32, actor="U0DEV", started_at=T0, check_ids=[])
    held = await store.acquire_run_lock(release.id, run_lease, 30_000)
    assert held is not None
    holder, ttl_ms = held
    assert isinstance(holder, OperationLease) and holder.kind == "drill" and holder.subject == "gated"
    assert 0 < ttl_ms <= 30_000
    assert await store.current_run(release.id) is None  # refused: nothing taken

    (tmp_path / "go").touch()
    assert (await first).passed
    # Free again: a run takes the gate's lease with its run lock, and then a drill is refused.
    assert await store.acquire_run_lock(release.id, run_lease, 30_000) is None
    with pytest.raises(Conflict, match=re.escape("checks of payments@1.4.0 are running")):
        await drills.begin(gate, "redis-down", "U0DEV")
    await store.release_run_lock(release.id, run_lease.token)
    assert await redis_client.exists(keys.operation_lease("payments")) == 0
    started = await drills.begin(gate, "redis-down", "U0DEV")
    assert (await drills.finish(started)).passed


async def test_unknown_drill_and_roles(drills: DrillService, gate: Gate, redis_client: aioredis.Redis) -> None:
    with pytest.raises(UsageError, match=r"no drill 'nope'.*redis-down, failing, slow, gated"):
        await drills.begin(gate, "nope", "U0SRE")
    drills.membership = Membership(Store(redis_client), AsyncWebClient(token="xoxb-unused"))
    drill = gate.drill("failing")
    assert drill is not None
    await drills.authorise(gate, drill, "U0SRE")  # allowed_roles: [sre]
    with pytest.raises(Forbidden, match="only members of sre"):
        await drills.authorise(gate, drill, "U0DEV")
    any_role = gate.drill("redis-down")
    assert any_role is not None
    await drills.authorise(gate, any_role, "U0DEV")  # no allowed_roles: any role of the gate
    with pytest.raises(Forbidden):
        await drills.authorise(gate, any_role, "U0STRANGER")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("drills: [{id: a, run: [x], allowed_roles: [nobody]}]", "drills[0].allowed_roles[0]: unknown role 'nobody'"),
        ("drills: [{id: b, run: []}]", "run must not be empty"),
        ("drills: [{id: c, run: 'echo hi'}]", "run is a string"),
        ("rollback: {allowed_roles: [sre], verify: missing}", "rollback.verify: unknown check 'missing'"),
        ("rollback: {allowed_roles: [sre], run: []}", "run must not be empty"),
    ],
)
def test_drill_and_rollback_models_are_validated(tmp_path: Path, body: str, problem: str) -> None:
    from bot.core.errors import ConfigError

    path = tmp_path / "bad.yml"
    path.write_text(f"id: bad\nname: Bad\nchannel: C1\nsignoffs: [{{role: sre, users: [U1]}}]\n{body}\n")
    with pytest.raises(ConfigError) as caught:
        load_gate(path)
    assert problem in "\n".join(caught.value.problems)


def test_a_rollback_without_a_command_is_announce_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "ok.yml"
    path.write_text(
        "id: ok\nname: Ok\nchannel: C1\nsignoffs: [{role: sre, users: [U1]}]\nrollback: {allowed_roles: [sre]}\n"
    )
    rollback = load_gate(path).gate.rollback
    assert rollback is not None and rollback.run is None


async def test_a_drill_stopped_mid_way_is_recorded_as_interrupted_and_its_message_updated(
    drills: DrillService, gate: Gate, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """SIGTERM's last resort cancels a drill still running: the "🔥 started" message must not stay
    as it is, and the run is not a pass (its outcome is unknown)."""
    started = await drills.begin(gate, "gated", "U0SRE", announce=True)
    task = asyncio.create_task(drills.finish(started))
    await wait_for_file(tmp_path / "started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    [latest] = await drills.history("payments", "gated", 1)
    assert (latest.passed, latest.summary, latest.run_id) == (False, INTERRUPTED, started.run_id)
    raw = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.outbox("payments")))
    notices = [Notice.from_json(fields["notice"]) for _, fields in raw if "notice" in fields]
    [result] = [n for n in notices if n.kind == announcements.DRILL_RESULT]
    assert result.updates == announcements.drill_key("payments", started.run_id)  # the start message
    assert result.payload["passed"] is False and result.payload["summary"] == INTERRUPTED
    assert await redis_client.exists(keys.operation_lease("payments")) == 0  # the gate is free again
