"""One road to Slack, end to end through the real bot (issue 8): Slack rate-limiting, failing, a
bot killed with notices queued, two bots over one Redis, and a channel the bot is not in.

Retry-After and outages are short here (1-3 s) so the suite stays fast; the behaviour does not
depend on their length."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from bot.core.notices import Notice, Target, notice_key
from bot.playground.standin import SlackStandIn
from bot.store import keys
from bot.store.outbox import GROUP, Emit, Outbox
from tests.bot_harness import CHANNEL, RunningBot, bot_settings, reply_to, write_gate
from tests.delivery_kit import now

RID = "payments@1.4.0"
GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - id: unit-tests
    kind: command
    run: ["python3", "-c", "import time; time.sleep(0.5)"]
    severity: blocker
  - id: lint
    kind: command
    run: ["python3", "-c", "import time; time.sleep(1.5); print('E501'); raise SystemExit(1)"]
    severity: advisory
  - id: build
    kind: command
    run: ["python3", "-c", "import time; time.sleep(2.5)"]
  - id: cache
    kind: command
    run: ["python3", "-c", "import time; time.sleep(3.5)"]
signoffs: []
"""


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.fixture
def gates_dir(tmp_path: Path) -> Path:
    write_gate(tmp_path / "gates", GATE, "payments.yml")
    return tmp_path / "gates"


