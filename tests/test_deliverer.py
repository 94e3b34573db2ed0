"""The deliverer: every notice posted once, through 429s, 5xx, crashes and a second replica."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.core.notices import Notice, Target
from bot.playground.standin import SlackStandIn
from bot.store import keys
from bot.store.outbox import GROUP, Emit, Entry, Outbox
from bot.store.store import Store
from tests.delivery_kit import FAST, Cards, Road, notice, now, posted_texts, roads, sent_ok, until


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


async def _append(outbox: Outbox, *notices: Any) -> None:
    by_gate: dict[str, list[Any]] = {}
    for n in notices:
        by_gate.setdefault(n.gate_id, []).append(n)
    for gate, items in by_gate.items():
        await outbox.append(Emit(gate, items))


async def test_notices_are_posted_once_in_order_and_marked_delivered(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    road = Road(redis_client, standin, http_session)
    batch = [notice("pay", i) for i in range(5)] + [notice("web", i, channel="C0WEB") for i in range(3)]
    await _append(road.outbox, *batch)
    async with roads(road):
        await until(lambda: len(sent_ok(standin, "chat.postMessage")) == 8)
        await until(_drained(road.outbox, ["pay", "web"]))
    assert posted_texts(standin, "C0PAY") == [f"pay notice {i}" for i in range(5)]
    assert posted_texts(standin, "C0WEB") == [f"web notice {i}" for i in range(3)]
    ts = await road.outbox.delivered_ts("pay", batch[0].key)
    assert ts == standin.messages("C0PAY")[0]["ts"]
    assert road.metrics.notices_delivered.labels(kind="channel_message")._value.get() == 8
    assert road.metrics.notices_queued.labels(kind="channel_message")._value.get() == 8


def _drained(outbox: Outbox, gates: list[str]) -> Any:
    async def check() -> bool:
        return (await outbox.backlog(gates)).depth == 0

    return check


async def test_a_key_already_delivered_is_never_sent_again(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    road = Road(redis_client, standin, http_session)
    first = notice("pay", 1)
    await _append(road.outbox, first)
    async with roads(road):
        await until(lambda: sent_ok(standin, "chat.postMessage"))
        await until(_drained(road.outbox, ["pay"]))
        await _append(road.outbox, first, notice("pay", 2))  # the same key again, then a new one
        await until(lambda: len(sent_ok(standin, "chat.postMessage")) == 2)
        await until(_drained(road.outbox, ["pay"]))
    assert posted_texts(standin, "C0PAY") == ["pay notice 1", "pay notice 2"]


async def test_card_thread_notices_wait_for_the_card_then_go_into_its_thread(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    cards = Cards(Outbox(redis_client), "C0PAY")
    road = Road(redis_client, standin, http_session, source=cards)
    await _append(road.outbox, notice("pay", 1, card_thread=True, text="details"))
    async with roads(road, refresher=True):
        await cards.change("pay@1.0.0")  # the card is posted by the refresher, after the notice was queued
        reply = await until(lambda: [m for m in standin.messages("C0PAY") if m.get("thread_ts")])
    card = standin.messages("C0PAY")[0]
    assert card["text"] == "pay@1.0.0 state 1"
    assert reply[0]["thread_ts"] == card["ts"] and reply[0]["text"] == "details"


async def test_postmessage_failing_with_500_for_a_while_posts_exactly_once_after_recovery(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    road = Road(redis_client, standin, http_session)
    standin.fail_next("chat.postMessage", status=500, times=25)
    await _append(road.outbox, notice("pay", 1, text="decision record"))
    async with roads(road):
        await until(lambda: sent_ok(standin, "chat.postMessage"))
        await until(_drained(road.outbox, ["pay"]))
    assert len(standin.calls("chat.postMessage")) == 26  # retried through the whole outage, no cap
    assert posted_texts(standin, "C0PAY") == ["decision record"]
    assert road.metrics.notices_failed.labels(kind="channel_message", error="5xx")._value.get() == 25


async def test_after_a_429_no_postmessage_leaves_before_retry_after(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    road = Road(redis_client, standin, http_session)
    standin.fail_next("chat.postMessage", status=429, retry_after=1, times=3)
    # One channel: its calls are sequential, so every call after a 429 left after the client knew.
    await _append(road.outbox, *[notice("pay", i) for i in range(6)])
    async with roads(road):
        await until(lambda: len(sent_ok(standin, "chat.postMessage")) == 6)
    calls = standin.calls("chat.postMessage")
    _assert_retry_after_respected(calls)
    assert road.metrics.slack_api_calls.labels(method="chat.postMessage", status="429")._value.get() == 3


def _assert_retry_after_respected(calls: list[Any]) -> None:
    limited = [c for c in calls if c.status == 429]
    assert limited, "the stand-in never answered 429"
    for refused in limited:
        retry_after = float(refused.headers.get("Retry-After", 0) or 0) or 1.0
        later = [c for c in calls if c.time > refused.time]
        assert all(c.time - refused.time >= retry_after for c in later), (
            f"a call went out {min(c.time - refused.time for c in later):.3f}s after a 429 asking for {retry_after}s"
        )


async def test_a_killed_deliverer_leaves_nothing_behind(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    first = Road(redis_client, standin, http_session, config=_named("first"))
    # Slack told this replica to hold chat.postMessage back for 30 s: it takes the notices and waits.
    first.gate.block("chat.postMessage", 30)
    batch = [notice("pay", i, channel=f"C{i % 3}") for i in range(9)]
    await _append(first.outbox, *batch)
    first.start()
    await until(lambda: first.deliverer.held == 9)
    await first.kill()  # it dies holding every entry
    assert await redis_client.xlen(keys.outbox("pay")) == 9
    assert standin.calls("chat.postMessage") == []

    second = Road(redis_client, standin, http_session, config=_named("second"))
    async with roads(second):
        await until(lambda: len(sent_ok(standin, "chat.postMessage")) == 9)
        await until(_drained(second.outbox, ["pay"]))
    texts = Counter(str(m["text"]) for c in ("C0", "C1", "C2") for m in standin.messages(c))
    assert texts == Counter(f"pay notice {i}" for i in range(9))


async def test_a_burst_to_one_channel_is_left_in_the_stream_for_a_replica_whose_gate_is_open(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    """A replica takes only `lane_hold` notices of a one-channel burst: a 429 shutting its gate holds
    back those few, and the other replicas post the rest meanwhile."""
    shut = Road(redis_client, standin, http_session, config=_named("shut"))
    shut.gate.block("chat.postMessage", 30)
    await shut.outbox.heartbeat("open", 10_000)  # the other replica is alive before this one reads
    await _append(shut.outbox, *[notice("pay", i) for i in range(10)])
    shut.start()
    await until(lambda: shut.deliverer.held == FAST.lane_hold)
    open_ = Road(redis_client, standin, http_session, config=_named("open"))
    async with roads(open_):
        await until(lambda: len(sent_ok(standin, "chat.postMessage")) == 10 - FAST.lane_hold)
        await until(lambda: open_.deliverer.held == 0)
    assert shut.deliverer.held == FAST.lane_hold
    assert standin.calls("chat.postMessage") == sent_ok(standin, "chat.postMessage")  # the shut one sent nothing
    held = await redis_client.xpending_range(keys.outbox("pay"), GROUP, "-", "+", 10)
    assert [h["consumer"] for h in held] == ["shut"] * FAST.lane_hold
    # Waiting, it holds the send lease of the lane's next notice, but a short one: killed outright,
    # it would keep nobody off that notice for long.
    [lease] = await redis_client.keys(keys.sending("pay", "*"))
    assert 0 < await redis_client.pttl(lease) <= FAST.wait_lease_s * 1000
    await shut.kill()
    # Stopped while it waited for its gate, it had sent nothing: its send leases go with it, so
    # whoever claims those notices need not wait the lease out.
    assert not await redis_client.keys(keys.sending("pay", "*"))


async def test_a_deliverer_whose_send_lease_was_taken_while_it_waited_does_not_post(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    """The lease taken before the waits is short; if it runs out (a stalled process) and another
    deliverer takes the notice, the first one lets it go when its gate opens instead of posting too."""
    road = Road(redis_client, standin, http_session, config=_named("slow", wait_lease_s=0.3))
    road.gate.block("chat.postMessage", 1.0)
    first = notice("pay", 1)
    await _append(road.outbox, first)
    async with roads(road):
        await until(lambda: redis_client.exists(keys.sending("pay", first.key)), what="the lease")
        await redis_client.set(keys.sending("pay", first.key), "another-deliverer", px=60_000)
        await until(lambda: road.deliverer.held == 0, what="the slow deliverer to let the notice go")
    assert standin.calls("chat.postMessage") == []


async def test_a_deliverer_alone_reads_a_burst_to_one_channel_at_once(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    """With nobody to share it, holding back a one-channel burst would only keep the gate's other
    lanes waiting behind it."""
    road = Road(redis_client, standin, http_session)
    road.gate.block("chat.postMessage", 30)
    await _append(road.outbox, *[notice("pay", i) for i in range(10)], notice("pay", 99, channel="U0SIGNER"))
    async with roads(road):
        await until(lambda: road.deliverer.held == 11)
        await road.deliverer.stop(grace_s=0)
        # Stopping, it says so: the others read bursts as if alone sooner.
        assert await redis_client.zscore(keys.deliverers(), FAST.consumer) is None


async def test_a_burst_to_many_lanes_of_one_gate_is_read_at_once(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    """Reminder DMs: one gate, a lane per person. Nothing waits behind the one-channel rule."""
    road = Road(redis_client, standin, http_session)
    road.gate.block("chat.postMessage", 30)
    await _append(road.outbox, *[notice("pay", i, channel=f"U{i:04d}") for i in range(40)])
    async with roads(road):
        await until(lambda: road.deliverer.held == 40)


async def test_a_notice_refused_by_a_429_is_posted_by_a_replica_whose_gate_is_open(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    """Retry-After binds the client Slack refused; the notice is offered to the other replicas
    meanwhile, and exactly one of them (or its holder, once its gate opens) posts it."""
    refused = Road(redis_client, standin, http_session, config=_named("refused"))
    other = Road(redis_client, standin, http_session, config=_named("other"))
    standin.fail_next("chat.postMessage", status=429, retry_after=3)
    await _append(refused.outbox, notice("pay", 1))
    async with roads(refused):
        await until(lambda: standin.calls("chat.postMessage"), what="the refused call")
        await until(lambda: redis_client.hlen(keys.outbox_offers("pay")), what="the offer")
        async with roads(other):
            [post] = await until(lambda: sent_ok(standin, "chat.postMessage"))
            assert refused.gate.remaining("chat.postMessage") > 0  # posted while the refused gate was shut
            assert post.time - standin.calls("chat.postMessage")[0].time < 3
            await until(lambda: refused.deliverer.held == 0, what="the refused replica to let it go")
            await until(_drained(other.outbox, ["pay"]))
    assert posted_texts(standin, "C0PAY") == ["pay notice 1"]
    assert other.metrics.notices_delivered.labels(kind="channel_message")._value.get() == 1
    assert refused.metrics.notices_delivered.labels(kind="channel_message")._value.get() == 0
    assert not await redis_client.hlen(keys.outbox_offers("pay"))


async def test_an_offer_nobody_takes_is_taken_back_and_posted_by_its_holder(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    road = Road(redis_client, standin, http_session)
    standin.fail_next("chat.postMessage", status=429, retry_after=1)
    await _append(road.outbox, notice("pay", 1))
    async with roads(road):
        await until(lambda: redis_client.hlen(keys.outbox_offers("pay")), what="the offer")
        await until(lambda: sent_ok(standin, "chat.postMessage"))
        await until(_drained(road.outbox, ["pay"]))
    _assert_retry_after_respected(standin.calls("chat.postMessage"))
    assert posted_texts(standin, "C0PAY") == ["pay notice 1"]
    assert not await redis_client.hlen(keys.outbox_offers("pay"))


async def test_an_offer_left_by_a_dead_deliverer_is_cleared(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    road = Road(redis_client, standin, http_session)
    await road.outbox.register(["pay"])
    long_ago = int((now() - timedelta(minutes=10)).timestamp() * 1000)
    await road.outbox.offer(Entry("pay", "1-0", None), "chat.postMessage", "dead-replica", long_ago)

    async def offer_gone() -> bool:
        # The gate leaves the offering index too: deliverers stop looking at it.
        return not await redis_client.hlen(keys.outbox_offers("pay")) and not await redis_client.smembers(
            keys.outbox_offering()
        )

    async with roads(road):
        await until(offer_gone)


def _named(consumer: str, **changes: Any) -> Any:
    return FAST.__class__(**{**FAST.__dict__, "consumer": consumer, **changes})


async def test_two_deliverers_and_slack_failing_one_call_in_five_post_everything_once(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    outbox = Outbox(redis_client)
    cards = Cards(outbox, "C0CARDS")
    one = Road(redis_client, standin, http_session, config=_named("one"), source=cards)
    two = Road(redis_client, standin, http_session, config=_named("two"), source=cards)
    standin.fail_every(5, status=500)
    gates = ["alpha", "beta", "gamma"]
    batch = [notice(g, i, channel=f"C{g.upper()}{i % 4}") for g in gates for i in range(40)]
    await _append(outbox, *batch)
    async with roads(one, two, refresher=True):
        for step in range(6):
            for g in gates:
                await cards.change(f"{g}@{step % 2}.0.0")
        await until(lambda: len(sent_ok(standin, "chat.postMessage")) >= len(batch), timeout=60)
        await until(_drained(outbox, gates), timeout=60)
        await until(_cards_converged(outbox, cards), timeout=60)
    posted = Counter(str(m["text"]) for g in gates for i in range(4) for m in standin.messages(f"C{g.upper()}{i}"))
    assert posted == Counter(n.payload["text"] for n in batch)  # each exactly once
    assert sum(1 for c in standin.history if c.status == 500) > 10
    shown = {str(m["text"]) for m in standin.messages("C0CARDS")}
    assert shown == {f"{rid} state {state}" for rid, state in cards.state.items()}
    assert len(standin.messages("C0CARDS")) == len(cards.state)  # one card per release, never two
    assert {one.deliverer.held, two.deliverer.held} == {0}


def _cards_converged(outbox: Outbox, cards: Cards) -> Any:
    async def check() -> bool:
        for rid in cards.state:
            record = await outbox.card(rid)
            if record.behind or record.shown == 0:
                return False
        return not await outbox.dirty_cards(sorted({r.partition("@")[0] for r in cards.state}))

    return check


async def test_not_in_channel_tells_the_actor_to_invite_the_bot(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    road = Road(redis_client, standin, http_session)
    standin.channels_without_bot.add("C0SECRET")
    await _append(
        road.outbox,
        notice("pay", 1, channel="C0SECRET", actor="U0ALICE", release="pay@1.0.0"),
        notice("pay", 2, channel="C0SECRET", actor="U0ALICE", release="pay@1.0.0"),
    )
    async with roads(road):
        told = await until(lambda: standin.messages(standin.dm_channel("U0ALICE")))
        await until(_drained(road.outbox, ["pay"]))
    assert len(told) == 1  # once, however many notices failed
    assert "/invite @gonogo" in told[0]["text"] and "<#C0SECRET>" in told[0]["text"]
    assert [c for c in standin.calls("chat.postMessage") if c.args.get("channel") == "C0SECRET"].__len__() == 2
    dead = await road.outbox.dead_letters("pay")
    assert [d["reason"] for d in dead] == ["not_in_channel", "not_in_channel"]
    audit = await Store(redis_client).audit("pay@1.0.0")
    assert [e.type for e in audit] == ["notice_failed", "notice_failed"]


async def test_invalid_blocks_are_not_retried_and_are_audited(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    road = Road(redis_client, standin, http_session)
    bad = notice("pay", 1, release="pay@1.0.0").model_copy(
        update={"payload": {"text": "x", "blocks": [{"type": "section"}]}}
    )
    await _append(road.outbox, bad)
    async with roads(road):
        await until(_drained(road.outbox, ["pay"]))
    assert len(standin.calls("chat.postMessage")) == 1
    assert (await road.outbox.dead_letters("pay"))[0]["reason"] == "invalid_blocks"
    audit = await Store(redis_client).audit("pay@1.0.0")
    assert audit[0].type == "notice_failed" and audit[0].data["kind"] == "channel_message"


async def test_a_revoked_token_fails_readiness_and_keeps_notices_queued(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    road = Road(redis_client, standin, http_session, token="xoxb-revoked")
    await _append(road.outbox, notice("pay", 1))
    async with roads(road):
        await until(lambda: road.deliverer.auth_failed)
        await until(lambda: len(standin.calls("chat.postMessage")) >= 2)  # it keeps trying, slowly
    assert await redis_client.xlen(keys.outbox("pay")) == 1
    assert road.metrics.slack_auth_failed._value.get() == 1
    assert standin.messages("C0PAY") == []


async def test_notices_older_than_the_bound_are_dead_lettered(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    clock = {"now": now()}
    road = Road(
        redis_client, standin, http_session, clock=lambda: clock["now"], config=_named("t", max_age=timedelta(hours=24))
    )
    old = notice("pay", 1, created_at=clock["now"] - timedelta(hours=25))
    await _append(road.outbox, old)
    standin.fail_next("chat.postMessage", status=503, times=1000)  # and one that Slack never takes
    await _append(road.outbox, notice("pay", 2, channel="C0OTHER"))
    async with roads(road):
        await until(lambda: standin.calls("chat.postMessage"))
        clock["now"] += timedelta(hours=24, minutes=1)  # a day of outage passes
        await until(_drained(road.outbox, ["pay"]))
    dead = await road.outbox.dead_letters("pay")
    assert sorted(d["reason"] for d in dead) == ["expired", "expired"]
    assert standin.messages("C0PAY") == [] and standin.messages("C0OTHER") == []
    assert road.metrics.notices_dead_lettered.labels(kind="channel_message", reason="expired")._value.get() == 2


async def test_an_update_replaces_the_message_of_an_earlier_key(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    road = Road(redis_client, standin, http_session)
    original = notice("pay", 1, text="started")
    update = notice("pay", 2, text="passed").model_copy(update={"updates": original.key})
    await _append(road.outbox, original, update)
    async with roads(road):
        await until(lambda: sent_ok(standin, "chat.update"))
        await until(_drained(road.outbox, ["pay"]))
    [shown] = standin.messages("C0PAY")
    assert shown["text"] == "passed" and len(sent_ok(standin, "chat.postMessage")) == 1
    assert await road.outbox.delivered_ts("pay", update.key) == shown["ts"]


async def test_an_update_held_by_another_replica_waits_for_the_original(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    road = Road(redis_client, standin, http_session)
    original = notice("pay", 1, text="started")
    update = notice("pay", 2, text="passed").model_copy(update={"updates": original.key})
    await _append(road.outbox, update)  # as if another replica took the original and is still posting it
    async with roads(road):
        await until(lambda: road.metrics.notices_queued.labels(kind="channel_message")._value.get() == 1)
        assert not sent_ok(standin, "chat.update") and not standin.messages("C0PAY")
        other = Road(redis_client, standin, http_session, config=replace(FAST, consumer="other"))
        async with roads(other):
            await _append(road.outbox, original)
            await until(lambda: sent_ok(standin, "chat.update"))
            await until(_drained(road.outbox, ["pay"]))
    [shown] = standin.messages("C0PAY")
    assert shown["text"] == "passed" and len(sent_ok(standin, "chat.postMessage")) == 1


def test_an_update_goes_to_the_channel_of_what_it_replaces() -> None:
    with pytest.raises(ValueError, match="channel of the message"):
        Notice.model_validate(
            notice("pay", 1).model_dump() | {"updates": "k", "target": {"channel": "C0PAY", "thread_ts": "1.2"}}
        )


async def test_a_reply_goes_into_the_thread_of_an_earlier_notice(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    road = Road(redis_client, standin, http_session)
    parent = notice("pay", 1, text="announcement")
    reply = notice("pay", 2, text="output").model_copy(update={"target": Target.to_thread_of("C0PAY", parent.key)})
    await _append(road.outbox, reply, parent)  # out of order: the reply waits behind its parent
    async with roads(road):
        await until(lambda: len(sent_ok(standin, "chat.postMessage")) == 2)
    [top] = [m for m in standin.messages("C0PAY") if not m.get("thread_ts")]
    assert top["text"] == "announcement"
    assert [m["text"] for m in standin.replies("C0PAY", top["ts"])] == ["output"]
