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
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, cast

import redis.asyncio as aioredis
import redis.exceptions
from pydantic import BaseModel, ConfigDict

from bot.core.errors import OutcomeUnknown, StoreUnavailable
from bot.core.release import Release, RunLease, RunRecord
from bot.core.results import CheckResult
from bot.store import keys

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


# KEYS: open pointer, release doc, release index, audit. ARGV: id, doc json, score, audit fields...
_OPEN = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return {'conflict', current} end
if current == ARGV[1] then return {'exists', redis.call('GET', KEYS[2])} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'closed', redis.call('GET', KEYS[2])} end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
return {'opened', ARGV[2]}
"""

# Compare-and-set on the release's rev. KEYS: release doc, audit, open pointer.
# ARGV: expected rev, new doc json, state ('closed' clears the open pointer), maxlen, audit fields...
_UPDATE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return {'missing'} end
if cjson.decode(raw)['rev'] ~= tonumber(ARGV[1]) then return {'stale', raw} end
redis.call('SET', KEYS[1], ARGV[2])
local pointer = redis.call('GET', KEYS[3])
local id = cjson.decode(ARGV[2])['id']
if ARGV[3] == 'closed' then
  if pointer == id then redis.call('DEL', KEYS[3]) end
elseif not pointer then
  redis.call('SET', KEYS[3], id)
elseif pointer ~= id then
  return redis.error_reply('another release of this gate is open: ' .. pointer)
end
if #ARGV > 4 then redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5)) end
return {'ok', ARGV[2]}
"""

# Returns false when acquired, else the holder's lease and its remaining ms.
_LOCK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""