async def until(find: Callable[[], Any], timeout: float) -> None:
    """Poll `find` (plain or async) until it is truthy, with a deadline (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        found = find()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


def settings_for(standin: SlackStandIn, redis_url: str, gates_dir: Path, data: Path, **extra: Any) -> Any:
    return bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates_dir, data_dir=data, **extra)


def header(args: dict[str, Any]) -> str:
    blocks = args.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return str(blocks[0]["text"]["text"]) if blocks else ""


async def command(bot: RunningBot, standin: SlackStandIn, text: str, user: str = "U01TECH") -> str:
    url = standin.new_response_url()
    reply = await bot.command(text, response_url=url, user=user)
    assert reply.status == 200
    return str((await reply_to(standin, url, timeout=10))["text"])


async def card_ts(standin: SlackStandIn) -> str:
    posted = await standin.wait_for(
        "chat.postMessage", lambda c: c.ok and c.args.get("channel") == CHANNEL and "thread_ts" not in c.args
    )
    return str(posted.response["ts"])


def card_on_slack(standin: SlackStandIn, ts: str) -> dict[str, Any]:
    found = standin.message(CHANNEL, ts)
    assert found is not None
    return dict(found)


def queued(gate: str, n: int, channel: str = CHANNEL) -> Notice:
    return Notice(
        kind="channel_message",
        gate_id=gate,
        target=Target.to_channel(channel),
        payload={"text": f"queued notice {n}"},
        key=notice_key("e2e", gate, str(n)),
        created_at=now(),
    )


def posted_once(standin: SlackStandIn, texts: list[str]) -> dict[str, int]:
    """How often each text was posted (successfully) to the channel."""
    counts = dict.fromkeys(texts, 0)
    for call in standin.calls("chat.postMessage"):
        if call.ok and call.args.get("text") in counts:
            counts[str(call.args["text"])] += 1
    return counts


async def test_429_on_chat_update_during_a_run_waits_retry_after_and_the_card_converges(
    standin: SlackStandIn, redis_url: str, redis_client: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    bot = await RunningBot(settings_for(standin, redis_url, gates_dir, tmp_path / "d")).start()
    try:
        assert "Opened" in await command(bot, standin, "open payments 1.4.0")
        ts = await card_ts(standin)
        standin.fail_next("chat.update", status=429, retry_after=1, times=4)
        assert "Running" in await command(bot, standin, f"run {RID}")

        async def final() -> bool:
            return header(card_on_slack(standin, ts)).startswith("🟢 GO")

        await until(final, timeout=30)
        updates = standin.calls("chat.update")
        limited = [c for c in updates if c.status == 429]
        assert len(limited) == 4
        for refused in limited:
            later = [c for c in updates if c.time > refused.time]
            assert later, "a chat.update after the 429 (the card converged through it)"
            assert min(c.time for c in later) >= refused.time + 1.0  # Retry-After honoured, process-wide
        assert "⏳" not in json.dumps(card_on_slack(standin, ts)["blocks"], ensure_ascii=False)
    finally:
        await bot.stop()


async def test_decision_record_is_posted_exactly_once_after_slack_recovers_from_500s(
    standin: SlackStandIn, redis_url: str, redis_client: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    bot = await RunningBot(settings_for(standin, redis_url, gates_dir, tmp_path / "d")).start()
    try:
        await command(bot, standin, "open payments 1.4.0")
        ts = await card_ts(standin)
        standin.fail_every(1, status=500, methods=["chat.postMessage"])  # Slack is down for posts
        answer = await command(bot, standin, f"decide {RID}")
        assert "decided" in answer.lower() or "NO-GO" in answer
        await until(lambda: len([c for c in standin.calls("chat.postMessage") if c.status == 500]) >= 3, timeout=15)
        standin.fail_every(0)  # recovered

        def records() -> list[Any]:
            return [
                c
                for c in standin.calls("chat.postMessage")
                if c.ok and c.args.get("channel") == CHANNEL and c.response.get("ts") != ts
            ]

        await until(records, timeout=30)
        await until(lambda: standin.calls("chat.postMessage")[-1].status != 500, timeout=5)
        assert len(records()) == 1
        assert RID in str(records()[0].args.get("text"))
    finally:
        await bot.stop()


async def test_notices_queued_when_a_bot_dies_are_delivered_once_after_a_restart(
    standin: SlackStandIn, redis_url: str, redis_client: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    first = await RunningBot(
        settings_for(standin, redis_url, gates_dir, tmp_path / "a", GONOGO_REPLICA="a", GONOGO_NOTICE_CLAIM_IDLE=1)
    ).start()
    second: RunningBot | None = None
    try:
        standin.fail_every(1, status=500, methods=["chat.postMessage"])  # nothing gets through yet
        notices = [queued("payments", n) for n in range(8)]
        await Outbox(redis_client).append(Emit("payments", notices=notices))

        async def held_by_first() -> bool:
            try:
                pending = await redis_client.xpending(keys.outbox("payments"), GROUP)
            except redis.exceptions.ResponseError:  # the group is made by the deliverer's first read
                return False
            return int(pending["pending"]) == len(notices)

        await until(held_by_first, timeout=10)  # the first bot took them all, and sent none
        await first.crash_road()  # killed: nothing acknowledged, nothing released
        standin.fail_every(0)
        second = await RunningBot(
            settings_for(standin, redis_url, gates_dir, tmp_path / "b", GONOGO_REPLICA="b", GONOGO_NOTICE_CLAIM_IDLE=1)
        ).start()
        texts = [f"queued notice {n}" for n in range(8)]
        await until(lambda: all(posted_once(standin, texts).values()), timeout=30)
        assert posted_once(standin, texts) == dict.fromkeys(texts, 1)
        assert await redis_client.xlen(keys.outbox("payments")) == 0
    finally:
        if second is not None:
            await second.stop()
        await first.stop()


async def test_two_bots_over_one_redis_with_slack_failing_one_call_in_five(
    standin: SlackStandIn, redis_url: str, redis_client: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    one = await RunningBot(settings_for(standin, redis_url, gates_dir, tmp_path / "1", GONOGO_REPLICA="one")).start()
    two = await RunningBot(settings_for(standin, redis_url, gates_dir, tmp_path / "2", GONOGO_REPLICA="two")).start()
    try:
        standin.fail_every(5, status=500, methods=["chat.postMessage", "chat.update"])
        await command(one, standin, "open payments 1.4.0")
        ts = await card_ts(standin)
        notices = [queued("payments", n) for n in range(20)]
        await Outbox(redis_client).append(Emit("payments", notices=notices))
        await command(two, standin, f"run {RID}")

        async def ran_to_the_end() -> bool:
            return bool(await redis_client.llen("gonogo:{g:payments}:r:1.4.0:runs"))

        await until(ran_to_the_end, timeout=30)
        await command(one, standin, f"decide {RID}")
        texts = [f"queued notice {n}" for n in range(20)]
        await until(lambda: all(posted_once(standin, texts).values()), timeout=40)
        assert posted_once(standin, texts) == dict.fromkeys(texts, 1)

        async def converged() -> bool:
            wanted, shown = await redis_client.hmget("gonogo:{g:payments}:r:1.4.0:card", ["wanted", "shown"])
            return int(wanted or 0) == int(shown or 0) and "DECIDED" in header(card_on_slack(standin, ts)).upper()

        await until(converged, timeout=30)

        # One card, one decision record, each lint detail once.
        def top_level() -> list[dict[str, Any]]:
            return [m for m in standin.messages(CHANNEL) if not m.get("thread_ts") or m["thread_ts"] == m["ts"]]

        def decision_records() -> list[dict[str, Any]]:
            return [m for m in top_level() if m["ts"] != ts and "queued notice" not in str(m.get("text"))]

        await until(decision_records, timeout=30)  # behind the 20 notices: one message a second there
        assert len([m for m in top_level() if m["ts"] == ts]) == 1
        records = decision_records()
        assert len(records) == 1, [(m.get("text"), m.get("thread_ts")) for m in standin.messages(CHANNEL)]

        def details() -> list[dict[str, Any]]:
            return [m for m in standin.replies(CHANNEL, ts) if "lint" in str(m.get("text"))]

        await until(details, timeout=30)
        assert len(details()) == 1
    finally:
        standin.fail_every(0)
        await two.stop()
        await one.stop()


async def test_not_in_channel_tells_the_actor_to_invite_the_bot(
    standin: SlackStandIn, redis_url: str, redis_client: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    bot = await RunningBot(settings_for(standin, redis_url, gates_dir, tmp_path / "d")).start()
    try:
        await command(bot, standin, "open payments 1.4.0")
        await card_ts(standin)
        standin.channels_without_bot.add(CHANNEL)  # someone removed the bot from the channel
        await command(bot, standin, f"decide {RID}", user="U0DECIDER")
        told = await standin.wait_for(
            "chat.postMessage", lambda c: c.ok and "/invite @gonogo" in str(c.args.get("text")), timeout=15
        )
        assert told.args["channel"] in ("U0DECIDER", standin.dm_channel("U0DECIDER"))
        assert f"<#{CHANNEL}>" in str(told.args["text"])
    finally:
        await bot.stop()
