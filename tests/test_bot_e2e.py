"""The bot end to end: signed Slack requests in, the Slack stand-in and real Redis behind it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.playground.standin import SlackStandIn
from bot.slack.blocks import ACTION_RUN
from bot.store import keys
from tests.bot_harness import (
    CHANNEL,
    TEAM,
    RunningBot,
    bot_settings,
    form,
    reply_to,
    running_bot,
    signature_headers,
    slash_command,
    state_keys,
    write_gate,
)
from tests.redis_server import RedisServer

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - id: unit-tests
    name: Unit tests
    kind: command
    run: ["python3", "-c", "import time; time.sleep(0.6)"]
    severity: blocker
  - id: lint
    kind: command
    run: ["python3", "-c", "print('E501 line too long'); raise SystemExit(1)"]
    severity: advisory
  - id: cache
    kind: command
    run: ["python3", "-c", "print('ok')"]
signoffs: []
"""

SLOW_GATE = """
id: slow
name: Slow
channel: C0DEPLOYS
checks:
  - id: nap
    kind: command
    run: ["python3", "-c", "import time; time.sleep(2)"]
"""


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.fixture
def gates_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "gates"
    write_gate(directory, GATE, "payments.yml")
    write_gate(directory, SLOW_GATE, "slow.yml")
    return directory


@pytest.fixture
async def bot(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, gates_dir: Path, tmp_path: Path
) -> AsyncIterator[RunningBot]:
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates_dir, data_dir=tmp_path / "data")
    running = await RunningBot(settings).start()
    try:
        yield running
    finally:
        await running.stop()


def header_of(message: dict[str, Any]) -> str:
    blocks = message.get("blocks") or []
    return str(blocks[0]["text"]["text"]) if blocks else ""


async def open_release(bot: RunningBot, standin: SlackStandIn, text: str = "open payments 1.4.0 abc1234") -> str:
    url = standin.new_response_url()
    reply = await bot.command(text, response_url=url)
    assert reply.status == 200
    posted = await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL and c.ok)
    return str(posted.response["ts"])


async def test_url_verification_answers_the_challenge(bot: RunningBot) -> None:
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = json.dumps({"token": "x", "challenge": challenge, "type": "url_verification"}).encode()
    reply = await bot.signed(body, content_type="application/json")
    assert reply.status == 200
    assert challenge in reply.text


async def test_forged_signature_is_rejected_and_nothing_happens(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    body = form(slash_command("open payments 1.4.0", response_url=standin.new_response_url()))
    headers = signature_headers(body, secret="not-the-secret")
    reply = await bot.post(body, headers)
    assert reply.status == 401
    await asyncio.sleep(0.3)
    assert standin.calls("chat.postMessage") == []
    assert standin.responses == []
    assert await state_keys(redis_client) == []


async def test_stale_timestamp_is_rejected(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    body = form(slash_command("open payments 1.4.0", response_url=standin.new_response_url()))
    reply = await bot.post(body, signature_headers(body, timestamp=int(time.time()) - 6 * 60))
    assert reply.status == 401
    await asyncio.sleep(0.3)
    assert standin.calls("chat.postMessage") == []
    assert await state_keys(redis_client) == []


async def test_unsigned_request_is_rejected(bot: RunningBot, standin: SlackStandIn) -> None:
    body = form(slash_command("list", response_url=standin.new_response_url()))
    reply = await bot.post(body, {})
    assert reply.status == 401


@pytest.mark.parametrize("text", ["", "help", "frobnicate now"])
async def test_help_for_empty_and_unknown_text(bot: RunningBot, standin: SlackStandIn, text: str) -> None:
    url = standin.new_response_url()
    reply = await bot.command(text, response_url=url)
    assert reply.status == 200
    response = await reply_to(standin, url)
    assert response["response_type"] == "ephemeral"
    assert "/gonogo open &lt;gate&gt; &lt;version&gt; [sha]" in response["text"]  # Slack shows < and >
    if text.startswith("frobnicate"):
        assert "Unknown subcommand `frobnicate`" in response["text"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("open nope 1.0", "unknown gate 'nope' (known gates: payments, slow)"),
        ("open payments 1.0 abc1234 extra", "unexpected extra words: 'extra'"),
        ("open payments bad/version", "bad version 'bad/version'"),
        ("open payments 1.0 not-a-sha", "bad commit 'not-a-sha'"),
        ("run payments@9.9.9", "no release 'payments@9.9.9'"),
        ("status nope", "unknown gate 'nope'"),
        ("run", "missing arguments. Usage: `/gonogo run &lt;release&gt; [check-id ...]`"),
    ],
)
async def test_bad_input_gets_a_clear_ephemeral_and_changes_nothing(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis, text: str, expected: str
) -> None:
    url = standin.new_response_url()
    await bot.command(text, response_url=url)
    response = await reply_to(standin, url)
    assert response["response_type"] == "ephemeral"
    assert expected in response["text"]
    assert standin.calls("chat.postMessage") == []
    assert await state_keys(redis_client) == []


async def test_open_posts_the_card_and_run_updates_it_to_the_final_verdict(
    bot: RunningBot, standin: SlackStandIn
) -> None:
    url = standin.new_response_url()
    reply = await bot.command("open payments 1.4.0 abc1234", response_url=url)
    assert reply.status == 200 and reply.elapsed < 1.0
    posted = await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL)
    card_ts = str(posted.response["ts"])
    assert header_of(posted.args).startswith("🔴 NO-GO · Payments API 1.4.0")
    opened = await reply_to(standin, url)
    assert "Opened payments@1.4.0" in opened["text"]

    run_url = standin.new_response_url()
    reply = await bot.command("run payments@1.4.0", response_url=run_url)
    assert reply.status == 200 and reply.elapsed < 1.0
    ack = await reply_to(standin, run_url)
    assert "Running 3 check(s) of payments@1.4.0" in ack["text"]

    # The card converges on the verdict (lint is advisory, so GO). The refresher shows the state as it
    # is when it updates, at most once a second: a run this short may never show ⏳ (see
    # test_card_updates_are_coalesced for a run that does).
    final = await standin.wait_for(
        "chat.update", lambda c: header_of(c.args).startswith("🟢 GO · Payments API"), timeout=10
    )
    assert final.args["ts"] == card_ts
    card = standin.message(CHANNEL, card_ts)
    assert card is not None
    assert header_of(card).startswith("🟢 GO")
    # The advisory failure's output tail went to the card's thread, not into the card.
    detail = await standin.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == card_ts)
    assert "E501 line too long" in str(detail.args["blocks"])
    assert "E501" not in str(card["blocks"])


