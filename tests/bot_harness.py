"""Running the real bot in-process for end-to-end tests, and talking to it the way Slack does.

Requests are signed exactly as Slack signs them (v0 HMAC-SHA256 over `v0:<ts>:<body>`), bodies
are shaped like Slack's (form-encoded slash commands, `payload=<json>` interactivity), and the
bot's Web API client points at the stand-in in `bot/playground/standin.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.playground.standin import SlackStandIn
from bot.server import Bot, serve
from bot.settings import Settings
from bot.store import keys
from tests.redis_server import free_port

BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-1-test-app-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0DEPLOYS"
TEAM = "T0STANDIN"  # the stand-in's workspace (auth.test): the bot refuses any other


def signature_headers(body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def slash_command(text: str, *, response_url: str, user: str = "U01TECH", channel: str = CHANNEL) -> dict[str, str]:
    return {
        "token": "deprecated-verification-token",
        "team_id": TEAM,
        "team_domain": "acme",
        "channel_id": channel,
        "channel_name": "deploys",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/gonogo",
        "text": text,
        "api_app_id": "A0GONOGO",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
    }


def block_action(
    action_id: str,
    value: str,
    *,
    response_url: str,
    user: str = "U01TECH",
    channel: str = CHANNEL,
    message_ts: str = "1700000000.000100",
    block_id: str = "gonogo_card_actions",
    trigger_id: str = "13345224609.738474920.8088930838d88f008e0",
    action_ts: str | None = None,
) -> dict[str, Any]:
    """A `block_actions` payload as Slack sends it for a button click on a message."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
        "api_app_id": "A0GONOGO",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": trigger_id,
        "team": {"id": TEAM, "domain": "acme"},
        "channel": {"id": channel, "name": "deploys"},
        "message": {"type": "message", "ts": message_ts, "text": "card"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "value": value,
                "type": "button",
                "text": {"type": "plain_text", "text": "button"},
                "action_ts": action_ts or f"{time.time():.6f}{secrets.randbelow(1000):03d}",
            }
        ],
    }


def form(fields: Mapping[str, str]) -> bytes:
    return urlencode(fields).encode()


