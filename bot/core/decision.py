"""The decision engine: GO / GO WITH RISK / NO-GO / GO (OVERRIDE), with every reason.

A pure function of the gate, the latest results and the people's records. Same input, same
output: the CLI, CI and the Slack card all call `decide` and therefore always agree.

Rules common to every policy:
- a blocker that is not passing (failed, errored, pending, never run) -> NO-GO;
- a required sign-off missing or rejected -> NO-GO;
- a required drill failed, never run or older than its max_age -> NO-GO;
- a declared risk not accepted -> NO-GO; all accepted -> at best GO WITH RISK;
- an advisory failure only warns; a check that never ran counts as not passing;
- with deploy windows: outside every allowed window or inside a freeze -> NO-GO (until it opens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from bot.core.durations import format_duration, humanize_age
from bot.core.facts import (
    DrillResult,
    OverrideRequest,
    RiskAcceptance,
    Signature,
    Vote,
    blocker_digest,
    override_expires_at,
    staleness,
)
from bot.core.gate import Gate, RiskScorePolicy, Signoff, ThresholdPolicy
from bot.core.mentions import literal, mention
from bot.core.results import CheckResult, Status
from bot.core.timeplan import WindowStatus
from checks.base import Severity, SpecBase


class Verdict(StrEnum):
    GO = "GO"
    GO_WITH_RISK = "GO WITH RISK"
    NO_GO = "NO-GO"
    OVERRIDE = "GO (OVERRIDE)"

    @property
    def emoji(self) -> str:
        return {"GO": "🟢", "GO WITH RISK": "🟡", "NO-GO": "🔴", "GO (OVERRIDE)": "🟠"}[self.value]

    @property
    def exit_code(self) -> int:
        """CLI contract: 0 GO (an approved override is a GO), 1 NO-GO, 3 GO WITH RISK."""
        return {"GO": 0, "GO (OVERRIDE)": 0, "NO-GO": 1, "GO WITH RISK": 3}[self.value]


class Level(StrEnum):
    BLOCKING = "blocking"  # makes the verdict NO-GO
    RISK = "risk"  # caps the verdict at GO WITH RISK
    WARNING = "warning"  # worth a look, changes nothing
    INFO = "info"


_ORDER = {Level.BLOCKING: 0, Level.RISK: 1, Level.WARNING: 2, Level.INFO: 3}


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Reason(_Out):
    level: Level
    code: str  # stable, machine-readable: blocker_failed, signoff_missing, ...
    text: str
    subject: str | None = None  # the check, role, drill or risk it is about


class ScoreItem(_Out):
    """One check's part in a risk-score term."""

    check: str
    score: float  # in [0, 1]: its graded score, or pass = 1 / not passing = 0
    weight: float  # its share of the term's weight (the term's weight split evenly)
    graded: bool  # True when `score` is the check's own graded score


class ScoreTerm(_Out):
    key: str
    weight: float
    passed: int
    total: int
    value: float = 0.0  # in [0, 1]: the weighted mean of its checks' scores
    checks: list[ScoreItem] = Field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.value


class RiskScore(_Out):
    score: float
    weighted_pass_pct: float
    penalty: float
    go_below: float
    caution_below: float
    terms: list[ScoreTerm]


class StaleSignature(_Out):
    signature: Signature
    reason: str


class RoleStatus(_Out):
    role: str
    label: str
    required: bool
    min_approvals: int
    approvals: list[Signature] = Field(default_factory=list)
    rejections: list[Signature] = Field(default_factory=list)
    stale: list[StaleSignature] = Field(default_factory=list)

    @property
    def met(self) -> bool:
        return not self.rejections and len(self.approvals) >= self.min_approvals


class OverrideStatus(_Out):
    request: OverrideRequest
    active: bool
    expires_at: datetime
    missing: dict[str, int]  # role -> approvals still needed
    invalid_reason: str | None = None


class Decision(_Out):
    verdict: Verdict
    reasons: list[Reason]
    checks_passed: int
    checks_total: int  # non-advisory checks
    score: RiskScore | None = None
    roles: list[RoleStatus] = Field(default_factory=list)
    accepted_risks: list[RiskAcceptance] = Field(default_factory=list)
    override: OverrideStatus | None = None
    blocker_digest: str
    decided_at: datetime

    @property
    def blocking(self) -> list[Reason]:
        return [r for r in self.reasons if r.level is Level.BLOCKING]


