"""The release store: every read and write gonogo makes to Redis.

Writes that must be atomic are Lua scripts or MULTI blocks, and every state change appends an
entry to the release's audit stream in the same atomic step. Connection problems surface as
`StoreUnavailable` when the command never reached Redis (fail closed: nothing was written), and as
`OutcomeUnknown` when a write may have reached it (it may be stored: say so, never "nothing was
changed"). `tracking_writes` lets a handler know which writes it sent and which were confirmed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, cast

import redis.asyncio as aioredis
import redis.exceptions
from pydantic import BaseModel, ConfigDict
from redis.asyncio.client import Pipeline

from bot.core.drills import OperationLease
from bot.core.errors import Conflict, Forbidden, GonogoError, NotFound, OutcomeUnknown, StoreUnavailable
from bot.core.facts import OverrideApproval
from bot.core.release import Release, RunLease, RunRecord, State
from bot.core.results import CheckResult
from bot.store import keys

if TYPE_CHECKING:
    from bot.store.outbox import Emit

AUDIT_MAXLEN = 10_000
RUNS_KEPT = 200


class AuditEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str  # opened, sha_moved, run, signed, refused, ...
    actor: str
    at: datetime
    data: dict[str, Any] = {}

    def fields(self) -> dict[str, str]:
        return {
            "type": self.type,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "data": json.dumps(self.data, default=str, sort_keys=True),
        }


class AuditEntry(AuditEvent):
    id: str  # the stream entry id

    @classmethod
    def from_stream(cls, entry_id: str, fields: Mapping[str, str]) -> AuditEntry:
        """One entry of an audit stream (a release's or a gate's), as `AuditEvent.fields` wrote it."""
        return cls(
            id=entry_id,
            type=fields["type"],
            actor=fields["actor"],
            at=datetime.fromisoformat(fields["at"]),
            data=json.loads(fields.get("data", "{}")),
        )


# Scripts that take `Emit` (bot/store/outbox.py) end their KEYS with its three keys and put its ARGV
# before the audit fields, whose start they are given: the change's notices and dirty card are
# written in the change's own step, and only when the change is.

# KEYS: open pointer, release doc, release index, audit, emit (5-7).
# ARGV: id, doc json, score, maxlen, where the audit fields start, emit args (from 6)..., audit fields...
_OPEN = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return {'conflict', current} end
if current == ARGV[1] then return {'exists', redis.call('GET', KEYS[2])} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'closed', redis.call('GET', KEYS[2])} end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, tonumber(ARGV[5])))
gonogo_emit(5, 6)
return {'opened', ARGV[2]}
"""

# Preconditions on the release, shared by every script that adds to a release: it exists, it is
# open (a decided release is frozen), and (unless want_sha is '*') it is still at the commit the
# actor saw ('' = no commit). Returns false when every precondition holds, else the outcome to
# return, with the stored doc so the caller can say why.
_RELEASE_OPEN = """
local function sha_of(doc)
  if type(doc['sha']) == 'string' then return doc['sha'] end
  return ''
end
local function refusal(doc_key, want_sha)
  local raw = redis.call('GET', doc_key)
  if not raw then return {'missing', false} end
  local doc = cjson.decode(raw)
  if doc['state'] ~= 'open' then return {'not_open', raw} end
  if want_sha ~= '*' and sha_of(doc) ~= want_sha then return {'moved', raw} end
  return false
end
"""

# Compare-and-set on the release's rev, checking every precondition before writing anything.
# KEYS: release doc, audit, open pointer, emit (4-6).
# ARGV: expected rev, new doc json, state ('closed' and 'rolled_back' free the gate's open pointer), maxlen,
# allowed current states (comma-separated, '' = any), where the audit fields start (none: past the
# end), emit args (from 7)..., audit fields...
_UPDATE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return {'missing', false} end
local doc = cjson.decode(raw)
if ARGV[5] ~= '' and not string.find(',' .. ARGV[5] .. ',', ',' .. doc['state'] .. ',', 1, true) then
  return {'state', raw}
end
if doc['rev'] ~= tonumber(ARGV[1]) then return {'stale', raw} end
local pointer = redis.call('GET', KEYS[3])
local frees = ARGV[3] == 'closed' or ARGV[3] == 'rolled_back'
if not frees and pointer and pointer ~= doc['id'] then return {'pointer', pointer} end
redis.call('SET', KEYS[1], ARGV[2])
if frees then
  if pointer == doc['id'] then redis.call('DEL', KEYS[3]) end
elseif not pointer then
  redis.call('SET', KEYS[3], doc['id'])