def payload_form(payload: Mapping[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def write_gate(directory: Path, text: str, name: str = "gate.yml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


@dataclass
class Reply:
    status: int
    text: str
    elapsed: float


class RunningBot:
    """`gonogo serve` in a task of this event loop, with its HTTP port and a client to call it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.port}"
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.session: aiohttp.ClientSession | None = None
        self.bot: Bot | None = None  # the process's parts, once started

    async def start(self) -> RunningBot:
        self._task = asyncio.create_task(
            serve(self.settings, ready=self._ready, stop=self._stop, started=self._started)
        )
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            ready.cancel()
            self._task.result()  # raises whatever stopped the bot
            raise RuntimeError("the bot exited during start-up")
        if ready not in done:
            raise RuntimeError("the bot did not become ready within 20 s")
        self.session = aiohttp.ClientSession()
        return self

    def _started(self, bot: Bot) -> None:
        self.bot = bot

    async def crash_road(self) -> None:
        """Cut this bot's deliverer and card refresher short the way a SIGKILL would: nothing is
        acknowledged or released on the way out (the rest of the bot keeps answering)."""
        assert self.bot is not None and self.bot.road is not None
        road, self.bot.road = self.bot.road, None
        for task in road.tasks:
            task.cancel()
        await asyncio.gather(*road.tasks, return_exceptions=True)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout=30)
        if self.session is not None:
            await self.session.close()

    async def post(self, body: bytes, headers: Mapping[str, str], *, content_type: str | None = None) -> Reply:
        assert self.session is not None
        all_headers = {"Content-Type": content_type or "application/x-www-form-urlencoded", **headers}
        started = time.perf_counter()
        async with self.session.post(f"{self.url}/slack/events", data=body, headers=all_headers) as response:
            text = await response.text()
            return Reply(response.status, text, time.perf_counter() - started)

    async def signed(self, body: bytes, *, content_type: str | None = None) -> Reply:
        return await self.post(body, signature_headers(body), content_type=content_type)

    async def command(self, text: str, *, response_url: str, user: str = "U01TECH", channel: str = CHANNEL) -> Reply:
        return await self.signed(form(slash_command(text, response_url=response_url, user=user, channel=channel)))

    async def click(
        self, action_id: str, value: str, *, response_url: str, user: str = "U01TECH", **extra: Any
    ) -> Reply:
        payload = block_action(action_id, value, response_url=response_url, user=user, **extra)
        return await self.signed(payload_form(payload))

    async def submit(self, view: Mapping[str, Any], view_id: str, user: str, values: Mapping[str, str]) -> Reply:
        """A `view_submission` of a modal the bot opened, with the user's input per block."""
        state = {block: {"value": {"type": "plain_text_input", "value": text}} for block, text in values.items()}
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
                "state": {"values": state},
                "hash": "156772938.1827394",
                "app_id": "A0GONOGO",
                "bot_id": "B0BOT",
            },
            "response_urls": [],
            "is_enterprise_install": False,
        }
        return await self.signed(payload_form(payload))

    async def get(self, path: str) -> Reply:
        assert self.session is not None
        started = time.perf_counter()
        async with self.session.get(f"{self.url}{path}") as response:
            return Reply(response.status, await response.text(), time.perf_counter() - started)


def bot_settings(*, api_url: str, redis_url: str | None, gates: Path, data_dir: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": api_url,
        "REDIS_URL": redis_url,
        "GONOGO_GATES": str(gates),
        "GONOGO_DATA_DIR": str(data_dir),
        "GONOGO_HOST": "127.0.0.1",
        "GONOGO_PORT": free_port(),
        "GONOGO_DRAIN_TIMEOUT": 5,
        "GONOGO_CARD_INTERVAL": 0.2,  # the card refresher's chat.update pace per card (the bot: 1 s)
    }
    values.update(extra)
    return Settings(_env_file=None, **values)


@contextlib.asynccontextmanager
async def running_bot(settings: Settings) -> AsyncIterator[RunningBot]:
    bot = await RunningBot(settings).start()
    try:
        yield bot
    finally:
        await bot.stop()


async def state_keys(redis: Any) -> list[str]:
    """Redis keys holding state: everything but the replay guard's markers of requests seen, the
    outbox streams the deliverer creates, empty, when it starts, and its heartbeat."""
    found = []
    async for key in redis.scan_iter("*"):
        name = str(key)
        if name.startswith("gonogo:dedupe:") or name == keys.deliverers():
            continue
        if name.endswith(":outbox") and not await redis.xlen(name):
            continue
        found.append(name)
    return sorted(found)


async def reply_to(standin: SlackStandIn, response_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The payload the bot posted to `response_url` (its ephemeral answer)."""
    url_id = response_url.rsplit("/", 1)[1]
    found = await standin.wait_for_response(lambda r: r.url_id == url_id, timeout=timeout)
    return dict(found.payload)


class ServeProcess:
    """`gonogo serve` (HTTP mode) as a real process of its own, in its own process group, so that a
    test can SIGKILL it like the kernel's OOM killer would and be sure nothing of it is left behind."""

    def __init__(self, env: Mapping[str, str], cwd: Path, log: Path) -> None:
        self.port = int(env["GONOGO_PORT"])
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "serve"],
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: killpg reaches anything it started
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ready(self, timeout: float = 60.0) -> ServeProcess:
        """Wait for /readyz 200 without blocking the loop (the stand-in it calls at start-up runs in it)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"gonogo serve exited ({self.process.returncode}):\n{self.output()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"http://127.0.0.1:{self.port}/readyz") as answer:
                        if answer.status == 200:
                            return self
                await asyncio.sleep(0.1)
        raise TimeoutError(f"gonogo serve was not ready after {timeout:g}s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL the process group: no handler runs, nothing is acknowledged or released."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful stop), SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def gone(self) -> bool:
        """The process and every process of its group have exited."""
        if self.process.poll() is None:
            return False
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return True
        return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def serve_env(*, api_url: str, redis_url: str, gates: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a `gonogo serve` process pointed at the stand-in and the test's Redis (and
    nothing of the machine's own Slack or Redis configuration)."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith(("SLACK_", "GONOGO_"))}
    env.update(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=api_url,
        REDIS_URL=redis_url,
        GONOGO_GATES=str(gates),
        GONOGO_DATA_DIR=str(data_dir),
        GONOGO_HOST="127.0.0.1",
        GONOGO_PORT=str(free_port()),
        GONOGO_LOG_FORMAT="text",
        GONOGO_LOG_LEVEL="INFO",
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    env.update(extra)
    return env
