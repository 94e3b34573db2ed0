"""Redis side of the scheduler: claim a unit of work together with its notice, in one step.

Every replica runs the same ticks and computes the same due units; `claim` is the one place where
one of them wins. One Lua script (all keys under the gate's hash tag, so one Cluster slot):

- refuses when the release moved meanwhile (its `rev` or state is not what the tick decided on),
- `SADD`s the unit's name to the claims set (0: someone did it already -> nothing else happens),
  within an optional cap (a counter in the schedule hash, e.g. reminders to one person),
- writes the facts the next due time derives from (hash fields), an audit entry, and
- appends the notices to the outbox (`EMIT_LUA`): the deliverer posts them, once.

A replica that dies before the script ran did nothing; one that dies after did everything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import redis.asyncio as aioredis

from bot.core.release import Release
from bot.store import keys
from bot.store.outbox import EMIT_LUA, Emit
from bot.store.store import AuditEvent

# KEYS: claims set, schedule hash, audit stream, release doc, then Emit's 3.
# ARGV: unit, expected rev ('' = no check), cap field ('' none), cap, n ops, (op, field, value)*n,
# audit JSON ('' none), emit args.
_CLAIM = (
    EMIT_LUA
    + """
if ARGV[2] ~= '' then
  local doc = redis.call('GET', KEYS[4])
  if not doc then return -1 end
  local release = cjson.decode(doc)
  if tostring(release['rev']) ~= ARGV[2] then return -1 end
end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
if ARGV[3] ~= '' then
  if tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0') >= tonumber(ARGV[4]) then return -2 end
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
end
redis.call('SADD', KEYS[1], ARGV[1])
local n = tonumber(ARGV[5])
local i = 6
for _ = 1, n do
  local op, f, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  if op == 'set' then redis.call('HSET', KEYS[2], f, v)
  elseif op == 'setnx' then redis.call('HSETNX', KEYS[2], f, v)
  else redis.call('HDEL', KEYS[2], f) end
end
local audit = ARGV[i]
i = i + 1
if audit ~= '' then
  local fields = cjson.decode(audit)
  redis.call('XADD', KEYS[3], '*', 'type', fields['type'], 'actor', fields['actor'], 'at', fields['at'],
    'data', fields['data'])
end
gonogo_emit(5, i)
return 1
"""
)

Op = Literal["set", "setnx", "del"]
Claimed = Literal["claimed", "taken", "moved", "capped"]


@dataclass(frozen=True)
class Write:
    op: Op
    field: str
    value: str = ""


@dataclass
class Claim:
    """One unit of scheduled work and everything that happens when it is claimed."""

    unit: str
    change: Emit
    writes: list[Write] = field(default_factory=list)
    audit: AuditEvent | None = None
    cap: tuple[str, int] | None = None  # (counter field, limit): refused once the counter reached it


class ScheduleStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._claim = client.register_script(_CLAIM)
        self._registered: set[str] = set()

    async def claim(self, claim: Claim, release: Release | None = None, *, unless_moved: bool = True) -> Claimed:
        """Claim a release's unit (with `unless_moved`, only while the release's `rev` is the one the
        tick read), or with `release` None a gate-level one. 'taken': done already; 'moved': the
        release changed since it was read (the tick reads it again and decides again at once,
        bot/services/scheduler.py `retried`)."""
        gate_id = claim.change.gate_id
        if gate_id not in self._registered:  # deliverers watch this set (outside the gate's slot: idempotent)
            await self.redis.sadd(keys.outbox_gates(), gate_id)
            self._registered.add(gate_id)
        if release is not None:
            claims_key, hash_key = keys.claims(release.id), keys.schedule(release.id)
            audit_key, doc_key = keys.audit(release.id), keys.release(release.id)
            rev = str(release.rev) if unless_moved else ""
        else:
            claims_key = hash_key = audit_key = doc_key = keys.gate_claims(gate_id)
            rev = ""
        ops: list[str] = []
        for write in claim.writes:
            ops += [write.op, write.field, write.value]
        audit = json.dumps(claim.audit.fields()) if claim.audit is not None and release is not None else ""
        outcome = await self._claim(
            keys=[claims_key, hash_key, audit_key, doc_key, *claim.change.script_keys()],
            args=[
                claim.unit,
                rev,
                claim.cap[0] if claim.cap else "",
                str(claim.cap[1]) if claim.cap else "0",
                str(len(claim.writes)),
                *ops,
                audit,
                *claim.change.script_args(),
            ],
        )
        return {1: "claimed", 0: "taken", -2: "capped"}.get(int(outcome), "moved")  # type: ignore[return-value]

    async def facts(self, release_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(keys.schedule(release_id)))

    async def claimed(self, release_id: str) -> set[str]:
        return cast(set[str], await self.redis.smembers(keys.claims(release_id)))

    async def gate_claimed(self, gate_id: str, units: Sequence[str]) -> list[bool]:
        if not units:
            return []
        found = await self.redis.smismember(keys.gate_claims(gate_id), list(units))
        return [bool(x) for x in found]

    async def waiting_since(self, release_id: str, fields: dict[str, str]) -> None:
        """First observation of people being waited on: HSETNX, so every replica agrees on the first."""
        if fields:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, value in fields.items():
                    pipe.hsetnx(keys.schedule(release_id), name, value)
                await pipe.execute()

    async def snooze(self, release_id: str, user: str, until_iso: str) -> None:
        await self.redis.hset(keys.schedule(release_id), f"snooze|{user}", until_iso)
