"""Evidence belongs to a commit, and sign-offs go stale only on material change, end to end: the
real bot, real Redis, Slack-shaped payloads echoing the buttons the bot posted."""

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
from bot.slack.blocks import ACTION_APPROVE, ACTION_APPROVE_COMMENT, ACTION_RUN
from bot.store import keys
from tests.bot_harness import CHANNEL, RunningBot, bot_settings, reply_to, write_gate

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
signoffs:
  - {{role: tech-lead, label: Tech Lead, users: [U01TECH]}}
  - {{role: sre, label: SRE, users: [U02SRE], usergroup: S0SRE}}
"""
OPENER = "U09OPEN"
RID = "payments@1.4.0"
OLD, NEW = "aaaaaaa", "bbbbbbb"


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(usergroups={"S0SRE": ["U05GRP"]}) as server:
        yield server


@pytest.fixture
def flag(tmp_path: Path) -> Path:
    path = tmp_path / "flag"
    path.write_text("0")
    return path


@pytest.fixture
async def bot(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, flag: Path, tmp_path: Path
) -> AsyncIterator[RunningBot]:
    gates = tmp_path / "gates"
    write_gate(gates, GATE.format(flag=flag), "payments.yml")
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates, data_dir=tmp_path / "d")
    running = await RunningBot(settings).start()
    try:
        await say(running, standin, f"open payments 1.4.0 {OLD}", OPENER)
        yield running
    finally:
        await running.stop()


def dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def card(standin: SlackStandIn) -> dict[str, Any]:
    first = standin.calls("chat.postMessage")[0]
    found = standin.message(CHANNEL, str(first.response["ts"]))
    assert found is not None
    return found


def headline(message: dict[str, Any]) -> str:
    return str(message["blocks"][0]["text"]["text"])


def button(message: dict[str, Any], action_id: str, value_part: str) -> dict[str, Any]:
    for block in message["blocks"]:
        for element in block.get("elements", []):
            if element.get("action_id") == action_id and value_part in element.get("value", ""):
                return {"block_id": block["block_id"], **element}
    raise AssertionError(f"no {action_id} button for {value_part}")


async def say(bot: RunningBot, standin: SlackStandIn, text: str, user: str = "U01TECH") -> dict[str, Any]:
    url = standin.new_response_url()
    await bot.command(text, response_url=url, user=user)
    return await reply_to(standin, url, timeout=10)


async def press(
    bot: RunningBot, standin: SlackStandIn, found: dict[str, Any], user: str, *, wait: bool = True
) -> dict[str, Any]:
    url = standin.new_response_url()
    await bot.click(
        found["action_id"],
        found["value"],
        response_url=url,
        user=user,
        block_id=found["block_id"],
        trigger_id=standin.issue_trigger_id(),
    )
    return await reply_to(standin, url, timeout=10) if wait else {}


async def run_and_wait(bot: RunningBot, standin: SlackStandIn) -> None:
    """Run every check and wait for the card to converge on the run's end: the run is recorded and
    the card on Slack shows the newest revision (not merely one update after the run: a render of an
    earlier state may land after the run ended)."""
    assert bot.bot is not None and bot.bot.redis is not None
    redis = bot.bot.redis.client
    runs_before = await redis.llen(keys.runs(RID))
    await say(bot, standin, f"run {RID}")
    deadline = time.monotonic() + 15
    while True:
        wanted, shown = await redis.hmget(keys.card(RID), ["wanted", "shown"])
        recorded = await redis.llen(keys.runs(RID)) > runs_before
        if recorded and int(wanted or 0) == int(shown or 0) and not headline(card(standin)).startswith("⏳"):
            return
        assert time.monotonic() < deadline, "the card did not converge on the run's end"
        await asyncio.sleep(0.05)


async def audit(redis_client: aioredis.Redis) -> list[dict[str, Any]]:
    entries = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.audit(RID)))
    return [{**fields, "data": json.loads(fields["data"])} for _, fields in entries]


async def signatures(redis_client: aioredis.Redis) -> dict[str, dict[str, Any]]:
    raw = cast(dict[str, str], await redis_client.hgetall(keys.signatures(RID)))
    return {k: json.loads(v) for k, v in raw.items()}


async def sign_both(bot: RunningBot, standin: SlackStandIn) -> None:
    for role, user in (("tech-lead", "U01TECH"), ("sre", "U02SRE")):
        answer = await press(bot, standin, button(card(standin), ACTION_APPROVE, f"|{role}|"), user)
        assert "You approved" in answer["text"]


# --- evidence belongs to a commit ------------------------------------------------------------


async def test_a_commit_move_is_not_go_until_a_run_on_the_new_commit(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await run_and_wait(bot, standin)
    await sign_both(bot, standin)
    await standin.wait_for("chat.update", lambda c: headline(c.args).startswith("🟢 GO"))

    # The result carries the commit and the run it came from.
    stored = json.loads(await redis_client.hget(keys.results(RID), "unit-tests") or "{}")
    (run,) = [json.loads(r) for r in await redis_client.lrange(keys.runs(RID), 0, -1)]
    assert stored["status"] == "pass" and stored["sha"] == OLD and stored["run_id"] == run["run_id"]

    moved = await say(bot, standin, f"open payments 1.4.0 {NEW}", OPENER)
    assert f"Moved {RID} to commit `{NEW}`" in moved["text"]
    now = card(standin)
    assert headline(now).startswith("🔴 NO-GO"), headline(now)
    assert f"from {OLD}, not run on {NEW}" in dump(now["blocks"])
    assert "blocker unit-tests has not run" in dump(now["blocks"])

    # A run on the new commit makes the checks count again; the sign-offs were for the old one.
    await run_and_wait(bot, standin)
    after = card(standin)
    assert f"from {OLD}" not in dump(after["blocks"]) and "✅ *unit-tests*" in dump(after["blocks"])
    assert headline(after).startswith("🔴 NO-GO") and "sign-off missing: Tech Lead" in dump(after["blocks"])
    await sign_both(bot, standin)  # the buttons now carry the new commit
    await standin.wait_for("chat.update", lambda c: headline(c.args).startswith("🟢 GO"))
    assert {s["sha"] for s in (await signatures(redis_client)).values()} == {NEW}


async def test_moving_the_commit_is_authorised_and_audited(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    refused = await say(bot, standin, f"open payments 1.4.0 {NEW}", "U0STRANGER")
    assert f"only <@{OPENER}> (who opened it) or a member of a role of gate payments can move {RID}" in refused["text"]
    doc = json.loads(await redis_client.get(keys.release(RID)) or "{}")
    assert doc["sha"] == OLD
    assert (await audit(redis_client))[-1]["type"] == "refused"

    moved = await say(bot, standin, f"open payments 1.4.0 {NEW}", "U02SRE")  # a member of a role
    assert "Moved" in moved["text"]
    entry = (await audit(redis_client))[-1]
    assert (entry["type"], entry["actor"], entry["data"]) == ("sha_moved", "U02SRE", {"from": OLD, "to": NEW})
    doc = json.loads(await redis_client.get(keys.release(RID)) or "{}")
    assert doc["sha"] == NEW


async def test_a_signoff_stores_the_commit_its_button_was_drawn_for(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    found = button(card(standin), ACTION_APPROVE, "|tech-lead|")
    assert found["value"] == f"{RID}|tech-lead|{OLD}"
    await press(bot, standin, found, "U01TECH")
    assert (await signatures(redis_client))["tech-lead|U01TECH"]["sha"] == OLD


async def test_a_button_drawn_for_an_old_commit_is_refused_and_the_current_card_shown(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    old_approve = button(card(standin), ACTION_APPROVE, "|tech-lead|")
    old_comment = button(card(standin), ACTION_APPROVE_COMMENT, "|sre|")
    # A modal opened before the move, submitted after it.
    await press(bot, standin, old_comment, "U02SRE", wait=False)
    opened = await standin.wait_for("views.open", lambda c: True)
    view, view_id = opened.args["view"], str(opened.response["view"]["id"])
    await say(bot, standin, f"open payments 1.4.0 {NEW}", OPENER)

    answer = await press(bot, standin, old_approve, "U01TECH")
    assert f"the release moved to {NEW} since this card was drawn" in answer["text"]
    assert answer["response_type"] == "ephemeral"
    shown = dump(answer["blocks"])
    assert "Payments API 1.4.0" in shown and f"commit `{NEW}`" in shown  # the card as it is now
    assert button({"blocks": answer["blocks"]}, ACTION_APPROVE, "|tech-lead|")["value"].endswith(f"|{NEW}")

    await bot.submit(view, view_id, "U02SRE", {"comment": "looks fine"})
    told = await standin.wait_for("chat.postEphemeral", lambda c: c.args.get("user") == "U02SRE")
    assert f"the release moved to {NEW} since this card was drawn" in told.args["text"]

    assert await signatures(redis_client) == {}
    assert "signed" not in [e["type"] for e in await audit(redis_client)]


async def test_a_click_racing_a_commit_move_is_refused_by_the_write_itself(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    """The move lands after the click read the release, while it looks up the role's user group:
    the write re-checks the commit and records nothing."""
    found = button(card(standin), ACTION_APPROVE, "|sre|")
    held = standin.hold("usergroups.users.list")
    url = standin.new_response_url()
    await bot.click(ACTION_APPROVE, found["value"], response_url=url, user="U05GRP", block_id=found["block_id"])
    await held.arrived.wait()
    await say(bot, standin, f"open payments 1.4.0 {NEW}", OPENER)  # the opener: no lookup needed
    held.release()
    answer = await reply_to(standin, url, timeout=10)
    assert f"the release moved to {NEW} since this card was drawn" in answer["text"]
    assert await signatures(redis_client) == {}


# --- sign-offs go stale only on material change ------------------------------------------------


async def test_signing_before_the_first_green_run_still_counts_after_it(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis, flag: Path
) -> None:
    await sign_both(bot, standin)  # nothing has run yet: the blocker is "not run"
    await run_and_wait(bot, standin)  # not run -> pass: an improvement
    first = card(standin)
    assert headline(first).startswith("🟢 GO"), headline(first)
    assert "stale" not in dump(first["blocks"])
    await run_and_wait(bot, standin)  # the same outcome again
    assert headline(card(standin)).startswith("🟢 GO")

    assert "signoff_stale" not in [e["type"] for e in await audit(redis_client)]

    # Signed, then its blocker passes, then fails again: they never vouched for it passing, and the
    # failing blocker is a NO-GO by itself. (Signed while it passed: stale, see test_signoffs_e2e.)
    flag.write_text("1")
    await run_and_wait(bot, standin)
    failing = card(standin)
    assert headline(failing).startswith("🔴 NO-GO") and "stale" not in dump(failing["blocks"])


async def test_a_fixed_blocker_does_not_make_signoffs_signed_while_it_failed_stale(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis, flag: Path
) -> None:
    flag.write_text("1")
    await run_and_wait(bot, standin)
    await sign_both(bot, standin)  # signed while the blocker fails (NO-GO, knowingly)
    flag.write_text("0")
    await run_and_wait(bot, standin)  # fail -> pass
    now = card(standin)
    assert headline(now).startswith("🟢 GO"), headline(now)
    types = [e["type"] for e in await audit(redis_client)]
    assert "signoff_stale" not in types


async def test_the_run_button_runs_for_the_current_commit(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await say(bot, standin, f"open payments 1.4.0 {NEW}", OPENER)
    run = button(card(standin), ACTION_RUN, RID)
    await press(bot, standin, run, "U01TECH", wait=False)
    await standin.wait_for("chat.update", lambda c: "last run by" in dump(c.args["blocks"]), timeout=15)
    stored = json.loads(await redis_client.hget(keys.results(RID), "unit-tests") or "{}")
    assert stored["sha"] == NEW