async def test_card_updates_are_coalesced(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, gates_dir: Path, tmp_path: Path
) -> None:
    many = "\n".join(
        f"""  - id: c{i}
    kind: command
    run: ["python3", "-c", "import time; time.sleep({0.05 * i:.2f})"]"""
        for i in range(30)
    )
    write_gate(gates_dir, f"id: many\nname: Many\nchannel: C0DEPLOYS\nchecks:\n{many}\n", "many.yml")
    # The bot's own pace (the harness speeds it up for the other tests): one chat.update a second.
    settings = bot_settings(
        api_url=standin.api_url, redis_url=redis_url, gates=gates_dir, data_dir=tmp_path / "d", GONOGO_CARD_INTERVAL=1
    )
    async with running_bot(settings) as bot:
        await open_release(bot, standin, "open many 1.0")
        started = time.monotonic()
        await bot.command("run many@1.0", response_url=standin.new_response_url())
        await standin.wait_for("chat.update", lambda c: header_of(c.args).startswith("🟢 GO"), timeout=15)
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.3)
        updates = len(standin.calls("chat.update"))
    # 30 results over ~1.5 s: at most one update per second plus the first (⏳) and the final one.
    assert updates <= elapsed + 3, (updates, elapsed)


async def test_two_concurrent_runs_start_one(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await open_release(bot, standin, "open slow 1.0")
    first, second = standin.new_response_url(), standin.new_response_url()
    await asyncio.gather(
        bot.command("run slow@1.0", response_url=first), bot.command("run slow@1.0", response_url=second)
    )
    answers = [
        (await reply_to(standin, first))["text"],
        (await reply_to(standin, second))["text"],
    ]
    assert sum("Running 1 check(s)" in a for a in answers) == 1, answers
    assert sum("already running" in a for a in answers) == 1, answers
    await standin.wait_for("chat.update", lambda c: header_of(c.args).startswith("🟢 GO"), timeout=10)
    await asyncio.sleep(0.3)
    runs = await redis_client.llen(keys.runs("slow@1.0"))
    assert runs == 1


async def test_run_button_runs_the_checks(bot: RunningBot, standin: SlackStandIn) -> None:
    await open_release(bot, standin)
    url = standin.new_response_url()
    reply = await bot.click(ACTION_RUN, "payments@1.4.0", response_url=url, user="U02SRE")
    assert reply.status == 200 and reply.elapsed < 1.0
    final = await standin.wait_for("chat.update", lambda c: header_of(c.args).startswith("🟢 GO"), timeout=10)
    assert "<@U02SRE>" in str(final.args["blocks"])


async def test_metrics_count_check_results_and_runs(bot: RunningBot, standin: SlackStandIn) -> None:
    await open_release(bot, standin)
    await bot.command("run payments@1.4.0", response_url=standin.new_response_url())
    await standin.wait_for("chat.update", lambda c: header_of(c.args).startswith("🟢 GO"), timeout=10)

    async def counted() -> str | None:
        text = (await bot.get("/metrics")).text
        return text if 'gonogo_runs_total{verdict="GO"} 1.0' in text else None

    deadline = asyncio.get_running_loop().time() + 10
    while (text := await counted()) is None:
        assert asyncio.get_running_loop().time() < deadline, "the run was never counted"
        await asyncio.sleep(0.05)
    assert 'gonogo_check_results_total{kind="command",status="pass"} 2.0' in text
    assert 'gonogo_check_results_total{kind="command",status="fail"} 1.0' in text
    assert "gonogo_run_seconds_count 1.0" in text


async def test_status_lists_open_releases_and_reposts_a_card(bot: RunningBot, standin: SlackStandIn) -> None:
    first_ts = await open_release(bot, standin)
    url = standin.new_response_url()
    await bot.command("status", response_url=url)
    listing = await reply_to(standin, url)
    assert "payments@1.4.0" in listing["text"]

    await bot.command("status payments", response_url=standin.new_response_url())
    reposted = await standin.wait_for("chat.postMessage", lambda c: c.response.get("ts") != first_ts)
    assert header_of(reposted.args).startswith("🔴 NO-GO")
    # The old card now points at the new one.
    old = await standin.wait_for("chat.update", lambda c: c.args.get("ts") == first_ts)
    assert "moved to the bottom" in old.args["text"]


async def test_status_elsewhere_is_refused_to_non_members(bot: RunningBot, standin: SlackStandIn) -> None:
    # The gate's channel may be private; outside it only role members see the card (this gate has
    # no roles). A member sees it privately: tests/test_hostile_input.py.
    await open_release(bot, standin)
    url = standin.new_response_url()
    await bot.command("status payments@1.4.0", response_url=url, channel="C0ELSEWHERE")
    private = await reply_to(standin, url)
    assert private["response_type"] == "ephemeral"
    assert "shown only in its gate's channel" in private["text"]
    assert "blocks" not in private


async def test_health_endpoints(bot: RunningBot) -> None:
    assert (await bot.get("/healthz")).status == 200
    ready = await bot.get("/readyz")
    assert ready.status == 200 and '"redis": "ok"' in ready.text
    metrics = await bot.get("/metrics")
    assert metrics.status == 200 and "gonogo_" in metrics.text


async def test_redis_outage_fails_closed_and_recovers(
    standin: SlackStandIn, private_redis: RedisServer, gates_dir: Path, tmp_path: Path
) -> None:
    settings = bot_settings(
        api_url=standin.api_url, redis_url=private_redis.url, gates=gates_dir, data_dir=tmp_path / "data"
    )
    bot = await RunningBot(settings).start()
    try:
        await open_release(bot, standin)
        private_redis.stop()

        url = standin.new_response_url()
        started = time.monotonic()
        reply = await bot.command("status payments@1.4.0", response_url=url, channel="C0ELSEWHERE")
        assert reply.status == 200
        answer = await reply_to(standin, url, timeout=5)
        assert time.monotonic() - started < 3.0
        assert "State store unavailable, try again" in answer["text"]
        assert "GO" not in answer["text"].replace("NO-GO", "")
        assert (await bot.get("/readyz")).status == 503

        private_redis.start()
        await asyncio.sleep(0.2)
        assert (await bot.get("/readyz")).status == 200
        # Redis here keeps nothing on disk: the release is gone, and the bot says so clearly.
        url = standin.new_response_url()
        await bot.command("open payments 1.4.0", response_url=url)
        again = await reply_to(standin, url, timeout=5)
        assert "Opened payments@1.4.0" in again["text"]
    finally:
        await bot.stop()


async def test_invalid_gates_refuse_to_start(standin: SlackStandIn, redis_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    write_gate(bad, "id: Bad!\nname: x\nchannel: C1\nchecks: [{id: a, kind: nope}]\n")
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=bad, data_dir=tmp_path / "d")
    from bot.core.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        await RunningBot(settings).start()
    assert len(caught.value.problems) >= 2


async def test_app_home_opened_is_acknowledged(bot: RunningBot) -> None:
    event = {
        "token": "x",
        "team_id": TEAM,
        "api_app_id": "A0GONOGO",
        "type": "event_callback",
        "event_id": "Ev01",
        "event_time": int(time.time()),
        "event": {"type": "app_home_opened", "user": "U01TECH", "channel": "D0HOME", "tab": "home"},
    }
    reply = await bot.signed(json.dumps(event).encode(), content_type="application/json")
    assert reply.status == 200


async def test_socket_mode_connects_and_handles_a_slash_command(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, gates_dir: Path, tmp_path: Path
) -> None:
    settings = bot_settings(
        api_url=standin.api_url,
        redis_url=redis_url,
        gates=gates_dir,
        data_dir=tmp_path / "data",
        SLACK_SIGNING_SECRET=None,
        SLACK_APP_TOKEN=standin.app_token,
    )
    bot = await RunningBot(settings).start()
    try:
        await standin.wait_for_socket()
        # In Socket Mode the HTTP server keeps only health, readiness and metrics.
        assert (await bot.get("/healthz")).status == 200
        url = standin.new_response_url()
        payload = slash_command("open payments 2.0.0", response_url=url)
        envelope_id = await standin.socket_send(
            {"type": "slash_commands", "payload": payload, "accepts_response_payload": True}
        )
        await standin.wait_for_ack(envelope_id)
        posted = await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL)
        assert header_of(posted.args).startswith("🔴 NO-GO · Payments API 2.0.0")
        assert "Opened payments@2.0.0" in (await reply_to(standin, url))["text"]
    finally:
        await bot.stop()


