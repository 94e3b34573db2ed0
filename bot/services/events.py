"""Webhook events from CI and deploy tooling: validated, masked, stored and applied once.

`accept` runs one optimistic transaction per event (`GateStore.accept_event`): under WATCH it
reads what the event's preconditions need and refuses it (NotFound / UsageError / Conflict, nothing
written) or queues its effects; EXEC then marks the id seen, appends the masked event to the gate's
stream and applies the effects together. A replayed id is a no-op. The facts returned are what an
announcement needs; the Slack wiring appends its notices to the same transaction.

Effects:
- `open`: opens the release (the same store write as `/gonogo open`); re-sending it with a new sha
  moves an open release's commit.
- `deploy`: audited; a new `sha` moves the open release's commit (its sign-offs go stale by the
  commit rule). A decided or closed release is frozen: a deploy of another commit is refused (409).
- `check_result`: the result of an `external` check, bound to the release's commit.
- `drill`: a drill run recorded for the gate, as if run from Slack.
- `rollback`: the release becomes `rolled_back` (first step), every step audited with the time
  from the decision.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from redis.asyncio.client import Pipeline

from bot.core import announcements
from bot.core.decision import Decision
from bot.core.drills import DrillRun
from bot.core.errors import Conflict, NotFound, UsageError
from bot.core.events import CheckResultEvent, DeployEvent, DrillEvent, Event, OpenEvent, RollbackEvent
from bot.core.gate import Drill, Gate, Stage
from bot.core.gateset import GateSet
from bot.core.masking import Masker
from bot.core.notices import Notice
from bot.core.release import Release, State, release_id
from bot.core.stages import Ladder, StageVerdict
from bot.services.drills import drill_audit, find_drill
from bot.services.rollbacks import RolledBack, record_location, rollback_audit, rollback_change, rollback_people
from bot.store import keys
from bot.store.gatestore import Accepted, GateStore, Write
from bot.store.outbox import Emit, emit
from bot.store.store import AUDIT_MAXLEN, AuditEvent, Store
from checks import external
from checks.base import seconds

CI_ACTOR = "ci"  # events without an actor field (open, deploy, check_result)


def utcnow() -> datetime:
    return datetime.now(UTC)


FULLY_DEPLOYED = "deployed-full"  # schedule fact: when a deploy first reached 100% (ISO time)


def reaches_full(gate: Gate, stage: str) -> bool:
    """Whether a deploy stage means the whole fleet: "100%", or the gate's last rollout stage."""
    said = stage.strip().casefold()
    if said in ("100%", "100 %", "full", "full rollout", "production"):
        return True
    last = gate.stages[-1] if gate.stages else None
    return last is not None and said in (last.id.casefold(), last.title.casefold())


def deployed_stage(gate: Gate, said: str) -> Stage | None:
    """The gate's rollout stage a deploy event names: its id or name ("canary"), the id as the first
    word ("canary 1%"), or the last stage for "100%". None for a gate without stages."""
    if not gate.stages:
        return None
    text = said.strip().casefold()
    first = text.split()[0] if text.split() else ""
    for stage in gate.stages:
        if text in (stage.id.casefold(), stage.title.casefold()) or first == stage.id.casefold():
            return stage
    return gate.stages[-1] if reaches_full(gate, said) else None


class Evaluated(Protocol):
    @property
    def decision(self) -> Decision: ...

    @property
    def ladder(self) -> Ladder | None: ...


Evaluate = Callable[[Release], Awaitable[Evaluated]]


def mark_fully_deployed(tx: Pipeline, release_id: str, at: datetime) -> None:
    tx.hsetnx(keys.schedule(release_id), FULLY_DEPLOYED, at.astimezone(UTC).isoformat())


@dataclass(frozen=True)
class ReleaseOpened:
    release: Release
    opened: bool  # False: it was open already (then `moved_from` says whether its commit moved)
    moved_from: str | None = None


@dataclass(frozen=True)
class DeployRecorded:
    release: Release
    stage: str
    status: str
    moved_from: str | None  # the previous commit, when this deploy moved the release
    moved: bool


@dataclass(frozen=True)
class ExternalRecorded:
    release: Release
    result: external.ExternalResult


@dataclass(frozen=True)
class DrillRecorded:
    gate: Gate
    drill: Drill
    run: DrillRun


