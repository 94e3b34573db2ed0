"""Hostile input, end to end: whatever people type and checks print reaches Slack escaped (no
pings, no links, no formatting), masked, and only where it may be seen. Requests that are
forged, malformed, foreign or replayed do nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.core.decision import DecisionInput, decide
from bot.core.gate import Gate
from bot.core.masking import Masker
from bot.core.release import Release
from bot.core.results import CheckResult, Status
from bot.playground.standin import Call, SlackStandIn
from bot.services.runner import sanitize
from bot.slack.blocks import ACTION_APPROVE_COMMENT, ACTION_OVERRIDE_APPROVE, ACTION_RUN, ZWSP, Message, escape, quiet
from bot.slack.card import CardView, render_card
from bot.slack.messages import render_override_request
from bot.store import keys
from commands.inbound import decode_entities
from tests.bot_harness import (
    CHANNEL,
    RunningBot,
    block_action,
    bot_settings,
    form,
    payload_form,
    reply_to,
    signature_headers,
    slash_command,
    state_keys,
    write_gate,
)

RID = "payments@1.4.0"
HOSTILE = (
    "<!channel> <!here> <!everyone> <!subteam^S0ALL> <@U0CEO> <#C0EVIL> <https://evil.example|docs>"
    " {@U0CEO} *bold* @here"
)
# What must never reach Slack from outside text (the bot's own mentions of members are fine).
FORBIDDEN = ("<!channel", "<!here", "<!everyone", "<!subteam^S0ALL", "<@U0CEO", "<#C0EVIL", "<https://evil", "@here")

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - id: unit-tests
    kind: command
    run: ["python3", "-c", "import sys; print(sys.argv[1]); sys.exit(1)", "{hostile}"]
    severity: blocker
  - id: pen-test
    kind: manual
    owner: security
signoffs:
  - {{role: tech-lead, label: Tech Lead, users: [U01TECH, U01LEAD2]}}
  - {{role: sre, label: SRE, users: [U02SRE], usergroup: S0SRE}}
  - {{role: security, label: Security, users: [U03SEC]}}
risks:
  - {{id: async-latency, description: Slow at first, impact: medium, acceptor: tech-lead}}
override:
  approvers: {{tech-lead: 1, sre: 1}}
"""


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def everything_sent(standin: SlackStandIn) -> list[str]:
    """Every string field of every Web API call and response_url post the bot made."""
    found = [s for call in standin.calls() for s in strings(call.args)]
    return found + [s for response in standin.responses for s in strings(response.payload)]


def assert_nothing_raw(standin: SlackStandIn) -> None:
    for text in everything_sent(standin):
        for bad in FORBIDDEN:
            assert bad not in text, f"{bad!r} reached Slack in {text[:300]!r}"


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(usergroups={"S0SRE": ["U02SRE2"]}) as server:
        yield server


@pytest.fixture
def gates_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "gates"
    write_gate(directory, GATE.format(hostile=HOSTILE.replace('"', "")), "payments.yml")
    return directory


async def start(standin: SlackStandIn, redis_url: str, gates_dir: Path, tmp_path: Path, **extra: Any) -> RunningBot:
    settings = bot_settings(
        api_url=standin.api_url, redis_url=redis_url, gates=gates_dir, data_dir=tmp_path / "d", **extra
    )
    return await RunningBot(settings).start()


@pytest.fixture
async def bot(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, gates_dir: Path, tmp_path: Path
) -> AsyncIterator[RunningBot]:
    running = await start(standin, redis_url, gates_dir, tmp_path)
    try:
        await running.command("open payments 1.4.0 abc1234", response_url=standin.new_response_url(), user="U09OPEN")
        await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL)
        yield running
    finally:
        await running.stop()


async def answer(bot: RunningBot, standin: SlackStandIn, text: str, user: str = "U01TECH", **kw: Any) -> str:
    url = standin.new_response_url()
    await bot.command(text, response_url=url, user=user, **kw)
    return str((await reply_to(standin, url))["text"])


async def open_view(bot: RunningBot, standin: SlackStandIn, action_id: str, value: str, user: str) -> tuple[Any, str]:
    await bot.click(
        action_id, value, response_url=standin.new_response_url(), user=user, trigger_id=standin.issue_trigger_id()
    )
    opened = await standin.wait_for("views.open", lambda c: value.split("|")[1] in c.args["view"]["private_metadata"])
    standin.clear()  # keep the calls list about what follows (views stay stored)
    return opened.args["view"], str(opened.response["view"]["id"])


# --- pure renderings ---------------------------------------------------------------------------


