"""Fire drills: run a gate's drill through the command-check engine and record it for the gate.

The engine is the `command` check's (argv unless `shell: true`, the drill's timeout, the bot's
secrets withheld from the child, its process group killed on timeout) run by the runner (crashes
become results, output masked and cut to Slack size). A drill's runs belong to the gate: every
release of the gate decides on the latest one. One drill of a gate runs at a time, and never
during a run of checks or a rollback of that gate: they share the gate's operation lease.

`begin` takes the lease and returns what a "drill started" announcement needs; `finish` runs the
command, records the run (history + latest + gate audit in one MULTI) and frees the lease; `run`
does both (the CLI). Slack's `/gonogo drill` calls `begin` (which, `announce`d, appends "🔥 Fire
drill started" to the gate's outbox in the same step as taking the lease) and then `finish` in the
background (which appends the result, an update of that message, and the output tail in its thread,
and marks the open release's card dirty, in the same MULTI as recording the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import aiohttp
from redis.asyncio.client import Pipeline

from bot.core import announcements
from bot.core.drills import DrillRun, OperationLease, Source
from bot.core.errors import Conflict, Forbidden, StoreUnavailable, UsageError
from bot.core.gate import Drill, Gate
from bot.core.masking import Masker
from bot.core.results import Status
from bot.services.membership import Membership
from bot.services.runner import run_one
from bot.store import keys
from bot.store.gatestore import GateStore, Write
from bot.store.outbox import Emit, emit
from bot.store.store import AuditEvent
from checks import command
from checks.base import CheckContext

log = logging.getLogger("gonogo.drills")

LEASE_TTL_MS = 30_000
LEASE_RENEW_S = 10.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def drill_check(drill: Drill) -> command.Spec:
    """The drill as a `command` check, so it runs through exactly that engine."""
    return command.Spec(
        id=drill.id,
        name=drill.title,
        run=drill.run,
        shell=drill.shell,
        cwd=drill.cwd,
        timeout=drill.timeout,
        env=drill.env,
        pass_env=drill.pass_env,
    )


def find_drill(gate: Gate, drill_id: str) -> Drill:
    drill = gate.drill(drill_id)
    if drill is None:
        known = ", ".join(d.id for d in gate.drills) or "none defined"
        raise UsageError(f"gate {gate.id} has no drill {drill_id!r} (drills: {known})")
    return drill


async def run_drill(
    gate: Gate, drill: Drill, ctx: CheckContext, masker: Masker, *, actor: str, source: Source, run_id: str
) -> DrillRun:
    """Run the drill's command once (no Redis): passed means exit 0 within the timeout."""
    outcome = await run_one(drill_check(drill), ctx, masker)
    return DrillRun(
        gate_id=gate.id,
        drill_id=drill.id,
        run_id=run_id,
        passed=outcome.status is Status.PASS,
        summary=outcome.summary,
        details=outcome.details,
        started_at=outcome.started_at,
        finished_at=outcome.finished_at,
        duration_s=round(outcome.duration_s, 3),
        by=actor,
        source=source,
    )


INTERRUPTED = "interrupted: gonogo stopped before the drill finished; run it again"


def interrupted_run(started: DrillStarted, began: datetime, now: datetime) -> DrillRun:
    """A drill the bot stopped mid-way: not a pass (its outcome is unknown)."""
    return DrillRun(
        gate_id=started.gate.id,
        drill_id=started.drill.id,
        run_id=started.run_id,
        passed=False,
        summary=INTERRUPTED,
        started_at=began,
        finished_at=now,
        duration_s=round(max((now - began).total_seconds(), 0.0), 3),
        by=started.actor,
        source=started.source,
    )


def drill_audit(run: DrillRun) -> AuditEvent:
    return AuditEvent(
        type="drill",
        actor=run.by or "?",
        at=run.finished_at,
        data={
            "drill": run.drill_id,
            "passed": run.passed,
            "summary": run.summary,
            "duration_s": run.duration_s,
            "run_id": run.run_id,
            "source": run.source,
            "event_id": run.event_id,
        },
    )


@dataclass(frozen=True)
class DrillStarted:
    """A drill holding its gate's lease, about to run: what "🔥 Fire drill started" needs."""

    gate: Gate
    drill: Drill
    actor: str
    source: Source
    lease: OperationLease
    announced: bool = False  # the start was announced: the result updates that message

    @property
    def run_id(self) -> str:
        return self.lease.token[:12]