_RENEW = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw)['token'] == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_UNLOCK = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw)['token'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# A person's fact (a vote, a risk acceptance, a manual mark, an override approval) in one step:
# skip a click already handled (retries, replicas), skip a write that changes nothing (double
# clicks), else write it and append the audit entry. KEYS: hash, audit, handled-marker.
# ARGV: field, json, comma-separated fields that define "the same", handled ttl ms (0: no
# marker), maxlen, audit fields...
_PUT_FACT = """
if tonumber(ARGV[4]) > 0 then
  if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[4]) then return {'duplicate', false} end
end
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and ARGV[3] ~= '' then
  local o, n = cjson.decode(old), cjson.decode(ARGV[2])
  local same = true
  for name in string.gmatch(ARGV[3], '[^,]+') do
    if o[name] ~= n[name] then same = false end
  end
  if same then return {'unchanged', old} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 6))
return {'written', old or false}
"""

# Remove a fact, auditing it only when there was something to remove. KEYS: hash, audit.
# ARGV: field, maxlen, audit fields...
_DEL_FACT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return old
"""

# A run's record and audit entry, once: a write whose answer was lost is retried (the run's
# background recorder), and the marker makes the retry a no-op. KEYS: runs list, audit, marker.
# ARGV: record json, runs kept, marker ttl ms, maxlen, audit fields...
_RECORD_RUN = """
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[3]) then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
return 1
"""

OpenOutcome = Literal["opened", "exists", "conflict", "closed"]
PutOutcome = Literal["written", "unchanged", "duplicate"]
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
    OVERRIDE_APPROVALS = "override_approvals"  # "<role>|<user>" -> OverrideApproval

    def key(self, release_id: str) -> str:
        return {
            Fact.SIGNATURES: keys.signatures,
            Fact.ACCEPTANCES: keys.acceptances,
            Fact.MANUAL: keys.manual,
            Fact.OVERRIDE_APPROVALS: keys.override_approvals,
        }[self](release_id)


class Store:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._open = client.register_script(_OPEN)
        self._update = client.register_script(_UPDATE)
        self._lock = client.register_script(_LOCK)
        self._renew = client.register_script(_RENEW)
        self._unlock = client.register_script(_UNLOCK)
        self._put_fact = client.register_script(_PUT_FACT)
        self._del_fact = client.register_script(_DEL_FACT)
        self._record_run = client.register_script(_RECORD_RUN)

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

    async def open_release(self, release: Release, event: AuditEvent) -> tuple[OpenOutcome, Release | str]:
        """Create the release unless the gate has another one open. Returns the outcome and the
        release (or, on conflict, the id of the release that is in the way)."""
        async with self._guard(write=True):
            outcome, payload = await self._open(
                keys=[
                    keys.open_release(release.gate_id),
                    keys.release(release.id),
                    keys.release_index(release.gate_id),
                    keys.audit(release.id),
                ],
                args=[
                    release.id,
                    release.model_dump_json(),
                    release.opened_at.timestamp(),
                    AUDIT_MAXLEN,
                    *_flat(event.fields()),
                ],
            )
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

    async def update_release(self, current: Release, new: Release, event: AuditEvent | None) -> Release | None:
        """Write `new` if the stored rev still equals `current.rev`; None when someone else won."""
        stored = new.model_copy(update={"rev": current.rev + 1})
        args: list[Any] = [current.rev, stored.model_dump_json(), stored.state.value, AUDIT_MAXLEN]
        if event is not None:
            args += _flat(event.fields())
        async with self._guard(write=True):
            outcome, *_ = await self._update(
                keys=[keys.release(current.id), keys.audit(current.id), keys.open_release(current.gate_id)],
                args=args,
            )
        return stored if outcome == "ok" else None

    # --- results and runs ----------------------------------------------------------------

    async def save_result(self, release_id: str, result: CheckResult) -> None:
        async with self._guard(write=True):
            await self.redis.hset(keys.results(release_id), result.check_id, result.model_dump_json())

    async def results(self, release_id: str) -> dict[str, CheckResult]:
        async with self._guard():
            raw = cast(dict[str, str], await self.redis.hgetall(keys.results(release_id)))
        return {k: CheckResult.model_validate_json(v) for k, v in raw.items()}

    async def record_run(self, run: RunRecord, event: AuditEvent) -> bool:
        """Append the run's record and audit entry, once per run id (retries are no-ops).
        False when this run was already recorded."""
        rid = run.release_id
        async with self._guard(write=True):
            done = await self._record_run(
                keys=[keys.runs(rid), keys.audit(rid), keys.handled(rid, f"run:{run.run_id}")],
                args=[run.model_dump_json(), RUNS_KEPT, RUN_RECORDED_TTL_MS, AUDIT_MAXLEN, *_flat(event.fields())],
            )
        return bool(done)

    async def runs(self, release_id: str, count: int = 20) -> list[RunRecord]:
        async with self._guard():
            raw = await self.redis.lrange(keys.runs(release_id), 0, count - 1)
        return [RunRecord.model_validate_json(r) for r in raw]

    # --- the run lock: one run per release across every replica --------------------------

    async def acquire_run_lock(self, release_id: str, lease: RunLease, ttl_ms: int) -> tuple[RunLease, int] | None:
        """None when acquired; otherwise the lease of the run already in progress and the ms
        left before it expires (unless its run renews it)."""
        async with self._guard(write=True):
            holder = await self._lock(keys=[keys.run_lock(release_id)], args=[lease.model_dump_json(), ttl_ms])
        if not holder:
            return None
        raw, ttl_left = holder
        return RunLease.model_validate_json(raw), int(ttl_left)

    async def renew_run_lock(self, release_id: str, token: str, ttl_ms: int) -> bool:
        async with self._guard(write=True):
            return bool(await self._renew(keys=[keys.run_lock(release_id)], args=[token, ttl_ms]))

    async def release_run_lock(self, release_id: str, token: str) -> None:
        async with self._guard(write=True):
            await self._unlock(keys=[keys.run_lock(release_id)], args=[token])

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
    ) -> tuple[PutOutcome, str | None]:
        """Write a fact and its audit entry atomically. `handled` (a click's identity) makes a
        retried payload a no-op; `same_when` names the fields whose equality makes a write a no-op.
        Returns the outcome and the previous JSON."""
        async with self._guard(write=True):
            outcome, old = await self._put_fact(
                keys=[fact.key(release_id), keys.audit(release_id), keys.handled(release_id, handled or "-")],
                args=[
                    field,
                    record.model_dump_json(),
                    ",".join(same_when),
                    HANDLED_TTL_MS if handled else 0,
                    AUDIT_MAXLEN,
                    *_flat(event.fields()),
                ],
            )
        return cast(PutOutcome, outcome), (str(old) if old else None)

    async def delete_fact(self, fact: Fact, release_id: str, field: str, event: AuditEvent) -> str | None:
        """Remove a fact (withdraw, reopen); audited only if it existed. Returns the old JSON."""
        async with self._guard(write=True):
            old = await self._del_fact(
                keys=[fact.key(release_id), keys.audit(release_id)],
                args=[field, AUDIT_MAXLEN, *_flat(event.fields())],
            )
        return str(old) if old else None

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

    async def set_override(self, release_id: str, request_json: str | None, event: AuditEvent) -> None:
        """Replace (or clear) the override request; its approvals always start afresh."""
        async with self._guard(write=True), self.redis.pipeline(transaction=True) as tx:
            if request_json is None:
                tx.delete(keys.override(release_id))
            else:
                tx.set(keys.override(release_id), request_json)
            tx.delete(keys.override_approvals(release_id))
            tx.xadd(keys.audit(release_id), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
            await tx.execute()

    async def drills(self, release_id: str) -> dict[str, str]:
        async with self._guard():
            return cast(dict[str, str], await self.redis.hgetall(keys.drills(release_id)))

    async def save_bundle(self, release_id: str, bundle_json: str) -> None:
        async with self._guard(write=True):
            await self.redis.set(keys.bundle(release_id), bundle_json)

    async def get_bundle(self, release_id: str) -> str | None:
        async with self._guard():
            raw = await self.redis.get(keys.bundle(release_id))
        return str(raw) if raw else None

    async def first_notice(self, release_id: str, token: str) -> bool:
        """True the first time `token` is noted for this release (e.g. a stale signature's reminder)."""
        async with self._guard(write=True):
            return bool(await self.redis.sadd(keys.stale_notified(release_id), token))

    async def cache_get(self, key: str) -> str | None:
        async with self._guard():
            raw = await self.redis.get(key)
        return str(raw) if raw else None

    async def cache_set(self, key: str, value: str, ttl_s: int | None) -> None:
        async with self._guard():
            await self.redis.set(key, value, ex=ttl_s)

    # --- audit ---------------------------------------------------------------------------

    async def append_audit(self, release_id: str, event: AuditEvent) -> None:
        async with self._guard(write=True):
            await self.redis.xadd(keys.audit(release_id), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]

    async def audit(self, release_id: str, count: int = 1000) -> list[AuditEntry]:
        """Oldest first."""
        async with self._guard():
            raw = cast(list[tuple[str, dict[str, str]]], await self.redis.xrange(keys.audit(release_id), count=count))
        return [
            AuditEntry(
                id=entry_id,
                type=fields["type"],
                actor=fields["actor"],
                at=datetime.fromisoformat(fields["at"]),
                data=json.loads(fields.get("data", "{}")),
            )
            for entry_id, fields in raw
        ]


def _flat(fields: Mapping[str, str]) -> list[str]:
    return [part for pair in fields.items() for part in pair]
