"""Rollbacks: a release becomes `rolled_back`, audited with the time from its decision.

Two roads lead here: CI reporting a rollback over the webhook (`EventService`, no command run)
and, with the Slack wiring, `/gonogo rollback` (`RollbackService`: the gate's `rollback.run`
through the command-check engine under the gate's operation lease, then the `rollback.verify`
check re-run). Both end in the same state move, built by `rollback_change`.

`/gonogo rollback` says what happens as notices, each in the atomic step that makes it true: the
announcement (linking the decision record) and, in its thread, the release's signers and opener
named once, appended with taking the lease; the command's masked output and the verify result
appended with the move to `rolled_back`, which also marks the card dirty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bot.core import announcements
from bot.core.drills import OperationLease
from bot.core.errors import Conflict, Forbidden, StoreUnavailable, UsageError
from bot.core.facts import Signature
from bot.core.gate import Gate
from bot.core.masking import truncate_line
from bot.core.notices import Notice
from bot.core.release import Release, State
from bot.core.results import CheckResult
from bot.services.membership import Membership
from bot.services.releases import ReleaseService
from bot.services.runner import run_one
from bot.store import keys
from bot.store.gatestore import GateStore, Write
from bot.store.outbox import Emit, Outbox, emit
from bot.store.store import AUDIT_MAXLEN, AuditEvent
from checks import command
from checks.base import CheckContext

log = logging.getLogger("gonogo.rollbacks")

RollbackStatus = Literal["started", "succeeded", "failed"]
LEASE_TTL_MS = 30_000
LEASE_RENEW_S = 10.0
REASON_LIMIT = 500
USER_ID = re.compile(r"[UW][A-Z0-9]+")


def record_location(release: Release) -> dict[str, Any]:
    """Where the release's decision record lives: its card (and the card's thread)."""
    return {"channel": release.card_channel, "ts": release.card_ts}


async def rollback_people(client: aioredis.Redis | Pipeline, release: Release) -> list[str]:
    """Who hears about a rollback: the release's signers and its opener (user ids only), once each."""
    raw = cast(dict[str, str], await client.hgetall(keys.signatures(release.id)))
    users = {Signature.model_validate_json(v).user for v in raw.values()} | {release.opened_by}
    return sorted(u for u in users if USER_ID.fullmatch(u))


@dataclass(frozen=True)
class RolledBack:
    """What a rollback announcement needs: the release after the change, who, why, how long after
    the decision, and whether this step moved the state (the first rollback step does)."""

    release: Release
    status: RollbackStatus
    reason: str
    actor: str
    at: datetime
    decided_at: datetime | None
    moved: bool
    event_id: str | None = None
    verify: CheckResult | None = None
    command: CheckResult | None = None

    @property
    def since_decision_s(self) -> float | None:
        return (self.at - self.decided_at).total_seconds() if self.decided_at else None


def rollback_audit(
    release: Release,
    *,
    status: RollbackStatus,
    reason: str,
    actor: str,
    at: datetime,
    decided_at: datetime | None,
    extra: dict[str, object] | None = None,
) -> AuditEvent:
    since = round((at - decided_at).total_seconds(), 3) if decided_at else None
    return AuditEvent(
        type=f"rollback_{status}",
        actor=actor,
        at=at,
        data={
            "reason": reason,
            "status": status,
            "from_state": release.state.value,
            "decided_at": decided_at.isoformat() if decided_at else None,
            "since_decision_s": since,
            **(extra or {}),
        },
    )


def rollback_change(release: Release) -> Release | None:
    """The new document, or None when it is rolled back already (later steps are only audited)."""
    if release.state is State.ROLLED_BACK:
        return None
    return release.model_copy(update={"state": State.ROLLED_BACK})


@dataclass(frozen=True)
class RollbackStarted:
    """A rollback holding the gate's operation lease: what "🚨 ROLLBACK started" needs."""

    release: Release
    gate: Gate
    actor: str
    reason: str
    run_command: bool
    lease: OperationLease
    decided_at: datetime | None
    announced: bool = False  # the start was announced: output and verify go into its thread
    attempt: str | None = None  # set when an earlier attempt's announcement was posted already