class DecisionInput(BaseModel):
    """Everything the verdict depends on. `now` is the clock: the engine never reads one."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    gate: Gate
    now: datetime
    results: Mapping[str, CheckResult] = Field(default_factory=dict)
    sha: str | None = None
    signatures: Sequence[Signature] = ()
    drills: Mapping[str, DrillResult] = Field(default_factory=dict)
    acceptances: Sequence[RiskAcceptance] = ()
    override: OverrideRequest | None = None
    ignore_signoffs: bool = False  # CLI without a release: sign-offs and acceptances are unknown
    window: WindowStatus | None = None  # the gate's deploy windows at `now` (None: the gate has none)
    # Deciding one rollout stage sees a slice of the gate; sign-offs stay bound to the whole gate's
    # blockers (a later stage's blocker regressing makes them stale too; see bot/core/stages.py).
    whole_gate: Gate | None = None


def decide(inp: DecisionInput) -> Decision:
    gate, results, now = inp.gate, inp.results, inp.now
    reasons: list[Reason] = []
    digest = blocker_digest(inp.whole_gate or gate, results)

    _blockers(gate, results, reasons)
    counted = [c for c in gate.checks if c.severity is not Severity.ADVISORY]
    passed = sum(1 for c in counted if _passing(results, c.id))
    roles = _roles(inp)
    score = _policy(gate, results, roles, counted, passed, reasons)
    _advisories(gate, results, reasons)
    if inp.ignore_signoffs:
        reasons.append(Reason(level=Level.INFO, code="signoffs_ignored", text="sign-offs not evaluated"))
    else:
        _signoff_reasons(roles, reasons)
    _drills(inp, reasons)
    accepted = _risks(inp, reasons)
    override = _override(inp)
    _window(inp, override, reasons)

    blocking = any(r.level is Level.BLOCKING for r in reasons)
    if blocking and override is not None and override.active:
        verdict = Verdict.OVERRIDE
        reasons.append(
            Reason(
                level=Level.INFO,
                code="override_active",
                text=f"override by {mention(override.request.requested_by)}: {literal(override.request.reason)}",
            )
        )
    elif blocking:
        verdict = Verdict.NO_GO
    elif any(r.level is Level.RISK for r in reasons):
        verdict = Verdict.GO_WITH_RISK
    else:
        verdict = Verdict.GO
    reasons.sort(key=lambda r: _ORDER[r.level])  # stable: blocking first, in gate order
    return Decision(
        verdict=verdict,
        reasons=reasons,
        checks_passed=passed,
        checks_total=len(counted),
        score=score,
        roles=roles,
        accepted_risks=accepted,
        override=override,
        blocker_digest=digest,
        decided_at=now,
    )


def _passing(results: Mapping[str, CheckResult], check_id: str) -> bool:
    found = results.get(check_id)
    return found is not None and found.status.passing


def _describe(check: SpecBase, found: CheckResult | None) -> str:
    title = literal(check.title)
    if found is None:
        return f"{title} has not run"
    verb = {
        Status.FAIL: "failed",
        Status.ERROR: "errored",
        Status.PENDING: "is pending",
        Status.SKIPPED: "was skipped",
    }.get(found.status, found.status.value)
    return f"{title} {verb}: {literal(found.summary)}"


def _blockers(gate: Gate, results: Mapping[str, CheckResult], reasons: list[Reason]) -> None:
    for check in gate.checks:
        if check.severity is Severity.BLOCKER and not _passing(results, check.id):
            reasons.append(
                Reason(
                    level=Level.BLOCKING,
                    code="blocker_not_passing",
                    text=f"blocker {_describe(check, results.get(check.id))}",
                    subject=check.id,
                )
            )


def _policy(
    gate: Gate,
    results: Mapping[str, CheckResult],
    roles: list[RoleStatus],
    counted: Sequence[SpecBase],
    passed: int,
    reasons: list[Reason],
) -> RiskScore | None:
    # Blockers already explain themselves; the policy speaks about the other counted checks.
    failing = [c for c in counted if not _passing(results, c.id) and c.severity is not Severity.BLOCKER]
    policy = gate.policy
    if isinstance(policy, ThresholdPolicy):
        share = passed / len(counted) if counted else 1.0
        tally = f"{passed}/{len(counted)} checks pass"
        for check in failing:
            reasons.append(_failing_reason(check, results, Level.WARNING))
        if share >= policy.go:
            return None
        reviewer = next((r for r in roles if r.role == policy.review_role), None)
        if share >= policy.review and reviewer is not None and reviewer.met:
            reasons.append(
                Reason(
                    level=Level.INFO,
                    code="threshold_reviewed",
                    text=f"{tally} (review band), accepted by {reviewer.label}",
                    subject=policy.review_role,
                )
            )
        elif share >= policy.review:
            who = reviewer.label if reviewer else "a reviewer"
            reasons.append(
                Reason(
                    level=Level.BLOCKING,
                    code="threshold_review",
                    text=f"{tally} (review band, {policy.review:.0%}–{policy.go:.0%}): needs {who} sign-off",
                    subject=policy.review_role,
                )
            )
        else:
            reasons.append(
                Reason(
                    level=Level.BLOCKING,
                    code="threshold_below",
                    text=f"{tally}, below the {policy.review:.0%} review threshold",
                )
            )
        return None
    if isinstance(policy, RiskScorePolicy):
        score = _risk_score(gate, policy, results)
        for check in failing:
            reasons.append(_failing_reason(check, results, Level.WARNING))
        if score is None:
            return None
        summary = f"risk score {score.score:g} (GO below {policy.go_below:g}, caution below {policy.caution_below:g})"
        if score.score >= policy.caution_below:
            reasons.append(Reason(level=Level.BLOCKING, code="risk_score_high", text=summary))
        elif score.score >= policy.go_below:
            reasons.append(Reason(level=Level.RISK, code="risk_score_caution", text=summary))
        else:
            reasons.append(Reason(level=Level.INFO, code="risk_score", text=summary))
        return score
    for check in failing:  # strict: every counted check must pass
        reasons.append(_failing_reason(check, results, Level.BLOCKING))
    return None


def _failing_reason(check: SpecBase, results: Mapping[str, CheckResult], level: Level) -> Reason:
    return Reason(
        level=level,
        code="check_not_passing",
        text=_describe(check, results.get(check.id)),
        subject=check.id,
    )


def _check_score(results: Mapping[str, CheckResult], check_id: str) -> tuple[float, bool]:
    """A check's graded score when it has one, else pass = 1 / not passing = 0."""
    found = results.get(check_id)
    if found is not None and found.score is not None:
        return found.score, True
    return (1.0 if _passing(results, check_id) else 0.0), False


