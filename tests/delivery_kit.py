"""Shared pieces for the delivery tests: the road to Slack over a real Redis and the stand-in."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

import aiohttp
import redis.asyncio as aioredis

from bot.core.notices import Notice, Target, notice_key
from bot.metrics import Metrics
from bot.playground.standin import DEFAULT_BOT_TOKEN, SlackStandIn
from bot.slack.blocks import Message
from bot.slack.client import RateLimitedClient
from bot.slack.deliverer import Deliverer, DeliveryConfig
from bot.slack.ratelimit import ChannelPacer, MethodGate
from bot.slack.refresher import CardContent, CardRefresher, RefresherConfig
from bot.store.outbox import Emit, Outbox

T = TypeVar("T")

# Fast enough for tests, still every code path: short idle bounds, tiny backoffs.
FAST = DeliveryConfig(
    consumer="test",
    poll_interval_s=0.02,
    claim_idle_s=0.5,
    maintenance_every_s=0.1,
    backoff_base_s=0.02,
    backoff_cap_s=0.2,
    auth_retry_s=0.2,
    card_wait_s=0.05,
)
FAST_CARDS = RefresherConfig(
    min_interval_s=0.2, poll_interval_s=0.02, lease_s=1.0, backoff_base_s=0.02, backoff_cap_s=0.2
)


def now() -> datetime:
    return datetime.now(UTC)


def notice(
    gate: str,
    n: int,
    *,
    channel: str | None = None,
    card_thread: bool = False,
    actor: str | None = None,
    kind: str = "channel_message",
    release: str | None = None,
    created_at: datetime | None = None,
    text: str | None = None,
) -> Notice:
    target = Target.to_card_thread() if card_thread else Target.to_channel(channel or f"C0{gate.upper()}")
    return Notice(
        kind=kind,
        gate_id=gate,
        release_id=release or (f"{gate}@1.0.0" if card_thread else None),
        target=target,
        payload={"text": text or f"{gate} notice {n}"},
        key=notice_key("test", gate, str(n)),
        created_at=created_at or now(),
        actor=actor,
    )


@overload
async def until(find: Callable[[], Awaitable[T | None]], timeout: float = ..., what: str | None = ...) -> T: ...


@overload
async def until(find: Callable[[], T | None], timeout: float = ..., what: str | None = ...) -> T: ...


async def until(find: Callable[[], Any], timeout: float = 15.0, what: str | None = None) -> Any:
    """Poll `find` (plain or async) until it returns something truthy, and return that; with a
    deadline, never a bare sleep. `what` names the wait in the failure ("timed out after 15s waiting
    for the card"); it defaults to `find`'s name."""
    deadline = time.monotonic() + timeout
    while True:
        found = find()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what or _name(find)}")
        await asyncio.sleep(0.02)


def _name(find: Callable[..., object]) -> str:
    name = getattr(find, "__name__", "")
    return name.replace("_", " ") if name and name != "<lambda>" else "a condition"


def posted_texts(standin: SlackStandIn, channel: str) -> list[str]:
    return [str(m["text"]) for m in standin.messages(channel)]


@dataclass
class Road:
    """One replica's share of the road: its client (with its own gate), deliverer and refresher."""

    redis: aioredis.Redis
    standin: SlackStandIn
    session: aiohttp.ClientSession
    config: DeliveryConfig = FAST
    cards: RefresherConfig = FAST_CARDS
    per_second: float = 50.0
    source: Callable[[str], Awaitable[CardContent | None]] | None = None
    token: str = DEFAULT_BOT_TOKEN
    clock: Callable[[], datetime] = now
    metrics: Metrics = field(default_factory=Metrics)
    gate: MethodGate = field(default_factory=MethodGate)

    def __post_init__(self) -> None:
        self.outbox = Outbox(self.redis)
        self.client = RateLimitedClient(
            token=self.token, base_url=self.standin.api_url, session=self.session, gate=self.gate, metrics=self.metrics
        )
        self.pacer = ChannelPacer(self.redis, per_second=self.per_second)
        self.deliverer = Deliverer(
            outbox=self.outbox,
            client=self.client,
            pacer=self.pacer,
            metrics=self.metrics,
            config=self.config,
            clock=self.clock,
        )
        self.refresher = CardRefresher(
            outbox=self.outbox,
            client=self.client,
            source=self.source or _no_cards,
            pacer=self.pacer,
            metrics=self.metrics,
            config=self.cards,
        )
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, *, deliverer: bool = True, refresher: bool = False) -> Road:
        if deliverer:
            self.tasks.append(asyncio.create_task(self.deliverer.run()))
        if refresher:
            self.tasks.append(asyncio.create_task(self.refresher.run()))
        return self

    async def kill(self) -> None:
        """Cancel everything at once, the way a crash stops work (no graceful drain)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


@asynccontextmanager
async def roads(*replicas: Road, refresher: bool = False) -> AsyncIterator[Sequence[Road]]:
    for road in replicas:
        road.start(refresher=refresher)
    try:
        yield replicas
    finally:
        for road in replicas:
            await road.kill()


async def _no_cards(release_id: str) -> CardContent | None:
    return None


class Cards:
    """A card source over a tiny in-memory "state": release id -> counter, rendered on demand."""

    def __init__(self, outbox: Outbox, channel: str) -> None:
        self.outbox = outbox
        self.channel = channel
        self.state: dict[str, int] = {}
        self.renders = 0

    async def change(self, release_id: str) -> int:
        """A state change: bump the state and mark the card dirty (what a service does atomically)."""
        self.state[release_id] = self.state.get(release_id, 0) + 1
        await self.outbox.append(Emit(release_id.partition("@")[0], card_of=release_id, at=now()))
        return self.state[release_id]

    async def __call__(self, release_id: str) -> CardContent | None:
        self.renders += 1
        if release_id not in self.state:
            return None
        text = f"{release_id} state {self.state[release_id]}"
        return CardContent(
            channel=self.channel,
            message=Message(text=text, blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}]),
        )


def sent_ok(standin: SlackStandIn, method: str) -> list[Any]:
    return [c for c in standin.calls(method) if c.ok]


@asynccontextmanager
async def release_road(
    service: Any, standin: SlackStandIn, session: aiohttp.ClientSession, redis: aioredis.Redis
) -> AsyncIterator[Any]:
    """The bot's own road (bot/slack/road.py) for a ReleaseService used without the server: its cards
    and notices reach the stand-in the way they do in `gonogo serve`, with test-speed timings."""
    from bot.slack.release_cards import ReleaseCards
    from bot.slack.road import build_client, build_road

    client = build_client(token=DEFAULT_BOT_TOKEN, base_url=standin.api_url, session=session, metrics=None)
    cards = ReleaseCards(service, client)
    road = build_road(
        client=client,
        redis=redis,
        card_source=cards.render,
        on_card_posted=cards.posted,
        gates=lambda: service.gates.ids,
        metrics=None,
        delivery=FAST,
        cards=FAST_CARDS,
    )
    service.offline_card = cards.offline
    road.start()
    try:
        yield road
    finally:
        await road.stop(grace_s=1.0)
