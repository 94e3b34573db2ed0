"""Sign-offs, manual checks, accepted risks and overrides, end to end: real Slack-shaped
`block_actions` and `view_submission` payloads echoing what the bot posted, real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from bot.playground.standin import SlackStandIn
from bot.slack.blocks import (
    ACTION_ACCEPT_RISK,
    ACTION_APPROVE,
    ACTION_MANUAL_DONE,
    ACTION_MANUAL_REOPEN,
    ACTION_OVERRIDE_APPROVE,
    ACTION_REJECT,
    ACTION_WITHDRAW,
)
from bot.store import keys
from tests.bot_harness import CHANNEL, RunningBot, bot_settings, reply_to, write_gate
from tests.redis_server import RedisServer

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
allow_self_approval: false
checks:
  - id: unit-tests
    kind: command
    run: ["python3", "-c", "import pathlib, sys; sys.exit(int(pathlib.Path('{flag}').read_text()))"]
    severity: blocker
  - id: pen-test
    kind: manual
    owner: security
signoffs:
  - {{role: tech-lead, label: Tech Lead, users: [U01TECH, U01LEAD2]}}
  - {{role: sre, label: SRE, users: [U02SRE], usergroup: S0SRE, min_approvals: 2}}
  - {{role: security, label: Security, users: [U03SEC]}}
risks:
  - {{id: async-latency, description: Slow at first, impact: medium, acceptor: tech-lead}}
override:
  approvers: {{tech-lead: 1, sre: 1}}
"""
OPENER = "U09OPEN"
RID = "payments@1.4.0"


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(usergroups={"S0SRE": ["U02SRE2", "U05GRP"]}) as server:
        yield server


@pytest.fixture
def flag(tmp_path: Path) -> Path:
    path = tmp_path / "flag"
    path.write_text("0")
    return path


@pytest.fixture
def gates_dir(tmp_path: Path, flag: Path) -> Path:
    directory = tmp_path / "gates"
    write_gate(directory, GATE.format(flag=flag), "payments.yml")
    return directory


async def start(standin: SlackStandIn, redis_url: str, gates_dir: Path, tmp_path: Path) -> RunningBot:
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates_dir, data_dir=tmp_path / "d")
    return await RunningBot(settings).start()


@pytest.fixture
async def bot(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, gates_dir: Path, tmp_path: Path
) -> AsyncIterator[RunningBot]:
    running = await start(standin, redis_url, gates_dir, tmp_path)
    try:
        await running.command("open payments 1.4.0 abc1234", response_url=standin.new_response_url(), user=OPENER)
        await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL)
        yield running
    finally:
        await running.stop()


def card(standin: SlackStandIn) -> dict[str, Any]:
    first = standin.calls("chat.postMessage")[0]
    found = standin.message(CHANNEL, str(first.response["ts"]))
    assert found is not None
    return found


def dump(blocks: Any) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def card_text(standin: SlackStandIn) -> str:
    return json.dumps(card(standin)["blocks"], ensure_ascii=False)


def button(message: dict[str, Any], action_id: str, value_part: str) -> dict[str, Any]:
    """The button the bot posted: clicks echo its action_id, value and block_id."""
    for block in message["blocks"]:
        for element in block.get("elements", []):
            if element.get("action_id") == action_id and value_part in element.get("value", ""):
                return {"block_id": block["block_id"], **element}
    raise AssertionError(f"no {action_id} button for {value_part}")


async def click(
    bot: RunningBot, standin: SlackStandIn, action_id: str, subject: str, user: str, **extra: Any
) -> dict[str, Any]:
    found = button(card(standin), action_id, subject)
    url = standin.new_response_url()
    reply = await bot.click(
        action_id,
        found["value"],
        response_url=url,
        user=user,
        block_id=found["block_id"],
        trigger_id=standin.issue_trigger_id(),
        **extra,
    )
    assert reply.status == 200 and reply.elapsed < 1.0
    return await reply_to(standin, url) if action_id in (ACTION_APPROVE, ACTION_MANUAL_REOPEN) else {}


