"""The card refresher: keeps every release card on Slack showing the current state.

A state change bumps the card's wanted revision in the same atomic step (bot/store/outbox.py
`Emit(card_of=...)`). The refresher notices dirty cards, takes a lease on each (one refresher per
card across replicas), renders the card from the current state through an injected `CardSource`
(never a snapshot from when the change happened), and sends at most one chat.update per card per
`min_interval_s`. It records the revision Slack shows and keeps going until that is the newest: after
a 429 storm, a Slack outage or a restart, every card converges. A card that cannot be posted because
the bot is not in its channel tells the person whose change marked it to `/invite @gonogo` (the same
notice the deliverer queues for a notice that failed so).

The revision read happens before the render, so whatever the render shows is at least that new; a
change written meanwhile bumps the wanted revision past the one recorded and brings another round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.exceptions
from slack_sdk.errors import SlackApiError

from bot.metrics import Metrics
from bot.slack.blocks import Message
from bot.slack.client import Failure, RateLimitedClient, classify, slack_error
from bot.slack.ratelimit import ChannelPacer, backoff
from bot.slack.renderers import invite_bot
from bot.store import keys
from bot.store.outbox import CardRecord, Emit, Outbox, raise_if_cancelled

log = logging.getLogger("gonogo.refresher")

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


@dataclass(frozen=True)
class CardContent:
    """A card rendered from the current state."""

    channel: str  # where to post it if it is not posted yet
    message: Message
    ts: str | None = None  # a card already on Slack that Redis does not know of yet: adopt it


CardSource = Callable[[str], Awaitable[CardContent | None]]  # release id -> card; None: no card anymore
OnPosted = Callable[[str, str, str], Awaitable[None]]  # release id, channel, ts of a newly posted card


@dataclass(frozen=True)
class RefresherConfig:
    min_interval_s: float = 1.0  # chat.update per card: Slack allows about one a second per message
    poll_interval_s: float = 0.1  # how often dirty cards are looked for
    lease_s: float = 10.0  # renewed while refreshing; a dead refresher's cards move after this
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    auth_retry_s: float = 60.0


class CardRefresher:
    def __init__(
        self,
        *,
        outbox: Outbox,
        client: RateLimitedClient,
        source: CardSource,
        pacer: ChannelPacer,
        gates: Callable[[], Iterable[str]] = tuple,
        metrics: Metrics | None = None,
        on_posted: OnPosted | None = None,
        config: RefresherConfig | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.client = client.sibling(rate_limit_retries=0, server_error_retries=0)
        self.source = source
        self.pacer = pacer
        self.configured_gates = gates
        self.metrics = metrics
        self.on_posted = on_posted
        self.config = config or RefresherConfig()
        self.wall = wall
        self.auth_failed = False
        self._cards: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    async def run(self) -> None:
        """Watch for dirty cards until cancelled."""
        failures = 0
        try:
            while not self._stopping:
                raise_if_cancelled()
                try:
                    gates = await self.outbox.gates(self.configured_gates())
                    dirty = await self.outbox.dirty_cards(gates)
                    failures = 0
                except REDIS_ERRORS as exc:
                    failures += 1
                    log.warning("card state unreachable", extra={"error": type(exc).__name__})
                    await asyncio.sleep(self._backoff(failures))
                    continue
                if self.metrics is not None:
                    self.metrics.cards_behind.set(len(dirty))
                for release_id in dirty:
                    if release_id not in self._cards:
                        task = asyncio.create_task(self._refresh(release_id), name=f"card:{release_id}")
                        self._cards[release_id] = task
                        task.add_done_callback(self._forget)
                await asyncio.sleep(self.config.poll_interval_s)
        finally:
            for task in list(self._cards.values()):
                task.cancel()

    def _forget(self, task: asyncio.Task[None]) -> None:
        for release_id, known in list(self._cards.items()):
            if known is task:
                del self._cards[release_id]

    async def stop(self, grace_s: float = 5.0) -> None:
        self._stopping = True
        tasks = list(self._cards.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)

    # --- one card -------------------------------------------------------------------------------

    async def _refresh(self, release_id: str) -> None:
        lease_key, token = keys.card_lease(release_id), secrets.token_hex(8)
        lease_ms = int(self.config.lease_s * 1000)
        try:
            if not await self.outbox.acquire_lease(lease_key, token, lease_ms):
                return  # another replica refreshes this card
        except REDIS_ERRORS:
            return
        work = asyncio.create_task(self._converge(release_id))
        try:
            while not work.done():
                raise_if_cancelled()
                done, _ = await asyncio.wait({work}, timeout=self.config.lease_s / 3)
                if done:
                    break
                try:
                    kept = await self.outbox.renew_lease(lease_key, token, lease_ms)
                except REDIS_ERRORS:
                    kept = True  # cannot tell; the lease runs out on its own if Redis stays away
                if not kept:
                    log.warning("card lease lost", extra={"release": release_id})
                    work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            raise_if_cancelled()  # the suppress above must not eat a cancel of this task
        finally:
            work.cancel()
            with contextlib.suppress(*REDIS_ERRORS):
                await self.outbox.release_lease(lease_key, token)

    async def _converge(self, release_id: str) -> None:
        failures = 0
        while True:
            raise_if_cancelled()
            content: CardContent | None = None
            try:
                record = await self.outbox.card(release_id)
                if not record.behind:
                    if await self.outbox.settle_card(release_id, record.shown, self._now_ms(), updated=False):
                        return
                    continue
                wait = record.updated_at_ms / 1000 + self.config.min_interval_s - self.wall()
                if wait > 0:  # at most one chat.update per card per interval, across replicas
                    await asyncio.sleep(wait)
                    continue
                content = await self.source(release_id)
                if content is None:  # nothing to show anymore (release gone): stop wanting it
                    await self.outbox.settle_card(release_id, record.wanted, self._now_ms(), updated=False)
                    return
                await self._show(record, content)
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                failures += 1
                log.warning("card state unreachable", extra={"release": release_id, "error": type(exc).__name__})
                await asyncio.sleep(self._backoff(failures))
                continue
            except Exception as exc:
                kind = classify(exc)
                error = slack_error(exc)
                if kind is Failure.RATE_LIMITED:
                    continue  # the gate holds chat.update back for Retry-After
                if kind is Failure.TRANSIENT:
                    failures += 1
                    await asyncio.sleep(self._backoff(failures))
                    continue
                if kind is Failure.AUTH:
                    self._auth(failed=True, error=error)
                    await asyncio.sleep(self.config.auth_retry_s)
                    continue
                # Permanent (not in channel, invalid blocks, a render bug): this revision cannot be
                # shown; the next state change tries again.
                log.error(
                    "card cannot be shown", extra={"release": release_id, "error": error, "detail": repr(exc)[:300]}
                )
                channel = record.channel or (content.channel if content is not None else None)
                if kind is Failure.NOT_IN_CHANNEL and record.actor and channel:
                    await self._ask_invite(record, record.actor, channel, error)
                await self.outbox.settle_card(release_id, record.wanted, self._now_ms(), updated=False)
                return
            failures = 0
            self._auth(failed=False)
            now_ms = self._now_ms()
            await self.outbox.settle_card(release_id, record.wanted, now_ms, updated=True)
            if self.metrics is not None and record.wanted_at_ms:
                self.metrics.card_refresh_lag.observe(max(0.0, (now_ms - record.wanted_at_ms) / 1000))

    async def _show(self, record: CardRecord, content: CardContent) -> None:
        ts = record.ts or content.ts
        channel = record.channel or content.channel
        message = content.message
        if ts:
            try:
                await self.client.chat_update(channel=channel, ts=ts, text=message.text, blocks=message.blocks)
                if record.ts is None:  # adopted a card Redis did not know of
                    await self.outbox.set_card_location(record.release_id, channel, ts)
                return
            except SlackApiError as exc:
                if exc.response.get("error") != "message_not_found":
                    raise
                log.warning("card vanished from Slack, posting a new one", extra={"release": record.release_id})
                await self.outbox.set_card_location(record.release_id, channel, None)
        await self.client.gate.wait("chat.postMessage")
        await self.pacer.acquire(content.channel)
        posted = await self.client.chat_postMessage(channel=content.channel, text=message.text, blocks=message.blocks)
        new_channel, new_ts = str(posted["channel"]), str(posted["ts"])
        # Recorded at once: a crash from here on posts no second card.
        await self.outbox.set_card_location(record.release_id, new_channel, new_ts)
        if self.on_posted is not None:
            await self.on_posted(record.release_id, new_channel, new_ts)

    async def _ask_invite(self, record: CardRecord, actor: str, channel: str, error: str) -> None:
        """Queued before the card is settled: a crash in between asks again, and the notice's key
        (person, channel, hour) keeps that to one message."""
        release_id = record.release_id
        gate_id = release_id.partition("@")[0]
        now = datetime.fromtimestamp(self.wall(), UTC)
        log.warning("bot is not in the card's channel", extra={"release": release_id, "channel": channel})
        await self.outbox.append(
            Emit(gate_id, notices=[invite_bot(gate_id, release_id, actor, channel, error, "card", now)])
        )

    def _backoff(self, failures: int) -> float:
        return backoff(failures, base=self.config.backoff_base_s, cap=self.config.backoff_cap_s)

    def _now_ms(self) -> int:
        return int(self.wall() * 1000)

    def _auth(self, *, failed: bool, error: str = "") -> None:
        if failed and not self.auth_failed:
            log.critical("SLACK REFUSES THE BOT TOKEN: cards cannot be updated", extra={"error": error})
        self.auth_failed = failed
