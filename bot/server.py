"""`gonogo serve`: the bot process.

HTTP mode: one aiohttp server for POST /slack/events (commands, interactivity, events, all
signature-checked by Bolt), POST /api/events (the signed webhook for CI, bot/webhook.py),
GET /healthz, GET /readyz and GET /metrics. Socket Mode (when
SLACK_APP_TOKEN is set): the same handlers over Slack's websocket, and the HTTP server keeps only
health, readiness and metrics. SIGHUP reloads gates; SIGTERM drains in-flight runs and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot import webhook
from bot.core.errors import StoreUnavailable
from bot.core.gateset import GateSet
from bot.metrics import Metrics
from bot.scheduling import Jobs
from bot.services.drills import DrillService
from bot.services.events import EventService
from bot.services.lifecycle import Lifecycle
from bot.services.membership import Membership
from bot.services.releases import ReleaseService
from bot.services.rollbacks import RollbackService
from bot.services.scheduler import Scheduler
from bot.services.signing import Signing
from bot.settings import Settings
from bot.slack.client import RateLimitedClient
from bot.slack.deliverer import DeliveryConfig, default_consumer
from bot.slack.guard import RequestGuard, install_bolt_guards
from bot.slack.refresher import RefresherConfig
from bot.slack.release_cards import ReleaseCards
from bot.slack.road import Road, build_client, build_road
from bot.slack.zones import SlackZones
from bot.store.connection import RedisHandle, connect
from bot.store.gatestore import GateStore
from bot.store.schedule import ScheduleStore
from bot.store.store import Store
from commands import actions, events, operations, reminder_actions, replies, signoff_actions, slash

log = logging.getLogger("gonogo.server")

DISPATCH_SETTLE_S = 3.0  # Bolt acks within Slack's 3 s, so requests in flight get past it by then


def build_slack_client(settings: Settings, session: aiohttp.ClientSession, metrics: Metrics) -> RateLimitedClient:
    """One client per process: after a 429 no call of that method goes out before Retry-After."""
    return build_client(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        session=session,
        metrics=metrics,
    )


def start_road(bot: Bot, client: RateLimitedClient) -> Road:
    """The deliverer and the card refresher of this process (docs/delivery.md); renderers of every
    notice kind come from bot/slack/road.py FEATURE_RENDERERS."""
    assert bot.service is not None and bot.redis is not None
    cards = ReleaseCards(bot.service, client)
    road = build_road(
        client=client,
        redis=bot.redis.client,
        card_source=cards.render,
        on_card_posted=cards.posted,
        gates=lambda: bot.gates.ids,
        metrics=bot.metrics,
        delivery=DeliveryConfig(
            consumer=bot.settings.replica or default_consumer(), claim_idle_s=bot.settings.notice_claim_idle_s
        ),
        cards=RefresherConfig(min_interval_s=bot.settings.card_update_interval_s),
    )
    bot.service.offline_card = cards.offline
    road.start()
    return road


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
    events: EventService | None = None
    jobs: Jobs | None = None
    road: Road | None = None
    stopping: bool = False
    dispatching: int = 0  # Slack requests inside Bolt right now (HTTP mode)
    dispatch_idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        url = self.settings.redis_url.get_secret_value() if self.settings.redis_url else None
        self.redis = connect(url, self.settings.data_dir)
        self.session = aiohttp.ClientSession()
        client = build_slack_client(self.settings, self.session, self.metrics)
        self.service = ReleaseService(
            store=Store(self.redis.client),
            gates=self.gates,
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
        self.events = EventService(
            store=self.service.store, gates=self.gates, env=self.service.env, evaluate=self.service.state
        )
        store, clock = self.service.store, self.service.clock
        self.signing = Signing(self.service, membership, store=store, gates=self.gates, clock=clock)
        # First, so that during a drain every request still gets an answer Slack shows.
        self.app.use(replies.answer_while_restarting(lambda: self.stopping))
        drills = DrillService(
            store=GateStore(self.redis.client), session=self.session, env=self.service.env, membership=membership
        )
        gate_ops = operations.Operations(self.service, drills, RollbackService(self.service, membership))
        lifecycle = Lifecycle(self.service, membership, store=store, gates=self.gates, clock=clock)
        slash.register(self.app, self.service, self.signing, lifecycle, gate_ops)
        operations.register(self.app, gate_ops)
        actions.register(self.app, self.service)
        events.register(self.app)
        signoff_actions.register(self.app, self.signing)
        install_bolt_guards(self.app, team_id=self.settings.slack_team_id, app_id=self.settings.slack_app_id)
        self.metrics.gates_loaded.set(len(self.gates.ids))
        self._start_scheduling(client, membership)
        self.road = start_road(self, client)

    # --- scheduling (issue 9): reminder DMs, escalations, freeze and pre-launch posts -------------
    def _start_scheduling(self, client: RateLimitedClient, membership: Membership) -> None:
        """Renderers of the scheduler's notices, the Snooze button, and the one-minute ticks.
        Every replica runs them; claims in Redis make each unit happen once (docs/scheduling.md)."""
        assert self.service is not None and self.app is not None and self.redis is not None
        scheduler = Scheduler(
            releases=self.service,
            store=ScheduleStore(self.redis.client),
            members=membership.members,
            zones=SlackZones(client, self.redis.client),
        )
        reminder_actions.register(self.app, scheduler)
        self.jobs = Jobs(scheduler)
        self.jobs.start()

    # --- end of scheduling ------------------------------------------------------------------------

    async def stop(self) -> None:
        """Drain and close whatever `start` opened (also after a failed start; calling it twice is
        harmless). New requests are answered "restarting" from the moment `stopping` is set."""
        self.stopping = True
        if self.jobs is not None:  # scheduling (issue 9): no new ticks; a tick under way is atomic per unit
            self.jobs.stop()
        try:
            if self.service is not None:
                await self._requests_settled(DISPATCH_SETTLE_S)
                await self.service.drain(self.settings.drain_timeout_s)
        finally:
            if self.road is not None:  # after the drain: its final cards and records are on the road
                road, self.road = self.road, None
                await road.stop()
            if self.session is not None:
                await self.session.close()
                self.session = None
            if self.redis is not None:
                redis, self.redis = self.redis, None
                await redis.close()

    def dispatch_started(self) -> None:
        self.dispatching += 1
        self.dispatch_idle.clear()

    def dispatch_ended(self) -> None:
        self.dispatching -= 1
        if not self.dispatching:
            self.dispatch_idle.set()

    async def _requests_settled(self, within: float) -> None:
        """Requests Bolt is still dispatching ack, then hand their work to a handler task, which
        the service's drain waits for: let them get that far."""
        if self.dispatching:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dispatch_idle.wait(), within)
        await asyncio.sleep(0)  # a handler task created by the last ack gets to enter its work

    def reload_gates(self) -> list[str]:
        problems = self.gates.reload()
        if self.jobs is not None:  # scheduling (issue 9): jobs follow the gates
            self.jobs.sync()
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
        if self.road is not None and self.road.auth_failed:
            status["slack"] = "token refused (invalid_auth / token_revoked)"
            ok = False
        if self.stopping:
            status["stopping"] = True
        return ok, status


