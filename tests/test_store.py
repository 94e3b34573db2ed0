"""The store against a real Redis: atomic opens, compare-and-set, the run lock, the audit stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import cast

import pytest
import redis.asyncio as aioredis

from bot.core.decision import Verdict
from bot.core.errors import CommitMoved, Conflict, Forbidden, StoreUnavailable
from bot.core.facts import OverrideApproval, OverrideRequest, Signature, Vote
from bot.core.notices import Notice, Target, notice_key
from bot.core.release import Release, RunLease, RunRecord, State
from bot.core.results import CheckResult, Status
from bot.store import keys
from bot.store.outbox import Emit
from bot.store.store import ANY_COMMIT, AuditEvent, Fact, OverrideChanged, Store
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


# --- preconditions checked in the write itself ----------------------------------------------------


async def opened(store: Store, sha: str | None = "abc1234") -> Release:
    _, found = await store.open_release(release(sha=sha), event())
    assert isinstance(found, Release)
    return found


async def decided(store: Store) -> Release:
    doc = await opened(store)
    moved = await store.update_release(
        doc,
        doc.model_copy(
            update={"state": State.DECIDED, "decided_verdict": Verdict.NO_GO, "decided_by": "U9", "decided_at": NOW}
        ),
        event("decided"),
    )
    assert moved is not None
    return moved


def vote(sha: str | None = "abc1234") -> Signature:
    return Signature(role="tech-lead", user="U2", vote=Vote.APPROVE, at=NOW, sha=sha)


async def test_a_fact_is_refused_with_nothing_written_when_the_release_is_decided(
    store: Store, redis_client: aioredis.Redis
) -> None:
    doc = await decided(store)
    before = await redis_client.xlen(keys.audit(doc.id))
    with pytest.raises(Conflict, match=r"was decided NO-GO at 12:00 UTC by \{@U9\}; `/gonogo reopen payments@1.4.0`"):
        await store.put_fact(Fact.SIGNATURES, doc.id, "tech-lead|U2", vote(), event("signed"), handled="U2:1")
    with pytest.raises(Conflict):
        await store.delete_fact(Fact.MANUAL, doc.id, "pen-test", event("manual_reopened"))
    assert await redis_client.hgetall(keys.signatures(doc.id)) == {}
    assert await redis_client.exists(keys.handled(doc.id, "U2:1")) == 0  # a retry is not "already handled"
    assert await redis_client.xlen(keys.audit(doc.id)) == before


async def test_a_vote_for_another_commit_is_refused_by_the_write(store: Store, redis_client: aioredis.Redis) -> None:
    doc = await opened(store, sha="bbbbbbb")
    with pytest.raises(CommitMoved, match="the release moved to bbbbbbb since this card was drawn"):
        await store.put_fact(Fact.SIGNATURES, doc.id, "tech-lead|U2", vote("aaaaaaa"), event("signed"), sha="aaaaaaa")
    with pytest.raises(CommitMoved):  # a card drawn before the release had a commit
        await store.put_fact(Fact.SIGNATURES, doc.id, "tech-lead|U2", vote(None), event("signed"), sha=None)
    assert await redis_client.hgetall(keys.signatures(doc.id)) == {}
    outcome, _ = await store.put_fact(
        Fact.SIGNATURES, doc.id, "tech-lead|U2", vote("bbbbbbb"), event("signed"), sha="bbbbbbb"
    )
    assert outcome == "written"


async def test_the_run_lock_is_refused_once_decided(store: Store, redis_client: aioredis.Redis) -> None:
    doc = await decided(store)
    lease = RunLease(token="d" * 32, actor="U1", started_at=NOW, check_ids=["x"])
    with pytest.raises(Conflict, match="was decided NO-GO"):
        await store.acquire_run_lock(doc.id, lease, 10_000)
    assert await store.current_run(doc.id) is None


async def test_a_state_move_checks_the_state_it_moves_from(store: Store) -> None:
    doc = await opened(store)
    closed = await store.update_release(doc, doc.model_copy(update={"state": State.CLOSED}), event("closed"))
    assert closed is not None
    # A decide that read "open" before the close: its retry must not turn the closed release decided.
    with pytest.raises(Conflict, match="is closed"):
        await store.update_release(
            closed, closed.model_copy(update={"state": State.DECIDED}), event("decided"), expect=(State.OPEN,)
        )
    stored = await store.get_release(doc.id)
    assert stored is not None and stored.state is State.CLOSED
    assert [e.type for e in await store.audit(doc.id)] == ["opened", "closed"]


async def test_reopen_while_another_release_holds_the_open_pointer_writes_nothing(store: Store) -> None:
    doc = await opened(store)
    closed = await store.update_release(doc, doc.model_copy(update={"state": State.CLOSED}), event("closed"))
    assert closed is not None
    assert (await store.open_release(release("1.5.0"), event()))[0] == "opened"
    with pytest.raises(Conflict, match=r"payments@1\.5\.0 is open: close it first"):
        await store.update_release(closed, closed.model_copy(update={"state": State.OPEN}), event("reopened"))
    stored = await store.get_release(doc.id)
    assert stored is not None and stored.state is State.CLOSED and stored.rev == closed.rev
    assert [e.type for e in await store.audit(doc.id)] == ["opened", "closed"]
    assert await store.open_release_id("payments") == "payments@1.5.0"


def override_request(request_id: str, by: str = "U1", sha: str | None = "abc1234") -> OverrideRequest:
    return OverrideRequest(id=request_id, requested_by=by, reason="hotfix", at=NOW, sha=sha)


async def test_concurrent_override_requests_make_exactly_one(store: Store) -> None:
    doc = await opened(store)
    outcomes = await asyncio.gather(
        *(
            store.set_override(
                doc.id,
                current_id=None,
                request_json=override_request(f"r{i}").model_dump_json(),
                sha=doc.sha,
                event=event("override_requested"),
            )
            for i in range(10)
        ),
        return_exceptions=True,
    )
    assert sum(1 for o in outcomes if o is None) == 1
    assert all(isinstance(o, OverrideChanged) for o in outcomes if o is not None)
    assert [e.type for e in await store.audit(doc.id)].count("override_requested") == 1


async def test_an_override_request_and_its_notices_are_one_step(store: Store, redis_client: aioredis.Redis) -> None:
    """Concurrent requests: one is written, with its announcement and its card's dirty mark; the
    refused ones leave no notice behind (never write, then error)."""
    doc = await opened(store)

    def says(n: int) -> Emit:
        announce = Notice(
            kind="channel_message",
            gate_id="payments",
            release_id=doc.id,
            target=Target.to_channel("C0DEPLOYS"),
            payload={"text": f"request r{n}"},
            key=notice_key("override-request", f"r{n}"),
            created_at=NOW,
        )
        return Emit("payments", notices=[announce], card_of=doc.id, at=NOW)

    outcomes = await asyncio.gather(
        *(
            store.set_override(
                doc.id,
                current_id=None,
                request_json=override_request(f"r{i}").model_dump_json(),
                sha=doc.sha,
                event=event("override_requested"),
                says=says(i),
            )
            for i in range(5)
        ),
        return_exceptions=True,
    )
    (written,) = [i for i, o in enumerate(outcomes) if o is None]
    queued = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.outbox("payments")))
    assert [Notice.from_json(fields["notice"]).payload["text"] for _, fields in queued] == [f"request r{written}"]
    assert await redis_client.hget(keys.card(doc.id), "wanted") == "1"
    assert await redis_client.smembers(keys.cards_dirty("payments")) == {doc.id}


async def test_an_approval_of_a_replaced_request_is_refused_and_never_counts_for_the_new_one(
    store: Store, redis_client: aioredis.Redis
) -> None:
    doc = await opened(store)
    await store.set_override(
        doc.id, current_id=None, request_json=override_request("A").model_dump_json(), sha=doc.sha, event=event()
    )
    # The approver clicked A's button; before its write, A is cancelled and B requested.
    await store.set_override(doc.id, current_id="A", request_json=None, sha=ANY_COMMIT, event=event())
    await store.set_override(
        doc.id, current_id=None, request_json=override_request("B").model_dump_json(), sha=doc.sha, event=event()
    )
    approval = OverrideApproval(role="cto", user="U3", at=NOW)
    with pytest.raises(OverrideChanged, match="no longer current"):
        await store.approve_override(doc.id, "A", approval, event("override_approved"))
    assert await store.override_approvals(doc.id, "B") == {}
    assert await store.override_approvals(doc.id, "A") == {}
    assert "override_approved" not in [e.type for e in await store.audit(doc.id)]


async def test_override_approvals_count_each_person_once_and_never_the_requester(store: Store) -> None:
    doc = await opened(store)
    await store.set_override(
        doc.id, current_id=None, request_json=override_request("A").model_dump_json(), sha=doc.sha, event=event()
    )
    with pytest.raises(Forbidden):
        await store.approve_override(doc.id, "A", OverrideApproval(role="cto", user="U1", at=NOW), event())
    both = await asyncio.gather(
        store.approve_override(doc.id, "A", OverrideApproval(role="cto", user="U3", at=NOW), event()),
        store.approve_override(doc.id, "A", OverrideApproval(role="senior", user="U3", at=NOW), event()),
    )
    assert sorted(outcome for outcome, _ in both) == ["counted", "written"]
    assert list(await store.override_approvals(doc.id, "A")) == ["U3"]


async def test_decide_retries_on_a_change_to_anything_it_read(store: Store, redis_client: aioredis.Redis) -> None:
    """A vote lands between decide's reads and its write (deterministically: from inside `build`):
    the WATCH makes the transaction start again, and the second attempt sees the vote."""
    doc = await opened(store)
    seen: list[int] = []

    async def build(current: Release, running: bool) -> tuple[Release, str, AuditEvent]:
        votes = await store.facts(Fact.SIGNATURES, current.id)
        seen.append(len(votes))
        if len(seen) == 1:  # someone votes right now
            await store.put_fact(Fact.SIGNATURES, current.id, "tech-lead|U2", vote(), event("signed"))
        new = current.model_copy(update={"state": State.DECIDED})
        return new, json.dumps({"votes": len(votes)}), event("decided")

    stored = await store.decide_release(doc, build)
    assert seen == [0, 1]
    assert stored.state is State.DECIDED and stored.rev == doc.rev + 1
    assert json.loads(await redis_client.get(keys.bundle(doc.id)) or "{}") == {"votes": 1}
    assert [e.type for e in await store.audit(doc.id)] == ["opened", "signed", "decided"]


async def test_decide_is_refused_while_a_run_holds_the_lock(store: Store) -> None:
    doc = await opened(store)
    await store.acquire_run_lock(doc.id, RunLease(token="e" * 32, actor="U1", started_at=NOW, check_ids=[]), 10_000)

    async def build(current: Release, running: bool) -> tuple[Release, str, AuditEvent]:
        if running:
            raise Conflict("running")
        raise AssertionError("a run holds the lock")

    with pytest.raises(Conflict, match="running"):
        await store.decide_release(doc, build)


# --- a person's fact says what it changes in its own step (issue 8) -------------------------------


async def card_wanted(redis_client: aioredis.Redis, release_id: str) -> int:
    return int(await redis_client.hget(keys.card(release_id), "wanted") or 0)


async def test_a_fact_marks_its_card_dirty_in_the_same_step_and_only_when_it_changes_something(
    store: Store, redis_client: aioredis.Redis
) -> None:
    doc = await opened(store)
    dirty = Emit("payments", card_of=doc.id, at=NOW)
    # After the write call alone (nothing else runs): the fact, its audit entry and the dirty mark.
    outcome, _ = await store.put_fact(Fact.SIGNATURES, doc.id, "tech-lead|U2", vote(), event("signed"), says=dirty)
    assert outcome == "written" and await card_wanted(redis_client, doc.id) == 1
    assert await redis_client.smembers(keys.cards_dirty("payments")) == {doc.id}
    assert int(await redis_client.hget(keys.card(doc.id), "wanted_at") or 0) == int(NOW.timestamp() * 1000)
    # The same vote again (a double click) and a retried click change nothing: no new revision.
    same = ("vote", "sha")
    assert (await store.put_fact(Fact.SIGNATURES, doc.id, "tech-lead|U2", vote(), event(), same_when=same, says=dirty))[
        0
    ] == "unchanged"
    await store.put_fact(Fact.MANUAL, doc.id, "pen-test", vote(), event(), handled="c1", says=dirty)
    assert (await store.put_fact(Fact.MANUAL, doc.id, "pen-test", vote(), event(), handled="c1", says=dirty))[
        0
    ] == "duplicate"
    assert await card_wanted(redis_client, doc.id) == 2
    # Removing: the dirty mark comes with the removal, and nothing when there was nothing to remove.
    assert await store.delete_fact(Fact.MANUAL, doc.id, "pen-test", event("manual_reopened"), says=dirty)
    assert await store.delete_fact(Fact.MANUAL, doc.id, "pen-test", event("manual_reopened"), says=dirty) is None
    assert await card_wanted(redis_client, doc.id) == 3
    # Refused (the release moved): nothing is written, not even the dirty mark.
    with pytest.raises(CommitMoved):
        moved = vote("fff0000")
        await store.put_fact(Fact.SIGNATURES, doc.id, "tech-lead|U3", moved, event(), sha="fff0000", says=dirty)
    assert await card_wanted(redis_client, doc.id) == 3


def quorum_says(
    doc: Release, needed: int, calls: list[int]
) -> Callable[[str, dict[str, str]], Awaitable[tuple[list[AuditEvent], Emit]]]:
    """An approval's `says` as the sign-off service computes it: announce when this approval's
    transaction sees the quorum completed by it (and not before)."""

    async def says(request_json: str, approvals: dict[str, str]) -> tuple[list[AuditEvent], Emit]:
        calls.append(len(approvals))
        if len(approvals) != needed:
            return [], Emit("payments", card_of=doc.id, at=NOW)
        notice = Notice(
            kind="override_active",
            gate_id="payments",
            release_id=doc.id,
            target=Target.to_channel("C0DEPLOYS"),
            payload={"approvers": sorted(approvals)},
            key=notice_key("override-active", json.loads(request_json)["id"]),
            created_at=NOW,
        )
        return [event("override_active")], Emit("payments", notices=[notice], card_of=doc.id, at=NOW)

    return says


async def test_two_racing_approvals_that_complete_the_quorum_announce_it_exactly_once(
    store: Store, redis_client: aioredis.Redis
) -> None:
    """Interleaved deterministically: U3's transaction has read the approvals (none) when U4's
    approval lands in full. U3's WATCH makes it start over, and it is the one that completes the
    quorum: one announcement, one override_active entry, written with the approval itself."""
    doc = await opened(store)
    await store.set_override(
        doc.id, current_id=None, request_json=override_request("A").model_dump_json(), sha=doc.sha, event=event()
    )
    first: list[int] = []
    second: list[int] = []
    inner = quorum_says(doc, 2, first)

    async def racing(request_json: str, approvals: dict[str, str]) -> tuple[list[AuditEvent], Emit]:
        if not first:  # U4 approves right now, between U3's reads and its write
            approval = OverrideApproval(role="senior", user="U4", at=NOW)
            await store.approve_override(doc.id, "A", approval, event(), says=quorum_says(doc, 2, second))
        return await inner(request_json, approvals)

    outcome, _ = await store.approve_override(
        doc.id, "A", OverrideApproval(role="senior", user="U3", at=NOW), event("override_approved"), says=racing
    )
    assert outcome == "written"
    assert second == [1] and first == [1, 2]  # U3 started over and saw U4's approval
    queued = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.outbox("payments")))
    notices = [Notice.from_json(fields["notice"]) for _, fields in queued]
    assert [(n.kind, n.payload["approvers"]) for n in notices] == [("override_active", ["U3", "U4"])]
    assert [e.type for e in await store.audit(doc.id)].count("override_active") == 1
    assert await card_wanted(redis_client, doc.id) == 2  # each approval moved the card


async def test_a_refused_approval_says_nothing(store: Store, redis_client: aioredis.Redis) -> None:
    doc = await opened(store)
    await store.set_override(
        doc.id, current_id=None, request_json=override_request("A").model_dump_json(), sha=doc.sha, event=event()
    )
    calls: list[int] = []
    with pytest.raises(Forbidden):
        await store.approve_override(
            doc.id, "A", OverrideApproval(role="cto", user="U1", at=NOW), event(), says=quorum_says(doc, 1, calls)
        )
    with pytest.raises(OverrideChanged):
        await store.approve_override(
            doc.id, "B", OverrideApproval(role="cto", user="U3", at=NOW), event(), says=quorum_says(doc, 1, calls)
        )
    assert calls == [] and await card_wanted(redis_client, doc.id) == 0
    assert await redis_client.xlen(keys.outbox("payments")) == 0
