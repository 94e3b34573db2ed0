"""Break-glass overrides, end to end: who may ask, a live request is never replaced, cancelling,
approvals that belong to one request, and one person counted once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from bot.playground.standin import SlackStandIn
from bot.slack.blocks import ACTION_OVERRIDE_APPROVE
from bot.store import keys
from tests.bot_harness import CHANNEL, RunningBot, bot_settings, reply_to, write_gate

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - id: unit-tests
    kind: command
    run: ["python3", "-c", "raise SystemExit(1)"]
    severity: blocker
signoffs:
  - {role: tech-lead, label: Tech Lead, users: [U01TECH, U01LEAD2]}
  - {role: sre, label: SRE, users: [U02SRE], usergroup: S0SRE}
  - {role: cto, label: CTO, users: [U0CTO, U01LEAD2]}
  - {role: senior, label: Senior engineer, users: [U01LEAD2, U0SEN1, U0SEN2], usergroup: S0SEN}
override:
  approvers: {cto: 1, senior: 2}
"""
RID = "payments@1.4.0"


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(usergroups={"S0SRE": ["U05GRP"], "S0SEN": ["U0SEN3"]}) as server:
        yield server


@pytest.fixture
async def bot(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> AsyncIterator[RunningBot]:
    gates = tmp_path / "gates"
    write_gate(gates, GATE, "payments.yml")
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates, data_dir=tmp_path / "d")
    running = await RunningBot(settings).start()
    try:
        await say(running, standin, "open payments 1.4.0 abc1234")
        yield running
    finally:
        await running.stop()


async def say(bot: RunningBot, standin: SlackStandIn, text: str, user: str = "U01TECH") -> str:
    url = standin.new_response_url()
    await bot.command(text, response_url=url, user=user)
    return str((await reply_to(standin, url, timeout=10))["text"])


