"""The deliverer: the one piece of code that posts notices to Slack (docs/delivery.md).

Every replica runs one. They share each gate's outbox stream through one consumer group; a notice
is rendered (bot/slack/renderers.py), sent, its Slack `ts` stored against its idempotency key, and
only then acknowledged. A notice whose key was delivered is never sent again; one being sent by
another deliverer is left to it. Entries held by a consumer that died are claimed after an idle
bound (XAUTOCLAIM); live consumers keep theirs fresh.

Failures: a 429 closes the method for Retry-After (the client's gate) and the notice waits; 5xx and
connection errors back off with jitter, without a retry cap; a notice older than `max_age` is
dead-lettered. Permanent errors are not retried: not_in_channel / channel_not_found tell the person
who acted to invite the bot; invalid_blocks and the rest are logged with the kind and audited;
invalid_auth / token_revoked set `auth_failed` (the server's /readyz answers 503) and keep notices
queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.exceptions
from slack_sdk.errors import SlackRequestError

from bot.core.notices import Notice, Target
from bot.core.signing_notices import FILE_UPLOAD
from bot.metrics import Metrics
from bot.slack.blocks import Message
from bot.slack.client import Failure, RateLimitedClient, classify, slack_error
from bot.slack.lanes import UNREADABLE, ReadPolicy
from bot.slack.ratelimit import ChannelPacer, backoff
from bot.slack.renderers import INVITE_BOT, RENDERERS, Renderers, invite_bot
from bot.store.outbox import Entry, Outbox, TrySend, raise_if_cancelled
from bot.store.store import AuditEvent

log = logging.getLogger("gonogo.deliverer")

POST = "chat.postMessage"
UPDATE = "chat.update"
UPLOAD = "files.getUploadURLExternal"  # the first call of an upload: its gate holds the whole upload
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_consumer() -> str:
    """Stable across restarts of one container (pid 1), distinct for processes on one machine."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class DeliveryConfig:
    consumer: str = field(default_factory=default_consumer)
    batch: int = 100  # entries read per gate per read
    lane_depth: int = 5  # at most this many read per gate at once: replicas share a burst
    lane_hold: int = 2  # a gate whose notices all go to one lane is read only while it holds fewer
    offer_min_s: float = 0.25  # a 429 that shuts a method at least this long offers the entry to others
    steal_margin_s: float = 0.1  # an offer whose holder's gate opens sooner than this is left to it
    steal_every_s: float = 0.05  # how often offers are looked at
    max_in_flight: int = 500  # entries this consumer holds at once
    poll_interval_s: float = 0.1  # between reads when the outboxes are empty
    claim_idle_s: float = 60.0  # an entry idle this long belongs to a dead consumer
    maintenance_every_s: float = 5.0  # heartbeat of held entries, claims, backlog metrics
    send_lease_s: float = 60.0  # renewed while a send is under way
    wait_lease_s: float = 5.0  # the lease while waiting for the channel's slot and the gate (renewed)
    max_age: timedelta = timedelta(hours=24)  # older undelivered notices are dead-lettered
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    auth_retry_s: float = 60.0  # while Slack refuses our token
    card_wait_s: float = 1.0  # a card_thread notice whose card is not posted yet
    forget_consumers_after_s: float = 3600.0  # idle consumers with nothing pending are removed


@dataclass
class _Lease:
    """A send lease as its holder knows it: its length (which grows when the call starts) and when
    it was last renewed, by the renewing task."""

    ms: int
    renewed_at: float = field(default_factory=time.monotonic)
    lost: bool = False

    def doubtful(self) -> bool:
        """True when it may have run out (this process stalled, Redis was unreachable): check it."""
        return self.lost or time.monotonic() - self.renewed_at > self.ms / 2000


class CardNotPosted(Exception):
    """A card_thread notice arrived before its card was posted: wait for the refresher."""


class OriginalNotPosted(Exception):
    """An update arrived before the message it replaces was posted (another replica has it)."""


