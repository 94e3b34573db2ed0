"""`/gonogo drill` and `/gonogo rollback` end to end: the real bot, real Redis, real subprocesses for
the drill and rollback commands, the Slack stand-in, and a Deliverer posting the announcements the
services wrote to the outbox (tests/delivery_kit.py, until the server starts its own)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.core.facts import Signature, Vote
from bot.core.masking import MASK
from bot.playground.standin import SlackStandIn
from bot.slack import announcements
from bot.slack.modals import MODAL_ROLLBACK, RUN_NOW
from bot.slack.renderers import RENDERERS
from bot.store import keys
from bot.store.gatestore import GateStore
from tests.bot_harness import (
    TEAM,
    RunningBot,
    bot_settings,
    form,
    payload_form,
    reply_to,
    slash_command,
    write_gate,
)
from tests.delivery_kit import Road, sent_ok, until

PY = sys.executable
TOKEN = "xoxb-9876543210-zyxwvutsrq"
RID = "payments@1.4.0"
CHANNEL = "C0DEPLOYS"
TECH, SRE, OPENER, STRANGER = "U01TECH", "U0SRE", "U0DEV", "U0NOBODY"

announcements.register(RENDERERS)


def gate_text(tmp: Path) -> str:
    healthy, go = tmp / "healthy", tmp / "go"
    wait_for_go = f"import pathlib, time; [time.sleep(0.05) for _ in range(1200) if not pathlib.Path('{go}').exists()]"
    return f"""
id: payments
name: Payments API
channel: {CHANNEL}
checks:
  - id: health
    kind: command
    run: ["{PY}", "-c", "import pathlib, sys; sys.exit(0 if pathlib.Path('{healthy}').exists() else 1)"]
signoffs:
  - {{role: tech-lead, label: Tech Lead, users: [{TECH}]}}
  - {{role: sre, label: SRE, users: [{SRE}]}}
  - {{role: qa, label: QA, users: [{TECH}]}}
drills:
  - id: redis-down
    name: Redis down
    run: ["{PY}", "-c", "print('failover ok'); print('token {TOKEN}')"]
  - id: broken
    name: Broken failover
    run: ["{PY}", "-c", "print('failover stuck'); raise SystemExit(3)"]
  - id: slow
    name: Slow failover
    run: ["{PY}", "-c", "import time; print('waiting', flush=True); time.sleep(60)"]
    timeout: 1s
  - id: blocker
    name: Long failover
    run: ["{PY}", "-c", "{wait_for_go}"]
  - id: sre-only
    name: SRE only
    run: ["true"]
    allowed_roles: [sre]
rollback:
  run: ["{PY}", "-c", "print('rolled back to 1.3.9 with {TOKEN}')"]
  allowed_roles: [sre]
  verify: health
"""


LEDGER = """
id: ledger
name: Ledger
channel: C0LEDGER
signoffs:
  - {role: tech-lead, users: [U01TECH]}
drills:
  - {id: broken, name: Ledger failover, run: ["true"]}
