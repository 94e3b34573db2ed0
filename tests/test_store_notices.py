"""A state change writes its notices and its card's dirty mark in its own atomic step (issue 8): after
the store call alone, with no later call, they are there; a refused change writes none of them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

import pytest
import redis.asyncio as aioredis

from bot.core.decision import Verdict
from bot.core.errors import Conflict
from bot.core.notices import Notice, Target, notice_key
from bot.core.release import Release, RunLease, RunRecord, State
from bot.store import keys
from bot.store.outbox import Emit
from bot.store.store import AuditEvent, StaleAsk, Store

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
RID = "payments@1.4.0"


@pytest.fixture
def store(redis_client: aioredis.Redis) -> Store:
    return Store(redis_client)


def release(version: str = "1.4.0") -> Release:
    return Release(id=f"payments@{version}", gate_id="payments", version=version, opened_by="U1", opened_at=NOW)


def event(kind: str) -> AuditEvent:
    return AuditEvent(type=kind, actor="U1", at=NOW)


def thread_note(text: str, release_id: str = RID) -> Notice:
    return Notice(
        kind="check_details",
        gate_id="payments",
        release_id=release_id,
        target=Target.to_card_thread(),
        payload={"text": text},
        key=notice_key("test", release_id, text),
        created_at=NOW,
    )


def card(release_id: str = RID, *notices: Notice) -> Emit:
    return Emit("payments", notices=notices, card_of=release_id, at=NOW)


async def queued(redis_client: aioredis.Redis) -> list[Notice]:
    entries = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.outbox("payments")))
    return [Notice.from_json(fields["notice"]) for _, fields in entries]


async def wanted(redis_client: aioredis.Redis, release_id: str = RID) -> int:
    return int(await redis_client.hget(keys.card(release_id), "wanted") or 0)


async def test_an_open_marks_its_card_in_its_own_step_and_a_refused_one_marks_nothing(
    store: Store, redis_client: aioredis.Redis
) -> None:
    assert (await store.open_release(release(), event("opened"), says=card()))[0] == "opened"
    assert await wanted(redis_client) == 1
    assert await redis_client.smembers(keys.cards_dirty("payments")) == {RID}
    assert [e.type for e in await store.audit(RID)] == ["opened"]

    assert (await store.open_release(release(), event("opened"), says=card()))[0] == "exists"
    outcome, _ = await store.open_release(release("1.5.0"), event("opened"), says=card("payments@1.5.0"))
    assert outcome == "conflict"
    assert await wanted(redis_client) == 1 and await wanted(redis_client, "payments@1.5.0") == 0


async def test_an_update_marks_its_card_and_says_its_notices_only_when_it_is_written(
    store: Store, redis_client: aioredis.Redis
) -> None:
    _, opened = await store.open_release(release(), event("opened"))
    assert isinstance(opened, Release) and await wanted(redis_client) == 0
    closed = opened.model_copy(update={"state": State.CLOSED})
    stored = await store.update_release(opened, closed, event("closed"), says=card(RID, thread_note("closed")))
    assert stored is not None and await wanted(redis_client) == 1
    assert [n.payload["text"] for n in await queued(redis_client)] == ["closed"]
    assert [e.type for e in await store.audit(RID)] == ["opened", "closed"]

    # Lost the compare-and-set (stale rev) or refused (state): nothing said, nothing marked.
    assert await store.update_release(opened, closed, event("closed"), says=card(RID, thread_note("again"))) is None
    with pytest.raises(Conflict):
        reopened = stored.model_copy(update={"state": State.OPEN})
        await store.update_release(stored, reopened, event("x"), expect=(State.OPEN,), says=card())
    assert await wanted(redis_client) == 1 and len(await queued(redis_client)) == 1
    # Without an audit entry (e.g. where a card was posted) the mark still goes with the write.
    assert await store.update_release(stored, stored, None, says=card()) is not None
    assert await wanted(redis_client) == 2 and len(await store.audit(RID)) == 2


async def test_taking_the_run_lock_marks_the_card_and_a_refused_lock_does_not(
    store: Store, redis_client: aioredis.Redis
) -> None:
    await store.open_release(release(), event("opened"))
    mine = RunLease(token="a" * 32, actor="U1", started_at=NOW, check_ids=["unit"])
    assert await store.acquire_run_lock(RID, mine, 10_000, says=card()) is None
    assert await wanted(redis_client) == 1
    theirs = RunLease(token="b" * 32, actor="U2", started_at=NOW, check_ids=["unit"])
    assert await store.acquire_run_lock(RID, theirs, 10_000, says=card()) is not None
    assert await wanted(redis_client) == 1


def stale(user: str) -> StaleAsk:
    token = f"tech-lead|{user}|{NOW.isoformat()}"
    signer = {"user": user, "vote": "approve", "label": "Tech Lead", "reason": "new commit"}
    return StaleAsk(token, signer, AuditEvent(type="signoff_stale", actor="gonogo", at=NOW, data={"user": user}))


def run_record(run_id: str = "r1") -> RunRecord:
    return RunRecord(
        run_id=run_id,
        release_id=RID,
        actor="U1",
        started_at=NOW,
        finished_at=NOW,
        check_ids=["unit"],
        verdict=Verdict.NO_GO,
        counts={"fail": 1},
    )


async def test_a_runs_record_its_thread_notices_and_stale_asks_are_one_step_written_once(
    store: Store, redis_client: aioredis.Redis
) -> None:
    await store.open_release(release(), event("opened"))
    # U1's stale sign-off was asked about already (by a move): only U2 is asked now.
    assert [a.token for a in await store.ask_stale(RID, [stale("U1")], lambda asked: Emit("payments"))] == [
        stale("U1").token
    ]
    seen: list[Sequence[StaleAsk]] = []

    def says(asked: Sequence[StaleAsk]) -> Emit:
        seen.append(asked)
        users = ",".join(a.signer["user"] for a in asked)
        return card(RID, thread_note("details of unit"), thread_note(f"stale {users}"))

    assert await store.record_run(run_record(), event("run"), says=says, stale=[stale("U1"), stale("U2")])
    assert [[a.signer["user"] for a in asked] for asked in seen] == [["U2"]]
    assert [n.payload["text"] for n in await queued(redis_client)] == ["details of unit", "stale U2"]
    assert await wanted(redis_client) == 1
    assert await redis_client.smembers(keys.stale_notified(RID)) == {stale("U1").token, stale("U2").token}
    assert [e.type for e in await store.audit(RID)] == ["opened", "signoff_stale", "run", "signoff_stale"]
    assert [r.run_id for r in await store.runs(RID)] == ["r1"]

    # The background recorder repeating it (its answer was lost) writes nothing a second time.
    assert not await store.record_run(run_record(), event("run"), says=says, stale=[stale("U3")])
    assert len(await queued(redis_client)) == 2 and len(await store.runs(RID)) == 1
    assert len(await store.audit(RID)) == 4 and await wanted(redis_client) == 1


async def test_a_stale_signature_is_asked_about_once_by_concurrent_askers(
    store: Store, redis_client: aioredis.Redis
) -> None:
    await store.open_release(release(), event("opened"))

    def says(asked: Sequence[StaleAsk]) -> Emit:
        return Emit("payments", notices=[thread_note("stale " + ",".join(a.signer["user"] for a in asked))])

    outcomes = await asyncio.gather(*(store.ask_stale(RID, [stale("U1"), stale("U2")], says) for _ in range(5)))
    assert sorted(len(asked) for asked in outcomes) == [0, 0, 0, 0, 2]
    assert [n.payload["text"] for n in await queued(redis_client)] == ["stale U1,U2"]
    assert [e.type for e in await store.audit(RID)] == ["opened", "signoff_stale", "signoff_stale"]


async def test_a_commit_move_asks_its_stale_signers_in_its_own_step_and_a_lost_race_writes_nothing(
    store: Store, redis_client: aioredis.Redis
) -> None:
    """The move, its card mark and the re-ask of the sign-offs it makes stale: one step. U1 was asked
    already (an earlier move), so only U2 is; a move from an outdated revision writes nothing."""
    await store.open_release(release(), event("opened"))
    await store.ask_stale(RID, [stale("U1")], lambda asked: Emit("payments"))
    current = await store.get_release(RID)
    assert current is not None

    def says(asked: Sequence[StaleAsk]) -> Emit:
        return card(RID, thread_note("stale " + ",".join(a.signer["user"] for a in asked)))

    moved = current.model_copy(update={"sha": "bbbbbbb"})
    stored = await store.move_release(current, moved, event("sha_moved"), [stale("U1"), stale("U2")], says)
    assert stored is not None and stored.sha == "bbbbbbb" and stored.rev == current.rev + 1
    assert [n.payload["text"] for n in await queued(redis_client)] == ["stale U2"]
    assert await wanted(redis_client) == 1
    assert await redis_client.smembers(keys.stale_notified(RID)) == {stale("U1").token, stale("U2").token}
    assert [e.type for e in await store.audit(RID)] == ["opened", "signoff_stale", "sha_moved", "signoff_stale"]

    # From the revision before that move: refused, and nothing at all is written.
    again = current.model_copy(update={"sha": "ccccccc"})
    assert await store.move_release(current, again, event("sha_moved"), [stale("U3")], says) is None
    assert len(await queued(redis_client)) == 1 and await wanted(redis_client) == 1
    assert len(await store.audit(RID)) == 4 and (await store.get_release(RID)).sha == "bbbbbbb"  # type: ignore[union-attr]
    decided = await store.update_release(stored, stored.model_copy(update={"state": State.DECIDED}), event("decided"))
    assert decided is not None
    with pytest.raises(Conflict):
        await store.move_release(decided, decided.model_copy(update={"sha": "ddddddd"}), event("x"), [], says)
