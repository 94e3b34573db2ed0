"""Decisions are frozen, and state moves check their preconditions in the write itself: the real
bot and real Redis, races run concurrently (asyncio.gather) or interleaved at a held Slack call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from bot.playground.standin import SlackStandIn
from bot.slack.blocks import ACTION_ACCEPT_RISK, ACTION_APPROVE, ACTION_MANUAL_DONE, ACTION_RUN
from bot.store import keys
from tests.bot_harness import CHANNEL, RunningBot, bot_settings, reply_to, write_gate

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - id: unit-tests
    kind: command
    run: ["python3", "-c", "import pathlib, sys; sys.exit(int(pathlib.Path('{flag}').read_text()))"]
    severity: blocker
  - id: pen-test
    kind: manual
    owner: security
    severity: advisory
signoffs:
  - {{role: tech-lead, label: Tech Lead, users: [U01TECH, U01LEAD2], usergroup: S0TL}}
  - {{role: security, label: Security, users: [U03SEC], required: false}}
risks:
  - {{id: async-latency, description: Slow at first, impact: medium, acceptor: tech-lead}}
override:
  approvers: {{tech-lead: 1}}
"""
RID = "payments@1.4.0"
SHA = "abc1234"


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(usergroups={"S0TL": ["U07GRP"]}) as server:
        yield server


@pytest.fixture
def flag(tmp_path: Path) -> Path:
    path = tmp_path / "flag"
    path.write_text("1")  # the blocker fails until a test says otherwise
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
        await say(running, standin, f"open payments 1.4.0 {SHA}")
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


async def say(bot: RunningBot, standin: SlackStandIn, text: str, user: str = "U01TECH") -> dict[str, Any]:
    url = standin.new_response_url()
    await bot.command(text, response_url=url, user=user)
    return await reply_to(standin, url, timeout=10)


async def click(bot: RunningBot, standin: SlackStandIn, action_id: str, value: str, user: str) -> dict[str, Any]:
    url = standin.new_response_url()
    await bot.click(action_id, value, response_url=url, user=user, trigger_id=standin.issue_trigger_id())
    return await reply_to(standin, url, timeout=10)


async def run_and_wait(bot: RunningBot, standin: SlackStandIn) -> None:
    before = len(standin.calls("chat.update"))
    await say(bot, standin, f"run {RID}")
    await standin.wait_for(
        "chat.update",
        lambda c: (
            any(c is later for later in standin.calls("chat.update")[before:]) and not headline(c.args).startswith("⏳")
        ),
        timeout=15,
    )


async def audit_types(redis_client: aioredis.Redis, rid: str = RID) -> list[str]:
    entries = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.audit(rid)))
    return [fields["type"] for _, fields in entries]


async def doc(redis_client: aioredis.Redis, rid: str = RID) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(await redis_client.get(keys.release(rid)) or "{}"))


# --- decisions are frozen ----------------------------------------------------------------------


async def test_a_decided_release_refuses_every_change_and_keeps_its_verdict(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis, flag: Path
) -> None:
    await run_and_wait(bot, standin)
    # A modal opened while the release was open, submitted after the decision.
    url = standin.new_response_url()
    await bot.click(
        ACTION_MANUAL_DONE, f"{RID}|pen-test", response_url=url, user="U03SEC", trigger_id=standin.issue_trigger_id()
    )
    opened = await standin.wait_for("views.open", lambda c: True)
    view, view_id = opened.args["view"], str(opened.response["view"]["id"])

    decided = await say(bot, standin, f"decide {RID}")
    assert f"{RID} decided: NO-GO" in decided["text"]
    await standin.wait_for("chat.update", lambda c: headline(c.args).startswith("🔴 NO-GO (decided)"))
    doc_before = record = await doc(redis_client)
    assert (record["decided_verdict"], record["decided_by"]) == ("NO-GO", "U01TECH")
    audit_before = await audit_types(redis_client)
    results_before = await redis_client.hgetall(keys.results(RID))

    flag.write_text("0")  # a green run now would say GO: it must not happen
    frozen = f"{RID} was decided NO-GO at "
    reopen = f"by <@U01TECH>; `/gonogo reopen {RID}` first"
    answers = [
        await say(bot, standin, f"run {RID}"),
        await click(bot, standin, ACTION_RUN, RID, "U01TECH"),
        await click(bot, standin, ACTION_APPROVE, f"{RID}|tech-lead|{SHA}", "U01LEAD2"),
        await click(bot, standin, ACTION_ACCEPT_RISK, f"{RID}|async-latency", "U01TECH"),
        await click(bot, standin, ACTION_MANUAL_DONE, f"{RID}|pen-test", "U03SEC"),
        await say(bot, standin, f"override {RID} ship it anyway"),
        await say(bot, standin, f"override cancel {RID}"),
        await say(bot, standin, "open payments 1.4.0 def5678"),
    ]
    for answer in answers:
        assert frozen in answer["text"] and reopen in answer["text"], answer["text"]
    await bot.submit(view, view_id, "U03SEC", {"evidence": "report-42"})
    told = await standin.wait_for("chat.postEphemeral", lambda c: c.args.get("user") == "U03SEC")
    assert frozen in told.args["text"]

    # Nothing was written, no run started, and the card still shows the recorded verdict.
    assert await doc(redis_client) == doc_before
    assert await redis_client.hgetall(keys.results(RID)) == results_before
    assert await redis_client.hgetall(keys.manual(RID)) == {}
    assert await redis_client.get(keys.run_lock(RID)) is None
    assert [t for t in await audit_types(redis_client) if t not in ("refused", "signoff_refused")] == audit_before
    assert headline(card(standin)).startswith("🔴 NO-GO (decided)")
    assert card(standin)["text"].startswith("NO-GO (decided)")

    # Reopened, it takes changes again.
    assert "is open again" in (await say(bot, standin, f"reopen {RID}"))["text"]
    await run_and_wait(bot, standin)
    assert "✅ *unit-tests*" in dump(card(standin)["blocks"])


