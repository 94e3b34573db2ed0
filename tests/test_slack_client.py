"""The Slack client: our Retry-After parsing, one gate per method for the whole replica, retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError

from bot.metrics import Metrics
from bot.playground.standin import DEFAULT_BOT_TOKEN, SlackStandIn
from bot.slack.client import Failure, RateLimitedClient, classify
from bot.slack.ratelimit import MethodGate, backoff, parse_retry_after
from tests.redis_server import free_port


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "10"}, 10.0),  # slack_sdk's handler reads "1" here
        ({"retry-after": "30"}, 30.0),
        ({"Retry-After": ["12"]}, 12.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"Retry-After": "soon"}, 1.0),
        ({"Retry-After": "-3"}, 1.0),
        ({}, 1.0),
        (None, 1.0),
    ],
)
def test_retry_after_is_read_whole(headers: dict[str, Any] | None, seconds: float) -> None:
    assert parse_retry_after(headers) == seconds


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 30.0), (50, 30.0)]:
        delays = [backoff(attempt, base=0.5, cap=30.0) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def client(standin: SlackStandIn, session: aiohttp.ClientSession, gate: MethodGate, **kw: Any) -> RateLimitedClient:
    return RateLimitedClient(token=DEFAULT_BOT_TOKEN, base_url=standin.api_url, session=session, gate=gate, **kw)


async def test_a_429_holds_back_that_method_in_every_client_of_the_replica(
    standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    gate, metrics = MethodGate(), Metrics()
    refused = client(standin, http_session, gate, rate_limit_retries=0, metrics=metrics)
    other = client(standin, http_session, gate)
    posted = await other.chat_postMessage(channel="C1", text="card")
    standin.fail_next("chat.update", status=429, retry_after=2)
    with pytest.raises(SlackApiError):
        await refused.chat_update(channel="C1", ts=posted["ts"], text="v2")
    limited_at = standin.calls("chat.update")[0].time

    update = asyncio.create_task(other.chat_update(channel="C1", ts=posted["ts"], text="v3"))
    await other.chat_postMessage(channel="C1", text="another method is not held back")
    assert not update.done()
    await update
    assert standin.calls("chat.update")[-1].time - limited_at >= 2.0
    assert standin.calls("chat.postMessage")[-1].time - limited_at < 2.0
    assert metrics.slack_api_calls.labels(method="chat.update", status="429")._value.get() == 1


async def test_the_client_retries_a_429_after_retry_after_and_bounded_5xx(
    standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    slack = client(standin, http_session, MethodGate(), metrics=metrics, backoff_base_s=0.01)
    standin.fail_next("chat.postMessage", status=429, retry_after=1)
    started = time.monotonic()
    await slack.chat_postMessage(channel="C1", text="hello")
    assert time.monotonic() - started >= 1.0
    standin.fail_next("chat.postMessage", status=503, times=2)
    await slack.chat_postMessage(channel="C1", text="again")
    standin.fail_next("chat.postMessage", status=503, times=3)
    with pytest.raises(SlackApiError) as raised:
        await slack.chat_postMessage(channel="C1", text="gives up after two retries")
    assert classify(raised.value) is Failure.TRANSIENT
    assert [str(m["text"]) for m in standin.messages("C1")] == ["hello", "again"]
    assert metrics.slack_api_calls.labels(method="chat.postMessage", status="5xx")._value.get() == 5
    assert metrics.slack_api_calls.labels(method="chat.postMessage", status="ok")._value.get() == 2


async def test_connection_errors_are_transient(http_session: aiohttp.ClientSession) -> None:
    slack = RateLimitedClient(
        token=DEFAULT_BOT_TOKEN,
        base_url=f"http://127.0.0.1:{free_port()}/api/",
        session=http_session,
        server_error_retries=1,
        backoff_base_s=0.01,
    )
    with pytest.raises(aiohttp.ClientError) as raised:
        await slack.chat_postMessage(channel="C1", text="nobody listens")
    assert classify(raised.value) is Failure.TRANSIENT


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        ("not_in_channel", Failure.NOT_IN_CHANNEL),
        ("channel_not_found", Failure.NOT_IN_CHANNEL),
        ("invalid_auth", Failure.AUTH),
        ("token_revoked", Failure.AUTH),
        ("invalid_blocks", Failure.INVALID_BLOCKS),
        ("internal_error", Failure.TRANSIENT),
        ("msg_too_long", Failure.PERMANENT),
    ],
)
async def test_slack_errors_are_classified(
    standin: SlackStandIn, http_session: aiohttp.ClientSession, error: str, failure: Failure
) -> None:
    slack = client(standin, http_session, MethodGate(), server_error_retries=0)
    standin.fail_next("chat.postMessage", status=200, error=error)
    with pytest.raises(SlackApiError) as raised:
        await slack.chat_postMessage(channel="C1", text="x")
    assert classify(raised.value) is failure
