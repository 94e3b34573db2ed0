"""The local Slack workspace behind `gonogo playground`: the page's backend.

The browser never talks to the bot. It asks this backend to do what a Slack client does — run a
slash command, click a button, submit a modal — and the backend sends the bot exactly what Slack
would: a form-encoded slash command or `payload=<json>` interaction, signed with the playground's
signing secret (v0 HMAC-SHA256 over `v0:<ts>:<body>`), to the bot's `/slack/events`. The bot
answers through the stand-in's Web API and response_urls, the stand-in records the messages,
and the page reads them back (`/pg/state`) whenever `/pg/events` (server-sent events) says
something changed.

What the page is allowed to see is what that user would see in Slack: channel messages, their own
ephemeral messages and DMs, and the modals opened with their own trigger_ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from bot.core.gate import Gate
from bot.playground.assets import static_text
from bot.playground.standin import JSON, SlackStandIn

log = logging.getLogger("gonogo.playground")

SLASH_COMMAND = "/gonogo"
OUTSIDER_ID = "U0OUTSIDER"
SLACKBOT = "USLACKBOT"
SSE_HEARTBEAT_S = 15.0
STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "blockkit.js": "text/javascript",
    "style.css": "text/css",
}
# The page is ours and offline: nothing from elsewhere may load, no inline script, no framing.
CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
_SAFE_ID = re.compile(r"^[A-Z0-9]{2,32}$")


def display_name(user_id: str) -> str:
    """A readable handle for a bare Slack id: U01TECH -> tech, U0DEMOSRE1 -> demosre1."""
    return user_id[1:].lstrip("0123456789").lower() or user_id.lower()


@dataclass
class Person:
    id: str
    name: str
    roles: list[str] = field(default_factory=list)  # role titles, for the picker's groups


@dataclass
class Directory:
    """Who is in the workspace and which channels it has, read from the gates."""

    people: dict[str, Person]
    groups: list[tuple[str, list[str]]]  # (role title, user ids) in gate order
    channels: dict[str, str]  # channel id -> name
    usergroups: dict[str, list[str]]
    outsider: str

    @classmethod
    def from_gates(cls, gates: Iterable[Gate]) -> Directory:
        people: dict[str, Person] = {}
        groups: dict[str, list[str]] = {}
        channels: dict[str, str] = {}
        usergroups: dict[str, list[str]] = {}
        for gate in gates:
            name = channels.get(gate.channel)
            channels[gate.channel] = f"{name}-{gate.id}" if name else f"{gate.id}-releases"
            for role in gate.signoffs:
                members = groups.setdefault(role.title, [])
                for user in role.users:
                    person = people.setdefault(user, Person(user, display_name(user)))
                    if role.title not in person.roles:
                        person.roles.append(role.title)
                    if user not in members:
                        members.append(user)
                if role.usergroup:
                    # Nobody is in a user group here: membership comes from `users` (documented).
                    usergroups.setdefault(role.usergroup, [])
        outsider = OUTSIDER_ID
        while outsider in people:
            outsider += "X"
        people[outsider] = Person(outsider, "outsider")
        return cls(people, list(groups.items()), channels, usergroups, outsider)

    def standin_users(self) -> dict[str, dict[str, Any]]:
        return {p.id: {"name": p.name, "real_name": p.name.title()} for p in self.people.values()}


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack adds to every request it sends an app."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


class Workspace:
    def __init__(self, standin: SlackStandIn, directory: Directory, *, signing_secret: str, bot_url: str) -> None:
        self.standin = standin
        self.directory = directory
        self.signing_secret = signing_secret
        self.events_url = f"{bot_url.rstrip('/')}/slack/events"
        self.session: aiohttp.ClientSession | None = None
        self.closing = False

    # -- wiring ------------------------------------------------------------------------------

    def setup(self, app: web.Application) -> None:
        """Add the page and its backend to the stand-in's server (one port for both)."""
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/archives/{channel}/{ts}", self._permalink)
        app.router.add_get("/pg/workspace", self._workspace)
        app.router.add_get("/pg/state", self._state)
        app.router.add_get("/pg/events", self._events)
        app.router.add_post("/pg/command", self._command)
        app.router.add_post("/pg/message", self._message)
        app.router.add_post("/pg/action", self._action)
        app.router.add_post("/pg/submit", self._submit)
        app.router.add_post("/pg/close", self._close)
        app.on_shutdown.append(self._on_shutdown)

    async def _on_shutdown(self, _: web.Application) -> None:
        self.closing = True
        self.standin.notify()  # wakes the event streams so they end
        if self.session is not None:
            await self.session.close()

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self.session

    # -- what the page reads -----------------------------------------------------------------

    async def _index(self, _: web.Request) -> web.Response:
        return _page(static_text("index.html"), "text/html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return _page(static_text(name), STATIC[name])

    async def _permalink(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        if not _SAFE_ID.match(channel):
            raise web.HTTPNotFound()
        raise web.HTTPFound(f"/#{channel}")

    async def _workspace(self, _: web.Request) -> web.Response:
        d = self.directory
        people = {p.id: {"id": p.id, "name": p.name, "roles": p.roles} for p in d.people.values()}
        return web.json_response(
            {
                "team": self.standin.team_id,
                "bot": {"id": self.standin.bot_user_id, "name": "gonogo"},
                "channels": [{"id": c, "name": n} for c, n in d.channels.items()],
                "people": people,
                "groups": [{"role": role, "users": users} for role, users in d.groups],
                "outsider": d.outsider,
                "command": SLASH_COMMAND,
            }
        )

    async def _state(self, request: web.Request) -> web.Response:
        user = self._user(request.query.get("user", ""))
        channel = request.query.get("channel", "")
        dm = self.standin.dm_channel(user)
        if channel.startswith("D") and channel != dm:
            raise web.HTTPForbidden(text="another user's DM")
        if channel != dm and channel not in self.directory.channels and channel not in self.standin.channels():
            raise web.HTTPNotFound(text="no such channel")
        stack = self.standin.open_views.get(user, [])
        view = self.standin.views.get(stack[-1]) if stack else None
        names = {uid: p.name for uid, p in self.directory.people.items()}
        names[self.standin.bot_user_id] = "gonogo"
        channel_names = dict(self.directory.channels)
        return web.json_response(
            {
                "version": self.standin.version,
                "channel": channel,
                "dm": dm,
                "messages": self.standin.messages(channel),
                "ephemerals": self.standin.ephemerals_for(user, channel),
                "view": view,
                "names": names,
                "channel_names": channel_names,
                "other_channels": [c for c in self.standin.channels() if c not in channel_names and c[0] == "C"],
            }
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: one `data: <version>` whenever the workspace changed."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        seen = -1
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while not self.closing:
                version = await self.standin.changed(seen, timeout=SSE_HEARTBEAT_S)
                if self.closing:
                    break
                await response.write(f"data: {version}\n\n".encode() if version != seen else b": ping\n\n")
                seen = version
        return response

    # -- what the page does ------------------------------------------------------------------

    async def _command(self, request: web.Request) -> web.Response:
        body = await _json(request)
        user, channel = self._user(body.get("user")), self._channel(body.get("channel"), body.get("user"))
        text = str(body.get("text", "")).strip()
        command, _, rest = text.partition(" ")
        if command != SLASH_COMMAND:
            self._slackbot(user, channel, f"`{command}` is not a valid command. In Slack, try `{SLASH_COMMAND} help`.")
            return web.json_response({"ok": False, "error": "unknown_command"})
        payload = {
            "token": "playground-verification-token",
            "team_id": self.standin.team_id,
            "team_domain": "playground",
            "channel_id": channel,
            "channel_name": self.directory.channels.get(channel, "directmessage"),
            "user_id": user,
            "user_name": self.directory.people[user].name,
            "command": SLASH_COMMAND,
            "text": rest.strip(),
            "api_app_id": self.standin.app_id,
            "is_enterprise_install": "false",
            "response_url": self.standin.new_response_url(channel=channel, user=user),
            "trigger_id": self.standin.issue_trigger_id(user),
        }
        status, answer = await self._send(urlencode(payload).encode())
        self._ack_answer(user, channel, status, answer)
        return web.json_response({"ok": status == 200, "status": status})

    async def _message(self, request: web.Request) -> web.Response:
        """A plain message typed in the composer: posted as that user (the bot subscribes to no messages)."""
        body = await _json(request)
        user, channel = self._user(body.get("user")), self._channel(body.get("channel"), body.get("user"))
        text = str(body.get("text", ""))
        if not text.strip():
            raise web.HTTPBadRequest(text="empty message")
        self.standin.post_as_user(channel, user, text)
        return web.json_response({"ok": True})

    async def _action(self, request: web.Request) -> web.Response:
        body = await _json(request)
        user = self._user(body.get("user"))
        action = {
            "type": "button",
            "action_id": str(body.get("action_id", "")),
            "block_id": str(body.get("block_id", "")),
            "text": {"type": "plain_text", "text": str(body.get("text", "")), "emoji": True},
            "action_ts": f"{time.time():.6f}",
        }
        if body.get("value") is not None:
            action["value"] = str(body["value"])
        person = self.directory.people[user]
        payload: JSON = {
            "type": "block_actions",
            "user": {"id": user, "username": person.name, "name": person.name, "team_id": self.standin.team_id},
            "api_app_id": self.standin.app_id,
            "token": "playground-verification-token",
            "trigger_id": self.standin.issue_trigger_id(user),
            "team": {"id": self.standin.team_id, "domain": "playground"},
            "enterprise": None,
            "is_enterprise_install": False,
            "actions": [action],
        }
        view_id = body.get("view_id")
        if view_id:
            view = self.standin.views.get(str(view_id))
            if view is None or view["id"] not in self.standin.open_views.get(user, []):
                raise web.HTTPNotFound(text="no such view")
            payload.update(container={"type": "view", "view_id": view["id"]}, view=view)
        else:
            channel = self._channel(body.get("channel"), user)
            ts = str(body.get("ts", ""))
            ephemeral = bool(body.get("ephemeral"))
            if ephemeral:
                found = next((e for e in self.standin.ephemerals_for(user, channel) if e["ts"] == ts), None)
            else:
                found = self.standin.message(channel, ts)
            if found is None:
                raise web.HTTPNotFound(text="no such message")
            payload.update(
                container={"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": ephemeral},
                channel={"id": channel, "name": self.directory.channels.get(channel, "directmessage")},
                response_url=self.standin.new_response_url(channel=channel, ts=ts, user=user),
            )
            if not ephemeral:  # Slack sends the message only for non-ephemeral ones
                payload["message"] = {k: v for k, v in found.items() if k != "channel"}
        status, _ = await self._send(urlencode({"payload": json.dumps(payload)}).encode())
        if status != 200:
            self._slackbot(user, str(body.get("channel", "")), f"The app did not answer that click (HTTP {status}).")
        return web.json_response({"ok": status == 200, "status": status})

    async def _submit(self, request: web.Request) -> web.Response:
        body = await _json(request)
        user = self._user(body.get("user"))
        view = self._open_view(user, body.get("view_id"))
        raw_values = body.get("values") or {}
        if not isinstance(raw_values, dict):
            raise web.HTTPBadRequest(text="values must be an object")
        values = {
            str(block): {
                str(action): {"type": "plain_text_input", "value": None if v in (None, "") else str(v)}
                for action, v in dict(actions).items()
            }
            for block, actions in raw_values.items()
            if isinstance(actions, dict)
        }
        person = self.directory.people[user]
        payload = {
            "type": "view_submission",
            "team": {"id": self.standin.team_id, "domain": "playground"},
            "user": {"id": user, "username": person.name, "name": person.name, "team_id": self.standin.team_id},
            "api_app_id": self.standin.app_id,
            "token": "playground-verification-token",
            "trigger_id": self.standin.issue_trigger_id(user),
            "view": {**view, "state": {"values": values}},
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        status, answer = await self._send(urlencode({"payload": json.dumps(payload)}).encode())
        if status != 200:
            return web.json_response({"ok": False, "error": f"The app did not answer (HTTP {status})."})
        reply = _parse_json(answer)
        action = reply.get("response_action") if isinstance(reply, dict) else None
        if action == "errors":
            errors = reply.get("errors") if isinstance(reply.get("errors"), dict) else {}
            return web.json_response({"ok": False, "errors": {str(k): str(v) for k, v in errors.items()}})
        if action in ("update", "push") and isinstance(reply.get("view"), dict):
            return web.json_response(self.standin.replace_or_push_view(user, view["id"], reply["view"], action))
        if action == "clear":
            for open_id in list(self.standin.open_views.get(user, []))[:1]:
                self.standin.close_view(user, open_id)
        else:
            self.standin.close_view(user, view["id"])
        return web.json_response({"ok": True})

    async def _close(self, request: web.Request) -> web.Response:
        body = await _json(request)
        user = self._user(body.get("user"))
        view = self._open_view(user, body.get("view_id"))
        self.standin.close_view(user, view["id"])
        return web.json_response({"ok": True})

    # -- helpers -----------------------------------------------------------------------------

    def _user(self, raw: Any) -> str:
        if not isinstance(raw, str) or raw not in self.directory.people:
            raise web.HTTPBadRequest(text="unknown user")
        return raw

    def _channel(self, raw: Any, user: Any) -> str:
        channel = str(raw or "")
        if channel in self.directory.channels or (channel in self.standin.channels() and channel[:1] == "C"):
            return channel
        if isinstance(user, str) and channel == self.standin.dm_channel(user):
            return channel
        raise web.HTTPBadRequest(text="unknown channel")

    def _open_view(self, user: str, view_id: Any) -> JSON:
        stack = self.standin.open_views.get(user, [])
        if not isinstance(view_id, str) or view_id not in stack:
            raise web.HTTPNotFound(text="no such open view")
        return self.standin.views[view_id]

    async def _send(self, body: bytes) -> tuple[int, str]:
        """POST to the bot exactly as Slack does: form-encoded, signed, with Slack's timeout of 3 s."""
        headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(self.signing_secret, body)}
        try:
            async with self._session().post(
                self.events_url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=3)
            ) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("the bot did not answer", extra={"error": type(exc).__name__})
            return 0, ""

    def _ack_answer(self, user: str, channel: str, status: int, answer: str) -> None:
        """What Slack shows for a slash command's HTTP answer: its text, or an error when it failed."""
        if status != 200:
            reason = "operation_timeout" if status == 0 else f"http_error {status}"
            self._slackbot(user, channel, f'`{SLASH_COMMAND}` failed with the error "{reason}"')
            return
        if not answer.strip():
            return
        reply = _parse_json(answer)
        message = reply if isinstance(reply, dict) else {"text": answer}
        if message.get("text") or message.get("blocks"):
            self.standin.post_ephemeral_to(channel, user, message)

    def _slackbot(self, user: str, channel: str, text: str) -> None:
        self.standin.post_ephemeral_to(channel, user, {"text": text}, sender=SLACKBOT)


def _page(text: str, content_type: str) -> web.Response:
    return web.Response(
        text=text,
        content_type=content_type,
        charset="utf-8",
        headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
    )


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="JSON body expected") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="JSON object expected")
    return body


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return None


def new_signing_secret() -> str:
    return secrets.token_hex(16)
