"""A local stand-in for Slack: Web API, response_url endpoints and Socket Mode.

Why: neither the test suite nor `gonogo playground` has a Slack workspace, yet the bot must be
exercised through the real ``slack_sdk`` / ``slack_bolt`` clients so that wire formats, auth headers,
retries and Block Kit limits are tested rather than mocked away.  ``SlackStandIn`` is a small aiohttp
server that speaks just enough of Slack's protocol for that, enforces the Slack rules the bot is most
likely to break (auth, Block Kit limits, trigger_id lifetime, response_url validation), records
everything it is sent, and can inject rate limits, server errors and latency (tests only).

The same module serves the suite (``async with SlackStandIn() as slack``) and the playground, which
mounts its workspace page next to the Web API (``start(port=..., setup=...)``), reads the stored
messages and views, and waits on ``changed()`` to push live updates to the browser.

Point the bot at it with ``AsyncWebClient(token=..., base_url=standin.api_url)`` (SLACK_API_URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import WSCloseCode, WSMsgType, web
from slack_sdk.models.basic_objects import JsonObject
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

JSON = dict[str, Any]
_T = TypeVar("_T")

DEFAULT_BOT_TOKEN = "xoxb-test-token"
DEFAULT_APP_TOKEN = "xapp-test-token"

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_MESSAGE_TEXT = 40_000
RESPONSE_URL_MAX_USES = 5
RESPONSE_URL_TTL = 30 * 60.0
# Form-encoded callers (and some JSON ones) send structured arguments as JSON strings.
_JSON_STRING_ARGS = ("blocks", "attachments", "view", "files", "metadata")
# Methods that take the app-level (xapp-) token instead of the bot token.
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})


@dataclass
class Call:
    """One Web API request, recorded when the stand-in answered it (so its state is already updated)."""

    method: str
    args: JSON
    headers: dict[str, str]
    time: float
    status: int = 200
    response: JSON = field(default_factory=dict)
    at: float = 0.0  # the stand-in's clock (``now()``) when it answered: fault windows are measured on it

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))


@dataclass
class ResponseCall:
    """One POST to a response_url, accepted or not (``error`` says why not)."""

    url_id: str
    payload: JSON
    time: float
    ok: bool
    error: str | None = None


@dataclass
class UploadedFile:
    """A file going through the files upload v2 flow (getUploadURLExternal → POST bytes → complete)."""

    id: str
    filename: str
    length: int
    content: bytes | None = None
    title: str | None = None
    channels: list[str] = field(default_factory=list)
    thread_ts: str | None = None
    initial_comment: str | None = None
    completed: bool = False


@dataclass
class _Fault:
    status: int
    retry_after: int
    error: str | None
    remaining: int


@dataclass
class Hold:
    """A call held at the stand-in: `arrived` is set when it comes in, it is answered on `release()`."""

    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class _PeriodicFault:
    every: int
    status: int
    retry_after: int
    error: str | None
    methods: frozenset[str]
    seen: int = 0


@dataclass
class FaultWindow:
    """Slack failing ``methods`` (all, if empty) from ``starts`` until ``ends`` on the stand-in's clock."""

    starts: float
    ends: float
    status: int
    retry_after: int
    error: str | None
    methods: frozenset[str]
    failed: int = 0  # calls answered with the fault

    def covers(self, method: str, now: float) -> bool:
        return self.starts <= now < self.ends and (not self.methods or method in self.methods)


@dataclass
class _ResponseTarget:
    created: float
    channel: str | None
    ts: str | None
    user: str | None = None  # who acted: ephemeral answers are visible to them only
    uses: int = 0


class SlackApiFailure(Exception):
    """Raised by method handlers to answer ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


# ---------------------------------------------------------------------------------------------
# Block Kit validation


def _text_of(obj: Any) -> str:
    return str(obj.get("text", "")) if isinstance(obj, dict) else str(obj or "")


def _buttons(node: Any) -> Iterator[JSON]:
    """Every button element anywhere inside a block (actions elements, section accessories...)."""
    if isinstance(node, dict):
        if node.get("type") == "button":
            yield node
        for value in node.values():
            yield from _buttons(value)
    elif isinstance(node, list):
        for item in node:
            yield from _buttons(item)


def _limit(problems: list[str], what: str, size: int, limit: int) -> None:
    if size > limit:
        problems.append(f"{what} must be at most {limit} (got {size})")


def _raw_block_problems(block: JSON) -> list[str]:
    """The limits we enforce ourselves: slack_sdk's validate_json misses some and does not recurse."""
    problems: list[str] = []
    block_id = block.get("block_id")
    if block_id is not None and (not isinstance(block_id, str) or not block_id):
        problems.append("block_id must be a non-empty string")
    elif isinstance(block_id, str):
        _limit(problems, "block_id length", len(block_id), 255)
    kind = block.get("type")
    if kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and not fields:
            problems.append("section requires text or fields")
        if text is not None:
            if not isinstance(text, dict) or text.get("type") not in ("plain_text", "mrkdwn"):
                problems.append("section text must be a plain_text or mrkdwn text object")
            _limit(problems, "section text length", len(_text_of(text)), 3000)
        if fields is not None:
            if not isinstance(fields, list):
                problems.append("section fields must be an array")
            else:
                _limit(problems, "section fields count", len(fields), 10)
                for f in fields:
                    _limit(problems, "section field text length", len(_text_of(f)), 2000)
    elif kind == "header":
        text = block.get("text")
        if not isinstance(text, dict) or text.get("type") != "plain_text":
            problems.append("header text must be a plain_text object")
        _limit(problems, "header text length", len(_text_of(text)), 150)
    elif kind in ("context", "actions"):
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            problems.append(f"{kind} elements must be a non-empty array")
        else:
            _limit(problems, f"{kind} elements count", len(elements), 10 if kind == "context" else 25)
    for button in _buttons(block):
        _limit(problems, "button text length", len(_text_of(button.get("text"))), 75)
        _limit(problems, "button action_id length", len(str(button.get("action_id", ""))), 255)
        _limit(problems, "button value length", len(str(button.get("value", ""))), 2000)
    return problems


