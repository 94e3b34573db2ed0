"""`/gonogo promote <release> <stage>`: move a release up its rollout ladder (dark -> canary -> full).

A promotion is a decision about one stage. It is allowed to members of the gate's `promote_roles`
(default: its required sign-off roles), only to the next stage (any later one with `allow_skip`),
and only when that stage is GO (or GO WITH RISK, or passed by an active break-glass override, which
the announcement and the record then say). It freezes a decision record for the stage (the evidence
bundle with its `stages` section), stores the release's `current_stage` and audits it, all in one
atomic step whose preconditions are checked where it writes: the Lua script re-checks state,
current stage and order, and a WATCH on every input of the verdict makes a vote or result that
lands meanwhile start the promotion over on fresh facts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bot.core.decision import Verdict
from bot.core.errors import Conflict, Forbidden, NotFound, UsageError
from bot.core.evidence import build_bundle, stages_section
from bot.core.gate import Gate, Signoff
from bot.core.gateset import GateSet
from bot.core.notices import DECISION_RECORD
from bot.core.release import Release
from bot.core.signing_notices import promotion
from bot.core.stages import Condition, Ladder, StageVerdict
from bot.core.thread_notices import conditions_listing
from bot.services.membership import Membership
from bot.services.releases import ReleaseService
from bot.store.outbox import Emit
from bot.store.store import AuditEvent, Store

log = logging.getLogger("gonogo.promotion")

ATTEMPTS = 3  # a vote or a result landing while we decide restarts the promotion on fresh facts
MAX_LISTED = 10  # open conditions named in a refusal; the card and the thread have them all


@dataclass(frozen=True)
class Promoted:
    release: Release
    stage: StageVerdict
    override: bool  # the stage was not GO: an active break-glass override passed it
    bundle: dict[str, object]


def _condition_text(condition: Condition) -> str:
    owner = f" (owner {condition.owner})" if condition.owner else ""
    due = f", {'overdue since' if condition.overdue else 'due'} {condition.due}" if condition.due else ""
    return f"• {condition.text}{owner}{due}"


def refusal(release: Release, stage: StageVerdict) -> str:
    """Why a stage cannot be promoted to: every open condition, up to MAX_LISTED of them."""
    count = len(stage.conditions)
    lines = [
        f"{release.id} cannot be promoted to {stage.name}: it is NO-GO,"
        f" {count} condition{'' if count == 1 else 's'} open:"
    ]
    lines += [_condition_text(c) for c in stage.conditions[:MAX_LISTED]]
    if count > MAX_LISTED:
        lines.append(f"…and {count - MAX_LISTED} more (on the card and in its thread)")
    return "\n".join(lines)


class Promotion:
    def __init__(
        self,
        releases: ReleaseService,
        membership: Membership,
        *,
        store: Store,
        gates: GateSet,
        clock: Callable[[], datetime],
    ) -> None:
        self.releases = releases  # the state of a release, its card and notices
        self.membership = membership
        self.store = store
        self.gates = gates
        self.clock = clock

    def _promoters(self, gate: Gate) -> list[Signoff]:
        if gate.promote_roles:
            return [r for r in gate.signoffs if r.role in gate.promote_roles]
        return [r for r in gate.signoffs if r.required]

    async def _authorise(self, release: Release, gate: Gate, user: str, stage: str) -> None:
        promoters = self._promoters(gate)
        if not promoters:  # a gate without sign-offs: anyone in the channel may promote, as with decide
            return
        for role in promoters:
            if user in await self.membership.members(role):
                return
        await self._refused(release, user, stage, "not a member of a promoting role")
        labels = ", ".join(r.title for r in promoters)
        raise Forbidden(f"only members of {labels} can promote {release.id}")

    async def _refused(self, release: Release, user: str, stage: str, why: str) -> None:
        event = AuditEvent(type="promote_refused", actor=user, at=self.clock(), data={"stage": stage, "reason": why})
        await self.store.append_audit(release.id, event)

    async def promote(self, release_id: str, stage_id: str, user: str) -> Promoted:
        release = await self.releases.resolve(release_id)
        loaded = self.gates.get(release.gate_id)
        gate = loaded.gate
        if not gate.stages:
            raise UsageError(f"gate {gate.id} has no stages: `/gonogo decide {release.id}` decides it as a whole")
        stage = gate.stage(stage_id)
        if stage is None:
            known = ", ".join(s.id for s in gate.stages)
            raise NotFound(f"gate {gate.id} has no stage {stage_id!r} (stages: {known})")
        await self._authorise(release, gate, user, stage_id)
        if await self.store.current_run(release.id) is not None:
            raise Conflict(f"checks of {release.id} are running: promote when they finish")

        order = [s.id for s in gate.stages]
        for _ in range(ATTEMPTS):
            async with self.store.watching(release.id) as pipe:
                fresh = await self.store.get_release(release.id)
                if fresh is None:
                    raise NotFound(f"release {release.id} disappeared")
                release = fresh
                self._check_order(release, gate, stage_id)
                state = await self.releases.state(release)
                assert state.ladder is not None
                target = state.ladder.get(stage_id)
                assert target is not None
                if not target.go:
                    await self._refused(release, user, stage_id, f"{len(target.conditions)} conditions open")
                    raise Conflict(refusal(release, target))
                now = self.clock()
                override = target.verdict is Verdict.OVERRIDE
                bundle = build_bundle(
                    loaded=loaded,
                    release=release,
                    decision=target.decision,
                    results=state.results,
                    decided_by=user,
                    decided_at=now,
                    drills=state.people.drills,
                    runs=await self.store.runs(release.id, count=20),
                    stages=stages_section(
                        state.ladder, stage_id, action="promote", previous=release.current_stage, override=override
                    ),
                )
                # Stages skipped with allow_skip count as reached now: `due: 7d after <stage>` runs from here.
                passed = order[order.index(release.current_stage) + 1 if release.current_stage in order else 0 :]
                reached = {**release.stages_reached, **{s: now for s in passed[: passed.index(stage_id) + 1]}}
                moved = release.model_copy(update={"current_stage": stage_id, "stages_reached": reached})
                event = AuditEvent(
                    type="promoted",
                    actor=user,
                    at=now,
                    data={
                        "from": release.current_stage,
                        "to": stage_id,
                        "verdict": target.verdict.value,
                        "override": override,
                        "open": len(target.conditions),
                    },
                )
                promoted = moved.model_copy(update={"rev": release.rev + 1})
                listed = state.ladder.model_copy(update={"current": stage_id})
                says = self._says(promoted, gate, target, user, override, bundle, listed)
                outcome, at = await self.store.promote(
                    pipe,
                    release,
                    moved,
                    stage_order=order,
                    allow_skip=gate.allow_skip,
                    bundle_json=json.dumps(bundle, sort_keys=True),
                    event=event,
                    says=says,
                )
            if outcome == "ok":
                await self._answered(promoted, says)
                return Promoted(promoted, target, override, bundle)
            if outcome in ("changed", "stale"):
                continue  # someone voted, ran or promoted meanwhile: decide again on what is there now
            raise self._precondition(release, gate, stage_id, outcome, at)
        raise Conflict(f"{release.id} keeps changing while it is promoted: try again")

    def _check_order(self, release: Release, gate: Gate, stage_id: str) -> None:
        """The same rules the Lua script enforces, checked first for a clear answer."""
        outcome = _order_outcome(release, gate, stage_id)
        if outcome is not None:
            raise self._precondition(release, gate, stage_id, outcome, release.current_stage or "")

    def _precondition(self, release: Release, gate: Gate, stage_id: str, outcome: str, at: str) -> Exception:
        names = {s.id: s.title for s in gate.stages}
        target = names.get(stage_id, stage_id)
        where = names.get(at, at) if at else "no stage yet"
        if outcome == "state":
            return Conflict(f"{release.id} is {release.state.value}: a decided or closed release is not promoted")
        if outcome == "behind":
            return Conflict(f"{release.id} is already at {where}: {target} is not ahead of it")
        if outcome == "skip":
            order = [s.id for s in gate.stages]
            step = order[order.index(at) + 1] if at in order else order[0]
            return Conflict(
                f"stages go in order: {release.id} is at {where}, promote it to {names[step]} first"
                " (or set `allow_skip: true` in the gate)"
            )
        return Conflict(f"{release.id} could not be promoted ({outcome}): try again")

    def _says(
        self,
        release: Release,
        gate: Gate,
        stage: StageVerdict,
        user: str,
        override: bool,
        bundle: dict[str, object],
        ladder: Ladder,
    ) -> Emit:
        """What the promotion says, written with it: the channel hears it, the card moves, the
        stage's record goes to the card's thread, and so does the list of every open condition when
        the card cannot show them all. Keyed by the promotion (the release revision it writes): a
        repeat posts nothing twice."""
        now = self.clock()
        announce = promotion(
            release.gate_id,
            release.id,
            gate.channel,
            stage=stage.name,
            rev=release.rev,
            actor=user,
            override=override,
            opened=len(stage.conditions),
            at=now,
        )
        record = self.releases.notice(
            release,
            DECISION_RECORD,
            ["promotion", stage.name, str(release.rev), "record"],
            {"bundle": bundle},
            self.releases.card_thread(release),
        )
        thread = self.releases.card_thread(release)
        listing = conditions_listing(gate, release.id, thread, ladder, f"promotion|{release.rev}", now)
        return Emit(release.gate_id, notices=[announce, record, *listing], card_of=release.id, at=now)

    async def _answered(self, release: Release, says: Emit) -> None:
        """The promoter is answered once the channel heard it and the card shows it (briefly)."""
        await self.releases.posted(release.gate_id, says.notices)
        await self.releases.card_caught_up(release)


def _order_outcome(release: Release, gate: Gate, stage_id: str) -> str | None:
    """None when `stage_id` may come next; else why not, as the Lua script would say it."""
    if release.state.value != "open":
        return "state"
    order = [s.id for s in gate.stages]
    at = order.index(release.current_stage) + 1 if release.current_stage in order else 0
    want = order.index(stage_id) + 1
    if want <= at:
        return "behind"
    if want > at + 1 and not gate.allow_skip:
        return "skip"
    return None
