"""The gate in front of Bolt for POST /slack/events: nothing from the network is parsed before its
signature is verified, and nothing malformed, replayed or foreign reaches a handler.

In order:
1. The signature (`v0` HMAC-SHA256 of `v0:<timestamp>:<body>` with the signing secret) over the raw
   bytes, and a timestamp within 5 minutes. A missing or non-numeric timestamp is a bad signature.
2. The shape: a form body (a slash command with a user, or `payload=` holding a JSON object) or a
   JSON object (Events API); the fields the handlers read have the types they expect. Else 400.
3. Replays: the same signed request (timestamp and body) is handled once. A Redis `SET NX` key
   (`keys.dedupe("slack", …)`) lives as long as the signature would be accepted.
4. The workspace and app (a Bolt middleware, so Socket Mode gets it too): `team_id`, `api_app_id`
   and the enterprise id must be the installation's (auth.test, or SLACK_TEAM_ID / SLACK_APP_ID).

Every refusal is a short 4xx text, never a traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.response import BoltResponse

from bot.core.errors import StoreUnavailable
from bot.slack.modals import too_long
from bot.store import keys

log = logging.getLogger("gonogo.guard")

WINDOW_S = 5 * 60  # Slack's replay window for signed requests
DEDUPE_TIMEOUT_S = 0.5  # the ack must not wait on a hung Redis (see `RequestGuard.first_time`)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FirstSeen = Callable[[str, int], Awaitable[bool]]


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


# --- 1. signature ------------------------------------------------------------------------------


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> int:
    """The request's timestamp when the signature is Slack's and fresh; `Refused(401)` otherwise."""
    raw_ts = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    if not (raw_ts.isascii() and raw_ts.isdigit() and len(raw_ts) <= 12) or not signature:
        raise Refused(401, "invalid request signature")
    timestamp = int(raw_ts)
    if abs(now - timestamp) > WINDOW_S:
        raise Refused(401, "stale request timestamp")
    base = b"v0:" + raw_ts.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise Refused(401, "invalid request signature")
    return timestamp


# --- 2. shape ----------------------------------------------------------------------------------

INTERACTIVE = {
    "block_actions",
    "block_suggestion",
    "view_submission",
    "view_closed",
    "shortcut",
    "message_action",
    "interactive_message",
    "dialog_submission",
}


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise Refused(400, f"malformed request: {what}")


def _optional(data: Mapping[str, Any], key: str, check: Callable[[Any], bool], what: str) -> None:
    if key in data and data[key] is not None:
        _need(check(data[key]), what)


def _object_with_id(value: Any) -> bool:
    return isinstance(value, dict) and _is_str(value.get("id"))


def check_slash_command(fields: Mapping[str, str]) -> None:
    _need(bool(fields.get("user_id")), "no user_id")
    _need(bool(fields.get("command")), "no command")


def check_payload(payload: Any) -> None:
    """An interactivity payload: the fields the handlers (and Bolt) read, with the right types."""
    _need(isinstance(payload, dict), "payload is not a JSON object")
    _need(_is_str(payload.get("type")), "payload has no type")
    for key in ("api_app_id", "trigger_id", "response_url", "token"):
        _optional(payload, key, _is_str, f"{key} is not a string")
    for key in ("team", "channel", "enterprise"):
        _optional(payload, key, _object_with_id, f"{key} is not an object with an id")
    _optional(payload, "container", lambda v: isinstance(v, dict), "container is not an object")
    if payload["type"] not in INTERACTIVE:
        return
    _need(_object_with_id(payload.get("user")), "no user")
    if payload["type"] == "block_actions":
        actions = payload.get("actions")
        _need(isinstance(actions, list) and bool(actions), "no actions")
        for action in actions:
            _need(isinstance(action, dict) and _is_str(action.get("action_id")), "an action has no action_id")
            for key in ("value", "action_ts", "block_id"):
                _optional(action, key, _is_str, f"action {key} is not a string")
    if payload["type"] in ("view_submission", "view_closed"):
        view = payload.get("view")
        _need(isinstance(view, dict), "no view")
        for key in ("id", "callback_id"):
            _need(_is_str(view.get(key)), f"view {key} is not a string")
        _optional(view, "private_metadata", _is_str, "view private_metadata is not a string")
        state = view.get("state", {})
        _need(isinstance(state, dict) and isinstance(state.get("values", {}), dict), "view state is not an object")
        for inputs in state.get("values", {}).values():
            _need(isinstance(inputs, dict) and all(isinstance(i, dict) for i in inputs.values()), "bad view state")
        if str(view["callback_id"]).startswith("gonogo_"):
            _need(_our_metadata(view.get("private_metadata")), "view private_metadata is not gonogo's")


def _our_metadata(raw: Any) -> bool:
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return False
    return isinstance(data, dict) and all(_is_str(data.get(k)) for k in ("release", "subject", "channel"))


def check_event(body: Any) -> None:
    """An Events API body (JSON): an object with a type; an event callback carries an event object."""
    _need(isinstance(body, dict), "body is not a JSON object")
    _need(_is_str(body.get("type")), "no type")
    for key in ("team_id", "api_app_id", "enterprise_id", "challenge"):
        _optional(body, key, _is_str, f"{key} is not a string")
    if body["type"] == "event_callback":
        event = body.get("event")
        _need(isinstance(event, dict) and _is_str(event.get("type")), "no event")


def check_shape(content_type: str, body: bytes) -> str:
    """Refuse what the handlers could not read; the kind of request ('command', 'payload', 'event')."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "malformed request: not UTF-8") from None
    if "application/json" in content_type:
        try:
            data = json.loads(text)
        except ValueError:
            raise Refused(400, "malformed request: not JSON") from None
        check_event(data)
        return "url_verification" if data.get("type") == "url_verification" else "event"
    fields = parse_qs(text, keep_blank_values=True)
    _need(all(len(v) == 1 for v in fields.values()), "repeated form fields")
    flat = {k: v[0] for k, v in fields.items()}
    if "payload" in flat:
        try:
            payload = json.loads(flat["payload"])
        except ValueError:
            raise Refused(400, "malformed request: payload is not JSON") from None
        check_payload(payload)
        return "payload"
    if "ssl_check" in flat:
        return "ssl_check"
    check_slash_command(flat)
    return "command"