async def signatures(redis_client: aioredis.Redis) -> dict[str, dict[str, Any]]:
    raw = cast(dict[str, str], await redis_client.hgetall(keys.signatures(RID)))
    return {k: json.loads(v) for k, v in raw.items()}


async def audit_types(redis_client: aioredis.Redis, rid: str = RID) -> list[str]:
    entries = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.audit(rid)))
    return [fields["type"] for _, fields in entries]


async def test_approve_records_updates_the_card_and_confirms(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    answer = await click(bot, standin, ACTION_APPROVE, "|tech-lead", "U01TECH")
    assert answer["response_type"] == "ephemeral"
    assert "You approved payments@1.4.0 as Tech Lead." in answer["text"]
    assert any(e.get("action_id") == ACTION_WITHDRAW for b in answer["blocks"] for e in b.get("elements", []))
    stored = await signatures(redis_client)
    assert stored["tech-lead|U01TECH"]["vote"] == "approve"
    assert stored["tech-lead|U01TECH"]["sha"] == "abc1234"
    await standin.wait_for("chat.update", lambda c: "approved by <@U01TECH>" in json.dumps(c.args["blocks"]))
    assert "signed" in await audit_types(redis_client)


async def test_approve_buttons_ask_for_confirmation(bot: RunningBot, standin: SlackStandIn) -> None:
    approve = button(card(standin), ACTION_APPROVE, "|tech-lead")
    reject = button(card(standin), ACTION_REJECT, "|tech-lead")
    assert approve["confirm"]["confirm"]["text"] == "Approve"
    assert reject["confirm"]["confirm"]["text"] == "Reject"


async def test_non_member_is_refused_naming_the_members(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    answer = await click(bot, standin, ACTION_APPROVE, "|security", "U0STRANGER")
    assert "only Security can sign as Security: <@U03SEC>" in answer["text"]
    assert await signatures(redis_client) == {}
    assert (await audit_types(redis_client))[-1] == "signoff_refused"


async def test_self_approval_is_refused_when_the_gate_says_so(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis, gates_dir: Path
) -> None:
    # The opener is made a Tech Lead for this test: membership alone must not be enough.
    text = (gates_dir / "payments.yml").read_text().replace("[U01TECH, U01LEAD2]", f"[U01TECH, {OPENER}]")
    (gates_dir / "payments.yml").write_text(text)
    import os
    import signal

    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.sleep(0.2)
    answer = await click(bot, standin, ACTION_APPROVE, "|tech-lead", OPENER)
    assert "does not allow self-approval" in answer["text"]
    assert await signatures(redis_client) == {}


async def test_usergroup_members_count_and_quorum_counts_people_once(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await click(bot, standin, ACTION_APPROVE, "|sre", "U05GRP")
    await click(bot, standin, ACTION_APPROVE, "|sre", "U05GRP")  # a double click: a second payload
    assert list(await signatures(redis_client)) == ["sre|U05GRP"]
    assert (await audit_types(redis_client)).count("signed") == 1
    await standin.wait_for("chat.update", lambda c: "*SRE* (1/2)" in json.dumps(c.args["blocks"]))
    await click(bot, standin, ACTION_APPROVE, "|sre", "U02SRE")
    await standin.wait_for("chat.update", lambda c: "✅ *SRE* (2/2)" in dump(c.args["blocks"]))


async def test_a_retried_payload_is_recorded_once(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    first = await click(bot, standin, ACTION_APPROVE, "|tech-lead", "U01TECH", action_ts="1700000001.000001")
    second = await click(bot, standin, ACTION_APPROVE, "|tech-lead", "U01TECH", action_ts="1700000001.000001")
    assert "You approved" in first["text"]
    assert second["text"] == "Already handled."
    assert (await audit_types(redis_client)).count("signed") == 1


async def open_view(standin: SlackStandIn, callback_id: str) -> tuple[dict[str, Any], str]:
    opened = await standin.wait_for("views.open", lambda c: c.args["view"]["callback_id"] == callback_id)
    return opened.args["view"], str(opened.response["view"]["id"])


async def test_reject_needs_a_reason_and_records_it(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await click(bot, standin, ACTION_REJECT, "|security", "U03SEC")
    view, view_id = await open_view(standin, "gonogo_reject_modal")
    assert view["callback_id"] == "gonogo_reject_modal"
    blank = await bot.submit(view, view_id, "U03SEC", {"reason": "   "})
    assert blank.status == 200 and json.loads(blank.text)["response_action"] == "errors"
    assert await signatures(redis_client) == {}

    done = await bot.submit(view, view_id, "U03SEC", {"reason": "pen test <found> XSS"})
    assert done.status == 200
    ephemeral = await standin.wait_for("chat.postEphemeral", lambda c: c.args.get("user") == "U03SEC")
    assert "You rejected payments@1.4.0 as Security." in ephemeral.args["text"]
    stored = await signatures(redis_client)
    assert stored["security|U03SEC"]["vote"] == "reject"
    assert stored["security|U03SEC"]["comment"] == "pen test <found> XSS"
    update = await standin.wait_for("chat.update", lambda c: "rejected by <@U03SEC>" in json.dumps(c.args["blocks"]))
    assert "pen test &lt;found&gt; XSS" in json.dumps(update.args["blocks"])


async def test_reject_by_a_non_member_never_opens_the_modal(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    found = button(card(standin), ACTION_REJECT, "|security")
    url = standin.new_response_url()
    await bot.click(
        ACTION_REJECT, found["value"], response_url=url, user="U0STRANGER", trigger_id=standin.issue_trigger_id()
    )
    assert "only Security can" in (await reply_to(standin, url))["text"]
    assert standin.calls("views.open") == []


async def test_withdraw_removes_the_vote(bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis) -> None:
    answer = await click(bot, standin, ACTION_APPROVE, "|tech-lead", "U01TECH")
    withdraw = next(e for b in answer["blocks"] for e in b.get("elements", []) if e.get("action_id") == ACTION_WITHDRAW)
    url = standin.new_response_url()
    await bot.click(ACTION_WITHDRAW, withdraw["value"], response_url=url, user="U01TECH")
    assert "You withdrew your sign-off as Tech Lead." in (await reply_to(standin, url))["text"]
    assert await signatures(redis_client) == {}
    assert (await audit_types(redis_client))[-1] == "withdrawn"


async def test_new_sha_makes_signoffs_stale_and_asks_again(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await click(bot, standin, ACTION_APPROVE, "|tech-lead", "U01TECH")
    await bot.command("open payments 1.4.0 def5678", response_url=standin.new_response_url(), user=OPENER)
    asked = await standin.wait_for("chat.postMessage", lambda c: "is stale" in c.args.get("text", ""))
    assert (
        "<@U01TECH>: your approve as Tech Lead is stale (signed for abc1234, release is now at def5678)"
        in (asked.args["text"])
    )
    assert asked.args["thread_ts"] == card(standin)["ts"]
    text = card_text(standin)
    assert "~<@U01TECH> approved" in text and "sign-off missing: Tech Lead" in text


async def test_blocker_change_makes_signoffs_stale(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis, flag: Path
) -> None:
    await bot.command(f"run {RID} unit-tests", response_url=standin.new_response_url())
    await standin.wait_for("chat.update", lambda c: "✅ *unit-tests*" in dump(c.args["blocks"]))
    await asyncio.sleep(0.3)
    await click(bot, standin, ACTION_APPROVE, "|tech-lead", "U01TECH")
    flag.write_text("1")
    await bot.command(f"run {RID} unit-tests", response_url=standin.new_response_url())
    asked = await standin.wait_for("chat.postMessage", lambda c: "is stale" in c.args.get("text", ""), timeout=10)
    assert "blocker unit-tests passed when signed and no longer does" in asked.args["text"]


async def test_manual_check_done_and_reopened_by_its_owner_only(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    found = button(card(standin), ACTION_MANUAL_DONE, "|pen-test")
    url = standin.new_response_url()
    await bot.click(
        ACTION_MANUAL_DONE, found["value"], response_url=url, user="U01TECH", trigger_id=standin.issue_trigger_id()
    )
    assert "only Security can mark pen-test done" in (await reply_to(standin, url))["text"]

    await click(bot, standin, ACTION_MANUAL_DONE, "|pen-test", "U03SEC")
    view, view_id = await open_view(standin, "gonogo_manual_modal")
    await bot.submit(view, view_id, "U03SEC", {"evidence": "https://pentest.example/report-42"})
    update = await standin.wait_for(
        "chat.update", lambda c: "done by <@U03SEC>: https://pentest.example/report-42" in json.dumps(c.args["blocks"])
    )
    assert button({"blocks": update.args["blocks"]}, ACTION_MANUAL_REOPEN, "|pen-test")
    answer = await click(bot, standin, ACTION_MANUAL_REOPEN, "|pen-test", "U03SEC")
    assert "pen-test is open again." in answer["text"]
    types = await audit_types(redis_client)
    assert types.count("manual_done") == 1 and types[-1] == "manual_reopened"


async def sign_everything(bot: RunningBot, standin: SlackStandIn) -> None:
    await bot.command(f"run {RID}", response_url=standin.new_response_url())
    await standin.wait_for("chat.update", lambda c: "✅ *unit-tests*" in dump(c.args["blocks"]))
    await asyncio.sleep(0.3)
    for role, user in (("tech-lead", "U01TECH"), ("sre", "U02SRE"), ("sre", "U05GRP"), ("security", "U03SEC")):
        await click(bot, standin, ACTION_APPROVE, f"|{role}", user)
    await click(bot, standin, ACTION_MANUAL_DONE, "|pen-test", "U03SEC")
    view, view_id = await open_view(standin, "gonogo_manual_modal")
    await bot.submit(view, view_id, "U03SEC", {"evidence": "report"})
    await standin.wait_for("chat.update", lambda c: "done by <@U03SEC>" in json.dumps(c.args["blocks"]))


async def test_risk_acceptance_turns_no_go_into_go_with_risk(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await sign_everything(bot, standin)
    assert card(standin)["blocks"][0]["text"]["text"].startswith("🔴 NO-GO")
    assert "risk async-latency not accepted" in card_text(standin)

    await click(bot, standin, ACTION_ACCEPT_RISK, "|async-latency", "U01LEAD2")
    view, view_id = await open_view(standin, "gonogo_risk_modal")
    bad = await bot.submit(view, view_id, "U01LEAD2", {"reason": "canary + kill switch", "expires": "soon"})
    assert json.loads(bad.text)["errors"] == {"expires": "Use a duration like 7d, 24h or 90m."}
    await bot.submit(view, view_id, "U01LEAD2", {"reason": "canary + kill switch", "expires": "7d"})
    update = await standin.wait_for(
        "chat.update", lambda c: c.args["blocks"][0]["text"]["text"].startswith("🟡 GO WITH RISK")
    )
    assert "accepted by <@U01LEAD2>" in json.dumps(update.args["blocks"])
    stored = json.loads(await redis_client.hget(keys.acceptances(RID), "async-latency") or "{}")
    assert stored["reason"] == "canary + kill switch" and stored["expires_at"]


async def test_override_needs_every_role_and_not_the_requester(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    url = standin.new_response_url()
    await bot.command(f"override {RID} hotfix for outage INC-42", response_url=url, user="U01TECH")
    assert "Override requested" in (await reply_to(standin, url))["text"]
    request = await standin.wait_for(
        "chat.postMessage", lambda c: "Override requested" in c.args.get("text", "") and "thread_ts" not in c.args
    )
    message = {"blocks": request.args["blocks"]}

    async def approve(role: str, user: str) -> str:
        found = button(message, ACTION_OVERRIDE_APPROVE, f"|{role}")
        reply_url = standin.new_response_url()
        await bot.click(ACTION_OVERRIDE_APPROVE, found["value"], response_url=reply_url, user=user)
        return str((await reply_to(standin, reply_url))["text"])

    assert "you requested this override" in await approve("tech-lead", "U01TECH")
    assert "You approved the override" in await approve("tech-lead", "U01LEAD2")
    assert card(standin)["blocks"][0]["text"]["text"].startswith("🔴 NO-GO")
    assert "You approved the override" in await approve("sre", "U02SRE")
    announced = await standin.wait_for("chat.postMessage", lambda c: "is GO (OVERRIDE)" in c.args.get("text", ""))
    assert "hotfix for outage INC-42" in json.dumps(announced.args["blocks"])
    assert "blocker unit-tests has not run" in json.dumps(announced.args["blocks"])
    await standin.wait_for(
        "chat.update",
        lambda c: (
            c.args["blocks"][0]["text"]["text"].startswith("⚪") or "OVERRIDE" in c.args["blocks"][0]["text"]["text"]
        ),
    )
    assert "override_active" in await audit_types(redis_client)


async def test_concurrent_clicks_across_releases_record_exactly_once(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    members = [f"U{i:03d}M" for i in range(50)]
    directory = tmp_path / "many"
    for g in range(10):
        write_gate(
            directory,
            f"id: g{g}\nname: G{g}\nchannel: C0DEPLOYS\nsignoffs:\n"
            f"  - {{role: eng, users: [{', '.join(members)}], min_approvals: 50}}\n",
            f"g{g}.yml",
        )
    bot = await start(standin, redis_url, directory, tmp_path)
    try:
        for g in range(10):
            await bot.command(f"open g{g} 1.0", response_url=standin.new_response_url(), user="U0OPENER")
        # Ten cards in one channel: posted at Slack's pace of about one message a second there.
        await standin.wait_for("chat.postMessage", lambda c: "G9" in c.args.get("text", ""), timeout=20)
        # 200 clicks: per release 15 different members and 5 double clicks by some of them.
        clicks = []
        for g in range(10):
            chosen = [members[(g * 5 + i) % 50] for i in range(15)]
            clicks += [(g, user) for user in chosen] + [(g, user) for user in chosen[:5]]
        assert len(clicks) == 200
        # A burst this size outruns what answers within Slack's 3 s: those that cannot start in
        # time are told "too busy, nothing was changed", and try again, as a person would (those
        # recorded but not finished in time are told so).
        for _ in range(10):
            urls = [standin.new_response_url() for _ in clicks]
            replies = await asyncio.gather(
                *(
                    bot.click(ACTION_APPROVE, f"g{g}@1.0|eng|", response_url=url, user=user)
                    for (g, user), url in zip(clicks, urls, strict=True)
                )
            )
            assert all(r.status == 200 for r in replies)
            answers = [(await reply_to(standin, url, timeout=10))["text"] for url in urls]
            done = ("You approved", "Your approval was recorded", "too busy")
            assert all(any(d in a for d in done) for a in answers), [
                a for a in answers if not any(d in a for d in done)
            ]
            clicks = [click for click, answer in zip(clicks, answers, strict=True) if "too busy" in answer]
            if not clicks:
                break
        assert not clicks
        for g in range(10):
            rid = f"g{g}@1.0"
            for _ in range(100):
                if len(await redis_client.hgetall(keys.signatures(rid))) == 15:
                    break
                await asyncio.sleep(0.1)
            assert sorted(await redis_client.hgetall(keys.signatures(rid))) == sorted(
                f"eng|{members[(g * 5 + i) % 50]}" for i in range(15)
            )
        await asyncio.sleep(0.5)
        for g in range(10):
            assert (await audit_types(redis_client, f"g{g}@1.0")).count("signed") == 15
    finally:
        await bot.stop()


async def test_redis_down_during_a_click_tells_the_clicker_and_writes_nothing(
    standin: SlackStandIn, private_redis: RedisServer, gates_dir: Path, tmp_path: Path
) -> None:
    bot = await start(standin, private_redis.url, gates_dir, tmp_path)
    try:
        await bot.command("open payments 1.4.0 abc1234", response_url=standin.new_response_url(), user=OPENER)
        await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL)
        private_redis.stop()
        answer = await click(bot, standin, ACTION_APPROVE, "|tech-lead", "U01TECH")
        assert "State store unavailable, try again. Nothing was changed." in answer["text"]
        private_redis.start()
        client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
        try:
            assert await client.hgetall(keys.signatures(RID)) == {}
        finally:
            await client.aclose()
    finally:
        await bot.stop()
