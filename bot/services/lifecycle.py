"""A release's life after its checks: decide (freeze the verdict and keep the evidence), close,
reopen, upload the evidence, show the history. Every step is audited."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from bot.core.decision import Decision
from bot.core.errors import Conflict, Forbidden
from bot.core.evidence import build_bundle, stages_section
from bot.core.evidence_markdown import render_markdown
from bot.core.gateset import GateSet
from bot.core.mentions import mention
from bot.core.notices import DECISION_RECORD, Notice, Target
from bot.core.release import Release, State, check_sha
from bot.core.signing_notices import file_upload
from bot.services.membership import Membership
from bot.services.releases import ReleaseService, ReleaseState
from bot.store.outbox import Emit
from bot.store.store import AuditEntry, AuditEvent, Store

log = logging.getLogger("gonogo.lifecycle")

Opened = Literal["opened", "moved", "retargeted", "unchanged"]


@dataclass(frozen=True)
class Decided:
    release: Release
    bundle: dict[str, object]


class Lifecycle:
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

    async def _member_of_a_required_role(self, release: Release, user: str, action: str) -> None:
        gate = self.gates.get(release.gate_id).gate
        required = [r for r in gate.signoffs if r.required]
        for role in required:
            if user in await self.membership.members(role):
                return
        if not required:  # a gate without sign-offs: anyone in the channel may decide
            return
        labels = ", ".join(r.title for r in required)
        await self.store.append_audit(
            release.id,
            AuditEvent(type="signoff_refused", actor=user, at=self.clock(), data={"action": action}),
        )
        raise Forbidden(f"only members of a required role ({labels}) can {action} {release.id}")

    async def decide(self, release_id: str, user: str) -> Decided:
        """Freeze the verdict: the record goes to the gate's channel, the bundle into Redis.

        One transaction (WATCH/MULTI) checks that the release is open and no run is under way,
        and writes the decided release, the bundle and the audit entry computed from exactly the
        facts it watched: of two concurrent decides one wins, the other is refused."""
        release = await self.releases.resolve(release_id)
        if release.state is not State.OPEN:
            raise release.refusal()
        await self._member_of_a_required_role(release, user, "decide")
        bundle: dict[str, object] = {}

        async def build(current: Release, running: bool) -> tuple[Release, str, AuditEvent]:
            nonlocal bundle
            if current.state is not State.OPEN:
                raise current.refusal()
            if running:
                raise Conflict(f"checks of {current.id} are running: decide when they finish")
            state = await self.releases.state(current)
            now = self.clock()
            decision, stages = state.decision, None
            if state.ladder is not None:  # a staged gate: decide decides its first stage
                first = state.ladder.stages[0]
                decision, stages = first.decision, stages_section(state.ladder, first.id, action="decide")
            bundle = await self._build(state, user, now, decision=decision, stages=stages)
            verdict = decision.verdict
            decided = current.model_copy(
                update={
                    "state": State.DECIDED,
                    "last_verdict": verdict,
                    "decided_verdict": verdict,
                    "decided_by": user,
                    "decided_at": now,
                }
            )
            event = AuditEvent(
                type="decided",
                actor=user,
                at=now,
                data={
                    "verdict": verdict.value,
                    "sha": current.sha,
                    "checks_passed": decision.checks_passed,
                    "checks_total": decision.checks_total,
                    **({"stage": stages["stage"]} if stages else {}),
                },
            )
            return decided, json.dumps(bundle, sort_keys=True), event

        channel = self.gates.get(release.gate_id).gate.channel
        said: list[Notice] = []

        def says(decided: Release) -> Emit:
            """The decision record for the channel and the frozen card, in the decision's own step."""
            record = self.releases.notice(
                decided, DECISION_RECORD, [str(decided.rev)], {"bundle": bundle}, Target.to_channel(channel), user
            )
            said[:] = [record]
            return Emit(decided.gate_id, notices=[record], card_of=decided.id, at=self.clock(), actor=user)

        decided = await self.store.decide_release(release, build, says)
        # Answered once the record is posted and the card frozen (or after a second: they will be).
        await self.releases.posted(decided.gate_id, said)
        await self.releases.card_caught_up(decided)
        return Decided(decided, bundle)

    async def open(
        self, gate_id: str, version: str, sha: str | None, actor: str, *, target_at: datetime | None = None
    ) -> tuple[Release, Opened]:
        """`/gonogo open`: open a release (with its target time, for pre-launch posts), or move the open
        one to another commit and/or give it a (new) target time."""
        release, opened = await self.releases.open(gate_id, version, sha, actor, target_at=target_at)
        if opened:
            return release, "opened"
        outcome: Opened = "unchanged"
        if sha is not None and check_sha(sha) != release.sha:
            release, outcome = await self.move_commit(release, sha, actor), "moved"
        if target_at is not None and target_at != release.target_at:
            release = await self.set_target(release, target_at, actor)
            outcome = "moved" if outcome == "moved" else "retargeted"
        return release, outcome

    async def set_target(self, release: Release, target_at: datetime, actor: str) -> Release:
        """Give an open release a (new) target time: authorised like a commit move, audited with the
        old and new time; pre-launch posts follow it (bot/services/scheduler.py prelaunch)."""
        if release.state is not State.OPEN:
            raise release.refusal()
        target_at = target_at.astimezone(UTC)
        data = {"from": release.target_at.isoformat() if release.target_at else None, "to": target_at.isoformat()}
        await self._may_change(release, actor, "set target time", data, f"change the target time of {release.id}")
        return await self.releases.update_release(
            release,
            lambda r: r.model_copy(update={"target_at": target_at}),
            AuditEvent(type="target_set", actor=actor, at=self.clock(), data=data),
            expect=(State.OPEN,),
        )

    async def move_commit(self, release: Release, sha: str, actor: str) -> Release:
        """Moving a release to another commit is authorised (its opener, or a member of any role of
        the gate) and refused once it is decided (checked again in the write)."""
        if release.state is not State.OPEN:
            raise release.refusal()
        data = {"from": release.sha, "to": sha}
        await self._may_change(release, actor, "move commit", data, f"move {release.id} to another commit")
        return await self.releases.move_commit(release, sha, actor)

    async def _may_change(self, release: Release, actor: str, action: str, data: dict[str, Any], doing: str) -> None:
        """Its opener, or a member of any role of the gate, may change an open release (`doing` it);
        a refusal is audited."""
        gate = self.gates.get(release.gate_id).gate
        if actor == release.opened_by or any([actor in await self.membership.members(r) for r in gate.signoffs]):
            return
        await self.store.append_audit(
            release.id, AuditEvent(type="refused", actor=actor, at=self.clock(), data={"action": action, **data})
        )
        raise Forbidden(
            f"only {mention(release.opened_by)} (who opened it) or a member of a role of gate {gate.id} can {doing}"
        )

    async def close(self, release_id: str, user: str) -> Release:
        return await self._move(release_id, user, State.CLOSED, "closed", "close")

    async def reopen(self, release_id: str, user: str) -> Release:
        return await self._move(release_id, user, State.OPEN, "reopened", "reopen")

    async def _move(self, release_id: str, user: str, to: State, event: str, action: str) -> Release:
        """Change a release's state (audited), refresh its card. The write checks, writing nothing
        otherwise, that the state is still one it may move from (so a close racing a decide ends
        closed, whatever the order) and, when opening, that no other release of the gate is open."""
        release = await self.releases.resolve(release_id)
        if release.state is to:
            raise Conflict(f"{release.id} is already {to.value}")
        await self._member_of_a_required_role(release, user, action)
        came_from = tuple(state for state in State if state is not to)
        update: dict[str, object] = {"state": to}
        if to is State.OPEN:  # reopened: the decision record no longer holds
            update.update(decided_verdict=None, decided_by=None, decided_at=None)
        moved = await self.releases.update_release(
            release,
            lambda r: r.model_copy(update=update),
            AuditEvent(type=event, actor=user, at=self.clock(), data={"from": release.state.value}),
            expect=came_from,
            card_by=user,
        )
        return await self.releases.shown(moved)

    async def bundle(self, release: Release) -> tuple[dict[str, object], bool]:
        """The frozen bundle, or (not decided yet) a snapshot of now, and whether it is frozen."""
        stored = await self.store.get_bundle(release.id)
        if stored is not None and release.state is not State.OPEN:
            return json.loads(stored), True
        return await self._build(await self.releases.state(release), "(not decided)", self.clock()), False

    async def _build(
        self,
        state: ReleaseState,
        decided_by: str,
        at: datetime,
        *,
        decision: Decision | None = None,
        stages: dict[str, Any] | None = None,
    ) -> dict[str, object]:
        runs = await self.store.runs(state.release.id, count=20)
        return build_bundle(
            loaded=state.loaded,
            release=state.release,
            decision=decision or state.decision,
            stages=stages,
            results=state.results,
            decided_by=decided_by,
            decided_at=at,
            drills=state.people.drills,
            runs=runs,
        )

    async def upload_evidence(self, release_id: str, user: str) -> tuple[str, bool]:
        """Queue the evidence bundle (Markdown, from masked facts) for the card's thread, audited in
        the same step; the deliverer uploads it once. Returns the file name and whether it is uploaded
        already (the asker is answered when it is, or after a second: it will be; the handler has 2 s)."""
        release = await self.releases.resolve(release_id)
        bundle, frozen = await self.bundle(release)
        markdown = render_markdown(bundle)
        if not frozen:
            markdown = f"> Snapshot: {release.id} is not decided yet (`/gonogo decide {release.id}`).\n\n{markdown}"
        filename = f"{release.id.replace('@', '-')}-evidence.md"
        now = self.clock()
        upload = file_upload(
            release.gate_id,
            release.id,
            self.releases.card_thread(release),
            key=secrets.token_hex(8),  # each request uploads the bundle as it is then
            content=markdown,
            filename=filename,
            title=f"Evidence for {release.id}",
            actor=user,
            at=now,
        )
        event = AuditEvent(
            type="evidence_uploaded",
            actor=user,
            at=now,
            data={"file": filename, "verdict": bundle.get("verdict"), "frozen": frozen},
        )
        await self.store.emit_audited(release.id, event, Emit(release.gate_id, notices=[upload]))
        return filename, await self.releases.posted(release.gate_id, [upload])

    async def history(self, release_id: str) -> tuple[Release, list[AuditEntry]]:
        """The release and its audit trail, oldest first (the handler renders a page of it)."""
        release = await self.releases.resolve(release_id)
        return release, await self.store.audit(release.id, count=10_000)