end
local audit_at = tonumber(ARGV[6])
if #ARGV >= audit_at then redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, audit_at)) end
gonogo_emit(4, 7)
return {'ok', ARGV[2]}
"""

# A run takes its release's run lock and the gate's operation lease together, so a run, a fire
# drill and a rollback of one gate never overlap (drills and rollbacks take the operation lease
# alone: bot/store/gatestore.py); refused while the release (when it exists) is not open: a decided
# release is frozen; with the lock, the card is marked dirty (it shows the run).
# With them, the run's in-flight entry (a run whose process dies is swept from there: keys.py).
# KEYS: run lock, operation lease, release doc, in-flight hash, emit (5-7). ARGV: run lease json,
# ttl ms, operation lease json, in-flight json, emit args (from 5)...
# Returns {'ok'}, {'not_open', doc}, or what is in the way and its remaining ms.
_LOCK = """
local raw = redis.call('GET', KEYS[3])
if raw and cjson.decode(raw)['state'] ~= 'open' then return {'not_open', raw} end
local run = redis.call('GET', KEYS[1])
if run then return {'run', run, redis.call('PTTL', KEYS[1])} end
local op = redis.call('GET', KEYS[2])
if op then return {'operation', op, redis.call('PTTL', KEYS[2])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
redis.call('HSET', KEYS[4], cjson.decode(ARGV[1])['token'], ARGV[4])
gonogo_emit(5, 5)
return {'ok', false}
"""

# A run's end: drop its leases (DROP_LEASES) and its in-flight entry. KEYS: run lock, operation
# lease, in-flight hash. ARGV: token.
_UNLOCK_RUN = """
redis.call('HDEL', KEYS[3], ARGV[1])
local n = 0
for i = 1, 2 do
  local raw = redis.call('GET', KEYS[i])
  if raw and cjson.decode(raw)['token'] == ARGV[1] then n = n + redis.call('DEL', KEYS[i]) end
end
return n
"""

# Extend / drop every lease in KEYS that this token holds: an expired holder never touches a newer
# holder's lease. ARGV: token (, ttl ms).
RENEW_LEASES = """
local n = 0
for _, key in ipairs(KEYS) do
  local raw = redis.call('GET', key)
  if raw and cjson.decode(raw)['token'] == ARGV[1] then n = n + redis.call('PEXPIRE', key, ARGV[2]) end
end
return n
"""

DROP_LEASES = """
local n = 0
for _, key in ipairs(KEYS) do
  local raw = redis.call('GET', key)
  if raw and cjson.decode(raw)['token'] == ARGV[1] then n = n + redis.call('DEL', key) end
end
return n
"""

# A person's fact (a vote, a risk acceptance, a manual mark) in one step: skip a click already
# handled (retries, replicas), refuse unless the release is open (and at the commit the actor
# saw), skip a write that changes nothing (double clicks), else write it and append the audit
# entry, its notices and the card's dirty mark (EMIT_LUA, KEYS 5-7). KEYS: hash, audit,
# handled-marker, release doc. ARGV: field, json, comma-separated fields that define "the same",
# handled ttl ms (0: no marker), maxlen, want sha, where the audit fields start, emit args, audit fields...
_PUT_FACT = (
    _RELEASE_OPEN
    + """
if tonumber(ARGV[4]) > 0 and redis.call('EXISTS', KEYS[3]) == 1 then return {'duplicate', false} end
local refused = refusal(KEYS[4], ARGV[6])
if refused then return refused end
if tonumber(ARGV[4]) > 0 then redis.call('SET', KEYS[3], '1', 'PX', ARGV[4]) end
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and ARGV[3] ~= '' then
  local o, n = cjson.decode(old), cjson.decode(ARGV[2])
  local same = true
  for name in string.gmatch(ARGV[3], '[^,]+') do
    if cjson.encode(o[name]) ~= cjson.encode(n[name]) then same = false end
  end
  if same then return {'unchanged', old} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, tonumber(ARGV[7])))
gonogo_emit(5, 8)
return {'written', old or false}
"""
)

# Remove a fact while the release is open, auditing it (with its notices and the card's dirty
# mark: EMIT_LUA, KEYS 4-6) only when there was something to remove.
# KEYS: hash, audit, release doc. ARGV: field, maxlen, where the audit fields start, emit args, audit fields...
_DEL_FACT = (
    _RELEASE_OPEN
    + """
local refused = refusal(KEYS[3], '*')
if refused then return refused end
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return {'absent', false} end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, tonumber(ARGV[3])))
gonogo_emit(4, 4)
return {'deleted', old}
"""
)

# Start, replace or end the override request, only if the request stored is still the one the
# caller saw (by id, '' = none) and the release is open at the commit the request is for. The
# old request's approvals go with it. KEYS: override, old request's approvals, audit, release doc.
# ARGV: expected current id, new request json ('' = end it), want sha, maxlen, audit fields...
_SET_OVERRIDE = (
    _RELEASE_OPEN
    + """
local refused = refusal(KEYS[4], ARGV[3])
if refused then return refused end
local current = redis.call('GET', KEYS[1])
local id = ''
if current then id = cjson.decode(current)['id'] or '' end
if id ~= ARGV[1] then return {'replaced', current or false} end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
redis.call('DEL', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, tonumber(ARGV[5])))
gonogo_emit(5, 6)
return {'ok', false}
"""
)

# A promotion to a rollout stage, with its preconditions checked where it writes: the release is
# open, at the stage the caller decided from, the target comes after it (and right after it unless
# skipping is allowed), and the doc is the one the caller read (rev). Then the new doc, the frozen
# bundle, the audit entry and the promotion's notices and dirty card (EMIT_LUA, KEYS 4-6) land
# together. KEYS: release doc, audit, promotions list. ARGV: expected rev, new doc json, target
# stage, allow skip ('1'/'0'), bundle json, maxlen, number of stages n, the n stage ids in order,
# where the audit fields start, emit args, audit fields...
_PROMOTE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return {'missing', ''} end
local doc = cjson.decode(raw)
if doc['state'] ~= 'open' then return {'state', tostring(doc['state'])} end
local current = doc['current_stage']
if type(current) ~= 'string' then current = '' end
local n = tonumber(ARGV[7])
local at, want = 0, 0
for i = 1, n do
  if ARGV[7 + i] == current then at = i end
  if ARGV[7 + i] == ARGV[3] then want = i end
end
if want == 0 then return {'unknown', current} end
if want <= at then return {'behind', current} end
if want > at + 1 and ARGV[4] ~= '1' then return {'skip', current} end
if doc['rev'] ~= tonumber(ARGV[1]) then return {'stale', current} end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', unpack(ARGV, tonumber(ARGV[8 + n])))
gonogo_emit(4, 9 + n)
return {'ok', current}
"""

OpenOutcome = Literal["opened", "exists", "conflict", "closed"]
# What an override approval says besides itself, given the request (JSON) and its approvals with
# this one counted (user -> OverrideApproval JSON): audit entries, notices, the dirty card.
OverrideSays = Callable[[str, dict[str, str]], Awaitable[tuple[Sequence[AuditEvent], "Emit"]]]
PromoteOutcome = Literal["ok", "missing", "state", "unknown", "behind", "skip", "stale", "changed"]
PutOutcome = Literal["written", "unchanged", "duplicate"]
ApprovalOutcome = Literal["written", "unchanged", "duplicate", "counted"]
ANY_COMMIT = "*"  # a write that does not depend on the release's commit (real commits are hex)
HANDLED_TTL_MS = 15 * 60 * 1000  # Slack retries within minutes; a quarter of an hour is plenty
RUN_RECORDED_TTL_MS = 24 * 3600 * 1000  # a run's record is retried while the bot lives: a day is plenty


