"""A release's life after its checks: decide (freeze the verdict and keep the evidence), close,
reopen, upload the evidence, show the history. Every step is audited."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.core.decision import Decision
from bot.core.errors import Conflict, Forbidden
from bot.core.evidence import build_bundle, stages_section
from bot.core.evidence_markdown import render_markdown
from bot.core.release import Release, State
from bot.services.membership import Membership
from bot.services.releases import ReleaseService, ReleaseState
from bot.slack.blocks import Message
from bot.slack.history import render_history
from bot.slack.record import render_record
from bot.store.store import AuditEvent

log = logging.getLogger("gonogo.lifecycle")


@dataclass(frozen=True)
class Decided:
    release: Release
    bundle: dict[str, object]


class Lifecycle:
    def __init__(self, releases: ReleaseService, membership: Membership) -> None:
        self.releases = releases
        self.membership = membership

    async def _member_of_a_required_role(self, release: Release, user: str, action: str) -> None:
        gate = self.releases.gates.get(release.gate_id).gate
        required = [r for r in gate.signoffs if r.required]
        for role in required:
            if user in await self.membership.members(role):
                return
        if not required:  # a gate without sign-offs: anyone in the channel may decide
            return
        labels = ", ".join(r.title for r in required)
        await self.releases.store.append_audit(
            release.id,
            AuditEvent(type="signoff_refused", actor=user, at=self.releases.clock(), data={"action": action}),
        )
        raise Forbidden(f"only members of a required role ({labels}) can {action} {release.id}")

    async def decide(self, release_id: str, user: str) -> Decided:
        """Freeze the verdict: the record goes to the gate's channel, the bundle into Redis."""
        release = await self.releases.resolve(release_id)
        if release.state is not State.OPEN:
            raise Conflict(f"{release.id} is {release.state.value}: `/gonogo reopen {release.id}` to decide again")
        await self._member_of_a_required_role(release, user, "decide")
        if await self.releases.store.current_run(release.id) is not None:
            raise Conflict(f"checks of {release.id} are running: decide when they finish")
        state = await self.releases.state(release)
        now = self.releases.clock()
        decision, stages = state.decision, None
        if state.ladder is not None:  # a staged gate: decide decides its first stage
            first = state.ladder.stages[0]
            decision, stages = first.decision, stages_section(state.ladder, first.id, action="decide")
        bundle = await self._build(state, user, now, decision=decision, stages=stages)
        await self.releases.store.save_bundle(release.id, json.dumps(bundle, sort_keys=True))
        decided = await self.releases.update_release(
            release,
            lambda r: r.model_copy(update={"state": State.DECIDED, "last_verdict": decision.verdict}),
            AuditEvent(
                type="decided",
                actor=user,
                at=now,
                data={
                    "verdict": decision.verdict.value,
                    "checks_passed": decision.checks_passed,
                    "checks_total": decision.checks_total,
                    **({"stage": stages["stage"]} if stages else {}),
                },
            ),
        )
        record = render_record(bundle)
        channel = state.loaded.gate.channel
        await self.releases.slack.chat_postMessage(channel=channel, text=record.text, blocks=record.blocks)
        return Decided(await self.releases.publish_card(decided), bundle)

    async def close(self, release_id: str, user: str) -> Release:
        return await self._move(release_id, user, State.CLOSED, "closed", "close")

    async def reopen(self, release_id: str, user: str) -> Release:
        return await self._move(release_id, user, State.OPEN, "reopened", "reopen")

    async def _move(self, release_id: str, user: str, to: State, event: str, action: str) -> Release:
        """Change a release's state (audited), refresh its card."""
        release = await self.releases.resolve(release_id)
        if release.state is to:
            raise Conflict(f"{release.id} is already {to.value}")
        await self._member_of_a_required_role(release, user, action)
        moved = await self.releases.update_release(
            release,
            lambda r: r.model_copy(update={"state": to}),
            AuditEvent(type=event, actor=user, at=self.releases.clock(), data={"from": release.state.value}),
        )
        return await self.releases.publish_card(moved)

    async def bundle(self, release: Release) -> tuple[dict[str, object], bool]:
        """The frozen bundle, or (not decided yet) a snapshot of now, and whether it is frozen."""
        stored = await self.releases.store.get_bundle(release.id)
        if stored is not None and release.state is not State.OPEN:
            return json.loads(stored), True
        return await self._build(await self.releases.state(release), "(not decided)", self.releases.clock()), False

    async def _build(
        self,
        state: ReleaseState,
        decided_by: str,
        at: datetime,
        *,
        decision: Decision | None = None,
        stages: dict[str, Any] | None = None,
    ) -> dict[str, object]:
        runs = await self.releases.store.runs(state.release.id, count=20)
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

    async def upload_evidence(self, release_id: str, user: str) -> str:
        release = await self.releases.resolve(release_id)
        bundle, frozen = await self.bundle(release)
        markdown = render_markdown(bundle)
        if not frozen:
            markdown = f"> Snapshot: {release.id} is not decided yet (`/gonogo decide {release.id}`).\n\n{markdown}"
        channel = release.card_channel or self.releases.gates.get(release.gate_id).gate.channel
        filename = f"{release.id.replace('@', '-')}-evidence.md"
        await self.releases.slack.files_upload_v2(
            channel=channel,
            thread_ts=release.thread_ts,
            content=markdown,
            filename=filename,
            title=f"Evidence for {release.id}",
        )
        await self.releases.store.append_audit(
            release.id,
            AuditEvent(
                type="evidence_uploaded",
                actor=user,
                at=self.releases.clock(),
                data={"file": filename, "verdict": bundle.get("verdict"), "frozen": frozen},
            ),
        )
        return filename

    async def history(self, release_id: str, page: int | None) -> Message:
        release = await self.releases.resolve(release_id)
        entries = await self.releases.store.audit(release.id, count=10_000)
        return render_history(release.id, entries, page=page, now=self.releases.clock())
