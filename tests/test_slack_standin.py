"""The Slack stand-in, driven through the real slack_sdk clients (so it stays faithful to what they send)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.playground.standin import SlackStandIn, block_errors

CHANNEL = "C0RELEASES"


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(**overrides: Any) -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": "Go"}, "action_id": "go", **overrides}


MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "gate",
    "title": {"type": "plain_text", "text": "Release gate"},
    "blocks": [section("Ready?")],
}


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(
        users={"U0ALICE": {"name": "alice", "real_name": "Alice"}},
        usergroups={"S0RELEASE": ["U0ALICE", "U0BOB"]},
    ) as server:
        yield server


@pytest.fixture
def client(standin: SlackStandIn) -> AsyncWebClient:
    return AsyncWebClient(token=standin.bot_token, base_url=standin.api_url)


async def api_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


# -- auth -------------------------------------------------------------------------------------


async def test_auth_test_ok(standin: SlackStandIn, client: AsyncWebClient) -> None:
    response = await client.auth_test()
    assert response["user_id"] == standin.bot_user_id
    assert response["team_id"] == standin.team_id
    assert standin.last("auth.test").headers["Authorization"] == f"Bearer {standin.bot_token}"


async def test_missing_token_is_not_authed(standin: SlackStandIn) -> None:
    err = await api_error(AsyncWebClient(base_url=standin.api_url).auth_test())
    assert err.response.status_code == 200
    assert err.response["error"] == "not_authed"


async def test_wrong_token_is_invalid_auth(standin: SlackStandIn) -> None:
    err = await api_error(AsyncWebClient(token="xoxb-nope", base_url=standin.api_url).auth_test())
    assert err.response["error"] == "invalid_auth"


async def test_tokens_are_kept_to_their_methods(standin: SlackStandIn, client: AsyncWebClient) -> None:
    err = await api_error(client.apps_connections_open(app_token=standin.bot_token))
    assert err.response["error"] == "not_allowed_token_type"
    app_client = AsyncWebClient(token=standin.app_token, base_url=standin.api_url)
    err = await api_error(app_client.chat_postMessage(channel=CHANNEL, text="hi"))
    assert err.response["error"] == "not_allowed_token_type"


async def test_unknown_method(client: AsyncWebClient) -> None:
    err = await api_error(client.api_call("chat.teleport"))
    assert err.response["error"] == "unknown_method"


# -- messages ---------------------------------------------------------------------------------


async def test_post_and_update_round_trip(standin: SlackStandIn, client: AsyncWebClient) -> None:
    blocks = [section("*v1.2* gate: pending", block_id="status")]
    posted = await client.chat_postMessage(channel=CHANNEL, text="gate pending", blocks=blocks)
    second = await client.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=posted["ts"])
    assert posted["channel"] == CHANNEL
    assert float(second["ts"]) > float(posted["ts"])
    assert posted["message"]["blocks"] == blocks
    assert standin.last("chat.postMessage").args["thread_ts"] == posted["ts"]

    updated = await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="gate: GO", blocks=[section("GO")])
    assert updated["ts"] == posted["ts"]
    stored = standin.message(CHANNEL, posted["ts"])
    assert stored is not None
    assert stored["text"] == "gate: GO"
    assert stored["blocks"] == [section("GO")]
    assert [m["ts"] for m in standin.replies(CHANNEL, posted["ts"])] == [second["ts"]]
    assert len(standin.messages(CHANNEL)) == 2

    err = await api_error(client.chat_update(channel=CHANNEL, ts="1.000001", text="x"))
    assert err.response["error"] == "message_not_found"


async def test_ephemeral_delete_and_dm_by_user_id(standin: SlackStandIn, client: AsyncWebClient) -> None:
    ephemeral = await client.chat_postEphemeral(channel=CHANNEL, user="U0ALICE", text="only you")
    assert standin.ephemerals[-1]["ts"] == ephemeral["message_ts"]
    assert standin.ephemerals[-1]["to_user"] == "U0ALICE"
    assert standin.messages(CHANNEL) == []

    dm = await client.chat_postMessage(channel="U0ALICE", text="psst")
    assert dm["channel"] == standin.dm_channel("U0ALICE")
    await client.chat_delete(channel=dm["channel"], ts=dm["ts"])
    assert standin.messages(dm["channel"]) == []
    err = await api_error(client.chat_delete(channel=dm["channel"], ts=dm["ts"]))
    assert err.response["error"] == "message_not_found"


async def test_form_encoded_blocks_are_decoded(standin: SlackStandIn, client: AsyncWebClient) -> None:
    blocks = [section("form")]
    await client.api_call("chat.postMessage", data={"channel": CHANNEL, "blocks": json.dumps(blocks)})
    call = standin.last("chat.postMessage")
    assert call.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert call.args["blocks"] == blocks
    assert standin.messages(CHANNEL)[0]["blocks"] == blocks


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_message_without_content_is_no_text(client: AsyncWebClient) -> None:
    err = await api_error(client.chat_postMessage(channel=CHANNEL))
    assert err.response["error"] == "no_text"


async def test_text_over_40000_chars_rejected(client: AsyncWebClient) -> None:
    err = await api_error(client.chat_postMessage(channel=CHANNEL, text="x" * 40_001))
    assert err.response["error"] == "msg_too_long"


async def test_fifty_one_blocks_rejected(standin: SlackStandIn, client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel=CHANNEL, text="50", blocks=[section(str(i)) for i in range(50)])
    err = await api_error(client.chat_postMessage(channel=CHANNEL, text="51", blocks=[section("b")] * 51))
    assert err.response["error"] == "invalid_blocks"
    assert "no more than 50 items" in err.response["errors"][0]
    assert len(standin.messages(CHANNEL)) == 1


@pytest.mark.parametrize(
    ("block", "needle"),
    [
        (section("x" * 3001), "section text length"),
        ({"type": "section", "fields": [{"type": "mrkdwn", "text": "x"}] * 11}, "fields count"),
        ({"type": "section", "fields": [{"type": "mrkdwn", "text": "x" * 2001}]}, "field text length"),
        ({"type": "header", "text": {"type": "mrkdwn", "text": "Title"}}, "plain_text"),
        ({"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}, "header text length"),
        ({"type": "context", "elements": [{"type": "mrkdwn", "text": "x"}] * 11}, "context elements count"),
        ({"type": "actions", "elements": [button(action_id=f"a{i}") for i in range(26)]}, "actions elements"),
        ({"type": "actions", "elements": [button(text={"type": "plain_text", "text": "x" * 76})]}, "button text"),
        ({"type": "actions", "elements": [button(action_id="a" * 256)]}, "action_id length"),
        (section("x", accessory=button(value="v" * 2001)), "button value length"),
        (section("x", block_id="b" * 256), "block_id length"),
        ({"type": "nonsense"}, "unsupported block type"),
        ({"type": "image", "image_url": "https://example.com/x.png"}, "invalid image block"),
    ],
)
async def test_invalid_block_rejected(client: AsyncWebClient, block: dict[str, Any], needle: str) -> None:
    err = await api_error(client.chat_postMessage(channel=CHANNEL, text="t", blocks=[block]))
    assert err.response["error"] == "invalid_blocks"
    assert any(needle in e for e in err.response["errors"]), err.response["errors"]


def test_duplicate_block_ids_rejected() -> None:
    errors = block_errors([section("a", block_id="same"), section("b", block_id="same")])
    assert errors == ["duplicate block_id 'same' [json-pointer:/blocks/1]"]
    assert block_errors([section("a", block_id="one"), {"type": "divider"}, section("b", accessory=button())]) == []


# -- views and trigger ids ----------------------------------------------------------------------


async def test_trigger_id_lifetime(standin: SlackStandIn, client: AsyncWebClient) -> None:
    err = await api_error(client.views_open(trigger_id="made.up.trigger", view=MODAL))
    assert err.response["error"] == "invalid_trigger_id"

    stale = standin.issue_trigger_id()
    standin.advance_clock(3.0)
    err = await api_error(client.views_open(trigger_id=stale, view=MODAL))
    assert err.response["error"] == "expired_trigger_id"

    fresh = standin.issue_trigger_id()
    opened = await client.views_open(trigger_id=fresh, view=MODAL)
    assert opened["view"]["callback_id"] == "gate"
    assert standin.views[opened["view"]["id"]]["title"]["text"] == "Release gate"
    err = await api_error(client.views_open(trigger_id=fresh, view=MODAL))
    assert err.response["error"] == "exchanged_trigger_id"


async def test_injected_clock_drives_expiry() -> None:
    now = [100.0]
    async with SlackStandIn(clock=lambda: now[0], trigger_ttl=3.0) as server:
        web = AsyncWebClient(token=server.bot_token, base_url=server.api_url)
        trigger = server.issue_trigger_id()
        now[0] += 2.9
        await web.views_open(trigger_id=trigger, view=MODAL)


async def test_views_are_validated(standin: SlackStandIn, client: AsyncWebClient) -> None:
    too_long_title = {**MODAL, "title": {"type": "plain_text", "text": "x" * 25}}
    err = await api_error(client.views_open(trigger_id=standin.issue_trigger_id(), view=too_long_title))
    assert err.response["error"] == "invalid_arguments"
    too_many = {**MODAL, "blocks": [section("b")] * 101}
    err = await api_error(client.views_open(trigger_id=standin.issue_trigger_id(), view=too_many))
    assert err.response["error"] == "invalid_blocks"

    opened = await client.views_open(trigger_id=standin.issue_trigger_id(), view=MODAL)
    view_id, view_hash = opened["view"]["id"], opened["view"]["hash"]
    updated = await client.views_update(view_id=view_id, hash=view_hash, view={**MODAL, "blocks": [section("Done")]})
    assert updated["view"]["id"] == view_id
    err = await api_error(client.views_update(view_id=view_id, hash=view_hash, view=MODAL))
    assert err.response["error"] == "hash_conflict"

    home = {"type": "home", "blocks": [section("Gates")]}
    first = await client.views_publish(user_id="U0ALICE", view=home)
    again = await client.views_publish(user_id="U0ALICE", view=home)
    assert first["view"]["id"] == again["view"]["id"] == standin.home_views["U0ALICE"]["id"]
    err = await api_error(client.views_publish(user_id="U0ALICE", view={"type": "home", "blocks": [{"type": "x"}]}))
    assert err.response["error"] == "invalid_blocks"


# -- fault injection ----------------------------------------------------------------------------


async def test_rate_limit_is_retried_by_sdk_handler(standin: SlackStandIn, client: AsyncWebClient) -> None:
    # slack_sdk sleeps int(first char of Retry-After) + random() seconds; 0 keeps the test under a second.
    standin.fail_next("chat.postMessage", status=429, retry_after=0)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    response = await client.chat_postMessage(channel=CHANNEL, text="eventually")
    assert response["ok"]
    attempts = standin.calls("chat.postMessage")
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[0].response == {"ok": False, "error": "ratelimited"}
    assert len(standin.messages(CHANNEL)) == 1


async def test_rate_limit_without_handler_surfaces(standin: SlackStandIn, client: AsyncWebClient) -> None:
    standin.fail_next("chat.postMessage", status=429, retry_after=7, times=2)
    for _ in range(2):
        err = await api_error(client.chat_postMessage(channel=CHANNEL, text="x"))
        assert err.response.status_code == 429
        assert err.response.headers["Retry-After"] == "7"
    assert (await client.chat_postMessage(channel=CHANNEL, text="x"))["ok"]


async def test_server_error_and_injected_error(standin: SlackStandIn, client: AsyncWebClient) -> None:
    standin.fail_next("users.info", status=500)
    err = await api_error(client.users_info(user="U0ALICE"))
    assert err.response.status_code == 500
    standin.fail_next("chat.postMessage", status=200, error="channel_not_found")
    err = await api_error(client.chat_postMessage(channel=CHANNEL, text="x"))
    assert err.response.status_code == 200
    assert err.response["error"] == "channel_not_found"
    assert (await client.users_info(user="U0ALICE"))["ok"]


async def test_an_outage_lasts_its_time_on_the_standins_clock(standin: SlackStandIn, client: AsyncWebClient) -> None:
    outage = standin.fail_for(60, status=500, methods=["chat.postMessage"])
    for _ in range(3):  # however often it is called during the window
        assert (await api_error(client.chat_postMessage(channel=CHANNEL, text="x"))).response.status_code == 500
    assert (await client.users_info(user="U0ALICE"))["ok"]  # other methods work
    standin.advance_clock(59.9)
    assert (await api_error(client.chat_postMessage(channel=CHANNEL, text="x"))).response.status_code == 500
    standin.advance_clock(0.1)
    assert (await client.chat_postMessage(channel=CHANNEL, text="back"))["ok"]
    assert outage.failed == 4
    calls = standin.calls("chat.postMessage")
    assert [c.status for c in calls] == [500, 500, 500, 500, 200]
    assert calls[-1].at >= outage.ends > calls[-2].at  # calls carry the stand-in's clock


async def test_quiet_waits_for_the_calls_being_answered(standin: SlackStandIn, client: AsyncWebClient) -> None:
    held = standin.hold("chat.postMessage")
    call = asyncio.create_task(client.chat_postMessage(channel=CHANNEL, text="x"))
    await asyncio.wait_for(held.arrived.wait(), 5)
    assert standin.in_flight == 1
    with pytest.raises(TimeoutError):
        await standin.quiet(timeout=0.1)
    held.release()
    await standin.quiet()
    assert standin.in_flight == 0 and (await call)["ok"]


async def test_latency(standin: SlackStandIn, client: AsyncWebClient) -> None:
    standin.latency = 0.2
    started = time.monotonic()
    await client.auth_test()
    assert time.monotonic() - started >= 0.2


# -- lookups, DMs, files -------------------------------------------------------------------------


async def test_users_and_usergroups(client: AsyncWebClient) -> None:
    assert (await client.users_info(user="U0ALICE"))["user"]["real_name"] == "Alice"
    assert (await client.usergroups_users_list(usergroup="S0RELEASE"))["users"] == ["U0ALICE", "U0BOB"]
    assert (await api_error(client.users_info(user="U0NOBODY"))).response["error"] == "user_not_found"
    err = await api_error(client.usergroups_users_list(usergroup="S0NOPE"))
    assert err.response["error"] == "no_such_subteam"


async def test_conversations_open_is_stable(standin: SlackStandIn, client: AsyncWebClient) -> None:
    first = await client.conversations_open(users="U0ALICE")
    second = await client.conversations_open(users=["U0ALICE"])
    assert first["channel"]["id"] == second["channel"]["id"] == standin.dm_channel("U0ALICE")
    assert first["channel"]["id"].startswith("D")
    assert second["already_open"] is True
    assert (await client.conversations_open(users="U0BOB"))["channel"]["id"] != first["channel"]["id"]


async def test_files_upload_v2_round_trip(standin: SlackStandIn, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel=CHANNEL, text="report follows")
    response = await client.files_upload_v2(
        channel=CHANNEL,
        thread_ts=parent["ts"],
        content="gate,result\nlint,GO\n",
        filename="gates.csv",
        title="Gate report",
        initial_comment="here you go",
    )
    file_id = response["file"]["id"]
    uploaded = standin.files[file_id]
    assert uploaded.content == b"gate,result\nlint,GO\n"
    assert (uploaded.title, uploaded.channels, uploaded.thread_ts) == ("Gate report", [CHANNEL], parent["ts"])
    (reply,) = standin.replies(CHANNEL, parent["ts"])
    assert reply["files"][0]["id"] == file_id
    assert reply["text"] == "here you go"


# -- response_url -------------------------------------------------------------------------------


async def test_response_url_records_and_validates(standin: SlackStandIn) -> None:
    url = standin.new_response_url(channel=CHANNEL)
    webhook = AsyncWebhookClient(url)
    sent = await webhook.send(text="checking gates…", response_type="ephemeral")
    assert (sent.status_code, sent.body) == (200, "ok")
    bad = await webhook.send(text="x", blocks=[section("x" * 3001)])
    assert (bad.status_code, bad.body) == (400, "invalid_blocks")
    in_channel = await webhook.send(text="GO", response_type="in_channel")
    assert in_channel.status_code == 200

    recorded = await standin.wait_for_response(lambda r: r.payload.get("response_type") == "in_channel")
    assert recorded.ok
    assert [r.ok for r in standin.responses] == [True, False, True]
    assert standin.messages(CHANNEL)[-1]["text"] == "GO"
    assert standin.ephemerals[-1]["text"] == "checking gates…"
    unknown = await AsyncWebhookClient(f"{standin.url}/response/nope").send(text="x")
    assert (unknown.status_code, unknown.body) == (404, "no_service")


async def test_response_url_replaces_original_and_runs_out(standin: SlackStandIn, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="pending", blocks=[section("pending")])
    webhook = AsyncWebhookClient(standin.new_response_url(channel=CHANNEL, ts=posted["ts"]))
    assert (await webhook.send(text="approved", replace_original=True)).status_code == 200
    stored = standin.message(CHANNEL, posted["ts"])
    assert stored is not None and stored["text"] == "approved"
    for _ in range(4):
        assert (await webhook.send(text="again")).status_code == 200
    sixth = await webhook.send(text="too many")
    assert (sixth.status_code, sixth.body) == (404, "used_url")
    deleter = AsyncWebhookClient(standin.new_response_url(channel=CHANNEL, ts=posted["ts"]))
    assert (await deleter.send_dict({"delete_original": True})).status_code == 200
    assert standin.message(CHANNEL, posted["ts"]) is None


# -- waiting ----------------------------------------------------------------------------------


async def test_wait_for_sees_later_calls_and_times_out(standin: SlackStandIn, client: AsyncWebClient) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)
        await client.chat_postMessage(channel=CHANNEL, text="late")

    task = asyncio.create_task(later())
    call = await standin.wait_for("chat.postMessage", lambda c: c.args.get("text") == "late", timeout=2)
    await task
    assert call.ok
    with pytest.raises(TimeoutError):
        await standin.wait_for("views.open", timeout=0.05)
    standin.clear()
    assert standin.calls() == []
    assert len(standin.messages(CHANNEL)) == 1


# -- socket mode ------------------------------------------------------------------------------


async def test_socket_mode_envelope_and_ack(standin: SlackStandIn) -> None:
    received: list[SocketModeRequest] = []

    async def listener(socket_client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        await socket_client.send_socket_mode_response(
            SocketModeResponse(envelope_id=request.envelope_id, payload={"text": "on it"})
        )

    socket_client = SocketModeClient(
        app_token=standin.app_token,
        web_client=AsyncWebClient(token=standin.bot_token, base_url=standin.api_url),
        auto_reconnect_enabled=False,
    )
    socket_client.socket_mode_request_listeners.append(listener)
    try:
        await socket_client.connect()  # type: ignore[no-untyped-call]
        payload = standin.slash_command_payload("/gonogo", "status v1.2")
        envelope_id = await standin.socket_send(
            {"type": "slash_commands", "payload": payload, "accepts_response_payload": True}
        )
        ack = await standin.wait_for_ack(envelope_id)
        assert ack["payload"] == {"text": "on it"}
        assert received[0].type == "slash_commands"
        assert received[0].payload["command"] == "/gonogo"
        assert standin.socket_received[0] == ack  # the hello is ours; the client sends nothing before the ack
        assert standin.last("apps.connections.open").ok
    finally:
        await socket_client.close()  # type: ignore[no-untyped-call]


async def test_socket_rejects_unissued_ticket(standin: SlackStandIn) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"{standin.url}/socket?ticket=forged")


async def test_bolt_app_over_socket_mode(standin: SlackStandIn) -> None:
    """The full path the bot uses: bolt AsyncApp + AsyncSocketModeHandler → ack, response_url, Web API."""
    app = AsyncApp(client=AsyncWebClient(token=standin.bot_token, base_url=standin.api_url))

    @app.command("/gonogo")
    async def gonogo(ack: AsyncAck, respond: AsyncRespond, command: dict[str, Any], client: AsyncWebClient) -> None:
        await ack("checking…")
        await respond(text="GO", response_type="in_channel")
        await client.chat_postMessage(channel=command["channel_id"], text=f"gate for {command['text']}")

    handler = AsyncSocketModeHandler(app, standin.app_token)
    await handler.connect_async()  # type: ignore[no-untyped-call]
    try:
        payload = standin.slash_command_payload("/gonogo", "v1.2", channel_id=CHANNEL)
        envelope_id = await standin.socket_send(
            {"type": "slash_commands", "payload": payload, "accepts_response_payload": True}
        )
        ack = await standin.wait_for_ack(envelope_id)
        assert ack["payload"] == {"text": "checking…"}
        response = await standin.wait_for_response()
        assert response.ok and response.payload["text"] == "GO"
        posted = await standin.wait_for("chat.postMessage")
        assert posted.args["text"] == "gate for v1.2"
        assert [m["text"] for m in standin.messages(CHANNEL)] == ["GO", "gate for v1.2"]
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]


# -- what the playground relies on ---------------------------------------------------------------


async def test_permalink_users_tz_and_usergroups(standin: SlackStandIn, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="card")
    link = await client.chat_getPermalink(channel=CHANNEL, message_ts=posted["ts"])
    assert link["permalink"] == f"{standin.url}/archives/{CHANNEL}/p{posted['ts'].replace('.', '')}"
    err = await api_error(client.chat_getPermalink(channel=CHANNEL, message_ts="1.000001"))
    assert err.response["error"] == "message_not_found"

    alice = (await client.users_info(user="U0ALICE"))["user"]
    assert (alice["tz"], alice["tz_offset"]) == ("UTC", 0)
    async with SlackStandIn(users={"U0MAD": {"name": "mad", "tz": "Europe/Madrid"}}) as server:
        web = AsyncWebClient(token=server.bot_token, base_url=server.api_url)
        mad = (await web.users_info(user="U0MAD"))["user"]
        assert mad["tz"] == "Europe/Madrid" and mad["tz_offset"] in (3600, 7200)
        assert mad["tz_label"] in ("CET", "CEST")
    with pytest.raises(ValueError, match="time zone"):
        SlackStandIn(users={"U0X": {"tz": "Mars/Olympus"}})


async def test_modal_opens_on_the_clickers_screen(standin: SlackStandIn, client: AsyncWebClient) -> None:
    opened = await client.views_open(trigger_id=standin.issue_trigger_id("U0ALICE"), view=MODAL)
    view_id = opened["view"]["id"]
    assert standin.open_views == {"U0ALICE": [view_id]}
    seen = standin.version
    standin.close_view("U0ALICE", view_id)
    assert standin.open_views["U0ALICE"] == []
    assert await standin.changed(seen, timeout=0) > seen


async def test_response_url_ephemerals_belong_to_the_actor(standin: SlackStandIn) -> None:
    seen = standin.version
    url = standin.new_response_url(channel=CHANNEL, user="U0ALICE")
    assert (await AsyncWebhookClient(url).send(text="only you")).status_code == 200
    (mine,) = standin.ephemerals_for("U0ALICE", CHANNEL)
    assert mine["text"] == "only you"
    assert standin.ephemerals_for("U0BOB", CHANNEL) == []
    assert await standin.changed(seen, timeout=5) > seen

    # A button on that ephemeral message gets a response_url that replaces it in place.
    on_it = standin.new_response_url(channel=CHANNEL, ts=mine["ts"], user="U0ALICE")
    assert (await AsyncWebhookClient(on_it).send(text="withdrawn", replace_original=True)).status_code == 200
    assert [e["text"] for e in standin.ephemerals_for("U0ALICE", CHANNEL)] == ["withdrawn"]


async def test_response_url_expires_after_30_minutes(standin: SlackStandIn) -> None:
    url = standin.new_response_url(channel=CHANNEL)
    standin.advance_clock(29 * 60)
    assert (await AsyncWebhookClient(url).send(text="in time")).status_code == 200
    standin.advance_clock(61)
    late = await AsyncWebhookClient(url).send(text="too late")
    assert (late.status_code, late.body) == (404, "expired_url")


async def test_snapshot_restores_messages(standin: SlackStandIn, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="card", blocks=[section("card")])
    await client.chat_postEphemeral(channel=CHANNEL, user="U0ALICE", text="psst")
    state = json.loads(json.dumps(standin.snapshot()))
    async with SlackStandIn() as again:
        again.restore(state)
        assert again.message(CHANNEL, posted["ts"]) == standin.message(CHANNEL, posted["ts"])
        assert [e["text"] for e in again.ephemerals_for("U0ALICE", CHANNEL)] == ["psst"]
        web = AsyncWebClient(token=again.bot_token, base_url=again.api_url)
        later = await web.chat_postMessage(channel=CHANNEL, text="later")
        assert float(later["ts"]) > float(posted["ts"])