"""


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.fixture
async def bot(standin: SlackStandIn, redis_url: str, tmp_path: Path) -> AsyncIterator[RunningBot]:
    gates = write_gate(tmp_path / "gates", gate_text(tmp_path), "payments.yml").parent
    write_gate(gates, LEDGER, "ledger.yml")
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates, data_dir=tmp_path / "d")
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
    road.start()
    yield road
    await road.kill()


async def command(bot: RunningBot, standin: SlackStandIn, text: str, user: str, *, answered: bool = True) -> str:
    """Run a slash command as Slack sends it (entities encoded) and return the ephemeral answer."""
    url = standin.new_response_url(user=user)
    encoded = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    fields = slash_command(encoded, response_url=url, user=user)
    fields["trigger_id"] = standin.issue_trigger_id(user)  # views.open takes it once, within 3 s
    reply = await bot.signed(form(fields))
    assert reply.status == 200
    return str((await reply_to(standin, url, timeout=10))["text"]) if answered else ""


async def open_release(bot: RunningBot, standin: SlackStandIn) -> None:
    answer = await command(bot, standin, "open payments 1.4.0 abc1234def", OPENER)
    assert "Opened payments@1.4.0" in answer


def top_level(standin: SlackStandIn) -> list[dict[str, Any]]:
    return [m for m in standin.messages(CHANNEL) if not m.get("thread_ts") or m["thread_ts"] == m["ts"]]


def announced(standin: SlackStandIn, marker: str) -> list[dict[str, Any]]:
    return [m for m in top_level(standin) if marker in str(m.get("text"))]


def thread(standin: SlackStandIn, parent: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in standin.replies(CHANNEL, parent["ts"]) if m["ts"] != parent["ts"]]


def rendered(message: dict[str, Any]) -> str:
    return json.dumps({"text": message.get("text"), "blocks": message.get("blocks")})


async def card_wanted(redis_client: aioredis.Redis) -> int:
    return int(await redis_client.hget(keys.card(RID), "wanted") or 0)


async def drill_done(standin: SlackStandIn, title: str) -> dict[str, Any]:
    """The drill's message once it shows its result (the start message, updated)."""

    def find() -> dict[str, Any] | None:
        for m in top_level(standin):
            if title in str(m.get("text")) and ("PASSED" in str(m["text"]) or "FAILED" in str(m["text"])):
                return m
        return None

    return await until(find, timeout=30)


# --- fire drills ----------------------------------------------------------------------------