def test_escape_shows_outside_text_literally() -> None:
    escaped = escape("<!channel> & *bold* _it_ ~s~ `c` snake_case_name a*b @here me@example.com \x07\u202eok")
    assert "&lt;!channel&gt; &amp;" in escaped
    assert f"*{ZWSP}bold*" in escaped and f"_{ZWSP}it_" in escaped and f"~{ZWSP}s~" in escaped
    assert f"`{ZWSP}c`" in escaped
    assert "snake_case_name" in escaped and "a*b" in escaped and "me@example.com" in escaped
    assert f"@{ZWSP}here" in escaped
    assert "\x07" not in escaped and "\u202e" not in escaped and escaped.endswith("ok")


def test_slash_text_is_decoded_once() -> None:
    assert decode_entities("fix &lt;migration&gt; &amp; &amp;lt;b&amp;gt;") == "fix <migration> & &lt;b&gt;"


def test_a_mention_token_in_check_output_is_not_a_mention() -> None:
    gate = Gate.model_validate(
        {
            "id": "g",
            "name": "G",
            "channel": "C1",
            "checks": [{"id": "t", "kind": "command", "run": ["true"], "severity": "blocker"}],
        }
    )
    now = datetime.now(UTC)
    result = CheckResult(
        check_id="t", status=Status.FAIL, summary="call {@U0CEO} now <!channel>", started_at=now, finished_at=now
    )
    for results in ({"t": result}, {"t": sanitize(result, Masker())}):
        decision = decide(DecisionInput(gate=gate, now=now, results=results))
        message = render_card(CardView(gate=gate, release=_release(), decision=decision, results=results, now=now))
        dumped = json.dumps(message.blocks) + message.text
        assert "<@U0CEO>" not in dumped and "<!channel>" not in dumped
        assert "&lt;!channel&gt;" in dumped


def _release() -> Release:
    return Release(id="g@1.0", gate_id="g", version="1.0", opened_by="U1", opened_at=datetime.now(UTC))


def test_the_fallback_text_is_escaped_too() -> None:
    gate = Gate.model_validate(
        {
            "id": "g",
            "name": "G",
            "channel": "C1",
            "signoffs": [{"role": "r", "users": ["U1"]}],
            "override": {"approvers": {"r": 1}},
        }
    )
    message = render_override_request(gate, _release(), "req1", "U2", "<!channel> hotfix")
    assert "<!channel>" not in message.text and "&lt;!channel&gt;" in message.text


def test_quiet_drops_only_the_bots_mentions() -> None:
    loud = Message(text="hi <@U1>", blocks=[{"text": {"text": "waiting for <@U1>, <!subteam^S1|sre> &lt;@U2&gt;"}}])
    hushed = quiet(loud)
    assert hushed.text == "hi @U1"
    assert hushed.blocks[0]["text"]["text"] == "waiting for @U1, @S1 &lt;@U2&gt;"


# --- end to end --------------------------------------------------------------------------------


