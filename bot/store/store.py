"""The release store: every read and write gonogo makes to Redis.

Writes that must be atomic are Lua scripts or MULTI blocks, and every state change appends an
entry to the release's audit stream in the same atomic step. Connection problems surface as
`StoreUnavailable`, which callers turn into "state store unavailable, try again" (fail closed).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, cast

import redis.asyncio as aioredis
import redis.exceptions
from pydantic import BaseModel, ConfigDict
from redis.asyncio.client import Pipeline

from bot.core.drills import OperationLease
from bot.core.errors import StoreUnavailable
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
# ARGV: expected rev, new doc json, state ('closed' and 'rolled_back' free the gate's open pointer),
# maxlen, audit fields...
_UPDATE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return {'missing'} end
if cjson.decode(raw)['rev'] ~= tonumber(ARGV[1]) then return {'stale', raw} end
redis.call('SET', KEYS[1], ARGV[2])
local pointer = redis.call('GET', KEYS[3])
local id = cjson.decode(ARGV[2])['id']
if ARGV[3] == 'closed' or ARGV[3] == 'rolled_back' then
  if pointer == id then redis.call('DEL', KEYS[3]) end
elseif not pointer then
  redis.call('SET', KEYS[3], id)
elseif pointer ~= id then
  return redis.error_reply('another release of this gate is open: ' .. pointer)
end
if #ARGV > 4 then redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5)) end
return {'ok', ARGV[2]}
"""

# A run takes its release's run lock and the gate's operation lease together, so a run, a fire
# drill and a rollback of one gate never overlap (drills and rollbacks take the operation lease
# alone: bot/store/gatestore.py). KEYS: run lock, operation lease.
# ARGV: run lease json, ttl ms, operation lease json.
_LOCK = """
local run = redis.call('GET', KEYS[1])
if run then return {'run', run} end
local op = redis.call('GET', KEYS[2])
if op then return {'operation', op} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return false
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

# A promotion to a rollout stage, with its preconditions checked where it writes: the release is
# open, at the stage the caller decided from, the target comes after it (and right after it unless
# skipping is allowed), and the doc is the one the caller read (rev). Then the new doc, the frozen
# bundle and the audit entry land together. KEYS: release doc, audit, promotions list.
# ARGV: expected rev, new doc json, target stage, allow skip ('1'/'0'), bundle json, maxlen,
# number of stages n, the n stage ids in order, audit fields...
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
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', unpack(ARGV, 8 + n))
return {'ok', current}
"""