def _sdk_problems(obj: object) -> list[str]:
    """Run slack_sdk's validators on the parsed object *and* every nested object (it doesn't recurse)."""
    problems: list[str] = []
    if isinstance(obj, JsonObject):
        try:
            obj.validate_json()
        except Exception as exc:  # SlackObjectFormationError, or TypeError from a missing field
            problems.append(str(exc))
        for name in sorted(obj.attributes):
            problems.extend(_sdk_problems(getattr(obj, name, None)))
    elif isinstance(obj, list | tuple):
        for item in obj:
            if item is None:
                problems.append("unsupported element type")
            problems.extend(_sdk_problems(item))
    return problems


def _one_block_problems(raw: Any) -> list[str]:
    if not isinstance(raw, dict):
        return ["block must be an object"]
    problems = _raw_block_problems(raw)
    if problems:
        return problems
    try:
        block = Block.parse(raw)
    except Exception as exc:  # missing required keyword arguments surface as TypeError
        return [f"invalid {raw.get('type')} block: {exc}"]
    if block is None:
        return [f"unsupported block type {raw.get('type')!r}"]
    return _sdk_problems(block)


def block_errors(blocks: Any, *, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[str]:
    """Slack-style error strings for a blocks array (empty list = valid)."""
    if not isinstance(blocks, list):
        return ["blocks must be an array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"must provide an array with no more than {max_blocks} items [json-pointer:/blocks]")
    seen: set[str] = set()
    for i, raw in enumerate(blocks):
        pointer = f"[json-pointer:/blocks/{i}]"
        block_id = raw.get("block_id") if isinstance(raw, dict) else None
        if isinstance(block_id, str):
            if block_id in seen:
                errors.append(f"duplicate block_id {block_id!r} {pointer}")
            seen.add(block_id)
        errors.extend(f"{problem} {pointer}" for problem in dict.fromkeys(_one_block_problems(raw)))
    return errors


def check_message(args: Mapping[str, Any]) -> None:
    """Raise SlackApiFailure the way chat.postMessage would for bad text/blocks."""
    text, blocks, attachments = args.get("text"), args.get("blocks"), args.get("attachments")
    if not text and not blocks and not attachments:
        raise SlackApiFailure("no_text")
    if text is not None and len(str(text)) > MAX_MESSAGE_TEXT:
        raise SlackApiFailure("msg_too_long")
    if blocks is not None:
        errors = block_errors(blocks, max_blocks=MAX_MESSAGE_BLOCKS)
        if errors:
            raise SlackApiFailure("invalid_blocks", errors=errors)


def check_view(view: Any) -> None:
    """Raise SlackApiFailure for a view Slack would refuse (views.open/push/update/publish)."""
    if not isinstance(view, dict):
        raise SlackApiFailure("invalid_arguments", errors=["view must be a JSON object"])
    block_problems = block_errors(view.get("blocks"), max_blocks=MAX_VIEW_BLOCKS)
    if block_problems:
        raise SlackApiFailure("invalid_blocks", errors=block_problems)
    problems: list[str] = []
    if view.get("type") not in ("modal", "home"):
        problems.append("view type must be modal or home")
    if view.get("type") == "modal" and not isinstance(view.get("title"), dict):
        problems.append("modal views require a plain_text title")
    if not problems:
        try:
            View(**view).validate_json()
        except Exception as exc:
            problems.append(str(exc))
    if problems:
        raise SlackApiFailure("invalid_arguments", errors=problems)


# ---------------------------------------------------------------------------------------------
# The server


class SlackStandIn:
    """Slack Web API + response_url + Socket Mode, on 127.0.0.1 at a random port."""

    def __init__(
        self,
        *,
        bot_token: str = DEFAULT_BOT_TOKEN,
        app_token: str = DEFAULT_APP_TOKEN,
        team_id: str = "T0STANDIN",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        app_id: str = "A0STANDIN",
        users: Mapping[str, Mapping[str, Any]] | None = None,
        usergroups: Mapping[str, Sequence[str]] | None = None,
        trigger_ttl: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        latency: float = 0.0,
    ) -> None:
        self.bot_token, self.app_token = bot_token, app_token
        self.team_id, self.bot_user_id, self.bot_id, self.app_id = team_id, bot_user_id, bot_id, app_id
        self.users: dict[str, JSON] = {uid: _user(uid, u) for uid, u in (users or {}).items()}
        self.users.setdefault(bot_user_id, _user(bot_user_id, {"name": "gonogo", "is_bot": True}))
        self.usergroups: dict[str, list[str]] = {gid: list(m) for gid, m in (usergroups or {}).items()}
        self.trigger_ttl = trigger_ttl
        self.latency = latency
        self._clock = clock
        self._clock_offset = 0.0

        self.history: list[Call] = []
        self.responses: list[ResponseCall] = []
        self.socket_received: list[JSON] = []
        self.socket_acks: list[JSON] = []
        self.ephemerals: list[JSON] = []
        self.files: dict[str, UploadedFile] = {}
        self.views: dict[str, JSON] = {}
        self.home_views: dict[str, JSON] = {}
        self._messages: dict[str, list[JSON]] = {}
        self._triggers: dict[str, tuple[float, str | None]] = {}
        # Modals on each user's screen, bottom first (views.open pushes onto the stack of the user
        # whose trigger_id it used); the playground shows the top one.
        self.open_views: dict[str, list[str]] = {}
        self.version = 0
        self._change = asyncio.Event()
        self._used_triggers: set[str] = set()
        self._faults: dict[str, list[_Fault]] = {}
        self._holds: dict[str, list[Hold]] = {}
        self._periodic: _PeriodicFault | None = None  # delivery faults (issue 8)
        self._windows: list[FaultWindow] = []  # outages of a given length (issue 8)
        # Web API requests received and not answered yet: a test that kills a client waits for its
        # last request to be answered (as the fault it was meant to get) before lifting a fault.
        self.in_flight = 0
        self.channels_without_bot: set[str] = set()  # posting there answers not_in_channel
        self._response_urls: dict[str, _ResponseTarget] = {}
        self._opened_dms: set[str] = set()
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._ids = itertools.count(1)
        self._last_ts_us = 0
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._methods: dict[str, Callable[[JSON], JSON]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.delete": self._chat_delete,
            "chat.getPermalink": self._chat_get_permalink,
            "views.open": self._views_open,
            "views.push": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "conversations.open": self._conversations_open,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "apps.connections.open": self._apps_connections_open,
        }

    # -- lifecycle -------------------------------------------------------------------------

    async def start(
        self, *, host: str = "127.0.0.1", port: int = 0, setup: Callable[[web.Application], None] | None = None
    ) -> Self:
        """Serve on ``host:port`` (0 = a free port); ``setup`` may add routes of its own (the playground page)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        app.router.add_post("/response/{url_id}", self._handle_response_url)
        app.router.add_get("/socket", self._handle_socket)
        if setup is not None:
            setup(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self._host = host
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        # Close sockets ourselves: aiohttp would otherwise wait for the handlers at shutdown.
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("SlackStandIn is not started")
        return f"http://{self._host}:{self._port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    # -- clock, ids, test controls ---------------------------------------------------------

    def now(self) -> float:
        """The clock trigger_id and response_url lifetimes are measured on (injectable, advanceable)."""
        return self._clock() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        self._clock_offset += seconds

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    def _next_ts(self) -> str:
        """Message timestamps: wall-clock based like Slack's, strictly increasing so they are unique ids."""
        self._last_ts_us = max(int(time.time() * 1_000_000), self._last_ts_us + 1)
        return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

    def issue_trigger_id(self, user: str | None = None) -> str:
        """A trigger_id as Slack would put in an interaction payload; views.open accepts it once, for trigger_ttl.

        ``user`` is who clicked: the modal it opens appears on their screen (``open_views``).
        """
        trigger_id = f"{next(self._ids)}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = (self.now(), user)
        return trigger_id

    def new_response_url(self, *, channel: str | None = None, ts: str | None = None, user: str | None = None) -> str:
        """A response_url; give channel/ts of the message it belongs to so replace/delete_original apply to it,
        and the user who acted so that ephemeral answers are theirs alone."""
        url_id = secrets.token_hex(8)
        self._response_urls[url_id] = _ResponseTarget(created=self.now(), channel=channel, ts=ts, user=user)
        return f"{self.url}/response/{url_id}"

    def notify(self) -> None:
        """Something visible changed: wake everyone waiting in ``changed()``."""
        self.version += 1
        self._change.set()
        self._change = asyncio.Event()

    async def changed(self, since: int, timeout: float | None = None) -> int:
        """Wait until ``version`` moves past ``since`` (or ``timeout``); returns the version now."""
        if self.version == since:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._change.wait(), timeout)
        return self.version

    def close_view(self, user: str, view_id: str) -> None:
        """The user closed a modal (or a submission closed it)."""
        stack = self.open_views.get(user, [])
        if view_id in stack:
            del stack[stack.index(view_id) :]
            self.notify()

    def post_as_user(self, channel: str, user: str, text: str) -> JSON:
        """A message a person typed (the playground's composer); Slack would store it the same way."""
        message: JSON = {"type": "message", "ts": self._next_ts(), "text": text, "user": user, "team": self.team_id}
        self._store(channel, message)
        self.notify()
        return message

    def post_ephemeral_to(
        self, channel: str, user: str, content: Mapping[str, Any], *, sender: str | None = None
    ) -> JSON:
        """An ephemeral message Slack itself shows one user (a slash command's HTTP answer, Slackbot notices)."""
        message = {**self._new_message(dict(content)), "channel": channel, "to_user": user}
        if sender is not None:
            message.update(user=sender, bot_id=None, app_id=None)
        self.ephemerals.append(message)
        self.notify()
        return message

    def replace_or_push_view(self, user: str, view_id: str, view: JSON, action: str) -> JSON:
        """A view_submission answered with response_action update (same id) or push (a new view on top)."""
        try:
            check_view(view)
        except SlackApiFailure as failure:
            return {"ok": False, "error": failure.error, **failure.extra}
        if action == "update":
            stored = self._store_view(view, view_id)
        else:
            stored = self._store_view(view)
            self.open_views.setdefault(user, []).append(stored["id"])
        self.notify()
        return {"ok": True, "view": stored}

    def ephemerals_for(self, user: str, channel: str) -> list[JSON]:
        return [e for e in self.ephemerals if e.get("channel") == channel and e.get("to_user") == user]

    def channels(self) -> list[str]:
        """Every channel holding a message."""
        return list(self._messages)

    def snapshot(self) -> JSON:
        """The workspace's visible state (messages, ephemerals, files) as JSON, to survive a restart."""
        files = {
            fid: {**vars(f), "content": None if f.content is None else f.content.decode("utf-8", "replace")}
            for fid, f in self.files.items()
        }
        return {"messages": self._messages, "ephemerals": self.ephemerals, "files": files, "ts": self._last_ts_us}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._messages = {str(c): list(m) for c, m in dict(state.get("messages") or {}).items()}
        self.ephemerals = list(state.get("ephemerals") or [])
        for fid, raw in dict(state.get("files") or {}).items():
            content = raw.get("content")
            self.files[str(fid)] = UploadedFile(**{**raw, "content": None if content is None else content.encode()})
        self._last_ts_us = max(self._last_ts_us, int(state.get("ts") or 0))

    def fail_next(
        self, method: str, status: int = 429, retry_after: int = 1, times: int = 1, error: str | None = None
    ) -> None:
        """Make the next ``times`` calls to ``method`` fail: 429 (+Retry-After), 5xx, or HTTP 200 with ``error``."""
        self._faults.setdefault(method, []).append(_Fault(status, retry_after, error, times))

    def hold(self, method: str) -> Hold:
        """Hold the next call to ``method`` until ``release()``: a deterministic interleaving point
        (e.g. a user-group lookup in the middle of a click while another command runs)."""
        held = Hold()
        self._holds.setdefault(method, []).append(held)
        return held

    # -- delivery faults (issue 8): every n-th call fails; channels the bot is not in ---------

    def fail_every(
        self,
        n: int,
        *,
        status: int = 429,
        retry_after: int = 1,
        methods: Sequence[str] = (),
        error: str | None = None,
    ) -> None:
        """Make every ``n``-th call (of ``methods``, or of any method) fail like ``fail_next``; n=0 stops."""
        self._periodic = _PeriodicFault(n, status, retry_after, error, frozenset(methods)) if n > 0 else None

    def fail_for(
        self,
        seconds: float,
        *,
        status: int = 500,
        retry_after: int = 1,
        methods: Sequence[str] = (),
        error: str | None = None,
    ) -> FaultWindow:
        """Fail every call (of ``methods``, or of any method) for ``seconds`` from now, measured on the
        stand-in's clock: an outage of a known length, however often the caller retries during it."""
        start = self.now()
        window = FaultWindow(start, start + seconds, status, retry_after, error, frozenset(methods))
        self._windows.append(window)
        return window

    def dm_channel(self, user: str) -> str:
        """The stable DM channel id conversations.open returns for ``user``."""
        return "D" + hashlib.sha256(user.encode()).hexdigest()[:10].upper()

    def slash_command_payload(
        self, command: str, text: str = "", *, user_id: str = "U0ALICE", channel_id: str = "C0GENERAL"
    ) -> JSON:
        """A realistic slash command payload with a live response_url and trigger_id."""
        return {
            "token": "verification-token",
            "team_id": self.team_id,
            "team_domain": "standin",
            "channel_id": channel_id,
            "channel_name": "general",
            "user_id": user_id,
            "user_name": str(self.users.get(user_id, {}).get("name", user_id.lower())),
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": self.new_response_url(channel=channel_id),
            "trigger_id": self.issue_trigger_id(),
        }

    # -- recorded calls --------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        return [c for c in self.history if method is None or c.method == method]

    def last(self, method: str) -> Call:
        found = self.calls(method)
        if not found:
            raise AssertionError(f"no {method} call recorded; saw {[c.method for c in self.history]}")
        return found[-1]

    async def wait_for(
        self, method: str, predicate: Callable[[Call], bool] | None = None, timeout: float = 5.0
    ) -> Call:
        """The first recorded ``method`` call matching ``predicate``, waiting for it if need be."""

        def find() -> Call | None:
            return next((c for c in self.calls(method) if predicate is None or predicate(c)), None)

        return await self._poll(find, timeout, f"{method} call (saw {[c.method for c in self.history]})")

    async def wait_for_response(
        self, predicate: Callable[[ResponseCall], bool] | None = None, timeout: float = 5.0
    ) -> ResponseCall:
        def find() -> ResponseCall | None:
            return next((r for r in self.responses if predicate is None or predicate(r)), None)

        return await self._poll(find, timeout, f"response_url post (saw {len(self.responses)})")

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> JSON:
        def find() -> JSON | None:
            return next((a for a in self.socket_acks if a.get("envelope_id") == envelope_id), None)

        return await self._poll(find, timeout, f"socket mode ack for {envelope_id}")

    async def quiet(self, timeout: float = 5.0) -> None:
        """Wait until no Web API request is being answered, on two polls in a row: a request a client
        wrote just before it was killed has been read in between, and answered with whatever fault
        was set for it. Lift a fault only after this, or that request may be answered ok (and the
        dead client's notice posted without it knowing: the crash window of docs/delivery.md)."""
        deadline = time.monotonic() + timeout
        quiet_before = False
        while not (quiet_before and self.in_flight == 0):
            quiet_before = self.in_flight == 0
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {self.in_flight} request(s) to be answered")
            await asyncio.sleep(0.01)

    async def _poll(self, find: Callable[[], _T | None], timeout: float, what: str) -> _T:
        deadline = time.monotonic() + timeout
        while (found := find()) is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.01)
        return found

    def clear(self) -> None:
        """Forget recorded calls, responses and socket traffic (stored messages, views and files stay)."""
        self.history.clear()
        self.responses.clear()
        self.socket_received.clear()
        self.socket_acks.clear()

    # -- stored messages -------------------------------------------------------------------

    def messages(self, channel: str) -> list[JSON]:
        """Every message in ``channel`` in posting order, thread replies included (they carry thread_ts)."""
        return list(self._messages.get(channel, []))

    def replies(self, channel: str, thread_ts: str) -> list[JSON]:
        """The replies in a thread, without its parent."""
        return [m for m in self._messages.get(channel, []) if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts]

    def message(self, channel: str, ts: str) -> JSON | None:
        return next((m for m in self._messages.get(channel, []) if m["ts"] == ts), None)

    # -- HTTP handlers ---------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        try:
            return await self._api(request)
        finally:
            self.in_flight -= 1

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        started = time.time()
        try:
            args = await _read_args(request)
            bad_body = False
        except ValueError:
            args, bad_body = {}, True
        if self.latency:
            await asyncio.sleep(self.latency)
        if self._holds.get(method):
            held = self._holds[method].pop(0)
            held.arrived.set()
            await held.released.wait()
        status, body, headers = self._answer(method, args, request.headers.get("Authorization"), bad_body)
        self.history.append(Call(method, args, dict(request.headers), started, status, body, at=self.now()))
        if body.get("ok"):
            self.notify()
        return web.json_response(body, status=status, headers=headers)

    def _answer(
        self, method: str, args: JSON, authorization: str | None, bad_body: bool
    ) -> tuple[int, JSON, dict[str, str]]:
        now = self.now()
        for window in self._windows:
            if window.covers(method, now):
                window.failed += 1
                return self._fault_answer(_Fault(window.status, window.retry_after, window.error, 1))
        periodic = self._periodic
        if periodic is not None and (not periodic.methods or method in periodic.methods):
            periodic.seen += 1
            if periodic.seen % periodic.every == 0:
                self._faults.setdefault(method, []).insert(
                    0, _Fault(periodic.status, periodic.retry_after, periodic.error, 1)
                )
        faults = self._faults.get(method)
        if faults:
            fault = faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                faults.pop(0)
            return self._fault_answer(fault)
        handler = self._methods.get(method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method", "req_method": method}, {}
        # slack_sdk always sends the header; Slack also accepts a token argument in a POST body.
        token = (
            authorization[7:].strip() if authorization and authorization.startswith("Bearer ") else args.get("token")
        )
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token not in (self.bot_token, self.app_token):
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if token != (self.app_token if method in _APP_TOKEN_METHODS else self.bot_token):
            return 200, {"ok": False, "error": "not_allowed_token_type"}, {}
        if bad_body:
            return 200, {"ok": False, "error": "invalid_json"}, {}
        try:
            return 200, handler(args), {}
        except SlackApiFailure as failure:
            return 200, {"ok": False, "error": failure.error, **failure.extra}, {}

    @staticmethod
    def _fault_answer(fault: _Fault) -> tuple[int, JSON, dict[str, str]]:
        if fault.status == 429:
            return 429, {"ok": False, "error": fault.error or "ratelimited"}, {"Retry-After": str(fault.retry_after)}
        return fault.status, {"ok": False, "error": fault.error or "internal_error"}, {}

    async def _handle_upload(self, request: web.Request) -> web.Response:
        """Step 2 of files upload v2: raw bytes POSTed to the upload_url (no auth, like files.slack.com)."""
        uploaded = self.files.get(request.match_info["file_id"])
        if uploaded is None:
            return web.Response(status=404, text="file_not_found")
        uploaded.content = await request.read()
        return web.Response(text=f"OK - {len(uploaded.content)}")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        url_id = request.match_info["url_id"]
        if self.latency:
            await asyncio.sleep(self.latency)
        try:
            payload = await _read_args(request)
        except ValueError:
            payload = {}
        record = ResponseCall(url_id, payload, time.time(), ok=False)
        self.responses.append(record)
        target = self._response_urls.get(url_id)
        try:
            if target is None:
                raise SlackApiFailure("no_service", status=404)
            if self.now() - target.created > RESPONSE_URL_TTL:
                raise SlackApiFailure("expired_url", status=404)
            if target.uses >= RESPONSE_URL_MAX_USES:
                raise SlackApiFailure("used_url", status=404)
            if not _truthy(payload.get("delete_original")):
                check_message(payload)
            target.uses += 1
            self._apply_response(target, payload)
        except SlackApiFailure as failure:
            record.error = failure.error
            return web.Response(status=failure.extra.get("status", 400), text=failure.error)
        record.ok = True
        self.notify()
        return web.Response(text="ok")

    def _apply_response(self, target: _ResponseTarget, payload: JSON) -> None:
        """What Slack does with a response_url post: replace/delete the original, or post a new message."""
        original = self.message(target.channel, target.ts) if target.channel and target.ts else None
        ephemeral = None
        if original is None and target.channel and target.ts:
            # A click on an ephemeral message: its response_url replaces or deletes that message.
            ephemeral = next((e for e in self.ephemerals if e["ts"] == target.ts), None)
        if _truthy(payload.get("delete_original")) and original is not None and target.channel:
            self._messages[target.channel].remove(original)
        elif _truthy(payload.get("delete_original")) and ephemeral is not None:
            self.ephemerals.remove(ephemeral)
        elif _truthy(payload.get("replace_original")) and (original or ephemeral) is not None:
            replaced = original if original is not None else ephemeral
            assert replaced is not None
            replaced.update(text=payload.get("text", ""), blocks=payload.get("blocks", []))
        elif payload.get("response_type") == "in_channel" and target.channel:
            self._store(target.channel, self._new_message(payload))
        elif target.channel:
            message = {**self._new_message(payload), "channel": target.channel}
            if target.user:
                message["to_user"] = target.user
            self.ephemerals.append(message)

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket", "") not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {"host": "standin", "build_number": 1, "approximate_connection_time": 3600},
                    "connection_info": {"app_id": self.app_id},
                }
            )
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(data, dict):
                    self.socket_received.append(data)
                    if "envelope_id" in data:
                        self.socket_acks.append(data)
        finally:
            self._sockets.remove(ws)
        return ws

    # -- Socket Mode controls --------------------------------------------------------------

    async def wait_for_socket(self, timeout: float = 5.0) -> None:
        await self._poll(lambda: self._sockets[-1] if self._sockets else None, timeout, "a socket mode connection")

    async def socket_send(self, envelope: JSON, timeout: float = 5.0) -> str:
        """Push an envelope to the newest socket connection (waiting for one); returns its envelope_id."""
        envelope = {"envelope_id": secrets.token_hex(16), **envelope}
        await self.wait_for_socket(timeout)
        await self._sockets[-1].send_json(envelope)
        return str(envelope["envelope_id"])

    async def socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask connected clients to reconnect, as Slack does every few hours."""
        for ws in list(self._sockets):
            await ws.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "standin"}})

    # -- Web API methods -------------------------------------------------------------------

    def _auth_test(self, args: JSON) -> JSON:
        return {
            "ok": True,
            "url": "https://standin.slack.com/",
            "team": "Stand-in",
            "user": "gonogo",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _channel(self, args: JSON) -> str:
        channel = args.get("channel")
        if not channel or not isinstance(channel, str):
            raise SlackApiFailure("channel_not_found")
        # Posting to a user id posts into the app's DM with that user.
        return self.dm_channel(channel) if channel[0] in "UW" else channel

    def _new_message(self, args: JSON) -> JSON:
        message: JSON = {
            "type": "message",
            "ts": self._next_ts(),
            "text": args.get("text") or "",
            "blocks": args.get("blocks") or [],
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
        }
        for key in ("thread_ts", "attachments", "metadata"):
            if args.get(key):
                message[key] = str(args[key]) if key == "thread_ts" else args[key]
        return message

    def _store(self, channel: str, message: JSON) -> JSON:
        self._messages.setdefault(channel, []).append(message)
        return message

    def _existing(self, args: JSON) -> tuple[str, JSON]:
        channel = self._channel(args)
        found = self.message(channel, str(args.get("ts", "")))
        if found is None:
            raise SlackApiFailure("message_not_found")
        return channel, found

    def _chat_post_message(self, args: JSON) -> JSON:
        channel = self._channel(args)
        if channel in self.channels_without_bot:
            raise SlackApiFailure("not_in_channel")
        check_message(args)
        message = self._store(channel, self._new_message(args))
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}

    def _chat_update(self, args: JSON) -> JSON:
        channel, message = self._existing(args)
        check_message(args)
        message.update(text=args.get("text") or "", blocks=args.get("blocks") or [])
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {"ok": True, "channel": channel, "ts": message["ts"], "text": message["text"], "message": message}

    def _chat_post_ephemeral(self, args: JSON) -> JSON:
        channel = self._channel(args)
        if not args.get("user"):
            raise SlackApiFailure("user_not_found")
        check_message(args)
        message = {**self._new_message(args), "channel": channel, "to_user": args["user"]}
        self.ephemerals.append(message)
        return {"ok": True, "message_ts": message["ts"]}

    def _chat_delete(self, args: JSON) -> JSON:
        channel, message = self._existing(args)
        self._messages[channel].remove(message)
        return {"ok": True, "channel": channel, "ts": message["ts"]}

    def _store_view(self, view: JSON, view_id: str | None = None) -> JSON:
        view_id = view_id or self._next_id("V")
        stored: JSON = {
            "id": view_id,
            "team_id": self.team_id,
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "state": {"values": {}},
            "root_view_id": view_id,
            "app_id": self.app_id,
            "bot_id": self.bot_id,
            **view,
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
        }
        self.views[view_id] = stored
        return stored

    def _views_open(self, args: JSON) -> JSON:
        trigger_id = str(args.get("trigger_id") or args.get("interactivity_pointer") or "")
        if trigger_id not in self._triggers:
            raise SlackApiFailure("invalid_trigger_id")
        if trigger_id in self._used_triggers:
            raise SlackApiFailure("exchanged_trigger_id")
        issued, user = self._triggers[trigger_id]
        if self.now() - issued >= self.trigger_ttl:
            raise SlackApiFailure("expired_trigger_id")
        check_view(args.get("view"))
        self._used_triggers.add(trigger_id)
        stored = self._store_view(args["view"])
        if user is not None:
            self.open_views.setdefault(user, []).append(stored["id"])
        return {"ok": True, "view": stored}

    def _views_update(self, args: JSON) -> JSON:
        view_id, external_id = args.get("view_id"), args.get("external_id")
        current = self.views.get(str(view_id)) if view_id else None
        if external_id:
            current = next((v for v in self.views.values() if v.get("external_id") == external_id), None)
        if current is None:
            raise SlackApiFailure("not_found")
        if args.get("hash") and args["hash"] != current["hash"]:
            raise SlackApiFailure("hash_conflict")
        check_view(args.get("view"))
        return {"ok": True, "view": self._store_view(args["view"], current["id"])}

    def _views_publish(self, args: JSON) -> JSON:
        user_id = args.get("user_id")
        if not user_id:
            raise SlackApiFailure("invalid_arguments", errors=["user_id is required"])
        check_view(args.get("view"))
        if args["view"].get("type") != "home":
            raise SlackApiFailure("invalid_arguments", errors=["views.publish takes a home view"])
        previous = self.home_views.get(str(user_id))
        stored = self._store_view(args["view"], previous["id"] if previous else None)
        self.home_views[str(user_id)] = stored
        return {"ok": True, "view": stored}

    def _conversations_open(self, args: JSON) -> JSON:
        if args.get("channel"):
            return {"ok": True, "channel": {"id": args["channel"]}}
        raw = args.get("users") or ""
        users = [u.strip() for u in (raw.split(",") if isinstance(raw, str) else raw) if u.strip()]
        if not users:
            raise SlackApiFailure("users_list_not_supplied")
        for user in users:
            if user[0] not in "UW":
                raise SlackApiFailure("user_not_found")
        if len(users) == 1:
            channel = self.dm_channel(users[0])
        else:
            channel = "G" + hashlib.sha256(",".join(sorted(users)).encode()).hexdigest()[:10].upper()
        already_open = channel in self._opened_dms
        self._opened_dms.add(channel)
        return {"ok": True, "no_op": already_open, "already_open": already_open, "channel": {"id": channel}}

    def _chat_get_permalink(self, args: JSON) -> JSON:
        channel = self._channel(args)
        ts = str(args.get("message_ts", ""))
        if self.message(channel, ts) is None:
            raise SlackApiFailure("message_not_found")
        return {"ok": True, "channel": channel, "permalink": f"{self.url}/archives/{channel}/p{ts.replace('.', '')}"}

    def _users_info(self, args: JSON) -> JSON:
        user = self.users.get(str(args.get("user", "")))
        if user is None:
            raise SlackApiFailure("user_not_found")
        return {"ok": True, "user": user}

    def _usergroups_users_list(self, args: JSON) -> JSON:
        members = self.usergroups.get(str(args.get("usergroup", "")))
        if members is None:
            raise SlackApiFailure("no_such_subteam")
        return {"ok": True, "users": list(members)}

    def _files_get_upload_url(self, args: JSON) -> JSON:
        try:
            filename, length = str(args["filename"]), int(args["length"])
        except (KeyError, ValueError):
            raise SlackApiFailure("invalid_arguments", errors=["filename and length are required"]) from None
        file_id = self._next_id("F")
        self.files[file_id] = UploadedFile(id=file_id, filename=filename, length=length)
        return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _files_complete_upload(self, args: JSON) -> JSON:
        entries = args.get("files")
        if not isinstance(entries, list) or not entries:
            raise SlackApiFailure("invalid_arguments", errors=["files must be a non-empty JSON array"])
        channels = [c for c in str(args.get("channels") or args.get("channel_id") or "").split(",") if c]
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        completed: list[UploadedFile] = []
        for entry in entries:
            uploaded = self.files.get(str(entry.get("id", ""))) if isinstance(entry, dict) else None
            if uploaded is None or uploaded.content is None:
                raise SlackApiFailure("file_not_found")
            completed.append(uploaded)
        infos: list[JSON] = []
        for uploaded, entry in zip(completed, entries, strict=True):
            uploaded.title = str(entry.get("title") or uploaded.filename)
            uploaded.channels, uploaded.thread_ts = channels, thread_ts
            uploaded.initial_comment, uploaded.completed = args.get("initial_comment"), True
            infos.append(_file_info(uploaded, self.bot_user_id))
        for channel in channels:
            message = self._new_message({"text": args.get("initial_comment"), "thread_ts": thread_ts})
            self._store(channel, {**message, "files": infos})
        return {"ok": True, "files": infos}

    def _apps_connections_open(self, args: JSON) -> JSON:
        ticket = secrets.token_hex(16)
        self._tickets.add(ticket)
        return {"ok": True, "url": f"ws://127.0.0.1:{self._port}/socket?ticket={ticket}&app_id={self.app_id}"}


# ---------------------------------------------------------------------------------------------
# helpers


def _user(user_id: str, fields: Mapping[str, Any]) -> JSON:
    """A users.info user: what was given, plus the time zone fields Slack always sends (UTC by default)."""
    user: JSON = {"id": user_id, "name": user_id.lower(), "deleted": False, **dict(fields)}
    user.setdefault("real_name", user["name"])
    tz = str(user.setdefault("tz", "UTC"))
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"user {user_id}: unknown time zone {tz!r}") from None
    now = datetime.now(UTC).astimezone(zone)
    offset = now.utcoffset()
    user.setdefault("tz_label", now.tzname() or tz)
    user.setdefault("tz_offset", int(offset.total_seconds()) if offset is not None else 0)
    user.setdefault("profile", {"real_name": user["real_name"], "display_name": user["name"]})
    return user


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _file_info(uploaded: UploadedFile, user: str) -> JSON:
    return {
        "id": uploaded.id,
        "name": uploaded.filename,
        "title": uploaded.title,
        "size": len(uploaded.content or b""),
        "user": user,
        "created": int(time.time()),
        "channels": list(uploaded.channels),
    }


async def _read_args(request: web.Request) -> JSON:
    """Query parameters plus a JSON or form body, with JSON-string arguments (blocks...) decoded.

    slack_sdk sends ``params=`` arguments in the query string even on POST, ``json=`` ones as a JSON
    body and ``data=`` ones form-encoded, so all three have to be merged.
    """
    args: JSON = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()  # a JSONDecodeError is a ValueError
            if not isinstance(body, dict):
                raise ValueError("JSON body must be an object")
            args.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, field_value in form.items():
                args[key] = field_value.file.read() if isinstance(field_value, web.FileField) else field_value
    for key in _JSON_STRING_ARGS:
        raw = args.get(key)
        if isinstance(raw, str) and raw[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):
                args[key] = json.loads(raw)
    return args