async def request_buttons(standin: SlackStandIn, reason: str) -> dict[str, Any]:
    """The request as posted in the channel (not the thread copy), with its Approve buttons. The
    deliverer posts it (at the channel's pace): wait for it, with a deadline."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for call in reversed(standin.calls("chat.postMessage")):
            args = call.args
            if reason in args.get("text", "") and "thread_ts" not in args and args["channel"] == CHANNEL:
                return {"blocks": args["blocks"]}
        await asyncio.sleep(0.05)
    raise AssertionError(f"no override request {reason!r}")


def approve_value(request: dict[str, Any], role: str) -> str:
    for block in request["blocks"]:
        for element in block.get("elements", []):
            if element.get("action_id") == ACTION_OVERRIDE_APPROVE and element["value"].endswith(f"|{role}"):
                return str(element["value"])
    raise AssertionError(f"no approve button for {role}")


async def approve(bot: RunningBot, standin: SlackStandIn, value: str, user: str) -> str:
    url = standin.new_response_url()
    await bot.click(ACTION_OVERRIDE_APPROVE, value, response_url=url, user=user)
    return str((await reply_to(standin, url, timeout=10))["text"])


async def stored_request(redis_client: aioredis.Redis) -> dict[str, Any] | None:
    raw = await redis_client.get(keys.override(RID))
    return cast(dict[str, Any], json.loads(raw)) if raw else None


async def audit(redis_client: aioredis.Redis) -> list[tuple[str, str, dict[str, Any]]]:
    entries = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.audit(RID)))
    return [(f["type"], f["actor"], json.loads(f["data"])) for _, f in entries]


async def test_only_members_of_a_gate_role_may_request_an_override(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    answer = await say(bot, standin, f"override {RID} <!channel> ship it", "U0STRANGER")
    assert "only members of a role of gate payments can request an override" in answer
    assert await stored_request(redis_client) is None
    assert [t for t, _, _ in await audit(redis_client)][-1] == "signoff_refused"
    assert not [c for c in standin.calls("chat.postMessage") if "ship it" in c.args.get("text", "")]

    # A user-group member of a role may.
    assert "Override requested" in await say(bot, standin, f"override {RID} hotfix", "U05GRP")


async def test_a_pending_or_active_override_is_never_replaced_only_cancelled(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    assert "Override requested" in await say(bot, standin, f"override {RID} hotfix INC-42", "U01TECH")
    first = await stored_request(redis_client)
    assert first is not None
    request = await request_buttons(standin, "hotfix INC-42")
    for user in ("U0CTO", "U0SEN1", "U0SEN2"):
        assert "You approved" in await approve(
            bot, standin, approve_value(request, "senior" if user != "U0CTO" else "cto"), user
        )
    await standin.wait_for("chat.postMessage", lambda c: "is GO (OVERRIDE)" in c.args.get("text", ""))

    refused = await say(bot, standin, f"override {RID} something else", "U02SRE")
    assert "is still pending or active: `/gonogo override cancel payments@1.4.0` first" in refused
    assert await stored_request(redis_client) == first
    assert len(await redis_client.hgetall(keys.override_approvals(RID, first["id"]))) == 3

    # Cancelling: not a bystander (even a member of a role), the requester or an override approver.
    assert "only <@U01TECH> (who requested it) or an override approver" in await say(
        bot, standin, f"override cancel {RID}", "U02SRE"
    )
    assert await stored_request(redis_client) == first
    assert f"The override of {RID} is cancelled." in await say(bot, standin, f"override cancel {RID}", "U0SEN1")
    assert await stored_request(redis_client) is None
    assert await redis_client.hgetall(keys.override_approvals(RID, first["id"])) == {}
    kind, actor, data = (await audit(redis_client))[-1]
    assert (kind, actor, data) == ("override_cancelled", "U0SEN1", {"id": first["id"], "requested_by": "U01TECH"})

    # Then a new request may be made, and the old request's buttons count for nothing.
    assert "Override requested" in await say(bot, standin, f"override {RID} second try", "U02SRE")
    assert "no longer current" in await approve(bot, standin, approve_value(request, "cto"), "U0CTO")
    second = await stored_request(redis_client)
    assert second is not None and second["id"] != first["id"]
    assert await redis_client.hgetall(keys.override_approvals(RID, second["id"])) == {}


async def test_an_approval_racing_a_replaced_request_is_refused(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    """The approval of request A waits on its user-group lookup while A is cancelled and B made."""
    assert "Override requested" in await say(bot, standin, f"override {RID} request A", "U01TECH")
    button_a = approve_value(await request_buttons(standin, "request A"), "senior")
    held = standin.hold("usergroups.users.list")  # the senior role's group, looked up by the approval
    url = standin.new_response_url()
    await bot.click(ACTION_OVERRIDE_APPROVE, button_a, response_url=url, user="U0SEN3")
    await held.arrived.wait()
    assert "is cancelled" in await say(bot, standin, f"override cancel {RID}", "U01TECH")
    assert "Override requested" in await say(bot, standin, f"override {RID} request B", "U01LEAD2")
    held.release()
    assert "no longer current" in str((await reply_to(standin, url, timeout=10))["text"])
    current = await stored_request(redis_client)
    assert current is not None and current["reason"] == "request B"
    assert await redis_client.hgetall(keys.override_approvals(RID, current["id"])) == {}
    assert "override_approved" not in [t for t, _, _ in await audit(redis_client)]


async def test_one_person_counts_once_across_the_whole_override(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    assert "Override requested" in await say(bot, standin, f"override {RID} hotfix", "U01TECH")
    request = await request_buttons(standin, "hotfix")
    # U01LEAD2 is CTO and senior: they count once, so CTO + 2 seniors takes three people.
    assert "You approved the override of payments@1.4.0 as CTO" in await approve(
        bot, standin, approve_value(request, "cto"), "U01LEAD2"
    )
    again = await approve(bot, standin, approve_value(request, "senior"), "U01LEAD2")
    assert "You already approved this override as CTO: one person counts once" in again
    assert "You approved" in await approve(bot, standin, approve_value(request, "senior"), "U0SEN1")
    req = await stored_request(redis_client)
    assert req is not None
    assert sorted(await redis_client.hgetall(keys.override_approvals(RID, req["id"]))) == ["U01LEAD2", "U0SEN1"]
    assert not [c for c in standin.calls("chat.postMessage") if "is GO (OVERRIDE)" in c.args.get("text", "")]
    assert "You approved" in await approve(bot, standin, approve_value(request, "senior"), "U0SEN2")
    await standin.wait_for("chat.postMessage", lambda c: "is GO (OVERRIDE)" in c.args.get("text", ""))