class Deliverer:
    def __init__(
        self,
        *,
        outbox: Outbox,
        client: RateLimitedClient,
        pacer: ChannelPacer,
        renderers: Renderers = RENDERERS,
        gates: Callable[[], Iterable[str]] = tuple,
        metrics: Metrics | None = None,
        config: DeliveryConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.outbox = outbox
        # Retries belong to the loop below (a notice's age decides); the gate is shared with `client`.
        self.client = client.sibling(rate_limit_retries=0, server_error_retries=0)
        self.pacer = pacer
        self.renderers = renderers
        self.configured_gates = gates
        self.metrics = metrics
        self.config = config or DeliveryConfig()
        self.clock = clock
        self.auth_failed = False  # /readyz reads this: Slack refuses our token
        self._token = secrets.token_hex(8)
        self._held: dict[tuple[str, str], Entry] = {}
        self._lanes: dict[str, deque[Entry]] = {}
        self._lane_tasks: dict[str, asyncio.Task[None]] = {}
        self._next_steal = 0.0
        self._offered: set[tuple[str, str]] = set()  # entries we offered after a 429, not yet taken back
        self._reads = ReadPolicy(
            batch=self.config.batch, lane_depth=self.config.lane_depth, lane_hold=self.config.lane_hold
        )
        self._room = asyncio.Event()
        self._stopping = False

    # --- life ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until cancelled (or `stop`)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read_loop())
                group.create_task(self._maintenance_loop())
        finally:
            lanes = list(self._lane_tasks.values())
            for task in lanes:
                task.cancel()
            # Their clean-up (a send lease nobody used goes back) is done before we return.
            await asyncio.gather(*lanes, return_exceptions=True)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking work; let sends under way finish (a send cut short may be posted again)."""
        self._stopping = True
        with contextlib.suppress(*REDIS_ERRORS):  # the others read bursts as if alone sooner
            await self.outbox.heartbeat(self.config.consumer, self._alive_ms, leaving=True)
        lanes = list(self._lane_tasks.values())
        if lanes:
            await asyncio.wait(lanes, timeout=grace_s)

    @property
    def held(self) -> int:
        return len(self._held)

    async def _gates(self) -> list[str]:
        return await self.outbox.gates(self.configured_gates())

    # --- taking work --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        failures = 0
        first = True
        while not self._stopping:
            raise_if_cancelled()
            room = self.config.max_in_flight - len(self._held)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                gates = await self._gates()
                if first:  # what this consumer name held before a restart: ours again at once
                    entries = await self._own_pending(gates)
                    first = False
                else:
                    self._room.clear()
                    entries = await self.outbox.read(gates, self.config.consumer, self._reads.wants(gates, room))
                failures = 0
            except REDIS_ERRORS as exc:
                failures += 1
                log.warning("outbox unreachable", extra={"error": type(exc).__name__})
                await asyncio.sleep(backoff(failures, base=self.config.backoff_base_s, cap=self.config.backoff_cap_s))
                continue
            for entry in entries:
                if entry.notice is not None and self.metrics is not None:
                    self.metrics.notices_queued.labels(kind=entry.notice.kind).inc()
                self._take(entry)
            self._reads.read((entry.gate_id, self._lane_of(entry)) for entry in entries)
            if time.monotonic() >= self._next_steal:  # offers are rare: look a few times a second
                self._next_steal = time.monotonic() + self.config.steal_every_s
                with contextlib.suppress(*REDIS_ERRORS):
                    entries += await self._steal(gates)
            if not entries:  # a lane that drains wakes us: its gate may be read again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), self.config.poll_interval_s)

    @staticmethod
    def _lane_of(entry: Entry) -> str:
        return entry.notice.lane if entry.notice is not None else UNREADABLE

    async def _own_pending(self, gates: list[str]) -> list[Entry]:
        return await self.outbox.read(gates, self.config.consumer, self.config.max_in_flight, pending=True)

    async def _steal(self, gates: list[str]) -> list[Entry]:
        """Take entries other replicas offered after a 429 shut their gate for that method, when ours
        is open: Slack's Retry-After binds the client that was refused, so the notice need not wait
        it out. The offer is taken atomically (one taker); the holder finds it gone and lets go."""
        now_ms = time.time() * 1000
        stolen: list[Entry] = []
        for offer in await self.outbox.offers(gates):
            if offer.until_ms < now_ms - self.config.claim_idle_s * 1000:
                # Left by a deliverer that died before taking it back: its entry is claimed by the
                # idle bound like any other, so the offer is only litter.
                await self.outbox.take_offer_back(offer.gate_id, offer.entry_id)
                continue
            if offer.owner == self.config.consumer or (offer.gate_id, offer.entry_id) in self._held:
                continue
            if offer.until_ms - now_ms < self.config.steal_margin_s * 1000:
                continue  # its holder may send it sooner than we could
            if self.client.gate.remaining(offer.method) > 0 or len(self._held) >= self.config.max_in_flight:
                continue
            for entry in await self.outbox.steal(offer, self.config.consumer):
                log.debug("took an offered notice", extra={"entry": entry.id, "gate": entry.gate_id})
                self._take(entry, first=True)
                stolen.append(entry)
        return stolen

    def _take(self, entry: Entry, *, first: bool = False) -> None:
        held = (entry.gate_id, entry.id)
        if held in self._held:
            return
        self._held[held] = entry
        lane = self._lane_of(entry)
        self._reads.took(lane)
        queue = self._lanes.setdefault(lane, deque())
        if first:  # an offered entry is older than what this lane holds
            queue.appendleft(entry)
        else:
            queue.append(entry)
        if lane not in self._lane_tasks:
            self._lane_tasks[lane] = asyncio.create_task(self._lane(lane), name=f"deliver:{lane}")

    async def _lane(self, lane: str) -> None:
        """One lane's notices in order, one at a time (Slack paces per channel anyway)."""
        queue = self._lanes[lane]
        try:
            while queue and not self._stopping:
                raise_if_cancelled()
                entry = queue.popleft()
                later = False
                try:
                    later = await self._handle(entry) == "later"
                except asyncio.CancelledError:
                    raise
                except Exception:  # left pending: this consumer or another retries after the idle bound
                    log.exception("delivering a notice failed", extra={"entry": entry.id, "gate": entry.gate_id})
                finally:
                    if later:
                        # An update whose original is not posted yet: the rest of the lane may hold
                        # that original, so the update goes behind it instead of blocking the lane.
                        queue.append(entry)
                    else:
                        self._release(lane, entry)
                if later and len(queue) == 1:
                    await asyncio.sleep(self.config.card_wait_s)
        finally:
            for entry in queue:  # stopping: forget the rest, they stay pending in Redis
                self._release(lane, entry)
            self._lanes.pop(lane, None)
            self._lane_tasks.pop(lane, None)

    def _release(self, lane: str, entry: Entry) -> None:
        if self._held.pop((entry.gate_id, entry.id), None) is not None:
            self._reads.let_go(lane)
        self._room.set()

    async def _maintenance_loop(self) -> None:
        rounds = 0
        while not self._stopping:
            raise_if_cancelled()
            try:
                await self._maintain(forget_consumers=rounds % 60 == 0)
            except REDIS_ERRORS as exc:
                log.warning("outbox maintenance failed", extra={"error": type(exc).__name__})
            rounds += 1
            await asyncio.sleep(self.config.maintenance_every_s)

    async def _maintain(self, *, forget_consumers: bool = False) -> None:
        self._reads.replicas = await self.outbox.heartbeat(self.config.consumer, self._alive_ms)
        gates = await self._gates()
        for gate_id in gates:
            mine = [entry_id for (g, entry_id) in self._held if g == gate_id]
            await self.outbox.touch(gate_id, self.config.consumer, mine)
            room = self.config.max_in_flight - len(self._held)
            if room > 0:
                idle_ms = int(self.config.claim_idle_s * 1000)
                for entry in await self.outbox.claim_idle(gate_id, self.config.consumer, idle_ms, room):
                    log.info("claimed a notice from a silent consumer", extra={"entry": entry.id, "gate": gate_id})
                    self._take(entry)
            if forget_consumers:
                await self.outbox.forget_consumers(gate_id, self.config.forget_consumers_after_s, self.config.consumer)
        if self.metrics is not None:
            backlog = await self.outbox.backlog(gates)
            self.metrics.outbox_depth.set(backlog.depth)
            self.metrics.outbox_oldest_age.set(backlog.oldest_age_s)

    # --- one notice -----------------------------------------------------------------------------

    async def _handle(self, entry: Entry) -> str | None:
        """Deliver (or give up on) one entry; "later" when it must wait for another notice."""
        notice = entry.notice
        if notice is None:
            if entry.raw:
                await self._give_up(entry, None, "unreadable")
            else:
                await self.outbox.drop(entry)  # deleted while it was pending
            return None
        try:
            message = self.renderers.render(notice)
        except Exception as exc:  # a renderer bug or an unknown kind: the same every time
            log.error("notice cannot be rendered", extra={"kind": notice.kind, "key": notice.key, "error": repr(exc)})
            await self._give_up(entry, notice, "render_failed", audit=True)
            return None
        failures = 0
        while True:
            raise_if_cancelled()
            if notice.age(self.clock()) > self.config.max_age:
                await self._give_up(entry, notice, "expired")
                return None
            try:
                outcome = await self._attempt(entry, notice, message)
            except CardNotPosted:
                await asyncio.sleep(self.config.card_wait_s)
                continue
            except OriginalNotPosted:
                return "later"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, REDIS_ERRORS):
                    raise
                kind = classify(exc)
                error = slack_error(exc)
                self._count_failure(notice, error)
                if kind is Failure.RATE_LIMITED:
                    continue  # the gate holds the next attempt back for Retry-After
                if kind is Failure.TRANSIENT:
                    failures += 1
                    delay = backoff(failures, base=self.config.backoff_base_s, cap=self.config.backoff_cap_s)
                    log.warning(
                        "slack unavailable, retrying",
                        extra={"kind": notice.kind, "error": error, "attempt": failures, "in_s": round(delay, 2)},
                    )
                    await asyncio.sleep(delay)
                    continue
                if kind is Failure.AUTH:
                    self._auth(failed=True, error=error)
                    await asyncio.sleep(self.config.auth_retry_s)
                    continue
                await self._permanent(entry, notice, kind, error, self._channel_of(notice))
                return None
            if outcome == "posted":
                self._auth(failed=False)
                if self.metrics is not None:
                    self.metrics.notices_delivered.labels(kind=notice.kind).inc()
            return None

    async def _attempt(self, entry: Entry, notice: Notice, message: Message) -> str:
        """Claim the send, wait for Slack's limits and post. Returns 'posted', 'delivered' (someone
        already did), 'busy' (someone is doing it now) or 'taken' (offered after a 429, and another
        deliverer took it)."""
        channel, thread_ts = await self._where(notice)
        replaces: str | None = None
        if notice.updates is not None:
            replaces = await self.outbox.delivered_ts(notice.gate_id, notice.updates)
            if replaces is None:
                raise OriginalNotPosted(notice.updates)
        method = UPLOAD if notice.kind == FILE_UPLOAD else UPDATE if replaces else POST
        if (entry.gate_id, entry.id) in self._offered:  # refused by a 429: offered until our gate opens
            # Taken back just before the gate opens (others leave an offer this close to it alone), so
            # the call can go out the moment it does.
            await self.client.gate.wait(method, early=self.config.steal_margin_s)
            self._offered.discard((entry.gate_id, entry.id))
            if not await self.outbox.take_offer_back(entry.gate_id, entry.id):
                log.debug("an offered notice was taken by another deliverer", extra={"entry": entry.id})
                return "taken"
        # The send is claimed before the waits (its lease renewed meanwhile), then the channel's slot,
        # then the method's gate: when a 429's Retry-After ends, every waiting lane's call goes out in
        # the same instant. Each 429 in that burst shuts the gate again from its own answer, so a
        # burst spread over Redis round trips would stretch every window past Retry-After.
        lease = _Lease(int(self.config.wait_lease_s * 1000))  # short until the call: a crash frees it soon
        state, _ = await self.outbox.try_send(notice, self._token, lease.ms)
        if state != "locked":
            return await self._not_ours(entry, state)
        keeper = asyncio.create_task(self._keep_lease(notice, lease))
        slot = calling = False
        try:
            await self.pacer.acquire(channel)
            slot = True
            await self.client.gate.wait(method)
            if lease.doubtful() and (state := await self._lease_again(notice)) != "locked":
                # It ran out while we waited, and another deliverer has the notice now.
                keeper.cancel()
                await self.pacer.refund(channel)
                return await self._not_ours(entry, state)
            calling = True
            lease.ms = self._lease_ms  # from the next renewal on: the call may be under way
            kwargs: dict[str, Any] = {"channel": channel, "text": message.text}
            if message.blocks:
                kwargs["blocks"] = message.blocks
            if notice.kind == FILE_UPLOAD:
                delivered = await self._upload(notice, channel, thread_ts)
            elif replaces:
                # chat.update is idempotent: sent twice (a crash before the marker), it shows the same.
                updated = await self.client.chat_update(ts=replaces, **{**kwargs, "channel": await self._dm(channel)})
                delivered = str(updated["ts"])
            else:
                if thread_ts:
                    kwargs["thread_ts"] = thread_ts
                posted = await self.client.chat_postMessage(**kwargs)
                delivered = str(posted["ts"])
        except BaseException as exc:
            keeper.cancel()
            # Stopped while still waiting: nothing went out, so nobody need wait for the lease. Stopped
            # during the call: Slack may have it, and the lease keeps others off it until it ends.
            if not isinstance(exc, asyncio.CancelledError) or not calling:
                with contextlib.suppress(*REDIS_ERRORS):
                    await self.outbox.release_send(notice, self._token)
            if not isinstance(exc, asyncio.CancelledError):
                kind = classify(exc)
                if slot and kind in (Failure.RATE_LIMITED, Failure.TRANSIENT):
                    await self.pacer.refund(channel)  # Slack did not take it: the slot is still free
                if kind is Failure.RATE_LIMITED:
                    with contextlib.suppress(*REDIS_ERRORS):
                        await self._offer(entry, method)
            raise
        keeper.cancel()
        await self._mark_delivered(entry, notice, delivered)
        log.debug("notice delivered", extra={"kind": notice.kind, "key": notice.key, "channel": channel})
        return "posted"

    async def _not_ours(self, entry: Entry, state: TrySend) -> str:
        """Someone else posted the notice (acknowledge it) or is posting it now (leave it to them: they
        acknowledge it, or die and it is claimed after the idle bound)."""
        if state == "delivered":
            await self.outbox.drop(entry)
        return state

    async def _offer(self, entry: Entry, method: str) -> None:
        """A 429 shut `method` on this replica: until it opens, another replica may send the entry."""
        shut = self.client.gate.remaining(method)
        if shut >= self.config.offer_min_s:
            await self.outbox.offer(entry, method, self.config.consumer, int((time.time() + shut) * 1000))
            self._offered.add((entry.gate_id, entry.id))

    async def _upload(self, notice: Notice, channel: str, thread_ts: str | None) -> str:
        """A file (files upload v2: get an upload URL, send the bytes, complete). Only the last step
        shares it, so a failed attempt leaves nothing in the channel and the next one starts over.
        Returns the file's id (its delivered marker)."""
        p = notice.payload
        try:
            response = await self.client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                content=str(p.get("content", "")),
                filename=str(p.get("filename", "file")),
                title=str(p.get("title") or p.get("filename") or "file"),
            )
        except SlackRequestError as exc:  # the bytes did not reach Slack's upload URL (5xx, reset)
            raise ConnectionError(str(exc)) from exc
        files = response.get("files") or [{}]
        return str(files[0].get("id") or "uploaded")

    async def _dm(self, channel: str) -> str:
        """A DM was posted to a user id; chat.update needs the conversation's id, which
        conversations.open gives (the same one the post went into)."""
        if channel[:1] in ("U", "W"):
            opened = await self.client.conversations_open(users=channel)
            return str(opened["channel"]["id"])
        return channel

    @property
    def _alive_ms(self) -> int:
        """A deliverer unheard of this long is gone: three missed heartbeats, and never under 10 s so
        that a busy loop does not make a live replica look dead."""
        return int(max(3 * self.config.maintenance_every_s, 10.0) * 1000)

    @property
    def _lease_ms(self) -> int:
        return int(self.config.send_lease_s * 1000)

    def _channel_of(self, notice: Notice) -> str:
        return notice.target.channel or ""

    async def _where(self, notice: Notice) -> tuple[str, str | None]:
        target: Target = notice.target
        if target.channel and target.thread_of:
            parent = await self.outbox.delivered_ts(notice.gate_id, target.thread_of)
            if parent is None:
                raise OriginalNotPosted(target.thread_of)
            return target.channel, parent
        if target.channel:
            return target.channel, target.thread_ts
        assert notice.release_id is not None
        location = await self.outbox.card_location(notice.release_id)
        if location is None:
            raise CardNotPosted(notice.release_id)
        return location

    async def _lease_again(self, notice: Notice) -> TrySend:
        """Our lease may have run out while we waited: keep it if it is still ours, else take it anew."""
        if await self.outbox.renew_send(notice, self._token, self._lease_ms):
            return "locked"
        state, _ = await self.outbox.try_send(notice, self._token, self._lease_ms)
        return state

    async def _keep_lease(self, notice: Notice, lease: _Lease) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(lease.ms / 3000)  # a third of whatever the lease is now
            with contextlib.suppress(*REDIS_ERRORS):
                if await self.outbox.renew_send(notice, self._token, lease.ms):
                    lease.renewed_at = time.monotonic()
                else:
                    lease.lost = True

    async def _mark_delivered(self, entry: Entry, notice: Notice, ts: str) -> None:
        """Posted: the marker must land, or a claimer would post it again. Redis may be down for a
        moment; we hold the ts and keep trying as long as this process lives."""
        attempt = 0
        while True:
            raise_if_cancelled()
            try:
                await self.outbox.mark_delivered(entry, notice, ts, self._token)
                return
            except REDIS_ERRORS as exc:
                attempt += 1
                log.warning("cannot record a delivery yet", extra={"key": notice.key, "error": type(exc).__name__})
                await asyncio.sleep(backoff(attempt, base=self.config.backoff_base_s, cap=self.config.backoff_cap_s))

    # --- giving up ------------------------------------------------------------------------------

    def _count_failure(self, notice: Notice, error: str) -> None:
        if self.metrics is not None:
            self.metrics.notices_failed.labels(kind=notice.kind, error=error).inc()

    def _auth(self, *, failed: bool, error: str = "") -> None:
        if failed and not self.auth_failed:
            log.critical(
                "SLACK REFUSES THE BOT TOKEN: nothing can be posted; notices stay queued until "
                "SLACK_BOT_TOKEN is fixed (readiness fails meanwhile)",
                extra={"error": error},
            )
        elif not failed and self.auth_failed:
            log.warning("slack accepts the bot token again")
        self.auth_failed = failed
        if self.metrics is not None:
            self.metrics.slack_auth_failed.set(1 if failed else 0)

    async def _permanent(self, entry: Entry, notice: Notice, kind: Failure, error: str, channel: str) -> None:
        follow_up: Notice | None = None
        if kind is Failure.NOT_IN_CHANNEL:
            log.warning(
                "bot is not in the channel", extra={"kind": notice.kind, "channel": channel, "actor": notice.actor}
            )
            if notice.actor and notice.kind != INVITE_BOT and channel:
                follow_up = invite_bot(
                    notice.gate_id, notice.release_id, notice.actor, channel, error, notice.kind, self.clock()
                )
        elif kind is Failure.INVALID_BLOCKS:
            log.error("slack refused the blocks of a notice", extra={"kind": notice.kind, "key": notice.key})
        else:
            log.error("slack refused a notice", extra={"kind": notice.kind, "key": notice.key, "error": error})
        await self._give_up(entry, notice, error, audit=True, follow_up=follow_up)

    async def _give_up(
        self,
        entry: Entry,
        notice: Notice | None,
        reason: str,
        *,
        audit: bool = False,
        follow_up: Notice | None = None,
    ) -> None:
        now = self.clock()
        event = None
        if audit and notice is not None and notice.release_id:
            event = AuditEvent(
                type="notice_failed",
                actor="gonogo",
                at=now,
                data={"kind": notice.kind, "error": reason, "key": notice.key, "target": notice.target.model_dump()},
            )
        if reason == "expired":
            log.error(
                "notice dead-lettered: undelivered for too long",
                extra={"kind": notice.kind if notice else None, "entry": entry.id, "gate": entry.gate_id},
            )
        await self.outbox.dead_letter(entry, reason, now, audit=event, follow_up=follow_up)
        if notice is not None:
            await self.outbox.release_send(notice, self._token)
        if self.metrics is not None:
            self.metrics.notices_dead_lettered.labels(kind=notice.kind if notice else "unreadable", reason=reason).inc()