# --- atomic state moves ------------------------------------------------------------------------


async def test_two_concurrent_decides_post_one_record(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    urls = [standin.new_response_url() for _ in range(4)]
    await asyncio.gather(*(bot.command(f"decide {RID}", response_url=url, user="U01TECH") for url in urls))
    answers = [(await reply_to(standin, url, timeout=10))["text"] for url in urls]
    assert sum("decided: NO-GO" in a for a in answers) == 1, answers
    assert all("decided: NO-GO" in a or f"{RID} was decided NO-GO" in a for a in answers), answers
    assert (await audit_types(redis_client)).count("decided") == 1
    await asyncio.sleep(0.2)  # a second record would be posted right after its decide
    records = [c for c in standin.calls("chat.postMessage") if f"{RID} decided by" in c.args.get("text", "")]
    assert len(records) == 1, [c.args.get("text") for c in records]


async def test_a_decide_interleaved_with_another_decide_is_refused(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    """Decide A has read the release and waits on the user-group lookup while decide B completes."""
    held = standin.hold("usergroups.users.list")
    first = standin.new_response_url()
    await bot.command(f"decide {RID}", response_url=first, user="U07GRP")
    await held.arrived.wait()
    assert "decided: NO-GO" in (await say(bot, standin, f"decide {RID}", "U01LEAD2"))["text"]
    held.release()
    assert f"{RID} was decided NO-GO" in (await reply_to(standin, first, timeout=10))["text"]
    assert (await audit_types(redis_client)).count("decided") == 1
    assert (await doc(redis_client))["decided_by"] == "U01LEAD2"
    records = [c for c in standin.calls("chat.postMessage") if f"{RID} decided by" in c.args.get("text", "")]
    assert len(records) == 1


async def test_a_close_interleaved_with_a_decide_ends_closed(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    held = standin.hold("usergroups.users.list")
    decide = standin.new_response_url()
    await bot.command(f"decide {RID}", response_url=decide, user="U07GRP")
    await held.arrived.wait()
    assert f"{RID} is closed." in (await say(bot, standin, f"close {RID}", "U01LEAD2"))["text"]
    held.release()
    assert f"{RID} is closed: `/gonogo reopen {RID}` first" in (await reply_to(standin, decide, timeout=10))["text"]
    assert (await doc(redis_client))["state"] == "closed"
    assert "decided" not in await audit_types(redis_client)
    assert await redis_client.get(keys.bundle(RID)) is None


async def test_a_close_racing_a_decide_always_ends_closed(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await say(bot, standin, f"close {RID}")
    for version in ("1.4.1", "1.4.2", "1.4.3", "1.4.4", "1.4.5"):
        rid = f"payments@{version}"
        await say(bot, standin, f"open payments {version} {SHA}")
        decide_url, close_url = standin.new_response_url(), standin.new_response_url()
        await asyncio.gather(
            bot.command(f"decide {rid}", response_url=decide_url),
            bot.command(f"close {rid}", response_url=close_url),
        )
        await reply_to(standin, decide_url, timeout=10)
        assert f"{rid} is closed." in (await reply_to(standin, close_url, timeout=10))["text"]
        assert (await doc(redis_client, rid))["state"] == "closed", version
        assert await redis_client.get(keys.open_release("payments")) is None


async def test_reopen_while_another_release_is_open_is_refused_and_writes_nothing(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await say(bot, standin, f"close {RID}")
    assert "Opened payments@1.5.0" in (await say(bot, standin, f"open payments 1.5.0 {SHA}"))["text"]
    before, audit_before = await doc(redis_client), await audit_types(redis_client)

    refused = await say(bot, standin, f"reopen {RID}")
    assert "payments@1.5.0 is open: close it first" in refused["text"]
    assert "went wrong" not in refused["text"]
    assert await doc(redis_client) == before  # still closed
    assert await audit_types(redis_client) == audit_before
    assert await redis_client.get(keys.open_release("payments")) == "payments@1.5.0"


async def test_concurrent_reopens_of_two_closed_releases_open_one(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await say(bot, standin, f"close {RID}")
    await say(bot, standin, f"open payments 1.5.0 {SHA}")
    await say(bot, standin, "close payments@1.5.0")
    urls = [standin.new_response_url(), standin.new_response_url()]
    await asyncio.gather(
        bot.command(f"reopen {RID}", response_url=urls[0]),
        bot.command("reopen payments@1.5.0", response_url=urls[1]),
    )
    answers = [(await reply_to(standin, url, timeout=10))["text"] for url in urls]
    assert sum("is open again" in a for a in answers) == 1, answers
    states = [(await doc(redis_client, rid))["state"] for rid in (RID, "payments@1.5.0")]
    assert sorted(states) == ["closed", "open"]
