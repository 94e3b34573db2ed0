"""`gonogo serve`: the bot process.

HTTP mode: one aiohttp server for POST /slack/events (commands, interactivity, events, all
signature-checked by Bolt), GET /healthz, GET /readyz and GET /metrics. Socket Mode (when
SLACK_APP_TOKEN is set): the same handlers over Slack's websocket, and the HTTP server keeps only
health, readiness and metrics. SIGHUP reloads gates; SIGTERM drains in-flight runs and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.errors import StoreUnavailable
from bot.core.gateset import GateSet
from bot.metrics import Metrics
from bot.services.lifecycle import Lifecycle
from bot.services.membership import Membership
from bot.services.releases import ReleaseService
from bot.services.signing import Signing
from bot.settings import Settings
from bot.store.connection import RedisHandle, connect
from bot.store.store import Store
from commands import actions, events, signoff_actions, slash

log = logging.getLogger("gonogo.server")


def build_slack_client(settings: Settings, session: aiohttp.ClientSession) -> AsyncWebClient:
    client = AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url, session=session
    )
    # Connection errors are retried by default; add 429 (honours Retry-After) and 5xx.
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=3))
    client.retry_handlers.append(AsyncServerErrorRetryHandler(max_retry_count=2))
    return client


@dataclass
class Bot:
    """Everything one bot process owns; `start` and `stop` bracket its life."""

    settings: Settings
    gates: GateSet
    metrics: Metrics = field(default_factory=Metrics)
    redis: RedisHandle | None = None
    session: aiohttp.ClientSession | None = None
    service: ReleaseService | None = None
    app: AsyncApp | None = None
    signing: Signing | None = None
    stopping: bool = False

    async def start(self) -> None:
        url = self.settings.redis_url.get_secret_value() if self.settings.redis_url else None
        self.redis = connect(url, self.settings.data_dir)
        self.session = aiohttp.ClientSession()
        client = build_slack_client(self.settings, self.session)
        self.service = ReleaseService(
            store=Store(self.redis.client),
            gates=self.gates,
            slack=client,
            session=self.session,
            env=dict(os.environ),
            concurrency=self.settings.concurrency,
            metrics=self.metrics,
        )
        self.app = AsyncApp(
            client=client,
            signing_secret=(
                self.settings.slack_signing_secret.get_secret_value() if self.settings.slack_signing_secret else None
            ),
            # Socket Mode traffic is authenticated by the websocket itself, not by signatures.
            request_verification_enabled=not self.settings.socket_mode,
            process_before_response=False,
        )
        membership = Membership(self.service.store, client)
        self.signing = Signing(self.service, membership)
        slash.register(self.app, self.service, self.signing, Lifecycle(self.service, membership))
        actions.register(self.app, self.service)
        events.register(self.app)
        signoff_actions.register(self.app, self.signing)
        self.metrics.gates_loaded.set(len(self.gates.ids))

    async def stop(self) -> None:
        self.stopping = True
        if self.service is not None:
            await self.service.drain(self.settings.drain_timeout_s)
        if self.session is not None:
            await self.session.close()
        if self.redis is not None:
            await self.redis.close()

    def reload_gates(self) -> list[str]:
        problems = self.gates.reload()
        self.metrics.gates_loaded.set(len(self.gates.ids))
        return problems

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        status: dict[str, Any] = {"gates": len(self.gates.ids), "redis": "ok"}
        ok = bool(self.gates.ids) and not self.stopping
        try:
            assert self.service is not None
            await asyncio.wait_for(self.service.store.ping(), timeout=1.0)
        except (StoreUnavailable, TimeoutError):
            self.metrics.store_errors.inc()
            status["redis"] = "unavailable"
            ok = False
        if self.stopping:
            status["stopping"] = True
        return ok, status


def web_app(bot: Bot, *, slack_events: bool = True) -> web.Application:
    app = web.Application()

    async def events(request: web.Request) -> web.Response:
        assert bot.app is not None
        started = time.perf_counter()
        bolt_response = await bot.app.async_dispatch(await to_bolt_request(request))
        bot.metrics.slack_request_seconds.observe(time.perf_counter() - started)
        bot.metrics.slack_requests.labels(kind=_kind(request), status=str(bolt_response.status)).inc()
        return await to_aiohttp_response(bolt_response)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(_: web.Request) -> web.Response:
        ok, status = await bot.ready()
        return web.json_response({"ok": ok, **status}, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        if bot.service is not None:
            bot.metrics.in_flight.set(bot.service.in_flight)
        return web.Response(body=generate_latest(bot.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    if slack_events:
        app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def _kind(request: web.Request) -> str:
    content_type = request.headers.get("Content-Type", "")
    return "json" if "json" in content_type else "form"


async def serve(settings: Settings, *, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop` is set), then drain and exit cleanly."""
    bot = Bot(settings=settings, gates=GateSet(settings.gates))
    await bot.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, bot.reload_gates)

    runner = web.AppRunner(web_app(bot, slack_events=not settings.socket_mode), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    socket_handler = None
    if settings.socket_mode:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        assert bot.app is not None and settings.slack_app_token is not None
        socket_handler = AsyncSocketModeHandler(bot.app, settings.slack_app_token.get_secret_value())
        await socket_handler.connect_async()  # type: ignore[no-untyped-call]
    log.info(
        "gonogo serving",
        extra={"port": settings.port, "mode": "socket" if settings.socket_mode else "http", "gates": bot.gates.ids},
    )
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting down: draining in-flight runs")
    bot.stopping = True
    if socket_handler is not None:
        await socket_handler.close_async()  # type: ignore[no-untyped-call]
    await bot.stop()
    await runner.cleanup()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
    log.info("stopped")
