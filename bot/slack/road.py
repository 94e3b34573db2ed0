"""The road to Slack of one bot process: its rate-limited client, one deliverer and one card
refresher, and the renderer of every notice kind (docs/delivery.md).

`bot/server.py` builds it with `build_road(...)`, starts it after the services and stops it after
their drain (the drain's final cards and records are notices too). A feature that posts registers its
renderers by adding a `register(renderers: Renderers) -> None` function to `FEATURE_RENDERERS` below;
every process gets its own registry, so two bots in one test process do not collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
import redis.asyncio as aioredis

from bot.metrics import Metrics
from bot.slack import announcements, notices_render, reminders, signing_render, thread_notices
from bot.slack.client import RateLimitedClient
from bot.slack.deliverer import REDIS_ERRORS, Deliverer, DeliveryConfig
from bot.slack.ratelimit import ChannelPacer, MethodGate
from bot.slack.refresher import CardRefresher, CardSource, OnPosted, RefresherConfig
from bot.slack.renderers import RENDERERS, Renderers
from bot.store.outbox import Outbox

log = logging.getLogger("gonogo.road")

# One entry per feature that posts notices: each adds its kinds to the registry it is given.
FEATURE_RENDERERS: tuple[Callable[[Renderers], object], ...] = (
    notices_render.register,
    thread_notices.register,  # check details, results and conditions listings in the card's thread
    announcements.register,  # drills, rollbacks, deploy progress (issue 10)
    reminders.register,  # reminder DMs, escalations, freeze and pre-launch posts (issue 9)
    signing_render.register,  # override requests and announcements, promotions, evidence uploads
)


def bot_renderers(extra: Iterable[Callable[[Renderers], None]] = ()) -> Renderers:
    """The generic kinds (bot/slack/renderers.py) plus every feature's."""
    renderers = Renderers(RENDERERS)
    for register in (*FEATURE_RENDERERS, *extra):
        register(renderers)
    return renderers


def build_client(
    *, token: str, base_url: str, session: aiohttp.ClientSession, metrics: Metrics | None
) -> RateLimitedClient:
    """The process's one Slack client: every call waits on its per-method gate (a 429 closes the
    method for Retry-After for the whole process), and is counted by method and status."""
    return RateLimitedClient(token=token, base_url=base_url, session=session, gate=MethodGate(), metrics=metrics)


@dataclass
class Road:
    client: RateLimitedClient
    outbox: Outbox
    deliverer: Deliverer
    refresher: CardRefresher
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def auth_failed(self) -> bool:
        """Slack refuses our token (invalid_auth, token_revoked): /readyz answers 503."""
        return self.deliverer.auth_failed or self.refresher.auth_failed

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self.deliverer.run(), name="deliverer"),
            asyncio.create_task(self.refresher.run(), name="card-refresher"),
        ]
        for task in self.tasks:
            task.add_done_callback(_report_crash)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Let cards catch up and sends under way finish (bounded), then stop. What is left stays in
        the outbox, pending under this consumer's name: the next start (or another replica, after the
        idle bound) sends it; a card still behind is refreshed by whichever refresher runs next."""
        await self._cards_settled(grace_s)
        await asyncio.gather(self.refresher.stop(grace_s), self.deliverer.stop(grace_s), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks = []

    async def _cards_settled(self, within: float) -> None:
        """A drain's last cards (a run stopped by SIGTERM) are marked just before this: show them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline and self.tasks:
            try:
                gates = await self.outbox.gates(self.refresher.configured_gates())
                if not await self.outbox.dirty_cards(gates):
                    return
            except REDIS_ERRORS:
                return
            await asyncio.sleep(0.05)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("the road to Slack stopped", extra={"task": task.get_name()}, exc_info=task.exception())


def build_road(
    *,
    client: RateLimitedClient,
    redis: aioredis.Redis,
    card_source: CardSource,
    on_card_posted: OnPosted | None,
    gates: Callable[[], Iterable[str]],
    metrics: Metrics | None,
    renderers: Renderers | None = None,
    delivery: DeliveryConfig | None = None,
    cards: RefresherConfig | None = None,
) -> Road:
    outbox = Outbox(redis)
    pacer = ChannelPacer(redis)
    deliverer = Deliverer(
        outbox=outbox,
        client=client,
        pacer=pacer,
        renderers=renderers if renderers is not None else bot_renderers(),
        gates=gates,
        metrics=metrics,
        config=delivery,
    )
    refresher = CardRefresher(
        outbox=outbox,
        client=client,
        source=card_source,
        pacer=pacer,
        gates=gates,
        metrics=metrics,
        on_posted=on_card_posted,
        config=cards,
    )
    return Road(client=client, outbox=outbox, deliverer=deliverer, refresher=refresher)