@dataclass
class WriteLog:
    """The writes one handler sent, so that its answer can tell "nothing was changed" (nothing
    sent) from "could not confirm" (sent, no answer yet) and "recorded" (Redis answered)."""

    task: asyncio.Task[Any] | None = field(default_factory=asyncio.current_task)
    sent: int = 0
    confirmed: int = 0
    # Set when the handler ran out of time before it could start: every store call it makes then
    # fails at once, before anything is sent, so the user hears "nothing was changed" truthfully.
    closed: bool = False

    @property
    def unconfirmed(self) -> bool:
        return self.sent > self.confirmed


_writes: ContextVar[WriteLog | None] = ContextVar("gonogo_writes", default=None)


@contextmanager
def tracking_writes() -> Iterator[WriteLog]:
    """Count the store writes the current task makes inside this block (tasks it spawns, e.g. a
    run in the background, inherit the variable but are not counted)."""
    writes = WriteLog()
    token = _writes.set(writes)
    try:
        yield writes
    finally:
        _writes.reset(token)


def _never_sent(exc: BaseException) -> bool:
    """Failures that happen before a command leaves: no connection, or none free in the pool."""
    text = str(exc)
    return "connecting to" in text or "No connection available" in text or isinstance(exc, ConnectionRefusedError)


class Fact(StrEnum):
    """The hashes of people's facts about a release, each keyed by a field of its own."""

    SIGNATURES = "signatures"  # "<role>|<user>" -> Signature
    ACCEPTANCES = "acceptances"  # risk id -> RiskAcceptance
    MANUAL = "manual"  # check id -> ManualMark

    def key(self, release_id: str) -> str:
        return {
            Fact.SIGNATURES: keys.signatures,
            Fact.ACCEPTANCES: keys.acceptances,
            Fact.MANUAL: keys.manual,
        }[self](release_id)


class OverrideChanged(Conflict):
    """The override request the actor acted on is no longer the current one."""


def _refusal(outcome: str, payload: Any, release_id: str) -> GonogoError | None:
    """The error for a refused precondition of a release (see _RELEASE_OPEN), or None."""
    if outcome == "missing":
        return NotFound(f"no release {release_id!r}")
    if outcome == "not_open":
        return Release.model_validate_json(payload).refusal()
    if outcome == "moved":
        return Release.model_validate_json(payload).moved_since()
    return None


