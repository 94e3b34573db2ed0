"""What people do to a release: sign (approve/reject/withdraw), mark manual checks done, accept
risks, request and approve a break-glass override.

Every action is authorised against the gate's roles (users + user group members) before anything
is written; refusals are audited and nothing else. Each write is one atomic Lua step in the store
that also appends the audit entry, and carries the click's identity so a retried payload, a double
click or two replicas handling the same payload record it once.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from bot.core.decision import Decision, Level, decide
from bot.core.errors import Conflict, Forbidden, NotFound, UsageError
from bot.core.facts import (
    ManualMark,
    OverrideApproval,
    OverrideRequest,
    RiskAcceptance,
    Signature,
    Vote,
    override_expires_at,
)
from bot.core.gate import Gate, Signoff
from bot.core.gateset import GateSet
from bot.core.loader import LoadedGate
from bot.core.mentions import mention
from bot.core.notices import Target
from bot.core.release import Release, State
from bot.core.signing_notices import override_active, override_request
from bot.core.stages import decide_stages
from bot.services.membership import Membership
from bot.services.releases import ReleaseService, ReleaseState
from bot.store.outbox import Emit
from bot.store.store import ANY_COMMIT, AuditEvent, Fact, PutOutcome, Store

log = logging.getLogger("gonogo.signing")

MAX_TEXT = 2000  # comments, reasons, evidence: what a Slack modal input allows, and plenty


@dataclass(frozen=True)
class Outcome:
    """What happened, for the clicker's ephemeral confirmation."""

    release: Release
    written: bool
    message: str


def _members_text(role: Signoff, members: frozenset[str]) -> str:
    names = [mention(u) for u in sorted(members)]
    if role.usergroup:
        names.append(f"members of user group {role.usergroup}")
    return ", ".join(names) or "nobody (the gate lists no members)"


def _clean(text: str | None) -> str:
    return (text or "").strip()[:MAX_TEXT]