async def test_hostile_text_in_every_field_never_reaches_slack_raw(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    # A check prints it.
    await bot.click(ACTION_RUN, RID, response_url=standin.new_response_url())
    await standin.wait_for("chat.postMessage", lambda c: "unit-tests" in json.dumps(c.args) and "thread_ts" in c.args)
    # Someone types it into an override reason (as Slack sends it: mentions raw, typed < > encoded).
    reason = HOSTILE + " &lt;migration&gt;"
    assert "Override requested" in await answer(bot, standin, f"override {RID} {reason}")
    request = await standin.wait_for("chat.postMessage", lambda c: "Override requested" in c.args.get("text", ""))
    assert "&lt;migration&gt;" in request.args["text"] and "&amp;lt;" not in json.dumps(request.args)
    assert f"*{ZWSP}bold*" in json.dumps(request.args["blocks"], ensure_ascii=False)
    for role, user in (("tech-lead", "U01LEAD2"), ("sre", "U02SRE")):
        await bot.click(
            ACTION_OVERRIDE_APPROVE,
            f"{RID}|{_request_id(request.args)}|{role}",
            response_url=standin.new_response_url(),
            user=user,
        )
    await standin.wait_for("chat.postMessage", lambda c: "is GO (OVERRIDE)" in c.args.get("text", ""))
    # ...into every modal.
    for action, subject, user, values, callback in (
        # Sign-off buttons carry the commit their card was drawn for.
        (ACTION_APPROVE_COMMENT, "tech-lead|abc1234", "U01TECH", {"comment": HOSTILE}, "gonogo_approve_modal"),
        ("gonogo_reject", "security|abc1234", "U03SEC", {"reason": HOSTILE}, "gonogo_reject_modal"),
        ("gonogo_manual_done", "pen-test", "U03SEC", {"evidence": HOSTILE}, "gonogo_manual_modal"),
        ("gonogo_accept_risk", "async-latency", "U01LEAD2", {"reason": HOSTILE}, "gonogo_risk_modal"),
    ):
        view, view_id = await open_view(bot, standin, action, f"{RID}|{subject}", user)
        assert view["callback_id"] == callback
        await bot.submit(view, view_id, user, values)
        await standin.wait_for("chat.postEphemeral", _to(user))
        assert_nothing_raw(standin)
    standin.clear()
    # ...and as an echoed argument; then everything that shows it again.
    await answer(bot, standin, f"run {HOSTILE}")
    await answer(bot, standin, f"frobnicate {HOSTILE}")
    await answer(bot, standin, f"history {RID}")
    await answer(bot, standin, f"decide {RID}")
    await answer(bot, standin, f"evidence {RID}")
    await bot.command(f"status {RID}", response_url=standin.new_response_url())  # re-posts the card
    await standin.wait_for("chat.update", lambda c: c.args.get("ts") == _last_post(standin))
    await standin.wait_for("files.completeUploadExternal")
    assert_nothing_raw(standin)
    stored = json.dumps(await redis_client.hgetall(keys.signatures(RID)))
    assert "<!channel>" in stored  # kept as typed (masked, control characters dropped): escaped on the way out


def _to(user: str) -> Callable[[Call], bool]:
    return lambda call: call.args.get("user") == user


def _last_post(standin: SlackStandIn) -> str | None:
    posts = [c for c in standin.calls("chat.postMessage") if c.args.get("channel") == CHANNEL and c.ok]
    return str(posts[-1].response["ts"]) if posts else None


def _request_id(args: dict[str, Any]) -> str:
    for block in args["blocks"]:
        for element in block.get("elements", []):
            if element.get("action_id") == ACTION_OVERRIDE_APPROVE:
                return str(element["value"]).split("|")[1]
    raise AssertionError("no override button")


async def test_reposting_the_card_pings_nobody(bot: RunningBot, standin: SlackStandIn) -> None:
    first = standin.calls("chat.postMessage")[0]
    assert "<@U01TECH>" in json.dumps(first.args["blocks"])  # the first card asks the signers
    standin.clear()
    await bot.command(f"status {RID}", response_url=standin.new_response_url())
    reposted = await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL)
    posted = json.dumps(reposted.args)
    assert "<@" not in posted and "<!subteam" not in posted
    # The full card arrives as an edit, which notifies nobody.
    edit = await standin.wait_for("chat.update", lambda c: c.args.get("ts") == reposted.response["ts"])
    assert "<@U01TECH>" in json.dumps(edit.args["blocks"])


async def test_status_history_and_evidence_only_in_the_channel_or_for_members(
    bot: RunningBot, standin: SlackStandIn
) -> None:
    for what in ("status", "history", "evidence"):
        refused = await answer(bot, standin, f"{what} {RID}", user="U0STRANGER", channel="C0ELSEWHERE")
        assert "shown only in its gate's channel" in refused
    assert "History of" in await answer(bot, standin, f"history {RID}", user="U0STRANGER")  # in the gate's channel
    url = standin.new_response_url()
    await bot.command(f"status {RID}", response_url=url, user="U02SRE2", channel="C0ELSEWHERE")  # via the user group
    private = await reply_to(standin, url)
    assert private["blocks"][0]["text"]["text"].startswith("🔴 NO-GO")
    listing = await answer(bot, standin, "list", user="U0STRANGER", channel="C0ELSEWHERE")
    assert RID not in listing


