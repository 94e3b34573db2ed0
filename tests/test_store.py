"""The store against a real Redis: atomic opens, compare-and-set, the run lock, the audit stream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from bot.core.decision import Verdict
from bot.core.errors import StoreUnavailable
from bot.core.release import Release, RunLease, RunRecord, State
from bot.core.results import CheckResult, Status
from bot.store import keys
from bot.store.store import AuditEvent, Store
from tests.redis_server import RedisServer

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def release(version: str = "1.4.0", sha: str | None = None) -> Release:
    return Release(
        id=f"payments@{version}", gate_id="payments", version=version, sha=sha, opened_by="U1", opened_at=NOW
    )


def event(kind: str = "opened") -> AuditEvent:
    return AuditEvent(type=kind, actor="U1", at=NOW, data={"x": 1})


@pytest.fixture
def store(redis_client: aioredis.Redis) -> Store:
    return Store(redis_client)


async def test_open_then_exists_then_conflict(store: Store) -> None:
    assert (await store.open_release(release(), event()))[0] == "opened"
    outcome, found = await store.open_release(release(), event())
    assert outcome == "exists" and isinstance(found, Release) and found.id == "payments@1.4.0"
    assert await store.open_release(release("1.5.0"), event()) == ("conflict", "payments@1.4.0")
    assert await store.open_release_id("payments") == "payments@1.4.0"
    assert [e.type for e in await store.audit("payments@1.4.0")] == ["opened"]


async def test_concurrent_opens_make_exactly_one_release(store: Store) -> None:
    outcomes = await asyncio.gather(*(store.open_release(release(f"2.0.{i}"), event()) for i in range(20)))
    assert sum(1 for outcome, _ in outcomes if outcome == "opened") == 1


async def test_closing_frees_the_gate_and_a_closed_release_is_not_reopened_by_open(store: Store) -> None:
    _, opened = await store.open_release(release(), event())
    assert isinstance(opened, Release)
    closed = await store.update_release(opened, opened.model_copy(update={"state": State.CLOSED}), event("closed"))
    assert closed is not None and closed.rev == 2
    assert await store.open_release_id("payments") is None
    assert (await store.open_release(release(), event()))[0] == "closed"
    assert (await store.open_release(release("1.5.0"), event()))[0] == "opened"


async def test_compare_and_set_rejects_a_stale_writer(store: Store) -> None:
    _, opened = await store.open_release(release(), event())
    assert isinstance(opened, Release)
    first = await store.update_release(opened, opened.model_copy(update={"sha": "abc1234"}), event("sha_moved"))
    second = await store.update_release(opened, opened.model_copy(update={"sha": "def5678"}), event("sha_moved"))
    assert first is not None and second is None
    stored = await store.get_release(opened.id)
    assert stored is not None and stored.sha == "abc1234"
    assert [e.type for e in await store.audit(opened.id)] == ["opened", "sha_moved"]  # the loser wrote nothing


async def test_run_lock_is_exclusive_and_only_its_holder_releases_it(store: Store) -> None:
    mine = RunLease(token="a" * 32, actor="U1", started_at=NOW, check_ids=["x"])
    theirs = RunLease(token="b" * 32, actor="U2", started_at=NOW, check_ids=["x"])
    assert await store.acquire_run_lock("payments@1", mine, 10_000) is None
    held = await store.acquire_run_lock("payments@1", theirs, 10_000)
    assert held is not None
    holder, ttl_left = held
    assert holder == mine and 0 < ttl_left <= 10_000  # when the next run is possible, if this one died
    await store.release_run_lock("payments@1", theirs.token)  # not theirs to release
    assert await store.current_run("payments@1") == mine
    assert await store.renew_run_lock("payments@1", mine.token, 10_000)
    assert not await store.renew_run_lock("payments@1", theirs.token, 10_000)
    await store.release_run_lock("payments@1", mine.token)
    assert await store.current_run("payments@1") is None


async def test_run_lock_lease_expires(store: Store) -> None:
    lease = RunLease(token="c" * 32, actor="U1", started_at=NOW, check_ids=[])
    assert await store.acquire_run_lock("payments@1", lease, 50) is None
    await asyncio.sleep(0.15)
    assert await store.current_run("payments@1") is None


async def test_results_runs_and_audit(store: Store) -> None:
    result = CheckResult(check_id="tests", status=Status.PASS, summary="ok", started_at=NOW, finished_at=NOW)
    await store.save_result("payments@1", result)
    assert await store.results("payments@1") == {"tests": result}
    run = RunRecord(
        run_id="r1",
        release_id="payments@1",
        actor="U1",
        started_at=NOW,
        finished_at=NOW,
        check_ids=["tests"],
        verdict=Verdict.GO,
        counts={"pass": 1},
    )
    await store.record_run(run, event("run"))
    assert await store.runs("payments@1") == [run]
    (entry,) = await store.audit("payments@1")
    assert entry.type == "run" and entry.data == {"x": 1} and entry.at == NOW


def test_every_key_shares_the_gate_hash_tag() -> None:
    rid = "payments@1.4.0"
    for key in (
        keys.release(rid),
        keys.results(rid),
        keys.runs(rid),
        keys.audit(rid),
        keys.run_lock(rid),
        keys.signatures(rid),
        keys.open_release("payments"),
        keys.release_index("payments"),
    ):
        assert key.startswith("gonogo:{g:payments}:"), key


async def test_unreachable_redis_is_store_unavailable(private_redis: RedisServer) -> None:
    from bot.store.connection import connect

    handle = connect(private_redis.url, private_redis.data_dir)
    store = Store(handle.client)
    await store.ping()
    private_redis.stop()
    with pytest.raises(StoreUnavailable):
        await store.get_release("payments@1")
    await handle.close()