def _risk_score(gate: Gate, policy: RiskScorePolicy, results: Mapping[str, CheckResult]) -> RiskScore | None:
    terms = []
    for key, weight in policy.weights.items():
        members = [c for c in gate.checks if c.id == key or c.group == key]
        counted = [c for c in members if c.severity is not Severity.ADVISORY] or members
        if not counted:  # only when deciding a stage: its checks all belong to a later one
            continue
        items = []
        for check in counted:
            score, graded = _check_score(results, check.id)
            items.append(ScoreItem(check=check.id, score=score, weight=weight / len(counted), graded=graded))
        terms.append(
            ScoreTerm(
                key=key,
                weight=weight,
                passed=sum(1 for c in counted if _passing(results, c.id)),
                total=len(counted),
                value=sum(i.score for i in items) / len(items),  # equal shares: the plain mean
                checks=items,
            )
        )
    if not terms:
        return None
    total_weight = sum(t.weight for t in terms)
    pct = 100 * sum(t.weight * t.fraction for t in terms) / total_weight
    return RiskScore(
        score=round(100 - pct + policy.penalty, 1),
        weighted_pass_pct=round(pct, 1),
        penalty=policy.penalty,
        go_below=policy.go_below,
        caution_below=policy.caution_below,
        terms=terms,
    )


def _advisories(gate: Gate, results: Mapping[str, CheckResult], reasons: list[Reason]) -> None:
    for check in gate.checks:
        found = results.get(check.id)
        if check.severity is Severity.ADVISORY and found is not None and not found.status.passing:
            reasons.append(
                Reason(
                    level=Level.WARNING,
                    code="advisory_not_passing",
                    text=f"advisory {_describe(check, found)}",
                    subject=check.id,
                )
            )
        elif found is not None and found.status is Status.WARN:
            reasons.append(
                Reason(
                    level=Level.WARNING,
                    code="check_warning",
                    text=f"{literal(check.title)}: {literal(found.summary)}",
                    subject=check.id,
                )
            )


def _roles(inp: DecisionInput) -> list[RoleStatus]:
    statuses = []
    for role in inp.gate.signoffs:
        statuses.append(_role_status(inp, role))
    return statuses


def _role_status(inp: DecisionInput, role: Signoff) -> RoleStatus:
    approvals: dict[str, Signature] = {}  # one person never counts twice toward one quorum
    rejections: dict[str, Signature] = {}
    stale: list[StaleSignature] = []
    for sig in sorted((s for s in inp.signatures if s.role == role.role), key=lambda s: s.at):
        why = staleness(sig, gate=inp.whole_gate or inp.gate, sha=inp.sha, results=inp.results, now=inp.now)
        approvals.pop(sig.user, None)
        rejections.pop(sig.user, None)
        if why is not None:
            stale.append(StaleSignature(signature=sig, reason=why))
        elif sig.vote is Vote.APPROVE:
            approvals[sig.user] = sig
        else:
            rejections[sig.user] = sig
    return RoleStatus(
        role=role.role,
        label=role.title,
        required=role.required,
        min_approvals=role.min_approvals,
        approvals=list(approvals.values()),
        rejections=list(rejections.values()),
        stale=stale,
    )