def web_app(bot: Bot, *, slack_events: bool = True) -> web.Application:
    app = web.Application()

    async def events(request: web.Request) -> web.Response:
        assert bot.app is not None
        started = time.perf_counter()
        bot.dispatch_started()
        try:
            bolt_response = await bot.app.async_dispatch(await to_bolt_request(request))
        finally:
            bot.dispatch_ended()
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
        app.middlewares.append(request_guard(bot).middleware)
    secret = bot.settings.webhook_secret.get_secret_value() if bot.settings.webhook_secret else None
    webhook.register(app, webhook.EventsEndpoint(secret, lambda: bot.events))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def request_guard(bot: Bot) -> RequestGuard:
    """Signature, shape and replay checks in front of Bolt (bot/slack/guard.py)."""
    secret = bot.settings.slack_signing_secret
    assert secret is not None, "HTTP mode needs SLACK_SIGNING_SECRET (Settings.problems)"

    async def first_seen(key: str, ttl_s: int) -> bool:
        assert bot.service is not None
        return await bot.service.store.first_seen(key, ttl_s)

    return RequestGuard(secret.get_secret_value(), first_seen)


def _kind(request: web.Request) -> str:
    content_type = request.headers.get("Content-Type", "")
    return "json" if "json" in content_type else "form"


async def serve(
    settings: Settings,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    started: Callable[[Bot], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop` is set), then drain and exit cleanly.

    Whatever happens (a signal during start-up, a port in use, a crash), everything started here is
    stopped on the way out: the embedded redis-server above all, which would otherwise outlive us."""
    bot = Bot(settings=settings, gates=GateSet(settings.gates))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, bot.reload_gates)
    runner: web.AppRunner | None = None
    socket_handler: Any = None
    try:
        await bot.start()
        runner = web.AppRunner(web_app(bot, slack_events=not settings.socket_mode), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        if settings.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            assert bot.app is not None and settings.slack_app_token is not None
            socket_handler = AsyncSocketModeHandler(bot.app, settings.slack_app_token.get_secret_value())
            await socket_handler.connect_async()
        log.info(
            "gonogo serving",
            extra={"port": settings.port, "mode": "socket" if settings.socket_mode else "http", "gates": bot.gates.ids},
        )
        if started is not None:  # tests: the process's parts, e.g. to cut its road short like a crash
            started(bot)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down: draining in-flight work")
        bot.stopping = True  # /readyz 503 and "restarting" answers from now on
        if socket_handler is not None:
            await socket_handler.close_async()
            socket_handler = None
        await bot.stop()  # the HTTP server keeps answering (health, "restarting") while this drains
    finally:
        try:
            if socket_handler is not None:
                await socket_handler.close_async()
            await bot.stop()
            if runner is not None:
                await runner.cleanup()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
    log.info("stopped")
