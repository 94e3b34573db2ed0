"""Rollbacks: a release becomes `rolled_back`, audited with the time from its decision.

Two roads lead here: CI reporting a rollback over the webhook (`EventService`, no command run)
and, with the Slack wiring, `/gonogo rollback` (`RollbackService`: the gate's `rollback.run`
through the command-check engine under the gate's operation lease, then the `rollback.verify`
check re-run). Both end in the same state move, built by `rollback_change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.core.drills import OperationLease
from bot.core.errors import Conflict, Forbidden, StoreUnavailable, UsageError
from bot.core.gate import Gate
from bot.core.masking import truncate_line
from bot.core.release import Release, State
from bot.core.results import CheckResult
from bot.services.membership import Membership
from bot.services.releases import ReleaseService
from bot.services.runner import run_one
from bot.store.gatestore import GateStore
from bot.store.store import AuditEvent
from checks import command
from checks.base import CheckContext

log = logging.getLogger("gonogo.rollbacks")

RollbackStatus = Literal["started", "succeeded", "failed"]
LEASE_TTL_MS = 30_000
LEASE_RENEW_S = 10.0
REASON_LIMIT = 500


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

    async def begin(self, release_ref: str, actor: str, reason: str, *, run_command: bool) -> RollbackStarted:
        """Authorise and take the gate's operation lease (Conflict when a run or drill holds it)."""
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
        holder = await self.gatestore.acquire_operation(gate.id, lease, LEASE_TTL_MS)
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
        current = await self.releases.store.get_release(started.release.id) or started.release
        event = rollback_audit(
            current,
            status=status,
            reason=started.reason,
            actor=started.actor,
            at=now,
            decided_at=started.decided_at,
            extra=extra,
        )
        moved = rollback_change(current) is not None
        if moved:
            current = await self.releases.update_release(current, lambda r: rollback_change(r) or r, event)
        else:
            await self.releases.store.append_audit(current.id, event)
        return RolledBack(
            release=current,
            status=status,
            reason=started.reason,
            actor=started.actor,
            at=now,
            decided_at=started.decided_at,
            moved=moved,
            verify=verified,
            command=ran,
        )

    async def _keep_lease(self, gate_id: str, token: str) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            try:
                if not await self.gatestore.renew_operation(gate_id, token, LEASE_TTL_MS):
                    log.warning("rollback lease lost", extra={"gate": gate_id})
                    return
            except StoreUnavailable:
                log.warning("cannot renew the rollback lease", extra={"gate": gate_id})
