"""The outbox: notices waiting for Slack, and the cards that are behind (docs/delivery.md).

Writing side (services): a state change appends its notices and marks its card dirty in the same
atomic step as its facts and audit entry, either

- in a MULTI block: `emit(tx, Emit(...))` adds the commands to a `pipeline(transaction=True)`, or
- in a Lua script: prepend `EMIT_LUA` to the script, pass `Emit(...).script_keys()` /
  `.script_args()` at the end of its KEYS / ARGV, and call `gonogo_emit(first_key, first_arg)`.

Every key involved is under the gate's hash tag `{g:<gate>}`, so the step stays in one Cluster slot.

Reading side (the deliverer and the card refresher in bot/slack/): one Redis Stream per gate, read
through one consumer group shared by every replica; a notice's Slack `ts` is stored against its
idempotency key before the entry is acknowledged and deleted, so a notice already delivered is never
sent again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast

import redis.asyncio as aioredis
import redis.exceptions

from bot.core.notices import Notice
from bot.store import keys
from bot.store.store import AuditEvent

GROUP = "gonogo-deliverers"
DELIVERED_TTL_S = 7 * 24 * 3600  # well past the dead-letter age: a re-appended key still finds it
DEAD_LETTERS_KEPT = 10_000

# The Lua half of `Emit`: prepend to a script that changes state, then call gonogo_emit(k, a) where
# KEYS[k..k+2] and ARGV[a..] are what Emit.script_keys() / script_args() produced.
EMIT_LUA = """
local function gonogo_emit(k, a)
  local n = tonumber(ARGV[a])
  for i = 1, n do redis.call('XADD', KEYS[k], '*', 'notice', ARGV[a + i]) end
  local card_of = ARGV[a + n + 1]
  if card_of ~= '' then
    redis.call('HINCRBY', KEYS[k + 1], 'wanted', 1)
    redis.call('HSET', KEYS[k + 1], 'wanted_at', ARGV[a + n + 2])
    if ARGV[a + n + 3] ~= '' then redis.call('HSET', KEYS[k + 1], 'actor', ARGV[a + n + 3]) end
    redis.call('SADD', KEYS[k + 2], card_of)
  end
end
"""

_APPEND = EMIT_LUA + "gonogo_emit(1, 1)\nreturn 1\n"

# KEYS: delivered marker, sending lease. ARGV: token, lease ms.
_TRY_SEND = """
local ts = redis.call('GET', KEYS[1])
if ts then return {'delivered', ts} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'locked', ''} end
return {'busy', ''}
"""

# KEYS: delivered marker, sending lease, outbox. ARGV: ts, ttl s, group, entry id, token.
_DELIVERED = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
if redis.call('GET', KEYS[2]) == ARGV[5] then redis.call('DEL', KEYS[2]) end
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The card refresher showed revision ARGV[2] (or found nothing newer to show): record it, and drop
# the card from the gate's dirty set only if no newer revision was written meanwhile.
# KEYS: card hash, dirty set. ARGV: release id, revision, now ms, updated (1: a chat.update went out).
_SETTLE = """
local shown = tonumber(redis.call('HGET', KEYS[1], 'shown') or '0')
local rev = tonumber(ARGV[2])
if rev > shown then
  redis.call('HSET', KEYS[1], 'shown', rev, 'shown_at', ARGV[3])
  shown = rev
end
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'updated_at', ARGV[3]) end
local wanted = tonumber(redis.call('HGET', KEYS[1], 'wanted') or '0')
if wanted <= shown then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# KEYS: offers hash, outbox. ARGV: entry id, group, consumer. The entry (if still there) or nothing.
_STEAL = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return {} end
return redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[1])
"""

# KEYS: deliverers zset. ARGV: consumer, ms a heartbeat counts, "1" to leave. Returns the live count.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then redis.call('ZREM', KEYS[1], ARGV[1]) else redis.call('ZADD', KEYS[1], now, ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
"""

TrySend = Literal["delivered", "locked", "busy"]


@dataclass(frozen=True)
class Offer:
    """An entry its holder cannot send before `until_ms` (a 429 shut its method's gate)."""

    gate_id: str
    entry_id: str
    method: str
    owner: str
    until_ms: int