class DrillService:
    def __init__(
        self,
        *,
        store: GateStore,
        session: aiohttp.ClientSession,
        env: Mapping[str, str],
        clock: Callable[[], datetime] = utcnow,
        base_dir: Path | None = None,
        membership: Membership | None = None,
    ) -> None:
        self.store = store
        self.session = session
        self.env = dict(env)
        self.masker = Masker.from_env(self.env)
        self.clock = clock
        self.base_dir = base_dir or Path.cwd()
        self.membership = membership

    async def authorise(self, gate: Gate, drill: Drill, user: str) -> None:
        """From Slack: members of `drills[].allowed_roles`, else of any role of the gate (a gate
        without roles lets anyone run its drills)."""
        roles = [r for r in gate.signoffs if r.role in drill.allowed_roles] if drill.allowed_roles else gate.signoffs
        if not roles:
            return
        if self.membership is None:
            raise Forbidden("cannot check roles here")
        for role in roles:
            if await self.membership.holds(role, user):
                return
        labels = ", ".join(r.title for r in roles)
        raise Forbidden(f"only members of {labels} can run the drill {drill.title} of {gate.id}")

    async def begin(
        self, gate: Gate, drill_id: str, actor: str, *, source: Source = "slack", announce: bool = False
    ) -> DrillStarted:
        """Take the gate's operation lease for this drill; Conflict when a run, drill or rollback
        of the gate holds it. `announce`: append "🔥 Fire drill started" in the same step."""
        drill = find_drill(gate, drill_id)
        lease = OperationLease(
            token=secrets.token_hex(16), kind="drill", subject=drill.id, actor=actor, started_at=self.clock()
        )
        started = DrillStarted(gate=gate, drill=drill, actor=actor, source=source, lease=lease, announced=announce)
        says = None
        if announce:
            notice = announcements.drill_started(
                gate.id,
                gate.channel,
                started.run_id,
                drill_id=drill.id,
                title=drill.title,
                actor=actor,
                at=lease.started_at,
            )
            says = Emit(gate.id, [notice])
        holder = await self.store.acquire_operation(gate.id, lease, LEASE_TTL_MS, says)
        if holder is not None:
            raise Conflict(holder.busy(gate.id))
        return started

    async def finish(self, started: DrillStarted) -> DrillRun:
        """Run the drill, record it for the gate, free the lease (whatever happens)."""
        gate_id, token = started.gate.id, started.lease.token
        keeper = asyncio.create_task(self._keep_lease(gate_id, token))
        try:
            ctx = CheckContext(session=self.session, base_dir=self.base_dir, env=self.env, clock=self.clock)
            began = self.clock()
            try:
                run = await run_drill(
                    started.gate,
                    started.drill,
                    ctx,
                    self.masker,
                    actor=started.actor,
                    source=started.source,
                    run_id=started.run_id,
                )
            except asyncio.CancelledError:
                # Stopped (SIGTERM's last resort): the command's process group is killed on the way
                # out; record that it did not finish, so "🔥 started" does not stay forever and no
                # earlier pass is mistaken for this run's outcome. Shielded: we are being cancelled.
                await asyncio.shield(self._record(started, interrupted_run(started, began, self.clock())))
                raise
            await self._record(started, run)
            log.info(
                "drill finished",
                extra={"gate": gate_id, "drill": run.drill_id, "passed": run.passed, "duration_s": run.duration_s},
            )
            return run
        finally:
            keeper.cancel()
            with contextlib.suppress(StoreUnavailable):
                await self.store.release_operation(gate_id, token)

    async def _record(self, started: DrillStarted, run: DrillRun) -> None:
        if started.announced:
            await self.store.watched_write([keys.open_release(started.gate.id)], self._announced(started, run))
        else:
            await self.store.record_drill_run(run, drill_audit(run))

    def _announced(self, started: DrillStarted, run: DrillRun) -> Callable[[Pipeline], Awaitable[Write[None]]]:
        """Record the run, say its result (an update of the start message, the output in its
        thread) and mark the open release's card dirty (it shows the gate's drills): one MULTI."""
        gate = started.gate
        notices = announcements.drill_finished(
            gate.id,
            gate.channel,
            started.run_id,
            title=started.drill.title,
            actor=started.actor,
            passed=run.passed,
            duration_s=run.duration_s,
            summary=run.summary,
            details=run.details,
            at=run.finished_at,
        )

        async def prepare(tx: Pipeline) -> Write[None]:
            open_id = cast(str | None, await tx.get(keys.open_release(gate.id)))

            async def write(tx: Pipeline) -> None:
                self.store.queue_drill_run(tx, run, drill_audit(run))
                emit(tx, Emit(gate.id, notices, card_of=open_id or None, at=run.finished_at))

            return write

        return prepare

    async def run(self, gate: Gate, drill_id: str, actor: str, *, source: Source = "cli") -> DrillRun:
        return await self.finish(await self.begin(gate, drill_id, actor, source=source))

    async def history(self, gate_id: str, drill_id: str, count: int = 50) -> list[DrillRun]:
        return await self.store.drill_runs(gate_id, drill_id, count)

    async def _keep_lease(self, gate_id: str, token: str) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            try:
                if not await self.store.renew_operation(gate_id, token, LEASE_TTL_MS):
                    log.warning("drill lease lost", extra={"gate": gate_id})
                    return
            except StoreUnavailable:
                log.warning("cannot renew the drill lease", extra={"gate": gate_id})