def _signoff_reasons(roles: list[RoleStatus], reasons: list[Reason]) -> None:
    for role in roles:
        level = Level.BLOCKING if role.required else Level.WARNING
        for sig in role.rejections:
            reasons.append(
                Reason(
                    level=level,
                    code="signoff_rejected",
                    text=f"{literal(role.label)} rejected by {mention(sig.user)}",
                    subject=role.role,
                )
            )
        if not role.rejections and len(role.approvals) < role.min_approvals and role.required:
            stale_note = f", {len(role.stale)} stale" if role.stale else ""
            reasons.append(
                Reason(
                    level=level,
                    code="signoff_missing",
                    text=f"sign-off missing: {role.label} ({len(role.approvals)}/{role.min_approvals}{stale_note})",
                    subject=role.role,
                )
            )


def _drills(inp: DecisionInput, reasons: list[Reason]) -> None:
    for drill in inp.gate.drills:
        level = Level.BLOCKING if drill.required else Level.WARNING
        found = inp.drills.get(drill.id)
        problem = None
        if found is None:
            problem = f"drill {drill.title} has never run"
        elif not found.passed:
            age = humanize_age((inp.now - found.finished_at).total_seconds())
            problem = f"drill {literal(drill.title)} failed {age} ago: {literal(found.summary)}"
        elif drill.max_age is not None and inp.now - found.finished_at > drill.max_age:
            age = humanize_age((inp.now - found.finished_at).total_seconds())
            problem = f"drill {drill.title} is stale: last passed {age} ago (max {format_duration(drill.max_age)})"
        if problem:
            reasons.append(Reason(level=level, code="drill_not_passing", text=problem, subject=drill.id))


def _risks(inp: DecisionInput, reasons: list[Reason]) -> list[RiskAcceptance]:
    accepted: list[RiskAcceptance] = []
    for risk in inp.gate.risks:
        valid = [a for a in inp.acceptances if a.risk_id == risk.id and a.role == risk.acceptor and a.active(inp.now)]
        role = inp.gate.role(risk.acceptor)
        label = role.title if role else risk.acceptor
        if valid:
            latest = max(valid, key=lambda a: a.at)
            accepted.append(latest)
            reasons.append(
                Reason(
                    level=Level.RISK,
                    code="risk_accepted",
                    text=f"risk {risk.id} ({risk.impact.value}) accepted by {mention(latest.user)} as {label}",
                    subject=risk.id,
                )
            )
        elif inp.ignore_signoffs:
            reasons.append(
                Reason(
                    level=Level.RISK,
                    code="risk_assumed",
                    text=f"risk {risk.id} ({risk.impact.value}) declared; acceptance by {label} not evaluated",
                    subject=risk.id,
                )
            )
        else:
            expired = any(a.risk_id == risk.id and not a.active(inp.now) for a in inp.acceptances)
            reasons.append(
                Reason(
                    level=Level.BLOCKING,
                    code="risk_not_accepted",
                    text=f"risk {risk.id} not accepted{' (acceptance expired)' if expired else ''}: needs {label}",
                    subject=risk.id,
                )
            )
    return accepted


def _window(inp: DecisionInput, override: OverrideStatus | None, reasons: list[Reason]) -> None:
    """Outside every allowed window or inside a freeze -> NO-GO, saying when deploys may resume.
    A break-glass override passes it like any other blocker, and the reason says so."""
    window = inp.window
    if window is None:
        return
    if window.open:
        reasons.append(Reason(level=Level.INFO, code="window_open", text=window.describe(), subject="windows"))
        return
    text = window.describe()
    if override is not None and override.active:
        what = "freeze" if window.state == "frozen" else "closed window"
        text += f" (the break-glass override passes this {what})"
    code = "window_frozen" if window.state == "frozen" else "window_closed"
    reasons.append(Reason(level=Level.BLOCKING, code=code, text=text, subject="windows"))


def _override(inp: DecisionInput) -> OverrideStatus | None:
    request, policy = inp.override, inp.gate.override
    if request is None or policy is None:
        return None
    expires_at = override_expires_at(request, policy.ttl)
    missing = {}
    for role, needed in policy.approvers.items():
        users = {a.user for a in request.approvals if a.role == role and a.user != request.requested_by}
        if len(users) < needed:
            missing[role] = needed - len(users)
    invalid = None
    if inp.now >= expires_at:
        invalid = "expired"
    elif request.sha != inp.sha:
        invalid = "the release moved to another commit"
    return OverrideStatus(
        request=request,
        active=not missing and invalid is None,
        expires_at=expires_at,
        missing=missing,
        invalid_reason=invalid,
    )