async def test_a_drill_from_slack_is_announced_then_updated_with_its_result_and_recorded(
    bot: RunningBot, road: Road, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await open_release(bot, standin)
    wanted = await card_wanted(redis_client)
    answer = await command(bot, standin, "drill redis-down", TECH)  # one gate has it: no gate needed
    assert "Started fire drill *Redis down* of payments" in answer and f"<#{CHANNEL}>" in answer

    message = await drill_done(standin, "Redis down")
    assert "✅ PASSED" in message["text"] and "<@U01TECH>" in rendered(message)
    started = [c for c in sent_ok(standin, "chat.postMessage") if "🔥 Fire drill" in str(c.args.get("text"))]
    assert len(started) == 1 and "started by" in started[0].args["text"]
    assert str(started[0].response["ts"]) == message["ts"]  # the start message became the result
    [output] = await until(lambda: thread(standin, message))
    assert "failover ok" in rendered(output) and TOKEN not in rendered(output) and MASK in rendered(output)

    latest = (await GateStore(redis_client).latest_drills("payments"))["redis-down"]
    assert latest.passed and latest.by == TECH and latest.source == "slack"
    assert await card_wanted(redis_client) > wanted  # the open release's card shows the gate's drills
    assert await GateStore(redis_client).current_operation("payments") is None


async def test_failing_and_timed_out_drills_are_announced_as_failed_and_recorded(
    bot: RunningBot, road: Road, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await command(bot, standin, "drill broken payments", TECH)
    failed = await drill_done(standin, "Broken failover")
    assert "❌ FAILED" in failed["text"] and "exit 3" in rendered(failed)
    [output] = await until(lambda: thread(standin, failed))
    assert "failover stuck" in rendered(output)

    await until(_lease_free(redis_client))
    await command(bot, standin, "drill slow", SRE)
    timed_out = await drill_done(standin, "Slow failover")
    assert "❌ FAILED" in timed_out["text"] and "timed out after 1s" in rendered(timed_out)

    runs = await GateStore(redis_client).latest_drills("payments")
    assert (runs["broken"].passed, runs["broken"].by) == (False, TECH)
    assert (runs["slow"].passed, runs["slow"].by) == (False, SRE)
    audit = [(e.type, e.data["drill"], e.data["passed"]) for e in await GateStore(redis_client).gate_audit("payments")]
    assert audit == [("drill", "broken", False), ("drill", "slow", False)]


def _lease_free(redis_client: aioredis.Redis) -> Any:
    async def free() -> bool:
        return await GateStore(redis_client).current_operation("payments") is None

    return free


async def test_a_second_drill_of_the_gate_is_refused_while_one_runs(
    bot: RunningBot, road: Road, standin: SlackStandIn, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    await command(bot, standin, "drill blocker", TECH)
    refused = await command(bot, standin, "drill redis-down payments", SRE)
    assert "fire drill blocker of gate payments is running" in refused and "<@U01TECH>" in refused
    (tmp_path / "go").touch()
    done = await drill_done(standin, "Long failover")
    assert "✅ PASSED" in done["text"]
    assert announced(standin, "Redis down") == []  # the refused drill said nothing in the channel
    assert list(await GateStore(redis_client).latest_drills("payments")) == ["blocker"]


async def test_people_outside_the_drills_roles_are_refused(
    bot: RunningBot, road: Road, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    stranger = await command(bot, standin, "drill redis-down", STRANGER)
    assert "only members of Tech Lead, SRE, QA" in stranger
    not_sre = await command(bot, standin, "drill sre-only", TECH)
    assert "only members of SRE can run the drill SRE only" in not_sre
    unknown = await command(bot, standin, "drill nope", TECH)
    assert "no gate has a drill" in unknown
    ambiguous = await command(bot, standin, "drill broken", TECH)
    assert "gates ledger, payments all have a drill 'broken': name one" in ambiguous
    assert await GateStore(redis_client).latest_drills("payments") == {}
    assert await redis_client.xlen(keys.outbox("payments")) == 0
    assert standin.messages(CHANNEL) == []


# --- rollbacks --------------------------------------------------------------------------------


async def sign(redis_client: aioredis.Redis, role: str, user: str) -> None:
    vote = Signature(role=role, user=user, vote=Vote.APPROVE, at=datetime.now(UTC), sha="abc1234def")
    await redis_client.hset(keys.signatures(RID), f"{role}|{user}", vote.model_dump_json())


async def rollback_modal(standin: SlackStandIn) -> tuple[dict[str, Any], str]:
    opened = await standin.wait_for("views.open", lambda c: c.args["view"]["callback_id"] == MODAL_ROLLBACK)
    return opened.args["view"], str(opened.response["view"]["id"])


async def submit(bot: RunningBot, view: dict[str, Any], view_id: str, user: str, reason: str, *, run: bool) -> None:
    """The modal's view_submission: the reason as edited, and the checkbox as ticked."""
    values: dict[str, Any] = {"reason": {"value": {"type": "plain_text_input", "value": reason}}}
    ticked = [{"value": RUN_NOW, "text": {"type": "plain_text", "text": "Run the rollback command now"}}]
    values[RUN_NOW] = {RUN_NOW: {"type": "checkboxes", "selected_options": ticked if run else []}}
    payload = {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "acme"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
        "api_app_id": "A0GONOGO",
        "token": "deprecated-verification-token",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "view": {
            **view,
            "id": view_id,
            "team_id": TEAM,
            "state": {"values": values},
            "hash": "1.2",
            "app_id": "A0GONOGO",
        },
        "response_urls": [],
        "is_enterprise_install": False,
    }
    reply = await bot.signed(payload_form(payload))
    assert reply.status == 200 and "errors" not in reply.text, reply.text


async def state_of(redis_client: aioredis.Redis) -> str:
    raw = cast(str, await redis_client.get(keys.release(RID)))
    return str(json.loads(raw)["state"])


async def audit_types(redis_client: aioredis.Redis) -> list[str]:
    entries = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.audit(RID)))
    return [f["type"] for _, f in entries]


async def test_rollback_is_refused_outside_the_rollback_roles_and_audited(
    bot: RunningBot, road: Road, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await open_release(bot, standin)
    refused = await command(bot, standin, f"rollback {RID} errors everywhere", TECH)
    assert "only members of SRE can roll back releases of payments" in refused
    assert standin.calls("views.open") == []
    assert "rollback_refused" in await audit_types(redis_client)
    assert await state_of(redis_client) == "open"
    needs_reason = await command(bot, standin, f"rollback {RID}", SRE)
    assert "a rollback needs a reason" in needs_reason


async def test_rollback_from_slack_runs_the_command_verifies_and_tells_signers_once(
    bot: RunningBot, road: Road, standin: SlackStandIn, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    (tmp_path / "healthy").touch()
    await open_release(bot, standin)
    for role, user in (("tech-lead", TECH), ("qa", TECH), ("sre", SRE)):
        await sign(redis_client, role, user)
    wanted = await card_wanted(redis_client)
    reason = f"<!channel> *bold* errors at 5% after deploy, token {TOKEN}"
    await command(bot, standin, f"rollback {RID} {reason}", SRE, answered=False)  # the modal opens
    view, view_id = await rollback_modal(standin)
    shown = json.dumps(view)
    assert RID in shown and RUN_NOW in shown and TOKEN not in shown  # masked before it is shown
    [typed] = [b["element"]["initial_value"] for b in view["blocks"] if b.get("block_id") == "reason"]
    assert "<!channel> *bold*" in typed and MASK in typed  # literal, as typed (it is plain text)
    assert await state_of(redis_client) == "open"  # nothing happens before the confirmation

    await submit(bot, view, view_id, SRE, typed, run=True)
    ack = await standin.wait_for("chat.postEphemeral", lambda c: c.args.get("user") == SRE)
    assert "Rollback of payments@1.4.0 started (running the rollback command, then verifying)" in ack.args["text"]

    [announcement] = await until(lambda: announced(standin, "ROLLBACK"))

    def three_replies() -> list[dict[str, Any]] | None:
        found = thread(standin, announcement)
        return found if len(found) >= 3 else None

    replies = await until(three_replies)
    text = rendered(announcement)
    assert "🚨" in announcement["text"] and RID in announcement["text"] and "<@U0SRE>" in text
    assert "<!channel>" not in text and TOKEN not in text and "*bold*" not in text and "bold" in text
    assert "decision record" in text

    heads_up = [r for r in replies if "Heads-up" in r["text"]]
    assert len(heads_up) == 1
    everything = json.dumps(replies)
    assert rendered(heads_up[0]).count("<@U01TECH>") == 1 and rendered(heads_up[0]).count("<@U0DEV>") == 1
    assert everything.count("<@U01TECH>") == 1 and everything.count("<@U0DEV>") == 1
    [output] = [r for r in replies if "rolled back to 1.3.9" in rendered(r)]
    assert TOKEN not in rendered(output) and MASK in rendered(output)
    [verify] = [r for r in replies if "after rollback" in r["text"]]
    assert "✅ health green" in verify["text"]
    assert "<!channel>" not in everything and "<!here>" not in everything

    await until(_rolled_back(redis_client))
    assert "rollback_succeeded" in await audit_types(redis_client)
    assert await card_wanted(redis_client) > wanted
    await until(_lease_free(redis_client))


def _rolled_back(redis_client: aioredis.Redis) -> Any:
    async def rolled_back() -> bool:
        return await state_of(redis_client) == "rolled_back"

    return rolled_back


async def test_rollback_without_the_command_is_an_announcement_plus_verification(
    bot: RunningBot, road: Road, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await open_release(bot, standin)  # no healthy file: the verify check fails
    await command(bot, standin, f"rollback {RID} bad deploy", SRE, answered=False)
    view, view_id = await rollback_modal(standin)
    await submit(bot, view, view_id, SRE, "bad deploy, edited", run=False)
    [announcement] = await until(lambda: announced(standin, "ROLLBACK"))
    assert "bad deploy, edited" in announcement["text"]
    verify = await until(lambda: [r for r in thread(standin, announcement) if "after rollback" in r["text"]])
    assert "❌ health still failing after rollback" in verify[0]["text"]
    assert not [r for r in thread(standin, announcement) if "rolled back to" in rendered(r)]  # not run
    await until(_rolled_back(redis_client))
    assert "rollback_failed" in await audit_types(redis_client)
