"""The promotion write against a real Redis: its preconditions (state, current stage, order, rev)
are checked in the Lua step that writes, and a change to any input of the verdict between the
decision and the write (WATCH) makes it write nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import cast

import pytest
import redis.asyncio as aioredis

from bot.core.notices import Notice, Target, notice_key
from bot.core.release import Release, State
from bot.store import keys
from bot.store.outbox import Emit
from bot.store.store import AuditEvent, Store

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
RID = "payments@1.4.0"
ORDER = ["dark", "canary", "full"]


@pytest.fixture
def store(redis_client: aioredis.Redis) -> Store:
    return Store(redis_client)


async def opened(store: Store, **fields: object) -> Release:
    fresh = Release(id=RID, gate_id="payments", version="1.4.0", opened_by="U1", opened_at=NOW)
    outcome, found = await store.open_release(fresh, AuditEvent(type="opened", actor="U1", at=NOW))
    assert outcome == "opened" and isinstance(found, Release)
    if fields:
        changed = await store.update_release(found, found.model_copy(update=fields), None)
        assert changed is not None
        return changed
    return found


def announcement(to: str) -> Emit:
    """What a promotion says: its announcement, and the card moves."""
    notice = Notice(
        kind="promotion",
        gate_id="payments",
        release_id=RID,
        target=Target.to_channel("C0DEPLOYS"),
        payload={"stage": to},
        key=notice_key("promotion", RID, to),
        created_at=NOW,
    )
    return Emit("payments", notices=[notice], card_of=RID, at=NOW)


async def promote(store: Store, current: Release, to: str, *, allow_skip: bool = False) -> str:
    moved = current.model_copy(update={"current_stage": to, "stages_reached": {**current.stages_reached, to: NOW}})
    async with store.watching(current.id) as pipe:
        outcome, _ = await store.promote(
            pipe,
            current,
            moved,
            stage_order=ORDER,
            allow_skip=allow_skip,
            bundle_json=json.dumps({"stages": {"stage": to}}),
            event=AuditEvent(type="promoted", actor="U1", at=NOW, data={"to": to}),
            says=announcement(to),
        )
    return outcome


async def said(redis_client: aioredis.Redis) -> tuple[list[str], int]:
    """The promotion notices queued and the card's wanted revision."""
    queued = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.outbox("payments")))
    stages = [str(Notice.from_json(fields["notice"]).payload["stage"]) for _, fields in queued]
    return stages, int(await redis_client.hget(keys.card(RID), "wanted") or 0)


async def written(store: Store, redis_client: aioredis.Redis) -> tuple[str | None, int, list[str]]:
    current = await store.get_release(RID)
    assert current is not None
    audit = [e.type for e in await store.audit(RID)]
    return current.current_stage, int(await redis_client.llen(keys.promotions(RID))), audit


@pytest.mark.parametrize(
    ("fields", "to", "allow_skip", "outcome"),
    [
        ({}, "dark", False, "ok"),
        ({"current_stage": "dark"}, "canary", False, "ok"),
        ({}, "canary", False, "skip"),  # no stage yet: dark comes first
        ({}, "full", True, "ok"),  # allow_skip
        ({"current_stage": "canary"}, "dark", False, "behind"),
        ({"current_stage": "canary"}, "canary", True, "behind"),
        ({"current_stage": "dark", "state": State.DECIDED}, "canary", False, "state"),
        ({}, "prod", False, "unknown"),
    ],
)
async def test_preconditions_are_checked_where_it_writes(
    store: Store, redis_client: aioredis.Redis, fields: dict[str, object], to: str, allow_skip: bool, outcome: str
) -> None:
    current = await opened(store, **fields)
    assert await promote(store, current, to, allow_skip=allow_skip) == outcome
    stage, bundles, audit = await written(store, redis_client)
    # The announcement and the dirty card come with the promotion's own write, or not at all.
    if outcome == "ok":
        assert (stage, bundles, audit[-1]) == (to, 1, "promoted")
        assert await said(redis_client) == ([to], 1)
    else:
        assert (stage, bundles, audit[-1]) == (fields.get("current_stage"), 0, "opened")
        assert await said(redis_client) == ([], 0)


async def test_a_stale_rev_writes_nothing(store: Store, redis_client: aioredis.Redis) -> None:
    current = await opened(store)
    assert await store.update_release(current, current.model_copy(update={"card_ts": "1.2"}), None) is not None
    assert await promote(store, current, "dark") == "stale"  # decided on the doc before that change
    assert await written(store, redis_client) == (None, 0, ["opened"])
    assert await said(redis_client) == ([], 0)


@pytest.mark.parametrize(
    "key",
    [
        keys.signatures(RID),
        keys.results(RID),
        keys.manual(RID),
        keys.external_results(RID),
        keys.override_approvals(RID, "req1"),
    ],
)
async def test_a_fact_landing_while_it_decides_writes_nothing(
    store: Store, redis_client: aioredis.Redis, key: str
) -> None:
    current = await opened(store)
    moved = current.model_copy(update={"current_stage": "dark"})
    # An override request is pending: its approvals (keyed by its id) are watched too.
    await redis_client.set(keys.override(RID), json.dumps({"id": "req1"}))
    async with store.watching(RID) as pipe:
        # Between reading the facts and writing, someone rejects (or a result, a mark lands).
        await redis_client.hset(key, "x", "{}")
        outcome, _ = await store.promote(
            pipe,
            current,
            moved,
            stage_order=ORDER,
            allow_skip=False,
            bundle_json="{}",
            event=AuditEvent(type="promoted", actor="U1", at=NOW),
        )
    assert outcome == "changed"
    assert await written(store, redis_client) == (None, 0, ["opened"])
    assert await said(redis_client) == ([], 0)
