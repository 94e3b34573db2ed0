"""What a state change says is written with it (issue 8), end to end through the real bot: the answer of
the write is lost on the wire (the bot stops hearing back right after Redis applied it, as if the
process died there), and the card's dirty mark and the run's thread notices are there all the same.
And a card the bot cannot post (it is not in the channel) tells the person who acted to invite it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
import redis.asyncio as aioredis

from bot.core.notices import Notice, notice_key
from bot.core.release import RunRecord
from bot.playground.standin import SlackStandIn
from bot.store import keys
from tests.bot_harness import CHANNEL, RunningBot, bot_settings, reply_to, write_gate
from tests.delivery_kit import until
from tests.fault_proxy import FaultProxy
from tests.redis_server import RedisServer

RID = "payments@1.4.0"
GATE = """
id: {id}
name: {name}
channel: C0DEPLOYS
checks:
  - id: unit
    kind: command
    run: ["python3", "-c", "print('ok')"]
  - id: lint
    kind: command
    run: ["python3", "-c", "print('E501 line too long'); raise SystemExit(1)"]
    severity: advisory
signoffs: []
"""


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.fixture
def gates_dir(tmp_path: Path) -> Path:
    write_gate(tmp_path / "gates", GATE.format(id="payments", name="Payments API"), "payments.yml")
    write_gate(tmp_path / "gates", GATE.format(id="billing", name="Billing"), "billing.yml")
    return tmp_path / "gates"


@pytest.fixture
async def direct(private_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of our own, beside the bot's (whose connection loses the answer)."""
    client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def start(standin: SlackStandIn, redis_url: str, gates_dir: Path, tmp_path: Path) -> RunningBot:
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates_dir, data_dir=tmp_path / "d")
    return await RunningBot(settings).start()


async def command(bot: RunningBot, standin: SlackStandIn, text: str, user: str = "U0ACTOR") -> str:
    url = standin.new_response_url()
    assert (await bot.command(text, response_url=url, user=user)).status == 200
    return str((await reply_to(standin, url, timeout=10))["text"])


def card_posted(standin: SlackStandIn, name: str) -> bool:
    return any(
        c.ok and c.args.get("channel") == CHANNEL and name in json.dumps(c.args.get("blocks"))
        for c in standin.calls("chat.postMessage")
        if "thread_ts" not in c.args
    )


async def test_an_open_whose_answer_is_lost_still_has_its_card_marked_and_posted(
    standin: SlackStandIn, private_redis: RedisServer, direct: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    async with FaultProxy(private_redis.port) as proxy:
        bot = await start(standin, proxy.url, gates_dir, tmp_path)
        try:
            await command(bot, standin, "open billing 2.0")  # loads the scripts an open uses
            await until(lambda: card_posted(standin, "Billing"))
            proxy.lose_answer_after(b'"id":"payments@1.4.0"')
            said = await command(bot, standin, "open payments 1.4.0")
            assert proxy.lost.is_set() and "Could not confirm" in said
            # The release was written, and with it (not after it) the mark that its card is behind.
            assert await direct.exists(keys.release(RID))
            assert int(await direct.hget(keys.card(RID), "wanted") or 0) >= 1
            await until(lambda: card_posted(standin, "Payments API"))
        finally:
            await bot.stop()


async def test_a_runs_thread_notices_are_written_with_its_record(
    standin: SlackStandIn, private_redis: RedisServer, direct: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    async with FaultProxy(private_redis.port) as proxy:
        bot = await start(standin, proxy.url, gates_dir, tmp_path)
        try:
            await command(bot, standin, "open payments 1.4.0")
            await until(lambda: card_posted(standin, "Payments API"))
            proxy.lose_answer_after(b'"counts":{')  # the run's record, as it is written
            await command(bot, standin, f"run {RID}")
            await until(proxy.lost.is_set)
            # Redis applied the record; the bot never heard back. What the run's end says is there.
            (raw,) = await direct.lrange(keys.runs(RID), 0, -1)
            run = RunRecord.model_validate_json(raw)
            details = notice_key("check_details", RID, run.run_id, "lint")
            entries = cast(list[tuple[str, dict[str, str]]], await direct.xrange(keys.outbox("payments")))
            queued = {Notice.from_json(fields["notice"]).key for _, fields in entries}
            assert details in queued or await direct.exists(keys.delivered("payments", details))
            assert int(await direct.hget(keys.card(RID), "wanted") or 0) >= 3  # open, lock, record

            def lint_details() -> list[str]:
                return [
                    str(c.args.get("text"))
                    for c in standin.calls("chat.postMessage")
                    if c.ok and c.args.get("thread_ts") and "lint failed" in str(c.args.get("text"))
                ]

            await until(lint_details)
            assert len(lint_details()) == 1
        finally:
            await bot.stop()


async def test_a_card_the_bot_cannot_post_tells_the_actor_to_invite_it(
    standin: SlackStandIn, redis_url: str, redis_client: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    """(`redis_client` flushes the session's Redis first.)"""
    standin.channels_without_bot.add(CHANNEL)
    bot = await start(standin, redis_url, gates_dir, tmp_path)
    try:
        await command(bot, standin, "open payments 1.4.0", user="U0OPENER")
        told = await standin.wait_for(
            "chat.postMessage", lambda c: c.ok and "/invite @gonogo" in str(c.args.get("text")), timeout=15
        )
        assert told.args["channel"] in ("U0OPENER", standin.dm_channel("U0OPENER"))
        assert f"<#{CHANNEL}>" in str(told.args["text"])
        assert not any(c.ok for c in standin.calls("chat.postMessage") if c.args.get("channel") == CHANNEL)
    finally:
        await bot.stop()
