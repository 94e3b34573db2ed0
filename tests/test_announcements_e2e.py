"""Webhook events announce themselves through the outbox: drills, rollbacks and deploys posted (and
updated) once, escaped and masked, through Slack failures and a restart of the deliverer. A
Deliverer runs next to the bot (tests/delivery_kit.py) until the server starts its own."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.core.facts import Signature, Vote
from bot.core.signature import signed_headers
from bot.playground.standin import SlackStandIn
from bot.slack import announcements
from bot.slack.renderers import RENDERERS
from bot.store import keys
from tests.bot_harness import RunningBot, bot_settings, write_gate
from tests.delivery_kit import FAST, Road, sent_ok, until

SECRET = "whsec-test-0123456789abcdef"
TOKEN = "xoxb-9876543210-zyxwvutsrq"
RID = "payments@1.4.0"
CHANNEL = "C0DEPLOYS"

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - id: unit-tests
    kind: command
    run: ["python3", "-c", "print('ok')"]
signoffs:
  - {role: tech-lead, label: Tech Lead, users: [U01TECH]}
drills:
  - {id: redis-down, name: Redis down, run: ["true"]}
rollback:
  allowed_roles: [tech-lead]
"""

announcements.register(RENDERERS)


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.fixture
async def bot(
    standin: SlackStandIn, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> AsyncIterator[RunningBot]:
    # After redis_client's FLUSHDB: a flush under a running deliverer deletes its consumer groups.
    gates = write_gate(tmp_path / "gates", GATE, "payments.yml").parent
    settings = bot_settings(
        api_url=standin.api_url, redis_url=redis_url, gates=gates, data_dir=tmp_path / "d", GONOGO_WEBHOOK_SECRET=SECRET
    )
    running = await RunningBot(settings).start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def road(
    redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> AsyncIterator[Road]:
    road = Road(redis_client, standin, http_session)
    await road.outbox.register(["payments"])
    yield road
    await road.kill()


async def send(bot: RunningBot, event: dict[str, Any]) -> int:
    assert bot.session is not None
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json", **signed_headers(SECRET, body, time.time())}
    async with bot.session.post(f"{bot.url}/api/events", data=body, headers=headers) as response:
        assert response.status == 202, await response.text()
        return response.status


async def open_release(bot: RunningBot) -> None:
    await send(bot, {"type": "open", "id": "open-1", "gate": "payments", "version": "1.4.0", "sha": "abc1234def"})


def top_level(standin: SlackStandIn) -> list[dict[str, Any]]:
    return [m for m in standin.messages(CHANNEL) if not m.get("thread_ts") or m["thread_ts"] == m["ts"]]


def posted_with(standin: SlackStandIn, text: str) -> bool:
    return any(text in m["text"] for m in standin.messages(CHANNEL))


def thread(standin: SlackStandIn, parent: dict[str, Any]) -> list[dict[str, Any]]:
    return standin.replies(CHANNEL, parent["ts"])


def rendered(message: dict[str, Any]) -> str:
    return json.dumps({"text": message.get("text"), "blocks": message.get("blocks")})


async def test_a_drill_from_ci_is_announced_then_its_result_replaces_the_start(
    bot: RunningBot, road: Road, standin: SlackStandIn
) -> None:
    event = {
        "type": "drill",
        "id": "dr1",
        "gate": "payments",
        "drill": "redis-down",
        "status": "failed",
        "duration": 12.5,
        "output": f"failover stuck\nSLACK token {TOKEN}",
        "actor": "U0SRE",
    }
    await send(bot, event)
    await send(bot, event)  # replayed: nothing more
    road.start()
    await until(lambda: sent_ok(standin, "chat.update") and len(standin.messages(CHANNEL)) == 2)
    [message] = top_level(standin)
    assert "❌ FAILED" in message["text"] and "Redis down" in message["text"] and "12.5 s" in message["text"]
    assert "<@U0SRE>" in rendered(message)
    [output] = thread(standin, message)
    assert "failover stuck" in output["blocks"][-1]["text"]["text"] and TOKEN not in rendered(output)
    assert len(sent_ok(standin, "chat.postMessage")) == 2 and len(sent_ok(standin, "chat.update")) == 1


async def test_a_rollback_from_ci_is_announced_literally_and_masked_and_names_signers_once(
    bot: RunningBot, road: Road, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await open_release(bot)
    # Two votes of one signer (two roles): the thread names them once.
    for role in ("tech-lead", "qa"):
        vote = Signature(role=role, user="U01TECH", vote=Vote.APPROVE, at=datetime.now(UTC), sha="abc1234def")
        await redis_client.hset(keys.signatures(RID), f"{role}|U01TECH", vote.model_dump_json())
    reason = f"<!channel> *bold* errors at 5% after deploy, token {TOKEN}"
    await send(
        bot,
        {"type": "rollback", "id": "rb1", "release": RID, "reason": reason, "actor": "U01TECH", "status": "started"},
    )
    await send(
        bot, {"type": "rollback", "id": "rb2", "release": RID, "reason": "done", "actor": "ci", "status": "succeeded"}
    )
    road.start()
    await until(lambda: len(standin.messages(CHANNEL)) == 3)
    [announcement] = top_level(standin)
    text = rendered(announcement)
    assert "🚨" in announcement["text"] and "ROLLBACK" in announcement["text"] and RID in announcement["text"]
    assert "<!channel>" not in text and TOKEN not in text and "*bold*" not in text
    assert "bold" in text  # shown, literally (escaped), not dropped
    replies = thread(standin, announcement)
    assert [r["text"].count("@U01TECH") for r in replies if "Heads-up" in r["text"]] == [1]
    assert any("succeeded" in r["text"] for r in replies)


async def test_deploy_progress_is_one_message_updated_per_stage(
    bot: RunningBot, road: Road, standin: SlackStandIn
) -> None:
    await open_release(bot)
    road.start()
    for n, stage in enumerate(["dark launch", "canary 1%", "100%"]):
        await send(bot, {"type": "deploy", "id": f"d{n}", "release": RID, "stage": stage, "status": "succeeded"})
        await until(partial(posted_with, standin, stage), what=f"the {stage} stage posted")
    # The release's card is the channel's other top-level message (the CI open posted it).
    [progress] = [m for m in top_level(standin) if m["text"].startswith("🚀 Deploy of")]
    assert progress["text"].index("dark launch") < progress["text"].index("canary 1%") < progress["text"].index("100%")
    deploys = [c for c in sent_ok(standin, "chat.postMessage") if "Deploy of" in c.args.get("text", "")]
    updates = [c for c in sent_ok(standin, "chat.update") if "Deploy of" in c.args.get("text", "")]
    assert len(deploys) == 1 and len(updates) == 2


async def test_slack_failing_then_recovering_and_a_restarted_deliverer_post_every_event_once(
    bot: RunningBot,
    road: Road,
    standin: SlackStandIn,
    redis_client: aioredis.Redis,
    http_session: aiohttp.ClientSession,
) -> None:
    await open_release(bot)
    # Accepted (202) with nobody delivering: the bot "died" before anything reached Slack.
    for n in range(3):
        await send(
            bot,
            {
                "type": "drill",
                "id": f"dr{n}",
                "gate": "payments",
                "drill": "redis-down",
                "status": "passed",
                "duration": 1,
                "actor": "ci",
            },
        )
    standin.fail_every(1, status=500, methods=["chat.postMessage"])
    road.start()
    await until(lambda: len(standin.calls("chat.postMessage")) >= 3)
    await road.kill()
    await standin.quiet()  # the call the kill cut short got its 500 (not posted behind our back)
    standin.fail_every(0)
    fresh = Road(redis_client, standin, http_session).start()  # a new process, the same consumer name

    def results() -> list[Any]:  # each drill's message updated with its result
        return [c for c in sent_ok(standin, "chat.update") if "fire drill" in c.args.get("text", "")]

    try:
        # A kill during a call leaves that notice's send lease behind (Slack may have taken it): the
        # fresh deliverer leaves the notice alone until the lease runs out.
        await until(lambda: len(results()) >= 3, timeout=FAST.send_lease_s + 30, what="the three drill results")
    finally:
        await fresh.kill()
    assert len(results()) == 3
    # The release's card is not counted: the bot's own refresher posts (and updates) it once Slack is back.
    drills = [m for m in top_level(standin) if "Payments API 1.4.0" not in m["text"]]
    assert len(drills) == 3 and all("✅ PASSED" in m["text"] for m in drills)
    posts = [c for c in sent_ok(standin, "chat.postMessage") if "Payments API 1.4.0" not in c.args.get("text", "")]
    assert len(posts) == 3