async def test_slack_429_is_retried_after_retry_after(bot: RunningBot, standin: SlackStandIn) -> None:
    standin.fail_next("chat.postMessage", status=429, retry_after=0)
    await open_release(bot, standin)
    attempts = standin.calls("chat.postMessage")
    assert [c.status for c in attempts][:2] == [429, 200]


async def test_sighup_keeps_the_last_good_gates(bot: RunningBot, standin: SlackStandIn, gates_dir: Path) -> None:
    import os
    import signal

    (gates_dir / "payments.yml").write_text("id: payments\nname: broken\nchannel: C1\nchecks: [{id: x, kind: nope}]\n")
    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.sleep(0.2)
    assert (await bot.get("/readyz")).status == 200
    await open_release(bot, standin)  # the last good payments gate is still served


async def test_sigterm_drains_a_running_check_before_exiting(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, gates_dir: Path, tmp_path: Path
) -> None:
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates_dir, data_dir=tmp_path / "d")
    bot = await RunningBot(settings).start()
    try:
        await open_release(bot, standin, "open slow 1.0")
        await bot.command("run slow@1.0", response_url=standin.new_response_url())
        await standin.wait_for("chat.update", lambda c: header_of(c.args).startswith("⏳ RUNNING"))
    finally:
        started = time.monotonic()
        await bot.stop()  # what SIGTERM triggers: stop taking work, drain, exit
    assert time.monotonic() - started < 5
    results = await redis_client.hgetall(keys.results("slow@1.0"))
    assert "nap" in results  # the 2 s check finished and was stored before the process exited
    assert await redis_client.llen(keys.runs("slow@1.0")) == 1