async def test_secrets_typed_by_people_are_masked_everywhere(
    bot: RunningBot,
    standin: SlackStandIn,
    redis_client: aioredis.Redis,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token, password = "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "hunter2hunter2"
    await answer(bot, standin, f"override {RID} hotfix, use {token} or db_password={password}")
    view, view_id = await open_view(bot, standin, ACTION_APPROVE_COMMENT, f"{RID}|tech-lead|abc1234", "U01TECH")
    await bot.submit(view, view_id, "U01TECH", {"comment": f"checked with access_token={password}"})
    await standin.wait_for("chat.postEphemeral", lambda c: c.args.get("user") == "U01TECH")
    await answer(bot, standin, f"decide {RID}")
    await answer(bot, standin, f"history {RID}")
    stored = [str(v) async for key in redis_client.scan_iter("*") for v in await _values(redis_client, key)]
    from bot.cli import _export

    monkeypatch.setenv("REDIS_URL", redis_url)
    assert await _export(RID, "json") == 0 and await _export(RID, "markdown") == 0
    exported = capsys.readouterr().out
    assert "hotfix" in exported and "[masked]" in exported
    for place in (stored, everything_sent(standin), [exported]):
        assert not any(token in text or password in text for text in place)


async def _values(redis: aioredis.Redis, key: str) -> list[Any]:
    kind = await redis.type(key)
    if kind == "string":
        return [await redis.get(key)]
    if kind == "hash":
        return list((await redis.hgetall(key)).values())
    if kind == "list":
        return list(await redis.lrange(key, 0, -1))
    if kind == "stream":
        return [json.dumps(fields) for _, fields in await redis.xrange(key) or []]
    return []


async def test_modal_inputs_longer_than_the_modal_allows_are_refused(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    view, view_id = await open_view(bot, standin, ACTION_APPROVE_COMMENT, f"{RID}|tech-lead|abc1234", "U01TECH")
    reply = await bot.submit(view, view_id, "U01TECH", {"comment": "x" * 2001})
    assert reply.status == 200 and json.loads(reply.text)["response_action"] == "errors"
    assert "2000" in json.loads(reply.text)["errors"]["comment"]
    await asyncio.sleep(0.3)
    assert await redis_client.hlen(keys.signatures(RID)) == 0


# --- requests ----------------------------------------------------------------------------------


def _malformed(response_url: str) -> list[tuple[str, bytes, str | None]]:
    click = block_action(ACTION_RUN, RID, response_url=response_url)
    wrong_user = {**click, "user": "U01TECH"}
    wrong_value = {**click, "actions": [{**click["actions"][0], "value": 42}]}
    no_user = {k: v for k, v in click.items() if k != "user"}
    view = {
        "type": "view_submission",
        "user": {"id": "U1"},
        "view": {
            "id": "V1",
            "callback_id": "gonogo_approve_modal",
            "private_metadata": "not json",
            "state": {"values": {}},
        },
    }
    slash_no_user = {k: v for k, v in slash_command("list", response_url=response_url).items() if k != "user_id"}
    return [
        ("payload is a list", b"payload=%5B1%2C2%5D", None),
        ("payload is not JSON", b"payload=%7Bnope", None),
        ("user is a string", payload_form(wrong_user), None),
        ("value is a number", payload_form(wrong_value), None),
        ("no user", payload_form(no_user), None),
        ("bad private_metadata", payload_form(view), None),
        ("slash command without user", form(slash_no_user), None),
        ("json array", b"[]", "application/json"),
        (
            "event without event",
            json.dumps({"type": "event_callback", "team_id": "T0STANDIN"}).encode(),
            "application/json",
        ),
    ]


async def test_malformed_requests_get_a_4xx_without_traceback(bot: RunningBot, standin: SlackStandIn) -> None:
    for what, body, content_type in _malformed(standin.new_response_url()):
        signed = await bot.signed(body, content_type=content_type)
        assert 400 <= signed.status < 500 and "Traceback" not in signed.text, (what, signed)
        unsigned = await bot.post(body, {}, content_type=content_type)
        assert unsigned.status == 401, (what, unsigned)  # the signature is checked before parsing
    bad_ts = await bot.post(b"payload=%5B%5D", {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"})
    assert bad_ts.status == 401 and "Traceback" not in bad_ts.text
    assert standin.calls("chat.postMessage")[1:] == []  # the card of the fixture only


async def test_requests_from_another_workspace_or_app_are_refused(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, gates_dir: Path, tmp_path: Path
) -> None:
    running = await start(standin, redis_url, gates_dir, tmp_path, SLACK_APP_ID="A0GONOGO")
    try:
        url = standin.new_response_url()
        for change in ({"team_id": "T0EVIL"}, {"api_app_id": "A0OTHER"}, {"enterprise_id": "E0OTHER"}):
            fields = {**slash_command("open payments 1.4.0", response_url=url), **change}
            reply = await running.signed(form(fields))
            assert reply.status == 403, change
        click = {**block_action(ACTION_RUN, RID, response_url=url), "team": {"id": "T0EVIL", "domain": "evil"}}
        assert (await running.signed(payload_form(click))).status == 403
        await asyncio.sleep(0.3)
        assert standin.responses == [] and standin.calls("chat.postMessage") == []
        assert await state_keys(redis_client) == []
        # The installation's own workspace and app are served.
        await running.command("open payments 1.4.0", response_url=url)
        assert "Opened" in str((await reply_to(standin, url))["text"])
    finally:
        await running.stop()


async def test_a_replayed_slash_command_does_nothing(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    url = standin.new_response_url()
    body = form(slash_command(f"run {RID} unit-tests", response_url=url))
    headers = signature_headers(body, timestamp=int(time.time()))
    first = await bot.post(body, headers)
    replay = await bot.post(body, headers)
    assert first.status == 200 and replay.status == 200
    await reply_to(standin, url)
    await standin.wait_for("chat.postMessage", lambda c: "unit-tests" in json.dumps(c.args) and "thread_ts" in c.args)
    await asyncio.sleep(0.5)
    assert len(await redis_client.lrange(keys.runs(RID), 0, -1)) == 1
    assert len([r for r in standin.responses if r.url_id == url.rsplit("/", 1)[1]]) == 1