def raise_if_cancelled() -> None:
    """Re-raise a cancellation a Redis call swallowed. redis-py 8 on Python 3.11 can return a reply
    normally to a task that was cancelled meanwhile (the cancel is lost); a loop that keeps calling
    Redis would then never stop. Every long-running loop over Redis calls this once per round."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(frozen=True)
class Emit:
    """What one state change says: notices for the gate's outbox and/or its release's card is dirty."""

    gate_id: str
    notices: Sequence[Notice] = ()
    card_of: str | None = None  # release id whose card must show this change
    at: datetime | None = None  # when the change was written (card refresh lag starts here)
    actor: str | None = None  # who made the change: told when the card cannot be posted (invite the bot)

    def __post_init__(self) -> None:
        for notice in self.notices:
            if notice.gate_id != self.gate_id:
                raise ValueError(f"notice {notice.key} belongs to gate {notice.gate_id}, not {self.gate_id}")
        if self.card_of is not None:
            if self.card_of.partition("@")[0] != self.gate_id:
                raise ValueError(f"release {self.card_of} is not of gate {self.gate_id}")
            if self.at is None:
                raise ValueError("a dirty card needs the time of the change")

    def script_keys(self) -> list[str]:
        """Three KEYS, all under the gate's hash tag (the card key is a placeholder when no card)."""
        card = keys.card(self.card_of) if self.card_of else keys.cards_dirty(self.gate_id)
        return [keys.outbox(self.gate_id), card, keys.cards_dirty(self.gate_id)]

    def script_args(self) -> list[str]:
        at = str(_ms(self.at)) if self.at is not None else "0"
        notices = [n.to_json() for n in self.notices]
        return [str(len(self.notices)), *notices, self.card_of or "", at, self.actor or ""]


def emit(tx: aioredis.client.Pipeline, change: Emit) -> None:
    """Add the notices and the dirty mark to a MULTI pipeline (`redis.pipeline(transaction=True)`)."""
    for notice in change.notices:
        tx.xadd(keys.outbox(change.gate_id), {"notice": notice.to_json()})
    if change.card_of is not None and change.at is not None:
        card = keys.card(change.card_of)
        tx.hincrby(card, "wanted", 1)
        tx.hset(card, "wanted_at", str(_ms(change.at)))
        if change.actor:
            tx.hset(card, "actor", change.actor)
        tx.sadd(keys.cards_dirty(change.gate_id), change.card_of)


@dataclass(frozen=True)
class Entry:
    """One outbox entry as a deliverer holds it."""

    gate_id: str
    id: str
    notice: Notice | None  # None: unreadable (kept raw, dead-lettered)
    raw: str = ""

    @property
    def created_ms(self) -> int:
        return int(self.id.split("-", 1)[0])


@dataclass(frozen=True)
class CardRecord:
    """What Redis knows about a release's card on Slack."""

    release_id: str
    wanted: int = 0
    wanted_at_ms: int = 0
    shown: int = 0
    updated_at_ms: int = 0
    channel: str | None = None
    ts: str | None = None
    actor: str | None = None  # who made the latest change that marked it

    @property
    def behind(self) -> bool:
        return self.wanted > self.shown


@dataclass
class Backlog:
    depth: int = 0
    oldest_age_s: float = 0.0
    by_gate: dict[str, int] = field(default_factory=dict)


def _entries(gate_id: str, raw: Iterable[Any]) -> list[Entry]:
    out: list[Entry] = []
    for item in raw:
        if not item:
            continue
        entry_id, fields = item[0], item[1]
        if fields is None:  # deleted while pending (Redis 6.2 XAUTOCLAIM returns it as nil)
            out.append(Entry(gate_id, str(entry_id), None, ""))
            continue
        text = str(fields.get("notice", ""))
        try:
            notice: Notice | None = Notice.from_json(text)
        except ValueError:
            notice = None
        out.append(Entry(gate_id, str(entry_id), notice, text or json.dumps(fields)))
    return out


