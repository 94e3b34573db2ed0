"""Reminder DMs end to end: the real bot (its handlers, authorisation, commit binding), a scheduler
replica over the same Redis, the deliverer, and the Slack stand-in. Approving from the DM records the
vote and updates the card; Snooze answers and is stored; the DM is updated once answered."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.gateset import GateSet
from bot.playground.standin import DEFAULT_BOT_TOKEN, SlackStandIn
from bot.services.membership import Membership
from bot.services.releases import ReleaseService
from bot.services.scheduler import Scheduler
from bot.slack import reminders
from bot.slack.blocks import ACTION_APPROVE, ACTION_SNOOZE
from bot.slack.renderers import RENDERERS
from bot.slack.zones import SlackZones
from bot.store import keys
from bot.store.schedule import ScheduleStore
from bot.store.store import Store
from tests.bot_harness import CHANNEL, RunningBot, bot_settings, reply_to, write_gate
from tests.delivery_kit import Road, until

reminders.register(RENDERERS)

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
signoffs:
  - {role: dev, label: Developer, users: [U0DEV]}
  - {role: sre, label: SRE, users: [U0SRE]}
reminders: {every: 2h}
"""
RID = "payments@1.4.0"


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


def find_button(message: dict[str, Any], action_id: str, value_part: str = "") -> dict[str, Any]:
    for block in message["blocks"]:
        for element in block.get("elements", []):
            if element.get("action_id") == action_id and value_part in element.get("value", ""):
                return {"block_id": block["block_id"], **element}
    raise AssertionError(f"no {action_id} button")


async def test_approve_and_snooze_from_the_dm(
    standin: SlackStandIn,
    redis_client: aioredis.Redis,
    redis_url: str,
    http_session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    gates_dir = write_gate(tmp_path / "gates", GATE, "payments.yml").parent
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates_dir, data_dir=tmp_path / "d")
    bot = await RunningBot(settings).start()
    road = Road(redis_client, standin, http_session).start()
    try:
        url = standin.new_response_url()
        await bot.command("open payments 1.4.0 abc1234 --at 2026-12-01T10:00Z", response_url=url, user="U0OPEN")
        card_post = await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL)

        # The refresher then stores where the card is on the release (a new revision): wait for it,
        # so the DM's link below is the stored one (a tick racing it retries its claims at once).
        async def located() -> dict[str, Any] | None:
            doc: dict[str, Any] = json.loads(str(await redis_client.get(keys.release(RID))))
            return doc if doc.get("card_ts") else None

        stored: dict[str, Any] = await until(located)
        assert stored["target_at"].startswith("2026-12-01T10:00")

        slack = AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=standin.api_url, session=http_session)
        store = Store(redis_client)
        releases = ReleaseService(store=store, gates=GateSet(gates_dir), session=http_session, env=dict(os.environ))
        scheduler = Scheduler(
            releases=releases,
            store=ScheduleStore(redis_client),
            members=Membership(store, slack).members,
            zones=SlackZones(slack, redis_client),
            clock=lambda: datetime.now(UTC),
        )
        assert len((await scheduler.reminders_tick("payments")).claimed) == 2
        dev_dm = standin.dm_channel("U0DEV")
        (dm,) = await until(lambda: standin.messages(dev_dm))
        link = f"/archives/{CHANNEL}/p{str(card_post.response['ts']).replace('.', '')}"
        assert link in json.dumps(dm["blocks"])

        # Approve from the DM: the card's handler records the vote, bound to the commit, and the card updates.
        approve = find_button(dm, ACTION_APPROVE)
        url = standin.new_response_url()
        reply = await bot.click(
            ACTION_APPROVE,
            approve["value"],
            response_url=url,
            user="U0DEV",
            channel=dev_dm,
            block_id=approve["block_id"],
        )
        assert reply.status == 200
        answer = await reply_to(standin, url)
        assert "You approved payments@1.4.0 as Developer." in answer["text"]
        assert "dev|U0DEV" in await redis_client.hgetall(keys.signatures(RID))
        card = standin.message(CHANNEL, str(card_post.response["ts"]))
        assert card is not None and "approved by <@U0DEV>" in json.dumps(card["blocks"])

        # Snooze from the other DM: stored for that person and release, answered in their DM.
        (sre_dm,) = await until(lambda: standin.messages(standin.dm_channel("U0SRE")))
        snooze = find_button(sre_dm, ACTION_SNOOZE, "|4h")
        url = standin.new_response_url()
        await bot.click(ACTION_SNOOZE, snooze["value"], response_url=url, user="U0SRE", block_id=snooze["block_id"])
        assert "Snoozed: no reminders about payments@1.4.0 until" in (await reply_to(standin, url))["text"]
        assert await redis_client.hget(keys.schedule(RID), "snooze|U0SRE")

        # The next tick sees the vote: the DM says so, and keeps no buttons.
        assert (await scheduler.reminders_tick("payments")).claimed == ["answered|dev|U0DEV|1"]
        await until(lambda: "edited" in dm)
        assert "your sign-off as Developer is recorded" in dm["text"]
        assert not [b for b in dm["blocks"] if b["type"] == "actions"]
    finally:
        await road.kill()
        await bot.stop()


async def test_open_again_with_at_sets_the_target_time_authorised_and_audited(
    standin: SlackStandIn,
    redis_client: aioredis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    gates_dir = write_gate(tmp_path / "gates", GATE, "payments.yml").parent
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates_dir, data_dir=tmp_path / "d")
    bot = await RunningBot(settings).start()
    try:
        await bot.command("open payments 1.4.0 abc1234", response_url=standin.new_response_url(), user="U0OPEN")

        async def target() -> str | None:
            doc: dict[str, Any] = json.loads(str(await redis_client.get(keys.release(RID))))
            return doc.get("target_at")

        assert await target() is None
        url = standin.new_response_url()
        await bot.command("open payments 1.4.0 --at 2026-12-02T10:00Z", response_url=url, user="U0STRANGER")
        assert (
            "or a member of a role of gate payments can change the target time"
            in (await reply_to(standin, url))["text"]
        )
        assert await target() is None
        url = standin.new_response_url()
        await bot.command("open payments 1.4.0 --at 2026-12-02T11:00+01:00", response_url=url, user="U0SRE")
        answer = (await reply_to(standin, url))["text"]
        assert "Target time set to 2026-12-02 10:00 UTC: the pre-launch posts follow it." in answer
        assert str(await target()).startswith("2026-12-02T10:00")
        audit = {e.type: e for e in await Store(redis_client).audit(RID)}
        assert audit["refused"].actor == "U0STRANGER" and audit["refused"].data["action"] == "set target time"
        assert audit["target_set"].actor == "U0SRE"
        assert audit["target_set"].data == {"from": None, "to": "2026-12-02T10:00:00+00:00"}
    finally:
        await bot.stop()
