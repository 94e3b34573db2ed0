"""Gate-level state: fire-drill runs, the operation lease, webhook events and external results.

Drills belong to the gate (they test the service), so their runs live under the gate's hash tag,
not a release's. The operation lease lets one run, drill or rollback of a gate proceed at a time
(runs take it with their run lock, `Store.acquire_run_lock`). A webhook event is accepted in one
optimistic transaction: WATCH its idempotency key and whatever its preconditions read, then
MULTI: mark the id seen, append the event to the gate's stream and queue its effects. A replayed
id finds the mark and changes nothing; a crash before EXEC leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import Pipeline

from bot.core.drills import DrillRun, OperationLease
from bot.core.errors import Conflict, StoreUnavailable
from bot.store import keys
from bot.store.outbox import EMIT_LUA, Emit
from bot.store.store import AUDIT_MAXLEN, DROP_LEASES, RENEW_LEASES, AuditEntry, AuditEvent
from checks.external import ExternalResult

DRILL_RUNS_KEPT = 50
EVENTS_MAXLEN = 10_000
# How long an accepted event id is remembered: CI retries within minutes, a re-run pipeline within
# days; a month covers both without keeping every id forever.
EVENT_ID_TTL_S = 30 * 24 * 3600
_TRIES = 10

T = TypeVar("T")
# Queues an event's writes on the MULTI and returns the facts they establish.
Write = Callable[[Pipeline], Awaitable[T]]
# Runs under WATCH before MULTI: watches and reads what the event's preconditions need, raises a
# GonogoError to refuse the event (nothing is written), or returns its Write.
Prepare = Callable[[Pipeline], Awaitable[Write[T]]]

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
"""

# The same, and the notices the start causes ("🔥 Fire drill started") appended only when the lease
# is taken. KEYS: lease, then Emit.script_keys(). ARGV: lease json, ttl ms, then Emit.script_args().
_ACQUIRE_EMIT = (
    EMIT_LUA
    + """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  gonogo_emit(2, 3)
  return false
end
return redis.call('GET', KEYS[1])
"""
)


@dataclass(frozen=True)
class Accepted(Generic[T]):
    """An event taken in: `duplicate` when its id was seen before (then `facts` is None)."""

    event_id: str
    duplicate: bool
    facts: T | None


@dataclass(frozen=True)
class StoredEvent:
    entry_id: str
    event_id: str
    type: str
    received_at: datetime
    body: dict[str, Any]


class GateStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._acquire = client.register_script(_ACQUIRE)
        self._acquire_emit = client.register_script(_ACQUIRE_EMIT)
        self._renew = client.register_script(RENEW_LEASES)
        self._drop = client.register_script(DROP_LEASES)

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    # --- the operation lease: one run, drill or rollback per gate ---------------------------

    async def acquire_operation(
        self, gate_id: str, lease: OperationLease, ttl_ms: int, says: Emit | None = None
    ) -> OperationLease | None:
        """None when acquired (and `says` appended in the same step); otherwise the lease of what
        is in the way (and nothing appended)."""
        lease_key = keys.operation_lease(gate_id)
        async with self._guard():
            if says is None:
                holder = await self._acquire(keys=[lease_key], args=[lease.model_dump_json(), ttl_ms])
            else:
                holder = await self._acquire_emit(
                    keys=[lease_key, *says.script_keys()], args=[lease.model_dump_json(), ttl_ms, *says.script_args()]
                )
        return OperationLease.model_validate_json(holder) if holder else None

    async def renew_operation(self, gate_id: str, token: str, ttl_ms: int) -> bool:
        async with self._guard():
            return bool(await self._renew(keys=[keys.operation_lease(gate_id)], args=[token, ttl_ms]))

    async def release_operation(self, gate_id: str, token: str) -> None:
        async with self._guard():
            await self._drop(keys=[keys.operation_lease(gate_id)], args=[token])

    async def current_operation(self, gate_id: str) -> OperationLease | None:
        async with self._guard():
            raw = await self.redis.get(keys.operation_lease(gate_id))
        return OperationLease.model_validate_json(raw) if raw else None

    async def watched_write(self, watch: Sequence[str], prepare: Prepare[T]) -> T:
        """One optimistic transaction: WATCH `watch`, let `prepare` read (and refuse by raising),
        then queue its writes in one MULTI; on a concurrent change, decide again on fresh state."""
        async with self._guard(), self.redis.pipeline(transaction=True) as tx:
            for _ in range(_TRIES):
                try:
                    await tx.watch(*watch)
                    write = await prepare(tx)
                    tx.multi()  # type: ignore[no-untyped-call]
                    facts = await write(tx)
                    await tx.execute()
                    return facts
                except redis.exceptions.WatchError:
                    await tx.reset()  # type: ignore[no-untyped-call]
        raise Conflict("the gate kept changing under this write, try again")

    # --- drills -----------------------------------------------------------------------------

    @staticmethod
    def queue_drill_run(tx: Pipeline, run: DrillRun, event: AuditEvent) -> None:
        """The drill's history (last 50), its latest result and the gate's audit entry."""
        body = run.model_dump_json()
        tx.lpush(keys.drill_runs(run.gate_id, run.drill_id), body)
        tx.ltrim(keys.drill_runs(run.gate_id, run.drill_id), 0, DRILL_RUNS_KEPT - 1)
        tx.hset(keys.drill_latest(run.gate_id), run.drill_id, body)
        tx.xadd(keys.gate_audit(run.gate_id), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]

    async def record_drill_run(self, run: DrillRun, event: AuditEvent) -> None:
        async with self._guard(), self.redis.pipeline(transaction=True) as tx:
            self.queue_drill_run(tx, run, event)
            await tx.execute()

    async def drill_runs(self, gate_id: str, drill_id: str, count: int = DRILL_RUNS_KEPT) -> list[DrillRun]:
        """Newest first."""
        async with self._guard():
            raw = await self.redis.lrange(keys.drill_runs(gate_id, drill_id), 0, count - 1)
        return [DrillRun.model_validate_json(r) for r in raw]

    async def latest_drills(self, gate_id: str) -> dict[str, DrillRun]:
        async with self._guard():
            raw = cast(dict[str, str], await self.redis.hgetall(keys.drill_latest(gate_id)))
        return {k: DrillRun.model_validate_json(v) for k, v in raw.items()}

    async def gate_audit(self, gate_id: str, count: int = 1000) -> list[AuditEntry]:
        """Oldest first."""
        async with self._guard():
            raw = cast(list[tuple[str, dict[str, str]]], await self.redis.xrange(keys.gate_audit(gate_id), count=count))
        return [AuditEntry.from_stream(entry_id, fields) for entry_id, fields in raw]

    async def decided_at(self, release_id: str, page: int = 200) -> datetime | None:
        """When the release was last decided (its newest `decided` audit entry); None if never."""
        newest = "+"
        async with self._guard():
            while True:
                entries = cast(
                    list[tuple[str, dict[str, str]]],
                    await self.redis.xrevrange(keys.audit(release_id), max=newest, count=page),
                )
                for _, fields in entries:
                    if fields.get("type") == "decided":
                        return datetime.fromisoformat(fields["at"])
                if len(entries) < page:
                    return None
                newest = f"({entries[-1][0]}"

    # --- external check results (reported over the webhook) ---------------------------------

    async def external_results(self, release_id: str) -> dict[str, ExternalResult]:
        async with self._guard():
            raw = cast(dict[str, str], await self.redis.hgetall(keys.external_results(release_id)))
        return {k: ExternalResult.model_validate_json(v) for k, v in raw.items()}

    # --- webhook events ---------------------------------------------------------------------

    async def accept_event(
        self,
        gate_id: str,
        event_id: str,
        event_type: str,
        body: dict[str, Any],
        received_at: datetime,
        prepare: Prepare[T],
    ) -> Accepted[T]:
        """Store the event and apply its effects in one atomic step, once per event id."""
        seen = keys.event_seen(gate_id, event_id)
        fields = {
            "id": event_id,
            "type": event_type,
            "at": received_at.isoformat(),
            "body": json.dumps(body, sort_keys=True, default=str),
        }
        async with self._guard(), self.redis.pipeline(transaction=True) as tx:
            for _ in range(_TRIES):
                try:
                    await tx.watch(seen)
                    if await tx.exists(seen):
                        await tx.reset()  # type: ignore[no-untyped-call]
                        return Accepted(event_id=event_id, duplicate=True, facts=None)
                    write = await prepare(tx)
                    tx.multi()  # type: ignore[no-untyped-call]
                    tx.set(seen, event_type, ex=EVENT_ID_TTL_S)
                    tx.xadd(keys.events(gate_id), fields, maxlen=EVENTS_MAXLEN, approximate=True)  # type: ignore[arg-type]
                    facts = await write(tx)
                    await tx.execute()
                    return Accepted(event_id=event_id, duplicate=False, facts=facts)
                except redis.exceptions.WatchError:
                    # Someone changed what we read: decide again on fresh state.
                    await tx.reset()  # type: ignore[no-untyped-call]
        raise Conflict(f"event {event_id} kept colliding with other writes, send it again")

    async def events(self, gate_id: str, count: int = 100) -> list[StoredEvent]:
        """Oldest first."""
        async with self._guard():
            raw = cast(list[tuple[str, dict[str, str]]], await self.redis.xrange(keys.events(gate_id), count=count))
        return [
            StoredEvent(
                entry_id=entry_id,
                event_id=fields["id"],
                type=fields["type"],
                received_at=datetime.fromisoformat(fields["at"]),
                body=json.loads(fields["body"]),
            )
            for entry_id, fields in raw
        ]