class Signing:
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

    def now(self) -> datetime:
        return self.clock()

    # --- shared steps ---------------------------------------------------------------------

    async def _open_release(self, release_id: str) -> tuple[Release, LoadedGate]:
        """The release, if it is open (a decided release is frozen). The write checks it again."""
        release = await self.releases.resolve(release_id)
        if release.state is not State.OPEN:
            raise release.refusal()
        return release, self.gates.get(release.gate_id)

    async def _authorise(self, release: Release, role: Signoff, user: str, action: str) -> None:
        members = await self.membership.members(role)
        if user in members:
            return
        await self._refused(release, user, role.role, action)
        raise Forbidden(f"only {role.title} can {action}: {_members_text(role, members)}")

    async def authorise(
        self, release_id: str, role_id: str, user: str, action: str, *, drawn_for: str | None = ANY_COMMIT
    ) -> None:
        """Before opening a modal: refuse at once rather than after the user typed a reason.
        `drawn_for`: the commit of the card the button was on (sign-offs are bound to it)."""
        release, loaded = await self._open_release(release_id)
        if drawn_for != ANY_COMMIT and drawn_for != release.sha:
            raise release.moved_since()
        await self._authorise(release, self._role(loaded.gate, role_id), user, action)

    async def _refused(self, release: Release, user: str, role: str, action: str) -> None:
        """A refused attempt is audited, and nothing else is written."""
        event = AuditEvent(type="signoff_refused", actor=user, at=self.now(), data={"role": role, "action": action})
        await self.store.append_audit(release.id, event)

    def _role(self, gate: Gate, role_id: str) -> Signoff:
        role = gate.role(role_id)
        if role is None:
            raise NotFound(f"gate {gate.id} has no role {role_id!r}")
        return role

    def _card(self, release: Release) -> Emit:
        """The card must show this change: its dirty mark goes into the change's own atomic step."""
        return Emit(release.gate_id, card_of=release.id, at=self.now())

    async def _after_write(self, release: Release) -> Release:
        # The card was marked dirty by the write itself; answer once it shows it (1 s at most).
        await self.releases.card_caught_up(release)
        return release

    # --- votes ----------------------------------------------------------------------------

    async def vote(
        self,
        release_id: str,
        role_id: str,
        user: str,
        vote: Vote,
        comment: str | None = None,
        *,
        drawn_for: str | None,
        click: str | None = None,
    ) -> Outcome:
        """Record a vote for the commit the card was drawn for (`drawn_for`): refused, with nothing
        written, if the release has moved to another commit since (checked again in the write)."""
        release, loaded = await self._open_release(release_id)
        if drawn_for != release.sha:
            raise release.moved_since()
        role = self._role(loaded.gate, role_id)
        comment = _clean(comment)
        if vote is Vote.REJECT and not comment:
            raise UsageError("a rejection needs a reason")
        await self._authorise(release, role, user, f"sign as {role.title}")
        if vote is Vote.APPROVE and not loaded.gate.allow_self_approval and user == release.opened_by:
            await self.store.append_audit(
                release.id,
                AuditEvent(
                    type="refused", actor=user, at=self.now(), data={"role": role.role, "action": "self-approval"}
                ),
            )
            raise Forbidden(f"you opened {release.id}, and gate {loaded.gate.id} does not allow self-approval")
        signature = Signature(
            role=role.role,
            user=user,
            vote=vote,
            at=self.now(),
            comment=comment,
            sha=drawn_for,
            passing=await self.releases.passing_blockers(release),
        )
        # The same vote again is a double click, unless the one stored has aged out: then it renews.
        same_when: tuple[str, ...] = ("vote", "comment", "sha", "passing")
        max_age = loaded.gate.signoff_max_age
        if max_age is not None:
            old = await self.store.fact(Fact.SIGNATURES, release.id, f"{role.role}|{user}")
            if old is not None and signature.at - Signature.model_validate_json(old).at > max_age:
                same_when = ()
        outcome, _ = await self.store.put_fact(
            Fact.SIGNATURES,
            release.id,
            f"{role.role}|{user}",
            signature,
            AuditEvent(
                type="signed",
                actor=user,
                at=signature.at,
                data={"role": role.role, "vote": vote.value, "comment": comment, "sha": drawn_for},
            ),
            same_when=same_when,
            handled=click,
            sha=drawn_for,
            says=self._card(release),
        )
        verb = "approved" if vote is Vote.APPROVE else "rejected"
        return await self._finish(release, outcome, f"You {verb} {release.id} as {role.title}.")

    async def _finish(self, release: Release, outcome: PutOutcome, done: str) -> Outcome:
        if outcome == "written":
            return Outcome(await self._after_write(release), True, done)
        if outcome == "unchanged":
            return Outcome(release, False, f"{done} (already recorded)")
        return Outcome(release, False, "Already handled.")

    async def withdraw(self, release_id: str, role_id: str, user: str) -> Outcome:
        release, loaded = await self._open_release(release_id)
        role = self._role(loaded.gate, role_id)
        old = await self.store.delete_fact(
            Fact.SIGNATURES,
            release.id,
            f"{role.role}|{user}",
            AuditEvent(type="withdrawn", actor=user, at=self.now(), data={"role": role.role}),
            says=self._card(release),
        )
        if old is None:
            return Outcome(release, False, f"You had no sign-off as {role.title} on {release.id}.")
        return Outcome(await self._after_write(release), True, f"You withdrew your sign-off as {role.title}.")

    # --- manual checks ----------------------------------------------------------------------

    def _manual(self, gate: Gate, check_id: str) -> tuple[str, Signoff]:
        check = next((c for c in gate.checks if c.id == check_id), None)
        if check is None or check.kind != "manual":
            raise NotFound(f"gate {gate.id} has no manual check {check_id!r}")
        owner: str = getattr(check, "owner")  # noqa: B009 - manual specs always have an owner
        return check.title, self._role(gate, owner)

    async def mark_done(
        self, release_id: str, check_id: str, user: str, evidence: str, *, click: str | None = None
    ) -> Outcome:
        release, loaded = await self._open_release(release_id)
        title, owner = self._manual(loaded.gate, check_id)
        evidence = _clean(evidence)
        if not evidence:
            raise UsageError("marking a manual check done needs evidence (a link or a sentence)")
        await self._authorise(release, owner, user, f"mark {title} done")
        mark = ManualMark(check_id=check_id, user=user, at=self.now(), evidence=evidence)
        outcome, _ = await self.store.put_fact(
            Fact.MANUAL,
            release.id,
            check_id,
            mark,
            AuditEvent(type="manual_done", actor=user, at=mark.at, data={"check": check_id, "evidence": evidence}),
            same_when=("user", "evidence"),
            handled=click,
            says=self._card(release),
        )
        return await self._finish(release, outcome, f"{title} is marked done.")

    async def reopen_manual(self, release_id: str, check_id: str, user: str) -> Outcome:
        release, loaded = await self._open_release(release_id)
        title, owner = self._manual(loaded.gate, check_id)
        await self._authorise(release, owner, user, f"reopen {title}")
        old = await self.store.delete_fact(
            Fact.MANUAL,
            release.id,
            check_id,
            AuditEvent(type="manual_reopened", actor=user, at=self.now(), data={"check": check_id}),
            says=self._card(release),
        )
        if old is None:
            return Outcome(release, False, f"{title} was not marked done.")
        return Outcome(await self._after_write(release), True, f"{title} is open again.")

    # --- risks ------------------------------------------------------------------------------

    async def accept_risk(
        self,
        release_id: str,
        risk_id: str,
        user: str,
        reason: str,
        expires_at: datetime | None = None,
        *,
        click: str | None = None,
    ) -> Outcome:
        release, loaded = await self._open_release(release_id)
        risk = next((r for r in loaded.gate.risks if r.id == risk_id), None)
        if risk is None:
            raise NotFound(f"gate {loaded.gate.id} has no risk {risk_id!r}")
        role = self._role(loaded.gate, risk.acceptor)
        reason = _clean(reason)
        if not reason:
            raise UsageError("accepting a risk needs a reason")
        now = self.now()
        if expires_at is not None and expires_at <= now:
            raise UsageError("the expiry must be in the future")
        await self._authorise(release, role, user, f"accept risk {risk.id}")
        acceptance = RiskAcceptance(
            risk_id=risk.id, role=role.role, user=user, at=now, reason=reason, expires_at=expires_at
        )
        outcome, _ = await self.store.put_fact(
            Fact.ACCEPTANCES,
            release.id,
            risk.id,
            acceptance,
            AuditEvent(
                type="risk_accepted",
                actor=user,
                at=now,
                data={"risk": risk.id, "reason": reason, "expires_at": expires_at.isoformat() if expires_at else None},
            ),
            same_when=("user", "reason", "expires_at"),
            handled=click,
            says=self._card(release),
        )
        return await self._finish(release, outcome, f"You accepted risk {risk.id} as {role.title}.")

    # --- break-glass override -----------------------------------------------------------------

    async def _member_of_any_role(self, release: Release, gate: Gate, user: str, action: str) -> None:
        for role in gate.signoffs:
            if user in await self.membership.members(role):
                return
        await self._refused(release, user, "", action)
        raise Forbidden(f"only members of a role of gate {gate.id} can {action}")

    async def _current_override(self, release: Release) -> OverrideRequest | None:
        raw = await self.store.get_override(release.id)
        return OverrideRequest.model_validate_json(raw) if raw else None

    async def request_override(self, release_id: str, user: str, reason: str) -> Outcome:
        """Ask the override approvers to let a NO-GO go. Only members of a gate role may ask, and a
        pending or active request is never replaced (cancel it first); the write checks that the
        request it replaces (none, or an expired or moved one) is still the stored one."""
        release, loaded = await self._open_release(release_id)
        gate = loaded.gate
        if gate.override is None:
            raise UsageError(f"gate {gate.id} has no `override:` section: overrides are not allowed")
        reason = _clean(reason)
        if not reason:
            raise UsageError("an override needs a reason: `/gonogo override <release> <reason>`")
        await self._member_of_any_role(release, gate, user, "request an override")
        now = self.now()
        current = await self._current_override(release)
        if current is not None and current.sha == release.sha and now < override_expires_at(current, gate.override.ttl):
            raise Conflict(
                f"an override of {release.id} requested by {mention(current.requested_by)} is still pending or"
                f" active: `/gonogo override cancel {release.id}` first"
            )
        request = OverrideRequest(id=secrets.token_hex(6), requested_by=user, reason=reason, at=now, sha=release.sha)
        data = {"id": request.id, "reason": reason, "sha": release.sha}
        if current is not None:
            data["replaces"] = current.id
        approvers = [(role, _title(gate, role), n) for role, n in gate.override.approvers.items()]
        notices = override_request(
            release.gate_id,
            release.id,
            request_id=request.id,
            requested_by=user,
            reason=reason,
            approvers=approvers,
            targets=[("thread", self.releases.card_thread(release)), ("channel", Target.to_channel(gate.channel))],
            at=now,
        )
        # The request, its audit entry, its announcements and the card's dirty mark: one step.
        await self.store.set_override(
            release.id,
            current_id=current.id if current else None,
            request_json=request.model_dump_json(),
            sha=release.sha,
            event=AuditEvent(type="override_requested", actor=user, at=now, data=data),
            says=Emit(release.gate_id, notices=notices, card_of=release.id, at=now),
        )
        await self.releases.posted(release.gate_id, notices)  # answered once posted (1 s at most)
        await self.releases.card_caught_up(release)
        return Outcome(release, True, f"Override requested for {release.id}.")

    async def cancel_override(self, release_id: str, user: str) -> Outcome:
        """End the current override request (pending or active): its requester, or a member of an
        approver role. Audited; the write checks it is still the request this user cancelled."""
        release, loaded = await self._open_release(release_id)
        gate = loaded.gate
        current = await self._current_override(release)
        if current is None:
            return Outcome(release, False, f"{release.id} has no override request to cancel.")
        if user != current.requested_by:
            approvers = [self._role(gate, r) for r in (gate.override.approvers if gate.override else {})]
            if not [role for role in approvers if user in await self.membership.members(role)]:
                await self._refused(release, user, "", "cancel the override")
                titles = ", ".join(role.title for role in approvers) or "none"
                raise Forbidden(
                    f"only {mention(current.requested_by)} (who requested it) or an override approver"
                    f" ({titles}) can cancel the override of {release.id}"
                )
        await self.store.set_override(
            release.id,
            current_id=current.id,
            request_json=None,
            sha=ANY_COMMIT,
            event=AuditEvent(
                type="override_cancelled",
                actor=user,
                at=self.now(),
                data={"id": current.id, "requested_by": current.requested_by},
            ),
            says=Emit(release.gate_id, card_of=release.id, at=self.now()),
        )
        await self.releases.card_caught_up(release)
        return Outcome(release, True, f"The override of {release.id} is cancelled.")

    async def approve_override(
        self, release_id: str, request_id: str, role_id: str, user: str, *, click: str | None = None
    ) -> Outcome:
        """Count an approval for request `request_id` only: the write checks that it is still the
        current request, and one person counts once across the whole override."""
        release, loaded = await self._open_release(release_id)
        gate = loaded.gate
        if gate.override is None or role_id not in gate.override.approvers:
            raise NotFound(f"role {role_id!r} does not approve overrides of gate {gate.id}")
        request = await self._current_override(release)
        if request is None or request.id != request_id:
            raise Conflict("this override request is no longer current")
        if user == request.requested_by:
            await self.store.append_audit(
                release.id,
                AuditEvent(
                    type="refused", actor=user, at=self.now(), data={"role": role_id, "action": "self-override"}
                ),
            )
            raise Forbidden("you requested this override: someone else has to approve it")
        role = self._role(gate, role_id)
        await self._authorise(release, role, user, f"approve the override as {role.title}")
        approval = OverrideApproval(role=role.role, user=user, at=self.now())

        said: list[Emit] = []  # what the transaction that committed said (it may start over)

        async def says(request_json: str, approvals: dict[str, str]) -> tuple[list[AuditEvent], Emit]:
            request = OverrideRequest.model_validate_json(request_json)
            events, change = await self._activation(release, request, approvals)
            said[:] = [change]
            return events, change

        outcome, old = await self.store.approve_override(
            release.id,
            request_id,
            approval,
            AuditEvent(
                type="override_approved", actor=user, at=approval.at, data={"id": request_id, "role": role.role}
            ),
            handled=click,
            says=says,
        )
        if outcome == "counted":
            counted = OverrideApproval.model_validate_json(old or "{}").role
            return Outcome(
                release,
                False,
                f"You already approved this override as {self._role(gate, counted).title}: one person counts"
                f" once, so another {role.title} has to approve it.",
            )
        result = await self._finish(release, outcome, f"You approved the override of {release.id} as {role.title}.")
        if outcome == "written" and said and said[0].notices:  # this approval activated it: answer once announced
            await self.releases.posted(release.gate_id, said[0].notices)
        return result

    async def _activation(
        self, release: Release, request: OverrideRequest, approvals: dict[str, str]
    ) -> tuple[list[AuditEvent], Emit]:
        """What an approval says, from the request and its approvals as they are in its transaction
        (this one counted): the card always; and if this approval is the one that completes every
        approver role's quorum, the override_active audit entry and the channel's announcement.
        Only one approval can be that one: the transaction of a racing approval starts over."""
        counted = sorted((OverrideApproval.model_validate_json(v) for v in approvals.values()), key=lambda a: a.at)
        state = await self.releases.state(release)
        now = self.now()
        after = _decision(state, request.model_copy(update={"approvals": tuple(counted)}), now)
        before = _decision(state, request.model_copy(update={"approvals": tuple(counted[:-1])}), now)
        if not _active(after, request.id) or _active(before, request.id):
            return [], self._card(release)
        # What fails now, as the card says it with the override active (a freeze it passes says so).
        failing = [r.text for r in after.reasons if r.level is Level.BLOCKING]
        approvers = [(a.user, a.role) for a in counted]
        event = AuditEvent(
            type="override_active",
            actor=request.requested_by,
            at=now,
            data={"id": request.id, "approvers": [u for u, _ in approvers], "failing": failing},
        )
        notice = override_active(
            release.gate_id,
            release.id,
            state.loaded.gate.channel,
            request_id=request.id,
            reason=request.reason,
            approvers=approvers,
            failing=failing,
            at=now,
        )
        return [event], Emit(release.gate_id, notices=[notice], card_of=release.id, at=now)


def _title(gate: Gate, role_id: str) -> str:
    role = gate.role(role_id)
    return role.title if role else role_id


def _active(decision: Decision, request_id: str) -> bool:
    override = decision.override
    return override is not None and override.active and override.request.id == request_id


def _decision(state: ReleaseState, request: OverrideRequest, now: datetime) -> Decision:
    """The release's verdict now, with `request` as its override (the next stage's, when staged)."""
    inp = replace(state.people, override=request).decision_input(
        state.loaded.gate, now, state.results, state.release.sha
    )
    if state.loaded.gate.stages:
        release = state.release
        return decide_stages(inp, current=release.current_stage, reached=release.stages_reached).target.decision
    return decide(inp)