EventFacts = ReleaseOpened | DeployRecorded | ExternalRecorded | DrillRecorded | RolledBack


class EventService:
    def __init__(
        self,
        *,
        store: Store,
        gates: GateSet,
        env: Mapping[str, str],
        clock: Callable[[], datetime] = utcnow,
        evaluate: Evaluate | None = None,
    ) -> None:
        """`evaluate`: the release service's view of a release (its rollout ladder), so a deploy to
        a stage that is not GO is flagged; without it deploys are not checked against stages."""
        self.store = store
        self.evaluate = evaluate
        self.gatestore = GateStore(store.redis)
        self.gates = gates
        self.masker = Masker.from_env(env)
        self.clock = clock

    async def accept(self, event: Event) -> Accepted[EventFacts]:
        """Apply the event once. Raises NotFound / UsageError / Conflict (nothing written) when it
        cannot apply; StoreUnavailable when Redis is gone."""
        gate = self.gates.get(event.gate_id).gate  # NotFound for an unknown gate
        event = event.masked(self.masker)
        now = self.clock()
        body = event.model_dump(mode="json")
        return await self.gatestore.accept_event(
            gate.id, event.id, event.type, body, now, lambda tx: self._prepare(tx, gate, event, now)
        )

    async def _prepare(self, tx: Pipeline, gate: Gate, event: Event, now: datetime) -> Write[EventFacts]:
        if isinstance(event, OpenEvent):
            return await self._open(tx, gate, event, now)
        if isinstance(event, DrillEvent):
            return await self._drill(tx, gate, event, now)
        release = await self._release(tx, event.release)
        if isinstance(event, DeployEvent):
            return await self._deploy(tx, gate, release, event, now)
        if isinstance(event, CheckResultEvent):
            return self._check_result(gate, release, event, now)
        return await self._rollback(tx, gate, release, event, now)

    async def _release(self, tx: Pipeline, rid: str) -> Release:
        await tx.watch(keys.release(rid))
        raw = await tx.get(keys.release(rid))
        if raw is None:
            raise NotFound(f"no release {rid!r}")
        return Release.model_validate_json(raw)

    # --- open -------------------------------------------------------------------------------

    async def _open(self, tx: Pipeline, gate: Gate, event: OpenEvent, now: datetime) -> Write[EventFacts]:
        rid = release_id(gate.id, event.version)
        await tx.watch(keys.open_release(gate.id), keys.release(rid))
        pointer = cast(str | None, await tx.get(keys.open_release(gate.id)))
        raw = await tx.get(keys.release(rid))
        if pointer is not None and pointer != rid:
            raise Conflict(f"{pointer} is still open: close it before opening {rid}")
        if raw is None:
            fresh = Release(
                id=rid,
                gate_id=gate.id,
                version=event.version,
                sha=event.sha,
                opened_by=CI_ACTOR,
                opened_at=event.at or now,
                target_at=event.target.astimezone(UTC) if event.target else None,
            )
            audit = AuditEvent(
                type="opened",
                actor=CI_ACTOR,
                at=now,
                data={"sha": event.sha, "gate_sha256": self.gates.get(gate.id).sha256, "event_id": event.id},
            )

            async def write_open(tx: Pipeline) -> EventFacts:
                await self.store.queue_open_release(tx, fresh, audit)
                emit(tx, Emit(gate.id, card_of=rid, at=now))  # the refresher posts the new card
                return ReleaseOpened(release=fresh, opened=True)

            return write_open
        existing = Release.model_validate_json(raw)
        if pointer is None:
            raise Conflict(f"{rid} is {existing.state.value}; reopen it with `/gonogo reopen {rid}`")
        target = event.target.astimezone(UTC) if event.target else None
        retarget = None
        if target is not None and target != existing.target_at:
            # The same question as `/gonogo open … --at` on an open release (Lifecycle.set_target).
            data = {"from": existing.target_at.isoformat() if existing.target_at else None, "to": target.isoformat()}
            retarget = AuditEvent(type="target_set", actor=CI_ACTOR, at=now, data={**data, "event_id": event.id})
        if event.sha is None or event.sha == existing.sha:
            if retarget is None:

                async def unchanged(tx: Pipeline) -> EventFacts:
                    return ReleaseOpened(release=existing, opened=False)

                return unchanged
            audit = retarget

            async def write_target(tx: Pipeline) -> EventFacts:
                after = await self.store.queue_update_release(
                    tx, existing, existing.model_copy(update={"target_at": target}), audit
                )
                emit(tx, Emit(gate.id, card_of=rid, at=now))
                return ReleaseOpened(release=after, opened=False)

            return write_target
        return await self._move(
            tx,
            existing,
            event.sha,
            event.id,
            now,
            lambda r, moved_from: ReleaseOpened(r, False, moved_from),
            extra=retarget,
            changes={"target_at": target} if retarget else None,
        )

    async def _move(
        self,
        tx: Pipeline,
        release: Release,
        sha: str,
        event_id: str,
        now: datetime,
        facts: Callable[[Release, str | None], EventFacts],
        extra: AuditEvent | None = None,
        notices: Sequence[Notice] = (),
        changes: Mapping[str, Any] | None = None,
    ) -> Write[EventFacts]:
        """Move the release to another commit: only while it is open (a decision is frozen)."""
        if release.state is not State.OPEN:
            at = f" (decided at {release.short_sha})" if release.short_sha else ""
            raise Conflict(
                f"{release.id} is {release.state.value}{at}: it cannot move to {sha[:12]}; "
                f"reopen it first (`/gonogo reopen {release.id}`)"
            )
        audit = AuditEvent(
            type="sha_moved", actor=CI_ACTOR, at=now, data={"from": release.sha, "to": sha, "event_id": event_id}
        )
        after = release.model_copy(update={**(changes or {}), "sha": sha})
        stale = await self._stale_signers(tx, after)
        if stale:
            signers = [{k: v for k, v in s.items() if k != "token"} for s in stale]
            notices = [
                *notices,
                announcements.signoff_stale(release.gate_id, release.id, sha=sha, signers=signers, at=now),
            ]

        async def write_move(tx: Pipeline) -> EventFacts:
            moved = await self.store.queue_update_release(tx, release, after, audit)
            for signer in stale:
                # The release service's ask_stale_signers notes the same tokens: asked once, by either.
                tx.sadd(keys.stale_notified(release.id), signer["token"])
                data = {k: signer[k] for k in ("role", "label", "user", "reason")}
                self._audit(tx, release.id, AuditEvent(type="signoff_stale", actor="gonogo", at=now, data=data))
            if extra is not None:
                self._audit(tx, release.id, extra)
                if extra.data.get("full"):
                    mark_fully_deployed(tx, release.id, now)
            emit(tx, Emit(release.gate_id, notices, card_of=release.id, at=now))
            return facts(moved, release.sha)

        return write_move

    async def _stale_signers(self, tx: Pipeline, moved: Release) -> list[dict[str, str]]:
        """The sign-offs that go stale once the release is at its new commit, not asked about yet:
        the same question the release service asks after a move (ask_stale_signers)."""
        if self.evaluate is None:
            return []
        await tx.watch(keys.stale_notified(moved.id))
        asked = {str(t) for t in await tx.smembers(keys.stale_notified(moved.id))}
        decision = (await self.evaluate(moved)).decision
        found = []
        for role in decision.roles:
            for stale in role.stale:
                sig = stale.signature
                token = f"{sig.role}|{sig.user}|{sig.at.isoformat()}"
                if token not in asked:
                    found.append(
                        {
                            "token": token,
                            "role": sig.role,
                            "label": role.label,
                            "user": sig.user,
                            "vote": sig.vote.value,
                            "reason": stale.reason,
                        }
                    )
        return found

    @staticmethod
    async def _audited(tx: Pipeline, rid: str, type_: str) -> list[dict[str, Any]]:
        """The data of the release's audit entries of one type, oldest first."""
        entries = cast(list[tuple[str, dict[str, str]]], await tx.xrange(keys.audit(rid)))
        return [json.loads(f.get("data", "{}")) for _, f in entries if f.get("type") == type_]

    @staticmethod
    async def people(tx: Pipeline, release: Release) -> list[str]:
        """Who hears about a rollback: the release's signers and its opener (user ids only)."""
        return await rollback_people(tx, release)

    @staticmethod
    def _audit(tx: Pipeline, rid: str, event: AuditEvent) -> None:
        tx.xadd(keys.audit(rid), event.fields(), maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]

    # --- deploy -----------------------------------------------------------------------------

    async def _deploy(
        self, tx: Pipeline, gate: Gate, release: Release, event: DeployEvent, now: datetime
    ) -> Write[EventFacts]:
        # One progress message per release: the stages so far come from the release's audit.
        await tx.watch(keys.audit(release.id))
        earlier = [
            {"stage": str(d.get("stage", "")), "status": str(d.get("status", ""))}
            for d in await self._audited(tx, release.id, "deploy")
        ]
        progress = announcements.deploy_progress(
            gate.id,
            gate.channel,
            release.id,
            event_id=event.id,
            stages=[*earlier, {"stage": event.stage, "status": event.status}],
            sha=event.sha or release.sha,
            first=not earlier,
            at=now,
        )
        # Reaching 100% starts the post-deploy window (bot/services/scheduler.py postdeploy_tick):
        # the first such instant is kept, so a replayed or repeated report does not restart it.
        fully_deployed = event.status == "succeeded" and reaches_full(gate, event.stage)
        audit = AuditEvent(
            type="deploy",
            actor=CI_ACTOR,
            at=now,
            data={
                "stage": event.stage,
                "status": event.status,
                "sha": event.sha,
                "event_id": event.id,
                **({"full": True} if fully_deployed else {}),
            },
        )
        sha = event.sha or release.sha
        flagged = await self._flag(gate, release, event, sha)
        notices: list[Notice] = [progress]
        changes: dict[str, Any] = {}
        if flagged is not None:
            stage, verdict = flagged
            conditions = [c.text for c in verdict.conditions]
            notices.append(
                announcements.deploy_flagged(
                    gate.id,
                    gate.channel,
                    release.id,
                    event_id=f"{stage.id}@{sha or ''}",  # once per stage and commit, not per event
                    stage=stage.title,
                    conditions=conditions,
                    at=now,
                )
            )
            changes["deploy_flag"] = {
                "stage": stage.title,
                "stage_id": stage.id,
                "sha": sha,
                "open": len(conditions),
                "at": now.isoformat(),
            }
        if event.sha is not None and event.sha != release.sha:
            return await self._move(
                tx,
                release,
                event.sha,
                event.id,
                now,
                lambda r, moved_from: DeployRecorded(r, event.stage, event.status, moved_from, True),
                extra=audit,
                notices=notices,
                changes=changes,
            )

        async def write_deploy(tx: Pipeline) -> EventFacts:
            after = release
            if changes:
                after = await self.store.queue_update_release(tx, release, release.model_copy(update=changes), audit)
            else:
                self._audit(tx, release.id, audit)
            if fully_deployed:
                mark_fully_deployed(tx, release.id, now)
            emit(tx, Emit(gate.id, notices, card_of=release.id if changes else None, at=now))
            return DeployRecorded(after, event.stage, event.status, None, False)

        return write_deploy

    async def _flag(
        self, gate: Gate, release: Release, event: DeployEvent, sha: str | None
    ) -> tuple[Stage, StageVerdict] | None:
        """The stage this deploy went to and its verdict, when that stage is not GO. Evaluated on
        the commit deployed (a new `sha` leaves the old commit's evidence behind), while the release
        doc is WATCHed: a change to the release retries the MULTI; a sign-off or result stored
        between this read and the MULTI (their own keys, not watched) is not seen by this flag."""
        stage = deployed_stage(gate, event.stage)
        if stage is None or self.evaluate is None or event.status == "failed":
            return None
        said = release.deploy_flag or {}
        if said.get("stage_id") == stage.id and said.get("sha") == sha:
            return None  # flagged already (the started, then the succeeded report of one deploy)
        ladder = (await self.evaluate(release.model_copy(update={"sha": sha}))).ladder
        verdict = ladder.get(stage.id) if ladder is not None else None
        if verdict is None or verdict.go:
            return None
        return stage, verdict

    # --- check_result -----------------------------------------------------------------------

    def _check_result(self, gate: Gate, release: Release, event: CheckResultEvent, now: datetime) -> Write[EventFacts]:
        spec = gate.check(event.check)
        if spec is None:
            known = ", ".join(c.id for c in gate.checks if c.kind == "external") or "none"
            raise UsageError(f"gate {gate.id} has no check {event.check!r} (external checks: {known})")
        if not isinstance(spec, external.Spec):
            raise UsageError(f"check {event.check!r} is a {spec.kind} check: only external checks take results from CI")
        if release.state is not State.OPEN:
            raise Conflict(f"{release.id} is {release.state.value}: its results are frozen")
        if event.sha is not None and event.sha != release.sha:
            raise Conflict(
                f"result reported for {event.sha[:12]}, but {release.id} is at {(release.sha or 'no commit')[:12]}"
            )
        result = external.ExternalResult(
            check_id=spec.id,
            status=event.status,
            summary=event.summary,
            details=event.details or "",
            started_at=now,
            finished_at=now,
            sha=release.sha,
            event_id=event.id,
            reported_by=CI_ACTOR,
        )
        audit = AuditEvent(
            type="check_reported",
            actor=CI_ACTOR,
            at=now,
            data={
                "check": spec.id,
                "status": result.status.value,
                "summary": result.summary,
                "sha": release.sha,
                "event_id": event.id,
            },
        )

        async def write_result(tx: Pipeline) -> EventFacts:
            tx.hset(keys.external_results(release.id), spec.id, result.model_dump_json())
            self._audit(tx, release.id, audit)
            emit(tx, Emit(gate.id, card_of=release.id, at=now))
            return ExternalRecorded(release, result)

        return write_result

    # --- drill ------------------------------------------------------------------------------

    async def _drill(self, tx: Pipeline, gate: Gate, event: DrillEvent, now: datetime) -> Write[EventFacts]:
        drill = find_drill(gate, event.drill)
        took = event.duration
        passed = event.status == "passed"
        run = DrillRun(
            gate_id=gate.id,
            drill_id=drill.id,
            run_id=event.id[:12],
            passed=passed,
            summary=f"{'passed' if passed else 'failed'} in {seconds(took)} (reported by CI)",
            details=event.output or "",
            started_at=now - took if took < timedelta(days=1) else now,
            finished_at=now,
            duration_s=round(took.total_seconds(), 3),
            by=event.actor,
            source="webhook",
            event_id=event.id,
        )

        notices = announcements.drill_reported(
            gate.id,
            gate.channel,
            run.run_id,
            drill_id=drill.id,
            title=drill.title,
            actor=event.actor,
            passed=passed,
            duration_s=run.duration_s,
            summary=run.summary,
            details=run.details,
            at=now,
        )
        # The open release's card shows the gate's drills: it must show this one.
        await tx.watch(keys.open_release(gate.id))
        open_id = cast(str | None, await tx.get(keys.open_release(gate.id)))

        async def write_drill(tx: Pipeline) -> EventFacts:
            self.gatestore.queue_drill_run(tx, run, drill_audit(run))
            emit(tx, Emit(gate.id, notices, card_of=open_id, at=now))
            return DrillRecorded(gate, drill, run)

        return write_drill

    # --- rollback ---------------------------------------------------------------------------

    async def _rollback(
        self, tx: Pipeline, gate: Gate, release: Release, event: RollbackEvent, now: datetime
    ) -> Write[EventFacts]:
        decided = await self.gatestore.decided_at(release.id)
        audit = rollback_audit(
            release,
            status=event.status,
            reason=event.reason,
            actor=event.actor,
            at=now,
            decided_at=decided,
            extra={"event_id": event.id},
        )
        changed = rollback_change(release)
        notices: list[Notice]
        if changed is not None:
            notices = announcements.rollback_started(
                gate.id,
                gate.channel,
                release.id,
                actor=event.actor,
                reason=event.reason,
                record=record_location(release),
                people=await self.people(tx, release),
                at=now,
            )
        else:
            notices = [
                announcements.rollback_step(
                    gate.id,
                    gate.channel,
                    release.id,
                    step_id=event.id,
                    status=event.status,
                    actor=event.actor,
                    reason=event.reason,
                    at=now,
                )
            ]

        async def write_rollback(tx: Pipeline) -> EventFacts:
            after = release
            if changed is not None:
                after = await self.store.queue_update_release(tx, release, changed, audit)
            else:
                self._audit(tx, release.id, audit)
            emit(tx, Emit(gate.id, notices, card_of=release.id, at=now))
            return RolledBack(
                release=after,
                status=event.status,
                reason=event.reason,
                actor=event.actor,
                at=now,
                decided_at=decided,
                moved=changed is not None,
                event_id=event.id,
            )

        return write_rollback