async def test_a_120_check_gate_card_is_accepted_by_slack(
    bot: RunningBot, standin: SlackStandIn, gates_dir: Path
) -> None:
    checks = "\n".join(
        f"  - {{id: c{i:03d}, kind: command, run: [python3, -c, 'raise SystemExit({i % 7 == 0:d})']}}"
        for i in range(120)
    )
    write_gate(gates_dir, f"id: huge\nname: Huge\nchannel: C0DEPLOYS\nchecks:\n{checks}\n", "huge.yml")
    import os
    import signal

    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.sleep(0.3)
    await open_release(bot, standin, "open huge 1.0")
    await bot.command("run huge@1.0", response_url=standin.new_response_url())
    final = await standin.wait_for("chat.update", lambda c: header_of(c.args).startswith("🔴 NO-GO · Huge"), timeout=30)
    assert final.ok and len(final.args["blocks"]) <= 50
    assert "more checks pass (full list in the thread)" in json.dumps(final.args["blocks"])
    assert all(c.ok for c in standin.calls("chat.update"))
    listing = await standin.wait_for("chat.postMessage", lambda c: "All 120 checks of Huge" in c.args.get("text", ""))
    assert all(f"*c{i:03d}*" in json.dumps(listing.args["blocks"]) for i in range(120))