INTERRUPTED = "interrupted: gonogo stopped before the rollback finished; check the service, then roll back again"


class RollbackService:
    """`/gonogo rollback` without the Slack posts: authorise, lease, command, verify, state."""

    def __init__(
        self, releases: ReleaseService, membership: Membership | None, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.releases = releases
        self.gatestore = GateStore(releases.store.redis)
        self.membership = membership
        self.clock = clock or releases.clock

    async def authorise(self, gate: Gate, user: str) -> None:
        if gate.rollback is None:
            raise UsageError(f"gate {gate.id} has no rollback section")
        roles = [r for r in gate.signoffs if r.role in gate.rollback.allowed_roles]
        if self.membership is not None:
            for role in roles:
                if await self.membership.holds(role, user):
                    return
        labels = ", ".join(r.title for r in roles)
        raise Forbidden(f"only members of {labels} can roll back releases of {gate.id}")

    async def begin(
        self, release_ref: str, actor: str, reason: str, *, run_command: bool, announce: bool = False
    ) -> RollbackStarted:
        """Authorise and take the gate's operation lease (Conflict when a run or drill holds it).
        `announce`: append the announcement and the signers' heads-up in the same step."""
        release = await self.releases.resolve(release_ref)
        gate = self.releases.gates.get(release.gate_id).gate
        await self.authorise(gate, actor)
        assert gate.rollback is not None
        if release.state is State.ROLLED_BACK:
            raise Conflict(f"{release.id} is rolled back already")
        reason = truncate_line(self.releases.masker.mask(reason), REASON_LIMIT)
        if not reason:
            raise UsageError("a rollback needs a reason")
        lease = OperationLease(
            token=secrets.token_hex(16), kind="rollback", subject=release.id, actor=actor, started_at=self.clock()
        )
        says = None
        attempt = None
        if announce:
            if await Outbox(self.gatestore.redis).delivered_ts(gate.id, announcements.rollback_key(release.id)):
                # An earlier attempt died before it finished: announce this one in its own right.
                attempt = lease.token[:12]
            notices = announcements.rollback_started(
                gate.id,
                gate.channel,
                release.id,
                actor=actor,
                reason=reason,
                record=record_location(release),
                people=await rollback_people(self.gatestore.redis, release),
                at=lease.started_at,
                attempt=attempt,
            )
            says = Emit(gate.id, notices)
        holder = await self.gatestore.acquire_operation(gate.id, lease, LEASE_TTL_MS, says)
        if holder is not None:
            raise Conflict(holder.busy(gate.id))
        return RollbackStarted(
            release=release,
            gate=gate,
            actor=actor,
            reason=reason,
            run_command=run_command and gate.rollback.run is not None,
            lease=lease,
            decided_at=await self.gatestore.decided_at(release.id),
            announced=announce,
            attempt=attempt,
        )

    async def execute(self, started: RollbackStarted) -> RolledBack:
        """Run `rollback.run` (when asked), re-run `rollback.verify`, then move the release to
        `rolled_back` with one audit entry; the lease is freed whatever happens."""
        gate, release = started.gate, started.release
        assert gate.rollback is not None
        keeper = asyncio.create_task(self._keep_lease(gate.id, started.lease.token))
        try:
            ctx = CheckContext(session=self.releases.session, env=self.releases.env, clock=self.clock)
            ran: CheckResult | None = None
            try:
                if started.run_command and gate.rollback.run is not None:
                    spec = command.Spec(
                        id="rollback",
                        name=f"Rollback of {release.id}",
                        run=gate.rollback.run,
                        shell=gate.rollback.shell,
                        cwd=gate.rollback.cwd,
                        timeout=gate.rollback.timeout,
                        env=gate.rollback.env,
                        pass_env=gate.rollback.pass_env,
                    )
                    ran = await run_one(spec, ctx, self.releases.masker)
                verified: CheckResult | None = None
                check = gate.check(gate.rollback.verify) if gate.rollback.verify else None
                if check is not None:
                    verified = await run_one(check, ctx, self.releases.masker)
                    await self.releases.store.save_result(release.id, verified)
            except asyncio.CancelledError:
                # Stopped (SIGTERM's last resort) mid-way: whether the service is rolled back is
                # unknown, so the release does not move; the thread and the audit say so.
                await asyncio.shield(self._interrupted(started))
                raise
            return await self._finish(started, ran, verified)
        finally:
            keeper.cancel()
            with contextlib.suppress(StoreUnavailable):
                await self.gatestore.release_operation(gate.id, started.lease.token)

    async def _finish(
        self, started: RollbackStarted, ran: CheckResult | None, verified: CheckResult | None
    ) -> RolledBack:
        succeeded = (ran is None or ran.status.passing) and (verified is None or verified.status.passing)
        status: RollbackStatus = "succeeded" if succeeded else "failed"
        now = self.clock()
        extra: dict[str, object] = {
            "command": ran.summary if ran else None,
            "command_status": ran.status.value if ran else None,
            "verify": verified.check_id if verified else None,
            "verify_status": verified.status.value if verified else None,
        }
        notices = self._notices(started, ran, verified, now) if started.announced else []
        rid = started.release.id

        async def prepare(tx: Pipeline) -> Write[RolledBack]:
            raw = await tx.get(keys.release(rid))
            current = Release.model_validate_json(raw) if raw else started.release
            event = rollback_audit(
                current,
                status=status,
                reason=started.reason,
                actor=started.actor,
                at=now,
                decided_at=started.decided_at,
                extra=extra,
            )
            changed = rollback_change(current)

            async def write(tx: Pipeline) -> RolledBack:
                after = current
                if changed is not None:
                    after = await self.releases.store.queue_update_release(tx, current, changed, event)
                else:  # rolled back meanwhile (CI reported it): this step is only audited
                    tx.xadd(keys.audit(rid), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
                emit(tx, Emit(started.gate.id, notices, card_of=rid, at=now))
                return RolledBack(
                    release=after,
                    status=status,
                    reason=started.reason,
                    actor=started.actor,
                    at=now,
                    decided_at=started.decided_at,
                    moved=changed is not None,
                    verify=verified,
                    command=ran,
                )

            return write

        return await self.gatestore.watched_write([keys.release(rid)], prepare)

    async def _interrupted(self, started: RollbackStarted) -> None:
        """Audit (and, announced, say in its thread) that the rollback stopped before it finished."""
        now, rid = self.clock(), started.release.id
        event = AuditEvent(type="rollback_interrupted", actor=started.actor, at=now, data={"reason": started.reason})
        notices = []
        if started.announced:
            notices.append(
                announcements.rollback_output(
                    started.gate.id,
                    started.gate.channel,
                    rid,
                    passed=False,
                    summary=INTERRUPTED,
                    details="",
                    at=now,
                    attempt=started.attempt,
                )
            )
        async with self.gatestore.redis.pipeline(transaction=True) as tx:
            tx.xadd(keys.audit(rid), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
            emit(tx, Emit(started.gate.id, notices, card_of=rid, at=now))
            await tx.execute()

    @staticmethod
    def _notices(
        started: RollbackStarted, ran: CheckResult | None, verified: CheckResult | None, now: datetime
    ) -> list[Notice]:
        """In the announcement's thread: the command's masked output, then the verify result."""
        gate, rid = started.gate, started.release.id
        out: list[Notice] = []
        if ran is not None:
            out.append(
                announcements.rollback_output(
                    gate.id,
                    gate.channel,
                    rid,
                    passed=ran.status.passing,
                    summary=ran.summary,
                    details=ran.details,
                    at=now,
                    attempt=started.attempt,
                )
            )
        if verified is not None:
            after = (verified.finished_at - started.lease.started_at).total_seconds()
            out.append(
                announcements.rollback_verified(
                    gate.id,
                    gate.channel,
                    rid,
                    check=verified.check_id,
                    passed=verified.status.passing,
                    summary=verified.summary,
                    after_s=max(after, 0.0),
                    at=now,
                    attempt=started.attempt,
                )
            )
        return out

    async def _keep_lease(self, gate_id: str, token: str) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            try:
                if not await self.gatestore.renew_operation(gate_id, token, LEASE_TTL_MS):
                    log.warning("rollback lease lost", extra={"gate": gate_id})
                    return
            except StoreUnavailable:
                log.warning("cannot renew the rollback lease", extra={"gate": gate_id})