class Store:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        from bot.store.outbox import EMIT_LUA  # the outbox builds on this module's AuditEvent

        self._open = client.register_script(EMIT_LUA + _OPEN)
        self._update = client.register_script(EMIT_LUA + _UPDATE)
        self._lock = client.register_script(EMIT_LUA + _LOCK)
        self._renew = client.register_script(RENEW_LEASES)
        self._unlock = client.register_script(_UNLOCK_RUN)
        self._put_fact = client.register_script(EMIT_LUA + _PUT_FACT)
        self._del_fact = client.register_script(EMIT_LUA + _DEL_FACT)
        self._promote = client.register_script(EMIT_LUA + _PROMOTE)
        # The change's notices and dirty card, in the change's own step (KEYS 5-7, ARGV from 6).
        self._set_override = client.register_script(EMIT_LUA + _SET_OVERRIDE)

    @asynccontextmanager
    async def _guard(self, *, write: bool = False) -> AsyncIterator[None]:
        """Redis failures as our errors. For a `write`: `StoreUnavailable` only when the command
        surely never reached Redis, else `OutcomeUnknown`; and the handler's WriteLog is kept."""
        writes = _writes.get()
        if writes is not None and writes.task is not asyncio.current_task():
            writes = None
        if writes is not None and writes.closed:
            raise StoreUnavailable("out of time")
        if not write:
            writes = None
        if writes is not None:
            writes.sent += 1  # stays unconfirmed if the handler is cancelled while we wait
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            if write and not _never_sent(exc):
                raise OutcomeUnknown(type(exc).__name__) from exc
            if writes is not None:
                writes.sent -= 1
            raise StoreUnavailable(type(exc).__name__) from exc
        except redis.exceptions.RedisError:  # Redis answered (an error reply): the outcome is known
            if writes is not None:
                writes.confirmed += 1
            raise
        if writes is not None:
            writes.confirmed += 1

    async def ping(self) -> None:
        async with self._guard():
            await self.redis.ping()

    # --- releases -------------------------------------------------------------------------

    async def open_release(
        self, release: Release, event: AuditEvent, *, says: Emit | None = None
    ) -> tuple[OpenOutcome, Release | str]:
        """Create the release unless the gate has another one open; with `says`, its notices and
        dirty card in the same step (only when it is opened now). Returns the outcome and the
        release (or, on conflict, the id of the release that is in the way)."""
        async with self._guard(write=True):
            outcome, payload = await self._open(*_open_call(release, event, says))
        if outcome == "conflict":
            return "conflict", str(payload)
        return outcome, Release.model_validate_json(payload)

    async def get_release(self, release_id: str) -> Release | None:
        async with self._guard():
            raw = await self.redis.get(keys.release(release_id))
        return Release.model_validate_json(raw) if raw else None

    async def open_release_id(self, gate_id: str) -> str | None:
        async with self._guard():
            value = await self.redis.get(keys.open_release(gate_id))
        return str(value) if value else None

    async def update_release(
        self,
        current: Release,
        new: Release,
        event: AuditEvent | None,
        *,
        expect: Collection[State] = (),
        says: Emit | None = None,
    ) -> Release | None:
        """Write `new` if the stored rev still equals `current.rev`; None when someone else won.
        With `says`, its notices and dirty card are written in the same step (only with `new`).

        Checked in the same step, writing nothing when they fail: the stored state is one of
        `expect` (Conflict otherwise), and no other release of the gate holds the open pointer."""
        stored, call = _update_call(current, new, event, expect, says)
        async with self._guard(write=True):
            outcome, payload = await self._update(*call)
        if outcome == "state":
            raise Release.model_validate_json(payload).refusal()
        if outcome == "pointer":
            raise Conflict(f"{payload} is open: close it first with `/gonogo close {payload}`")
        return stored if outcome == "ok" else None

    async def decide_release(
        self,
        release: Release,
        build: Callable[[Release, bool], Awaitable[tuple[Release, str, AuditEvent]]],
        says: Callable[[Release], Emit] | None = None,
    ) -> Release:
        """Freeze a release: WATCH everything its verdict rests on, let `build(current, running)`
        check the preconditions and compute the decided doc, the bundle and the audit entry from
        what it reads, then write all three in one MULTI. If anything watched changed in between
        (a vote, a result, a run starting, a close), start again on fresh state."""
        rid = release.id
        doc, lock = keys.release(rid), keys.run_lock(rid)
        watched = [*keys.decision_inputs(rid), lock]
        async with self._guard(write=True), self.redis.pipeline(transaction=True) as pipe:
            for _ in range(10):
                try:
                    await pipe.watch(*watched)
                    raw, running = await pipe.get(doc), await pipe.exists(lock)
                    if not raw:
                        raise NotFound(f"no release {rid!r}")
                    request = await pipe.get(keys.override(rid))
                    if request:
                        await pipe.watch(keys.override_approvals(rid, json.loads(request).get("id", "")))
                    current = Release.model_validate_json(raw)
                    decided, bundle, event = await build(current, bool(running))
                    stored = decided.model_copy(update={"rev": current.rev + 1})
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(doc, stored.model_dump_json())
                    pipe.set(keys.bundle(rid), bundle)
                    pipe.xadd(keys.audit(rid), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
                    if says is not None:  # the record and the frozen card, in the same step
                        from bot.store.outbox import emit

                        emit(pipe, says(stored))
                    await pipe.execute()
                    return stored
                except redis.exceptions.WatchError:
                    continue
        raise Conflict(f"{rid} kept changing while it was being decided, try again")

    # The same writes queued on a MULTI whose caller WATCHes the keys it read (the webhook's event
    # transaction, bot/store/gatestore.py): the preconditions were checked there, EXEC applies
    # them with the event in one step.

    async def queue_open_release(self, tx: Pipeline, release: Release, event: AuditEvent) -> None:
        await self._open(*_open_call(release, event), client=tx)

    async def queue_update_release(
        self, tx: Pipeline, current: Release, new: Release, event: AuditEvent | None
    ) -> Release:
        stored, call = _update_call(current, new, event)
        await self._update(*call, client=tx)
        return stored

    # --- promotions to rollout stages ------------------------------------------------------

    @asynccontextmanager
    async def watching(self, release_id: str) -> AsyncIterator[Pipeline]:
        """WATCH every input of the release's verdict; `promote` on the yielded pipeline writes only
        if none of them changed since (a vote, a result, a mark, an override approval)."""
        async with self._guard(), self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(*keys.decision_inputs(release_id))
            request = await pipe.get(keys.override(release_id))
            if request:  # approvals are keyed by the request they belong to
                await pipe.watch(keys.override_approvals(release_id, json.loads(request).get("id", "")))
            yield pipe

    async def promote(
        self,
        pipe: Pipeline,
        current: Release,
        new: Release,
        *,
        stage_order: Sequence[str],
        allow_skip: bool,
        bundle_json: str,
        event: AuditEvent,
        says: Emit | None = None,
    ) -> tuple[PromoteOutcome, str]:
        """Move the release to `new.current_stage` with its frozen bundle, if every precondition holds;
        with `says`, its notices and dirty card in the same step (only when it is promoted).
        Returns the outcome and the stage the release was at when it was checked."""
        stored = new.model_copy(update={"rev": current.rev + 1})
        assert stored.current_stage is not None
        change = _says(current.id, says)
        emit_args = change.script_args()
        async with self._guard(write=True):
            pipe.multi()  # type: ignore[no-untyped-call]
            await self._promote(
                keys=[
                    keys.release(current.id),
                    keys.audit(current.id),
                    keys.promotions(current.id),
                    *change.script_keys(),
                ],
                args=[
                    current.rev,
                    stored.model_dump_json(),
                    stored.current_stage,
                    "1" if allow_skip else "0",
                    bundle_json,
                    AUDIT_MAXLEN,
                    len(stage_order),
                    *stage_order,
                    9 + len(stage_order) + len(emit_args),  # where the audit fields start
                    *emit_args,
                    *_flat(event.fields()),
                ],
                client=pipe,
            )
            try:
                (reply,) = await pipe.execute()
            except redis.exceptions.WatchError:
                return "changed", current.current_stage or ""
        outcome, at = reply
        return cast(PromoteOutcome, outcome), str(at)

    async def promotions(self, release_id: str) -> list[str]:
        """Every promotion's frozen bundle JSON, oldest first."""
        async with self._guard():
            return [str(raw) for raw in await self.redis.lrange(keys.promotions(release_id), 0, -1)]

    # --- results and runs ----------------------------------------------------------------

    async def save_result(self, release_id: str, result: CheckResult, *, at: datetime | None = None) -> None:
        """The latest result of one check (stamped with the run's commit and id by the caller); with
        `at`, the release's card is marked dirty in the same step (docs/delivery.md)."""
        from bot.store.outbox import Emit, emit  # the outbox builds on this module's AuditEvent

        async with self._guard(write=True), self.redis.pipeline(transaction=True) as tx:
            tx.hset(keys.results(release_id), result.check_id, result.model_dump_json())
            if at is not None:
                emit(tx, Emit(release_id.partition("@")[0], card_of=release_id, at=at))
            await tx.execute()

    async def repost_card(self, release_id: str, channel: str, old_ts: str) -> None:
        """The card refresher is to post the card anew, then turn the old one (`moved_from`) into a
        pointer to it. The card hash keeps its channel: the refresher no longer adopts the old ts."""
        async with self._guard(write=True), self.redis.pipeline(transaction=True) as tx:
            tx.hdel(keys.card(release_id), "ts")
            tx.hset(keys.card(release_id), mapping={"channel": channel, "moved_from": f"{channel} {old_ts}"})
            await tx.execute()

    async def take_moved_card(self, release_id: str) -> tuple[str, str] | None:
        """(channel, ts) of a card replaced by a repost, once."""
        async with self._guard(write=True), self.redis.pipeline(transaction=True) as tx:
            tx.hget(keys.card(release_id), "moved_from")
            tx.hdel(keys.card(release_id), "moved_from")
            moved, _ = await tx.execute()
        if not moved:
            return None
        channel, _, ts = str(moved).partition(" ")
        return channel, ts

    async def card_moving(self, release_id: str) -> bool:
        """A repost is under way (the new card is not posted yet)."""
        async with self._guard():
            return bool(await self.redis.hexists(keys.card(release_id), "moved_from"))

    async def card_managed(self, release_id: str) -> bool:
        """Whether the card refresher keeps this card's location (else: a card from before it)."""
        async with self._guard():
            return bool(await self.redis.hexists(keys.card(release_id), "channel"))

    async def undelivered(self, gate_id: str, notice_keys: Sequence[str]) -> list[str]:
        """Which of these notices have no delivered marker yet."""
        if not notice_keys:
            return []
        async with self._guard():
            found = await self.redis.exists(*(keys.delivered(gate_id, k) for k in notice_keys))
            if found == len(notice_keys):
                return []
            marks = [await self.redis.exists(keys.delivered(gate_id, k)) for k in notice_keys]
        return [k for k, mark in zip(notice_keys, marks, strict=True) if not mark]

    async def card_revisions(self, release_id: str) -> tuple[int, int]:
        """(wanted, shown): the card's newest revision, and the one Slack shows (docs/delivery.md)."""
        async with self._guard():
            wanted, shown = await self.redis.hmget(keys.card(release_id), ["wanted", "shown"])
        return int(wanted or 0), int(shown or 0)

    async def emit(self, change: Emit) -> None:
        """Notices and/or a dirty card on their own, for what has no write of its own to join (a card
        to show again, a notice whose facts are written already and whose key makes it idempotent)."""
        from bot.store.outbox import emit

        async with self._guard(write=True), self.redis.pipeline(transaction=True) as tx:
            emit(tx, change)
            await tx.execute()

    async def emit_audited(self, release_id: str, event: AuditEvent, change: Emit) -> None:
        """Notices with the audit entry that records them, in one step (e.g. an evidence upload:
        audited once queued, since the deliverer then uploads it exactly once)."""
        from bot.store.outbox import emit

        async with self._guard(write=True), self.redis.pipeline(transaction=True) as tx:
            tx.xadd(keys.audit(release_id), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
            emit(tx, change)
            await tx.execute()

    async def results(self, release_id: str) -> dict[str, CheckResult]:
        async with self._guard():
            raw = cast(dict[str, str], await self.redis.hgetall(keys.results(release_id)))
        return {k: CheckResult.model_validate_json(v) for k, v in raw.items()}

    async def record_run(
        self,
        run: RunRecord,
        event: AuditEvent,
        *,
        says: Callable[[Sequence[StaleAsk]], Emit] | None = None,
        stale: Sequence[StaleAsk] = (),
    ) -> bool:
        """Append the run's record and audit entry, once per run id (retries are no-ops). In the same
        MULTI: the stale sign-offs not asked about yet are noted (each audited), and `says(asked)`
        (those asked now) gives the notices the run's end causes and the dirty card.
        False when this run was already recorded (nothing is written)."""
        rid = run.release_id
        marker = keys.handled(rid, f"run:{run.run_id}")
        async with self._guard(write=True), self.redis.pipeline(transaction=True) as pipe:
            for _ in range(10):
                try:
                    await pipe.watch(marker, keys.stale_notified(rid))
                    if await pipe.exists(marker):
                        return False
                    asked = await _unasked(pipe, rid, stale)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(marker, "1", px=RUN_RECORDED_TTL_MS)
                    pipe.lpush(keys.runs(rid), run.model_dump_json())
                    pipe.ltrim(keys.runs(rid), 0, RUNS_KEPT - 1)
                    pipe.xadd(keys.audit(rid), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
                    _note_asked(pipe, rid, asked)
                    if says is not None:
                        from bot.store.outbox import emit

                        emit(pipe, says(asked))
                    await pipe.execute()
                    return True
                except redis.exceptions.WatchError:
                    continue
        raise Conflict(f"the run of {rid} could not be recorded: the release kept changing, try again")

    async def ask_stale(
        self, release_id: str, stale: Sequence[StaleAsk], says: Callable[[Sequence[StaleAsk]], Emit]
    ) -> list[StaleAsk]:
        """Note the stale sign-offs not asked about yet, each audited, with `says(asked)` (the notice
        asking them again) in the same MULTI. Returns those asked now (none: nothing written)."""
        async with self._guard(write=True), self.redis.pipeline(transaction=True) as pipe:
            for _ in range(10):
                try:
                    await pipe.watch(keys.stale_notified(release_id))
                    asked = await _unasked(pipe, release_id, stale)
                    if not asked:
                        return []
                    pipe.multi()  # type: ignore[no-untyped-call]
                    _note_asked(pipe, release_id, asked)
                    from bot.store.outbox import emit

                    emit(pipe, says(asked))
                    await pipe.execute()
                    return asked
                except redis.exceptions.WatchError:
                    continue
        raise Conflict(f"{release_id} kept changing, try again")

    async def move_release(
        self,
        current: Release,
        new: Release,
        event: AuditEvent,
        stale: Sequence[StaleAsk],
        says: Callable[[Sequence[StaleAsk]], Emit],
    ) -> Release | None:
        """Move an open release to another commit and, in the same step, note and ask again the
        signers whose sign-offs that makes stale (those not asked yet), with `says(asked)`: its
        notices and dirty card. None when someone else changed the release first (nothing written);
        Conflict when it is no longer open."""
        rid = current.id
        async with self._guard(write=True), self.redis.pipeline(transaction=True) as pipe:
            for _ in range(10):
                try:
                    await pipe.watch(keys.release(rid), keys.stale_notified(rid))
                    raw = await pipe.get(keys.release(rid))
                    stored = Release.model_validate_json(raw) if raw else None
                    if stored is None or stored.rev != current.rev:
                        return None
                    if stored.state is not State.OPEN:
                        raise stored.refusal()
                    asked = await _unasked(pipe, rid, stale)
                    moved, call = _update_call(current, new, event, (State.OPEN,), says(asked))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    await self._update(*call, client=pipe)  # cannot refuse: its inputs are WATCHed
                    _note_asked(pipe, rid, asked)
                    await pipe.execute()
                    return moved
                except redis.exceptions.WatchError:
                    continue
        raise Conflict(f"{rid} kept changing, try again")

    async def runs(self, release_id: str, count: int = 20) -> list[RunRecord]:
        async with self._guard():
            raw = await self.redis.lrange(keys.runs(release_id), 0, count - 1)
        return [RunRecord.model_validate_json(r) for r in raw]

    # --- the run lock: one run per release across every replica --------------------------

    async def acquire_run_lock(
        self, release_id: str, lease: RunLease, ttl_ms: int, *, says: Emit | None = None
    ) -> tuple[RunLease | OperationLease, int] | None:
        """None when acquired (the run lock and the gate's operation lease, and `says`: the dirty
        card showing the run, in the same step); otherwise what is in the way (the run already in
        progress, or the gate's drill or rollback) and the ms left before it expires (unless its
        holder renews it). Conflict when the release is not open (a decided release is frozen),
        checked in the same step."""
        operation = OperationLease(
            token=lease.token, kind="run", subject=release_id, actor=lease.actor, started_at=lease.started_at
        )
        emitted = says or _nothing(release_id)
        async with self._guard(write=True):
            in_flight = json.dumps({"release": release_id, "lease": lease.model_dump(mode="json")})
            outcome, payload, *ttl = await self._lock(
                keys=[
                    *_run_leases(release_id),
                    keys.release(release_id),
                    _in_flight(release_id),
                    *emitted.script_keys(),
                ],
                args=[lease.model_dump_json(), ttl_ms, operation.model_dump_json(), in_flight, *emitted.script_args()],
            )
        if outcome == "not_open":
            raise Release.model_validate_json(payload).refusal()
        if outcome == "run":
            return RunLease.model_validate_json(payload), int(ttl[0])
        if outcome == "operation":
            return OperationLease.model_validate_json(payload), int(ttl[0])
        return None

    async def renew_run_lock(self, release_id: str, token: str, ttl_ms: int) -> bool:
        """True while this run still holds both its leases; losing either one (expired, or taken
        over) means the run lost its right to run."""
        leases = _run_leases(release_id)
        async with self._guard(write=True):
            return int(await self._renew(keys=leases, args=[token, ttl_ms])) == len(leases)

    async def release_run_lock(self, release_id: str, token: str) -> None:
        async with self._guard(write=True):
            await self._unlock(keys=[*_run_leases(release_id), _in_flight(release_id)], args=[token])

    async def orphan_runs(self, gate_id: str) -> list[tuple[str, RunLease]]:
        """The gate's runs still in flight whose run lock is gone (or another run's): their process
        died (or lost its lease for good) before recording them. (release id, lease) pairs."""
        async with self._guard():
            raw = cast(dict[str, str], await self.redis.hgetall(keys.runs_in_flight(gate_id)))
            found: list[tuple[str, RunLease]] = []
            for token, doc in raw.items():
                entry = json.loads(doc)
                lease = RunLease.model_validate(entry["lease"])
                holder = await self.redis.get(keys.run_lock(entry["release"]))
                if holder is None or RunLease.model_validate_json(holder).token != token:
                    found.append((str(entry["release"]), lease))
        return found

    async def record_orphan_run(self, record: RunRecord, event: AuditEvent, token: str, at: datetime) -> bool:
        """Record a run whose process died, once: only while its in-flight entry is still there and
        its lock gone (checked in the step that writes), with its audit entry and the card's dirty
        mark; the entry goes. False when it was recorded (or resumed) meanwhile."""
        from bot.store.outbox import Emit, emit  # the outbox builds on this module's AuditEvent

        rid, gate_id = record.release_id, record.release_id.partition("@")[0]
        in_flight, lock, handled = (
            keys.runs_in_flight(gate_id),
            keys.run_lock(rid),
            keys.handled(rid, f"run:{record.run_id}"),
        )
        async with self._guard(write=True), self.redis.pipeline(transaction=True) as tx:
            try:
                await tx.watch(in_flight, lock, handled)
                holder = await tx.get(lock)
                if not await tx.hexists(in_flight, token) or (
                    holder is not None and RunLease.model_validate_json(holder).token == token
                ):
                    return False
                recorded = await tx.exists(handled)
                tx.multi()  # type: ignore[no-untyped-call]
                tx.hdel(in_flight, token)
                if not recorded:
                    tx.set(handled, "1", px=RUN_RECORDED_TTL_MS)
                    tx.lpush(keys.runs(rid), record.model_dump_json())
                    tx.ltrim(keys.runs(rid), 0, RUNS_KEPT - 1)
                    tx.xadd(keys.audit(rid), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
                emit(tx, Emit(gate_id, card_of=rid, at=at))
                await tx.execute()
            except redis.exceptions.WatchError:
                return False
        return not recorded

    async def current_run(self, release_id: str) -> RunLease | None:
        async with self._guard():
            raw = await self.redis.get(keys.run_lock(release_id))
        return RunLease.model_validate_json(raw) if raw else None

    # --- people's facts: votes, risk acceptances, manual marks, override approvals -----------

    async def put_fact(
        self,
        fact: Fact,
        release_id: str,
        field: str,
        record: BaseModel,
        event: AuditEvent,
        *,
        same_when: Sequence[str] = (),
        handled: str | None = None,
        sha: str | None = ANY_COMMIT,
        says: Emit | None = None,
    ) -> tuple[PutOutcome, str | None]:
        """Write a fact and its audit entry atomically, only while the release is open and (unless
        `sha` is ANY_COMMIT) at commit `sha` (None: no commit); otherwise Conflict (CommitMoved),
        and nothing is written. With `says`, its notices and dirty card land in the same step
        (only when the fact is written).
        `handled` (a click's identity) makes a retried payload a no-op; `same_when` names the
        fields whose equality makes a write a no-op. Returns the outcome and the previous JSON."""
        change = _says(release_id, says)
        emit_args = change.script_args()
        async with self._guard(write=True):
            outcome, old = await self._put_fact(
                keys=[
                    fact.key(release_id),
                    keys.audit(release_id),
                    keys.handled(release_id, handled or "-"),
                    keys.release(release_id),
                    *change.script_keys(),
                ],
                args=[
                    field,
                    record.model_dump_json(),
                    ",".join(same_when),
                    HANDLED_TTL_MS if handled else 0,
                    AUDIT_MAXLEN,
                    sha or "",
                    8 + len(emit_args),  # where the audit fields start
                    *emit_args,
                    *_flat(event.fields()),
                ],
            )
        if (refused := _refusal(outcome, old, release_id)) is not None:
            raise refused
        return cast(PutOutcome, outcome), (str(old) if old else None)

    async def delete_fact(
        self, fact: Fact, release_id: str, field: str, event: AuditEvent, *, says: Emit | None = None
    ) -> str | None:
        """Remove a fact (withdraw, reopen) while the release is open; audited (and `says` emitted,
        in the same step) only if it existed. Returns the old JSON."""
        change = _says(release_id, says)
        emit_args = change.script_args()
        async with self._guard(write=True):
            outcome, old = await self._del_fact(
                keys=[fact.key(release_id), keys.audit(release_id), keys.release(release_id), *change.script_keys()],
                args=[field, AUDIT_MAXLEN, 4 + len(emit_args), *emit_args, *_flat(event.fields())],
            )
        if (refused := _refusal(outcome, old, release_id)) is not None:
            raise refused
        return str(old) if old else None

    async def fact(self, fact: Fact, release_id: str, field: str) -> str | None:
        async with self._guard():
            raw = await self.redis.hget(fact.key(release_id), field)
        return str(raw) if raw else None

    async def facts(self, fact: Fact, release_id: str) -> dict[str, str]:
        async with self._guard():
            return cast(dict[str, str], await self.redis.hgetall(fact.key(release_id)))

    async def people(self, release_id: str) -> dict[Fact, dict[str, str]]:
        """Every fact hash of a release in one round trip (MULTI: one consistent snapshot)."""
        async with self._guard(), self.redis.pipeline(transaction=True) as tx:
            for fact in Fact:
                tx.hgetall(fact.key(release_id))
            replies = await tx.execute()
        return {fact: cast(dict[str, str], reply) for fact, reply in zip(Fact, replies, strict=True)}

    async def get_override(self, release_id: str) -> str | None:
        async with self._guard():
            raw = await self.redis.get(keys.override(release_id))
        return str(raw) if raw else None

    async def override_approvals(self, release_id: str, request_id: str) -> dict[str, str]:
        """user -> OverrideApproval JSON, for one request."""
        async with self._guard():
            return cast(dict[str, str], await self.redis.hgetall(keys.override_approvals(release_id, request_id)))

    async def set_override(
        self,
        release_id: str,
        *,
        current_id: str | None,
        request_json: str | None,
        sha: str | None,
        event: AuditEvent,
        says: Emit | None = None,
    ) -> None:
        """Start, replace or end (None) the override request, only if the stored one is still
        `current_id` (None: there is none) and the release is open at `sha` (ANY_COMMIT: any);
        the old request's approvals go with it; with `says`, its notices and dirty card in the
        same step. OverrideChanged or a release refusal otherwise, with nothing written."""
        emit_change = _says(release_id, says)
        emit_args = emit_change.script_args()
        async with self._guard(write=True):
            outcome, payload = await self._set_override(
                keys=[
                    keys.override(release_id),
                    keys.override_approvals(release_id, current_id or "-"),
                    keys.audit(release_id),
                    keys.release(release_id),
                    *emit_change.script_keys(),
                ],
                args=[
                    current_id or "",
                    request_json or "",
                    sha or "",
                    AUDIT_MAXLEN,
                    6 + len(emit_args),  # where the audit fields start
                    *emit_args,
                    *_flat(event.fields()),
                ],
            )
        if (refused := _refusal(outcome, payload, release_id)) is not None:
            raise refused
        if outcome == "replaced":
            raise OverrideChanged("the override request changed meanwhile: look at the card and try again")

    async def approve_override(
        self,
        release_id: str,
        request_id: str,
        approval: OverrideApproval,
        event: AuditEvent,
        *,
        handled: str | None = None,
        says: OverrideSays | None = None,
    ) -> tuple[ApprovalOutcome, str | None]:
        """Count an approval for request `request_id`, checked in the same step: the request is
        still the current one (OverrideChanged), the release open at its commit, the approver not
        its requester (Forbidden), and not counted already in another role ("counted", with the
        approval that counts).

        One transaction: WATCH the request, its approvals and the release, check, then MULTI the
        approval, its audit entry and what `says(request_json, approvals)` returns for the approvals
        with this one counted (more audit entries, the notices, the dirty card): an approval that
        completes the quorum announces it in the same step, and of two racing approvals the one
        that commits second sees the first (the WATCH starts it over)."""
        rid = release_id
        override, approvals_key, doc = keys.override(rid), keys.override_approvals(rid, request_id), keys.release(rid)
        marker = keys.handled(rid, handled) if handled else None
        async with self._guard(write=True), self.redis.pipeline(transaction=True) as pipe:
            for _ in range(10):
                try:
                    await pipe.watch(override, approvals_key, doc, *([marker] if marker else []))
                    if marker and await pipe.exists(marker):
                        return "duplicate", None
                    outcome, old = await self._approval_outcome(pipe, rid, request_id, approval)
                    request_json = str(await pipe.get(override))
                    extra: Sequence[AuditEvent] = ()
                    change = _says(rid, None)
                    if outcome == "written" and says is not None:
                        stored = cast(dict[str, str], await pipe.hgetall(approvals_key))
                        counted = {**stored, approval.user: approval.model_dump_json()}
                        extra, change = await says(request_json, counted)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if marker:
                        pipe.set(marker, "1", px=HANDLED_TTL_MS)
                    if outcome == "written":
                        pipe.hset(approvals_key, approval.user, approval.model_dump_json())
                        for entry in (event, *extra):
                            pipe.xadd(keys.audit(rid), entry.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
                        from bot.store.outbox import emit

                        emit(pipe, change)
                    await pipe.execute()
                    return outcome, old
                except redis.exceptions.WatchError:
                    continue
        raise Conflict(f"the override of {rid} kept changing while it was approved, try again")

    async def _approval_outcome(
        self, pipe: Pipeline, release_id: str, request_id: str, approval: OverrideApproval
    ) -> tuple[ApprovalOutcome, str | None]:
        """The preconditions of an approval, read under WATCH: raises when refused."""
        raw = await pipe.get(keys.release(release_id))
        if not raw:
            raise NotFound(f"no release {release_id!r}")
        release = Release.model_validate_json(raw)
        if release.state is not State.OPEN:
            raise release.refusal()
        current = await pipe.get(keys.override(release_id))
        request = json.loads(current) if current else {}
        if request.get("id") != request_id:
            raise OverrideChanged("this override request is no longer current")
        if request.get("requested_by") == approval.user:
            raise Forbidden("you requested this override: someone else has to approve it")
        if (request.get("sha") or "") != (release.sha or ""):
            raise OverrideChanged("the release moved to another commit since this override was requested")
        old = await pipe.hget(keys.override_approvals(release_id, request_id), approval.user)
        if old is None:
            return "written", None
        same = OverrideApproval.model_validate_json(old).role == approval.role
        return ("unchanged" if same else "counted"), str(old)

    async def save_bundle(self, release_id: str, bundle_json: str) -> None:
        async with self._guard(write=True):
            await self.redis.set(keys.bundle(release_id), bundle_json)

    async def get_bundle(self, release_id: str) -> str | None:
        async with self._guard():
            raw = await self.redis.get(keys.bundle(release_id))
        return str(raw) if raw else None

    async def cache_get(self, key: str) -> str | None:
        async with self._guard():
            raw = await self.redis.get(key)
        return str(raw) if raw else None

    async def cache_set(self, key: str, value: str, ttl_s: int | None) -> None:
        async with self._guard():
            await self.redis.set(key, value, ex=ttl_s)

    async def first_seen(self, key: str, ttl_s: int) -> bool:
        """True the first time `key` is claimed within `ttl_s` (SET NX): replays and retries are not."""
        async with self._guard():
            return bool(await self.redis.set(key, "1", nx=True, ex=ttl_s))

    # --- audit ---------------------------------------------------------------------------

    async def append_audit(self, release_id: str, event: AuditEvent) -> None:
        async with self._guard(write=True):
            await self.redis.xadd(keys.audit(release_id), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]

    async def audit(self, release_id: str, count: int = 1000) -> list[AuditEntry]:
        """Oldest first."""
        async with self._guard():
            raw = cast(list[tuple[str, dict[str, str]]], await self.redis.xrange(keys.audit(release_id), count=count))
        return [AuditEntry.from_stream(entry_id, fields) for entry_id, fields in raw]


def _says(release_id: str, says: Emit | None) -> Emit:
    """What a script's EMIT_LUA part gets: the change's notices and dirty card, or nothing to say."""
    from bot.store.outbox import Emit  # the outbox builds on this module's AuditEvent

    return says if says is not None else Emit(release_id.partition("@")[0])


def _flat(fields: Mapping[str, str]) -> list[str]:
    return [part for pair in fields.items() for part in pair]


_Call = tuple[list[str], list[Any]]  # a script's KEYS and ARGV


def _nothing(release_id: str) -> Emit:
    """No notices, no dirty card: for a script that takes `Emit` when its caller says nothing."""
    from bot.store.outbox import Emit

    return Emit(release_id.partition("@")[0])


def _open_call(release: Release, event: AuditEvent, says: Emit | None = None) -> _Call:
    emitted = says or _nothing(release.id)
    emit_args = emitted.script_args()
    return (
        [
            keys.open_release(release.gate_id),
            keys.release(release.id),
            keys.release_index(release.gate_id),
            keys.audit(release.id),
            *emitted.script_keys(),
        ],
        [
            release.id,
            release.model_dump_json(),
            release.opened_at.timestamp(),
            AUDIT_MAXLEN,
            6 + len(emit_args),  # where the audit fields start
            *emit_args,
            *_flat(event.fields()),
        ],
    )


def _update_call(
    current: Release,
    new: Release,
    event: AuditEvent | None,
    expect: Collection[State] = (),
    says: Emit | None = None,
) -> tuple[Release, _Call]:
    stored = new.model_copy(update={"rev": current.rev + 1})
    allowed = ",".join(state.value for state in expect)
    emitted = says or _nothing(current.id)
    emit_args = emitted.script_args()
    args: list[Any] = [
        current.rev,
        stored.model_dump_json(),
        stored.state.value,
        AUDIT_MAXLEN,
        allowed,
        7 + len(emit_args),  # where the audit fields start
        *emit_args,
    ]
    if event is not None:
        args += _flat(event.fields())
    call_keys = [keys.release(current.id), keys.audit(current.id), keys.open_release(current.gate_id)]
    return stored, ([*call_keys, *emitted.script_keys()], args)


@dataclass(frozen=True)
class StaleAsk:
    """A sign-off gone stale, to ask its signer about once: noted under `token` (bot/core/
    thread_notices.py stale_token, the webhook's moves note the same) with its audit entry."""

    token: str
    signer: Mapping[str, str]  # {"user", "vote", "label", "reason"}: what the ask says
    event: AuditEvent


async def _unasked(pipe: Pipeline, release_id: str, stale: Sequence[StaleAsk]) -> list[StaleAsk]:
    """Those of `stale` not noted yet (read under the caller's WATCH of the noted set)."""
    if not stale:
        return []
    noted = await pipe.smismember(keys.stale_notified(release_id), [ask.token for ask in stale])
    return [ask for ask, seen in zip(stale, noted, strict=True) if not seen]


def _note_asked(tx: Pipeline, release_id: str, asked: Sequence[StaleAsk]) -> None:
    if asked:
        tx.sadd(keys.stale_notified(release_id), *(ask.token for ask in asked))
        for ask in asked:
            tx.xadd(keys.audit(release_id), ask.event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]


def _in_flight(release_id: str) -> str:
    return keys.runs_in_flight(release_id.partition("@")[0])


def _run_leases(release_id: str) -> list[str]:
    """A run's two leases: its release's run lock and its gate's operation lease (one slot)."""
    return [keys.run_lock(release_id), keys.operation_lease(release_id.partition("@")[0])]
