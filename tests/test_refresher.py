"""The card refresher: renders the current state, one chat.update per card per interval, converges."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.playground.standin import SlackStandIn
from bot.store.outbox import Outbox
from tests.delivery_kit import FAST_CARDS, Cards, Road, roads, until
from tests.test_deliverer import _assert_retry_after_respected, _cards_converged

RID = "pay@1.0.0"


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


def _card_text(standin: SlackStandIn) -> str:
    messages = standin.messages("C0CARDS")
    assert len(messages) == 1, f"expected one card, found {len(messages)}"
    return str(messages[0]["text"])


async def test_chat_update_429s_in_a_row_hold_every_update_back_and_the_card_converges(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    cards = Cards(Outbox(redis_client), "C0CARDS")
    road = Road(redis_client, standin, http_session, source=cards)
    async with roads(road, refresher=True):
        await cards.change(RID)
        await until(lambda: standin.messages("C0CARDS"))
        standin.fail_next("chat.update", status=429, retry_after=1, times=4)
        for _ in range(5):  # a run: results keep arriving while Slack says "slow down"
            await cards.change(RID)
        await until(lambda: len([c for c in standin.calls("chat.update") if c.status == 429]) == 4)
        for _ in range(3):
            await cards.change(RID)
        await until(_cards_converged(cards.outbox, cards))
    _assert_retry_after_respected(standin.calls("chat.update"))
    assert _card_text(standin) == f"{RID} state 9"
    assert road.metrics.card_refresh_lag._sum.get() > 0


async def test_at_most_one_update_per_card_per_interval_and_the_last_state_wins(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    cards = Cards(Outbox(redis_client), "C0CARDS")
    road = Road(redis_client, standin, http_session, source=cards, cards=replace(FAST_CARDS, min_interval_s=0.5))
    async with roads(road, refresher=True):
        for _ in range(30):
            await cards.change(RID)
        await until(_cards_converged(cards.outbox, cards))
    updates = [c.time for c in standin.calls("chat.update")]
    card_posted = standin.calls("chat.postMessage")[0].time
    times = [card_posted, *updates]
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(times)), times
    assert len(updates) < 10  # coalesced, not one per change
    assert _card_text(standin) == f"{RID} state 30"


async def test_a_refresher_that_dies_hands_its_cards_over_and_they_converge(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    cards = Cards(Outbox(redis_client), "C0CARDS")
    first = Road(redis_client, standin, http_session, source=cards)
    first.start(deliverer=False, refresher=True)
    await cards.change(RID)
    await until(lambda: standin.messages("C0CARDS"))
    first.gate.block("chat.update", 60)  # Slack holds the first one back; it dies holding the lease
    await cards.change(RID)
    await until(lambda: first.refresher._cards)
    await first.kill()
    second = Road(redis_client, standin, http_session, source=cards)
    async with roads(second, refresher=True):
        await cards.change(RID)
        await until(_cards_converged(cards.outbox, cards))
    assert _card_text(standin) == f"{RID} state 3"


async def test_two_refreshers_never_update_one_card_at_once(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    cards = Cards(Outbox(redis_client), "C0CARDS")
    one = Road(redis_client, standin, http_session, source=cards, cards=replace(FAST_CARDS, min_interval_s=0.3))
    two = Road(redis_client, standin, http_session, source=cards, cards=replace(FAST_CARDS, min_interval_s=0.3))
    async with roads(one, two, refresher=True):
        for _ in range(20):
            await cards.change(RID)
        await until(_cards_converged(cards.outbox, cards))
    times = [standin.calls("chat.postMessage")[0].time, *(c.time for c in standin.calls("chat.update"))]
    assert all(b - a >= 0.3 for a, b in itertools.pairwise(times)), times
    assert _card_text(standin) == f"{RID} state 20"


async def test_a_deleted_card_is_posted_again(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    cards = Cards(Outbox(redis_client), "C0CARDS")
    road = Road(redis_client, standin, http_session, source=cards)
    async with roads(road, refresher=True):
        await cards.change(RID)
        first = await until(lambda: standin.messages("C0CARDS"))
        standin.messages("C0CARDS")  # someone deletes the card in Slack
        standin._messages["C0CARDS"].clear()
        await cards.change(RID)
        second = await until(lambda: standin.messages("C0CARDS"))
        await until(_cards_converged(cards.outbox, cards))
    assert second[0]["ts"] != first[0]["ts"] and second[0]["text"] == f"{RID} state 2"
    assert (await cards.outbox.card_location(RID)) == ("C0CARDS", second[0]["ts"])