OpenOutcome = Literal["opened", "exists", "conflict", "closed"]
PromoteOutcome = Literal["ok", "missing", "state", "unknown", "behind", "skip", "stale", "changed"]
PutOutcome = Literal["written", "unchanged", "duplicate"]
HANDLED_TTL_MS = 15 * 60 * 1000  # Slack retries within minutes; a quarter of an hour is plenty


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
        self._renew = client.register_script(RENEW_LEASES)
        self._unlock = client.register_script(DROP_LEASES)
        self._put_fact = client.register_script(_PUT_FACT)
        self._del_fact = client.register_script(_DEL_FACT)
        self._promote = client.register_script(_PROMOTE)

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def ping(self) -> None:
        async with self._guard():
            await self.redis.ping()

    # --- releases -------------------------------------------------------------------------

    async def open_release(self, release: Release, event: AuditEvent) -> tuple[OpenOutcome, Release | str]:
        """Create the release unless the gate has another one open. Returns the outcome and the
        release (or, on conflict, the id of the release that is in the way)."""
        async with self._guard():
            outcome, payload = await self._open(*_open_call(release, event))
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
        stored, call = _update_call(current, new, event)
        async with self._guard():
            outcome, *_ = await self._update(*call)
        return stored if outcome == "ok" else None

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
    ) -> tuple[PromoteOutcome, str]:
        """Move the release to `new.current_stage` with its frozen bundle, if every precondition holds.
        Returns the outcome and the stage the release was at when it was checked."""
        stored = new.model_copy(update={"rev": current.rev + 1})
        assert stored.current_stage is not None
        async with self._guard():
            pipe.multi()  # type: ignore[no-untyped-call]
            await self._promote(
                keys=[keys.release(current.id), keys.audit(current.id), keys.promotions(current.id)],
                args=[
                    current.rev,
                    stored.model_dump_json(),
                    stored.current_stage,
                    "1" if allow_skip else "0",
                    bundle_json,
                    AUDIT_MAXLEN,
                    len(stage_order),
                    *stage_order,
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

    async def save_result(self, release_id: str, result: CheckResult) -> None:
        async with self._guard():
            await self.redis.hset(keys.results(release_id), result.check_id, result.model_dump_json())

    async def results(self, release_id: str) -> dict[str, CheckResult]:
        async with self._guard():
            raw = cast(dict[str, str], await self.redis.hgetall(keys.results(release_id)))
        return {k: CheckResult.model_validate_json(v) for k, v in raw.items()}

    async def record_run(self, run: RunRecord, event: AuditEvent) -> None:
        async with self._guard(), self.redis.pipeline(transaction=True) as tx:
            tx.lpush(keys.runs(run.release_id), run.model_dump_json())
            tx.ltrim(keys.runs(run.release_id), 0, RUNS_KEPT - 1)
            tx.xadd(keys.audit(run.release_id), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
            await tx.execute()

    async def runs(self, release_id: str, count: int = 20) -> list[RunRecord]:
        async with self._guard():
            raw = await self.redis.lrange(keys.runs(release_id), 0, count - 1)
        return [RunRecord.model_validate_json(r) for r in raw]

    # --- the run lock: one run per release across every replica --------------------------

    async def acquire_run_lock(self, release_id: str, lease: RunLease, ttl_ms: int) -> RunLease | OperationLease | None:
        """None when acquired (the run lock and the gate's operation lease); otherwise what is in
        the way: the run already in progress, or the gate's drill or rollback."""
        operation = OperationLease(
            token=lease.token, kind="run", subject=release_id, actor=lease.actor, started_at=lease.started_at
        )
        async with self._guard():
            holder = await self._lock(
                keys=_run_leases(release_id), args=[lease.model_dump_json(), ttl_ms, operation.model_dump_json()]
            )
        if not holder:
            return None
        which, raw = holder
        return RunLease.model_validate_json(raw) if which == "run" else OperationLease.model_validate_json(raw)

    async def renew_run_lock(self, release_id: str, token: str, ttl_ms: int) -> bool:
        async with self._guard():
            return bool(await self._renew(keys=_run_leases(release_id), args=[token, ttl_ms]))

    async def release_run_lock(self, release_id: str, token: str) -> None:
        async with self._guard():
            await self._unlock(keys=_run_leases(release_id), args=[token])

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
        async with self._guard():
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
        async with self._guard():
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
        async with self._guard(), self.redis.pipeline(transaction=True) as tx:
            if request_json is None:
                tx.delete(keys.override(release_id))
            else:
                tx.set(keys.override(release_id), request_json)
            tx.delete(keys.override_approvals(release_id))
            tx.xadd(keys.audit(release_id), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
            await tx.execute()

    async def save_bundle(self, release_id: str, bundle_json: str) -> None:
        async with self._guard():
            await self.redis.set(keys.bundle(release_id), bundle_json)

    async def get_bundle(self, release_id: str) -> str | None:
        async with self._guard():
            raw = await self.redis.get(keys.bundle(release_id))
        return str(raw) if raw else None

    async def first_notice(self, release_id: str, token: str) -> bool:
        """True the first time `token` is noted for this release (e.g. a stale signature's reminder)."""
        async with self._guard():
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
        async with self._guard():
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


_Call = tuple[list[str], list[Any]]  # a script's KEYS and ARGV


def _open_call(release: Release, event: AuditEvent) -> _Call:
    return (
        [
            keys.open_release(release.gate_id),
            keys.release(release.id),
            keys.release_index(release.gate_id),
            keys.audit(release.id),
        ],
        [release.id, release.model_dump_json(), release.opened_at.timestamp(), AUDIT_MAXLEN, *_flat(event.fields())],
    )


def _update_call(current: Release, new: Release, event: AuditEvent | None) -> tuple[Release, _Call]:
    stored = new.model_copy(update={"rev": current.rev + 1})
    args: list[Any] = [current.rev, stored.model_dump_json(), stored.state.value, AUDIT_MAXLEN]
    if event is not None:
        args += _flat(event.fields())
    return stored, ([keys.release(current.id), keys.audit(current.id), keys.open_release(current.gate_id)], args)


def _run_leases(release_id: str) -> list[str]:
    """A run's two leases: its release's run lock and its gate's operation lease (one slot)."""
    return [keys.run_lock(release_id), keys.operation_lease(release_id.partition("@")[0])]