# --- 3. replays, and the aiohttp middleware ----------------------------------------------------


class RequestGuard:
    """aiohttp middleware for one path: signature, shape, replay, then the wrapped handler."""

    def __init__(
        self,
        signing_secret: str,
        first_seen: FirstSeen | None,
        *,
        path: str = "/slack/events",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret, self.first_seen, self.path, self.clock = signing_secret, first_seen, path, clock

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != self.path or request.method != "POST":
            return await handler(request)
        try:
            body = await request.read()
            timestamp = verify_signature(self.secret, request.headers, body, self.clock())
            kind = check_shape(request.headers.get("Content-Type", ""), body)
        except Refused as refused:
            log.warning("slack request refused", extra={"status": refused.status, "reason": refused.reason})
            return web.Response(status=refused.status, text=refused.reason)
        if kind != "url_verification" and not await self.first_time(timestamp, body):
            log.warning("replayed slack request ignored", extra={"kind": kind})
            return web.Response(status=200, text="")
        return await handler(request)

    async def first_time(self, timestamp: int, body: bytes) -> bool:
        """False for a request already handled. When Redis does not answer at once the request goes
        on (fail open): its handler meets the same Redis and says it is unavailable, and a replay
        that cannot write anything does no harm, whereas waiting would break the 3-second ack."""
        if self.first_seen is None:
            return True
        digest = hashlib.sha256(str(timestamp).encode() + b":" + body).hexdigest()
        try:
            claim = self.first_seen(keys.dedupe("slack", digest), WINDOW_S + 60)
            return await asyncio.wait_for(claim, DEDUPE_TIMEOUT_S)
        except (StoreUnavailable, TimeoutError):
            log.warning("replay check skipped: state store unavailable")
            return True


# --- 4. workspace and app, and over-long modal inputs (Bolt middlewares: both transports) ---------


def request_identity(body: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(team id, app id, enterprise id) a Slack request says it comes from."""

    def pick(*values: Any) -> str | None:
        return next((v for v in values if isinstance(v, str) and v), None)

    team, enterprise, user = body.get("team"), body.get("enterprise"), body.get("user")
    user = user if isinstance(user, dict) else {}
    return (
        pick(body.get("team_id"), team.get("id") if isinstance(team, dict) else None, user.get("team_id")),
        pick(body.get("api_app_id"), body.get("app_id")),
        pick(body.get("enterprise_id"), enterprise.get("id") if isinstance(enterprise, dict) else None),
    )


def foreign(
    body: Mapping[str, Any],
    *,
    team_id: str | None,
    app_id: str | None,
    enterprise_id: str | None,
) -> str | None:
    """Why this request is not for this installation, or None when it is."""
    team, app, enterprise = request_identity(body)
    if team_id and team and team != team_id:
        return "another workspace"
    if app_id and app and app != app_id:
        return "another app"
    if enterprise and enterprise != enterprise_id:
        return "another organisation"
    return None


def install_bolt_guards(app: AsyncApp, *, team_id: str | None, app_id: str | None) -> None:
    """Refuse foreign workspaces/apps, and modal inputs longer than the modal allows."""

    @app.middleware
    async def installation_only(
        context: AsyncBoltContext, body: dict[str, Any], next: Callable[[], Awaitable[None]]
    ) -> BoltResponse | None:
        installed = context.authorize_result
        if body.get("type") == "url_verification" or (installed is None and not team_id):
            await next()
            return None
        why = foreign(
            body,
            team_id=team_id or (installed.team_id if installed else None),
            app_id=app_id,
            enterprise_id=installed.enterprise_id if installed else None,
        )
        if why is not None:
            log.warning("request from %s refused", why, extra={"identity": request_identity(body)})
            return BoltResponse(status=403, body=f"this gonogo does not serve {why}")
        await next()
        return None

    @app.middleware
    async def inputs_within_limits(body: dict[str, Any], next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
        view = body.get("view")
        if body.get("type") == "view_submission" and isinstance(view, dict):
            errors = too_long(view)
            if errors:
                answer = json.dumps({"response_action": "errors", "errors": errors})
                return BoltResponse(status=200, body=answer, headers={"Content-Type": "application/json"})
        await next()
        return None