def _stream_reply(reply: Any) -> list[Any]:
    """XREADGROUP of one stream, RESP2 ([[name, entries]]) or RESP3 ({name: [entries]})."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [e for entries in reply.values() for e in entries]
    return list(reply[0][1])


class Outbox:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._append = client.register_script(_APPEND)
        self._try_send = client.register_script(_TRY_SEND)
        self._delivered = client.register_script(_DELIVERED)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._settle = client.register_script(_SETTLE)
        self._steal = client.register_script(_STEAL)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._grouped: set[str] = set()

    # --- which gates have outboxes --------------------------------------------------------------

    async def register(self, gate_ids: Iterable[str]) -> None:
        ids = list(gate_ids)
        if ids:
            await self.redis.sadd(keys.outbox_gates(), *ids)

    async def gates(self, also: Iterable[str] = ()) -> list[str]:
        known = cast(set[str], await self.redis.smembers(keys.outbox_gates()))
        return sorted(known | set(also))

    # --- writing (tests, tools; services use `emit` / EMIT_LUA inside their own atomic step) -------

    async def append(self, change: Emit) -> None:
        """Append notices (and mark a card dirty) atomically, through the same Lua a service uses."""
        await self.register([change.gate_id])
        await self._append(keys=change.script_keys(), args=change.script_args())

    # --- the consumer group ---------------------------------------------------------------------

    async def ensure_group(self, gate_id: str) -> None:
        if gate_id in self._grouped:
            return
        try:
            # From the stream's start, not `$`: notices written before the first deliverer ran count.
            await self.redis.xgroup_create(keys.outbox(gate_id), GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped.add(gate_id)

    async def read(
        self, gate_ids: Sequence[str], consumer: str, count: int | Mapping[str, int], *, pending: bool = False
    ) -> list[Entry]:
        """New entries (never delivered to any consumer of the group), at most `count` per gate (or
        `count[gate]`; gates with 0 are not read); with `pending`, those this consumer name already
        holds (after a restart under the same name)."""
        counts = count if isinstance(count, Mapping) else dict.fromkeys(gate_ids, count)
        gate_ids = [g for g in gate_ids if counts.get(g, 0) > 0]
        if not gate_ids:
            return []
        for gate_id in gate_ids:
            await self.ensure_group(gate_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for gate_id in gate_ids:
                pipe.xreadgroup(GROUP, consumer, {keys.outbox(gate_id): "0" if pending else ">"}, count=counts[gate_id])
            replies = await pipe.execute(raise_on_error=False)
        out: list[Entry] = []
        for gate_id, reply in zip(gate_ids, replies, strict=True):
            if isinstance(reply, Exception):
                if "NOGROUP" in str(reply):  # the stream was deleted under us: recreate next time
                    self._grouped.discard(gate_id)
                    continue
                raise reply
            out += _entries(gate_id, _stream_reply(reply))
        return out

    async def claim_idle(self, gate_id: str, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Entries pending longer than `min_idle_ms` with any consumer (a dead one): now ours."""
        await self.ensure_group(gate_id)
        out: list[Entry] = []
        start = "0-0"
        while len(out) < count:
            try:
                reply = await self.redis.xautoclaim(
                    keys.outbox(gate_id), GROUP, consumer, min_idle_ms, start_id=start, count=count - len(out)
                )
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream was deleted under us (FLUSHDB, a deleted key): like `read`, recreate the
                # group next time instead of stopping the deliverer.
                self._grouped.discard(gate_id)
                break
            start, claimed = str(reply[0]), reply[1]
            for entry in _entries(gate_id, claimed):
                out.append(entry)
            if start in ("0-0", "0"):
                break
        return out

    async def touch(self, gate_id: str, consumer: str, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries we still work on, so nobody claims them from a live consumer."""
        if entry_ids:
            try:
                await self.redis.xclaim(keys.outbox(gate_id), GROUP, consumer, 0, list(entry_ids), justid=True)
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._grouped.discard(gate_id)  # deleted under us: nothing left to keep

    async def forget_consumers(self, gate_id: str, idle_s: float, keep: str) -> None:
        """Remove consumers that hold nothing and were not seen for `idle_s` (restarted replicas)."""
        try:
            consumers = await self.redis.xinfo_consumers(keys.outbox(gate_id), GROUP)
        except redis.exceptions.ResponseError:  # no stream or group yet
            return
        for consumer in consumers:
            name = str(consumer["name"])
            if name != keep and int(consumer["pending"]) == 0 and int(consumer["idle"]) > idle_s * 1000:
                await self.redis.xgroup_delconsumer(keys.outbox(gate_id), GROUP, name)

    async def drop(self, entry: Entry) -> None:
        """Acknowledge and delete an entry that needs nothing more (already delivered, or deleted)."""
        async with self.redis.pipeline(transaction=True) as tx:
            tx.xack(keys.outbox(entry.gate_id), GROUP, entry.id)
            tx.xdel(keys.outbox(entry.gate_id), entry.id)
            await tx.execute()

    # --- which deliverers are alive -------------------------------------------------------------

    async def heartbeat(self, consumer: str, counts_ms: int, *, leaving: bool = False) -> int:
        """Say this deliverer is alive (or leaving); returns how many were seen within `counts_ms`."""
        return int(await self._heartbeat(keys=[keys.deliverers()], args=[consumer, counts_ms, "1" if leaving else "0"]))

    # --- offers: handing a refused entry to a replica whose gate is open ---------------------------

    async def offer(self, entry: Entry, method: str, owner: str, until_ms: int) -> None:
        await self.redis.hset(keys.outbox_offers(entry.gate_id), entry.id, f"{method}|{owner}|{until_ms}")
        await self.redis.sadd(keys.outbox_offering(), entry.gate_id)

    async def take_offer_back(self, gate_id: str, entry_id: str) -> bool:
        """Remove an offer: True if it was still there, i.e. nobody took it meanwhile (its holder, whose
        gate opened, keeps the entry; a stale offer left by a dead holder is simply gone)."""
        return bool(await self.redis.hdel(keys.outbox_offers(gate_id), entry_id))

    async def offers(self, gate_ids: Sequence[str]) -> list[Offer]:
        """Offers on the given gates. Without 429s there are none, and this is one SMEMBERS: only gates
        in the `outbox_offering` index are looked at, and a gate found without offers leaves it."""
        offering = cast(set[str], await self.redis.smembers(keys.outbox_offering()))
        gate_ids = [g for g in gate_ids if g in offering]
        if not gate_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for gate_id in gate_ids:
                pipe.hgetall(keys.outbox_offers(gate_id))
            replies = await pipe.execute()
        # An offer written between our HGETALL and this SREM loses its index entry: nobody takes it,
        # and its holder sends it when its own gate opens, as without offers. Nothing is lost.
        if empty := [g for g, reply in zip(gate_ids, replies, strict=True) if not reply]:
            await self.redis.srem(keys.outbox_offering(), *empty)
        out: list[Offer] = []
        for gate_id, reply in zip(gate_ids, replies, strict=True):
            for entry_id, value in cast(dict[str, str], reply).items():
                method, _, rest = str(value).partition("|")
                owner, _, until = rest.rpartition("|")
                out.append(Offer(gate_id, str(entry_id), method, owner, int(until) if until.isdigit() else 0))
        return out

    async def steal(self, offer: Offer, consumer: str) -> list[Entry]:
        """Take an offered entry (it becomes ours in the group); [] if another was faster or it is gone."""
        await self.ensure_group(offer.gate_id)
        claimed = await self._steal(
            keys=[keys.outbox_offers(offer.gate_id), keys.outbox(offer.gate_id)],
            args=[offer.entry_id, GROUP, consumer],
        )
        # A script's XCLAIM reply is raw: [[id, [field, value, ...]], ...].
        raw = [(item[0], dict(zip(item[1][::2], item[1][1::2], strict=True))) for item in claimed or [] if item]
        return _entries(offer.gate_id, raw)

    # --- sending one notice ---------------------------------------------------------------------

    async def try_send(self, notice: Notice, token: str, lease_ms: int) -> tuple[TrySend, str]:
        """'delivered' (with its ts): never send again; 'locked': ours to send; 'busy': another
        deliverer is sending it right now."""
        outcome, ts = await self._try_send(
            keys=[keys.delivered(notice.gate_id, notice.key), keys.sending(notice.gate_id, notice.key)],
            args=[token, lease_ms],
        )
        return cast(TrySend, str(outcome)), str(ts)

    async def renew_send(self, notice: Notice, token: str, lease_ms: int) -> bool:
        return bool(await self._renew(keys=[keys.sending(notice.gate_id, notice.key)], args=[token, lease_ms]))

    async def release_send(self, notice: Notice, token: str) -> None:
        await self._release(keys=[keys.sending(notice.gate_id, notice.key)], args=[token])

    async def mark_delivered(self, entry: Entry, notice: Notice, ts: str, token: str) -> None:
        """The delivered marker (Slack's ts), then ack + delete, in one atomic step."""
        await self._delivered(
            keys=[
                keys.delivered(notice.gate_id, notice.key),
                keys.sending(notice.gate_id, notice.key),
                keys.outbox(entry.gate_id),
            ],
            args=[ts, DELIVERED_TTL_S, GROUP, entry.id, token],
        )

    async def delivered_ts(self, gate_id: str, notice_key: str) -> str | None:
        raw = await self.redis.get(keys.delivered(gate_id, notice_key))
        return str(raw) if raw else None

    async def dead_letter(
        self,
        entry: Entry,
        reason: str,
        at: datetime,
        *,
        audit: AuditEvent | None = None,
        follow_up: Notice | None = None,
    ) -> None:
        """Give up on an entry: keep it in the dead-letter stream with the reason; in the same step
        audit it (release notices) and queue a follow-up notice (e.g. tell the actor)."""
        stream = keys.outbox(entry.gate_id)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.xadd(
                keys.dead_letters(entry.gate_id),
                {"entry": entry.id, "notice": entry.raw, "reason": reason, "at": at.isoformat()},
                maxlen=DEAD_LETTERS_KEPT,
                approximate=True,
            )
            if audit is not None and entry.notice is not None and entry.notice.release_id:
                tx.xadd(keys.audit(entry.notice.release_id), audit.fields())  # type: ignore[arg-type]
            if follow_up is not None:
                tx.xadd(keys.outbox(follow_up.gate_id), {"notice": follow_up.to_json()})
            tx.xack(stream, GROUP, entry.id)
            tx.xdel(stream, entry.id)
            await tx.execute()

    async def dead_letters(self, gate_id: str, count: int = 100) -> list[dict[str, str]]:
        raw = cast(list[tuple[str, dict[str, str]]], await self.redis.xrange(keys.dead_letters(gate_id), count=count))
        return [dict(fields) for _, fields in raw]

    async def backlog(self, gate_ids: Sequence[str], now_s: float | None = None) -> Backlog:
        """Undelivered notices (outbox lengths) and the age of the oldest, for metrics."""
        now_s = time.time() if now_s is None else now_s
        async with self.redis.pipeline(transaction=False) as pipe:
            for gate_id in gate_ids:
                pipe.xlen(keys.outbox(gate_id))
                pipe.xrange(keys.outbox(gate_id), count=1)
            replies = await pipe.execute()
        out = Backlog()
        for i, gate_id in enumerate(gate_ids):
            depth, first = int(replies[2 * i]), replies[2 * i + 1]
            out.by_gate[gate_id] = depth
            out.depth += depth
            if first:
                age = max(0.0, now_s - int(str(first[0][0]).split("-", 1)[0]) / 1000)
                out.oldest_age_s = max(out.oldest_age_s, age)
        return out

    # --- cards ----------------------------------------------------------------------------------

    async def dirty_cards(self, gate_ids: Sequence[str]) -> list[str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for gate_id in gate_ids:
                pipe.smembers(keys.cards_dirty(gate_id))
            replies = await pipe.execute()
        return sorted({str(r) for reply in replies for r in reply})

    async def card(self, release_id: str) -> CardRecord:
        raw = cast(dict[str, str], await self.redis.hgetall(keys.card(release_id)))
        return CardRecord(
            release_id=release_id,
            wanted=int(raw.get("wanted", 0)),
            wanted_at_ms=int(raw.get("wanted_at", 0)),
            shown=int(raw.get("shown", 0)),
            updated_at_ms=int(raw.get("updated_at", 0)),
            channel=raw.get("channel") or None,
            ts=raw.get("ts") or None,
            actor=raw.get("actor") or None,
        )

    async def card_location(self, release_id: str) -> tuple[str, str] | None:
        """(channel, ts) of the release's card once posted: its thread is where card_thread notices go."""
        channel, ts = await self.redis.hmget(keys.card(release_id), ["channel", "ts"])
        return (str(channel), str(ts)) if channel and ts else None

    async def set_card_location(self, release_id: str, channel: str, ts: str | None) -> None:
        """Where the card is (or, ts None, that it must be posted anew)."""
        if ts is None:
            await self.redis.hdel(keys.card(release_id), "ts")
        await self.redis.hset(keys.card(release_id), mapping={"channel": channel, **({"ts": ts} if ts else {})})

    async def settle_card(self, release_id: str, revision: int, now_ms: int, *, updated: bool) -> bool:
        """Record that Slack shows `revision`; True when the card is no longer behind."""
        gate_id = release_id.partition("@")[0]
        done = await self._settle(
            keys=[keys.card(release_id), keys.cards_dirty(gate_id)],
            args=[release_id, revision, now_ms, "1" if updated else "0"],
        )
        return bool(done)

    async def acquire_lease(self, key: str, token: str, lease_ms: int) -> bool:
        return bool(await self.redis.set(key, token, nx=True, px=lease_ms))

    async def renew_lease(self, key: str, token: str, lease_ms: int) -> bool:
        return bool(await self._renew(keys=[key], args=[token, lease_ms]))

    async def release_lease(self, key: str, token: str) -> None:
        await self._release(keys=[key], args=[token])
