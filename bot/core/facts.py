"""Sign-off, risk-acceptance and override records, and the pure rules about their validity.

These are the facts people add to a release (stored in Redis by the service); the decision
engine reads them. Nothing here does I/O or reads the clock: `now` is always a parameter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from bot.core.durations import format_duration
from bot.core.gate import Gate
from bot.core.results import CheckResult
from checks.base import Severity


class Vote(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Signature(_Record):
    """One person's current vote for one role of one release."""

    role: str
    user: str
    vote: Vote
    at: datetime
    comment: str = ""
    sha: str | None = None  # the release's commit when signed
    # The blockers that passed when they signed: only one of these failing later is a material
    # change. None for signatures stored before this was recorded (never stale on results).
    passing: tuple[str, ...] | None = None


class RiskAcceptance(_Record):
    risk_id: str
    role: str
    user: str
    at: datetime
    reason: str
    expires_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


class OverrideApproval(_Record):
    role: str
    user: str
    at: datetime


class OverrideRequest(_Record):
    id: str = ""  # buttons carry it, so a click on an old request never approves a newer one
    requested_by: str
    reason: str
    at: datetime
    sha: str | None = None
    approvals: tuple[OverrideApproval, ...] = ()


class ManualMark(_Record):
    """A manual check marked done by a member of its owner role, with the evidence they gave."""

    check_id: str
    user: str
    at: datetime
    evidence: str


class DrillResult(_Record):
    drill_id: str
    passed: bool
    summary: str
    finished_at: datetime
    by: str | None = None


def blocker_digest(gate: Gate, results: Mapping[str, CheckResult]) -> str:
    """A short fingerprint of every blocker's status, for the evidence bundle."""
    parts = [
        f"{check.id}={results[check.id].status if check.id in results else 'not-run'}"
        for check in gate.checks
        if check.severity is Severity.BLOCKER
    ]
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


def passing_blockers(gate: Gate, results: Mapping[str, CheckResult]) -> tuple[str, ...]:
    """The blockers passing now: what a signature is bound to."""
    return tuple(
        sorted(
            check.id
            for check in gate.checks
            if check.severity is Severity.BLOCKER and check.id in results and results[check.id].status.passing
        )
    )


def staleness(
    signature: Signature, *, gate: Gate, sha: str | None, results: Mapping[str, CheckResult], now: datetime
) -> str | None:
    """Why a signature no longer counts, or None while it does. Only material changes count: a new
    commit, a blocker that passed when they signed and no longer does, or age. Results that improve
    (not run -> pass, fail -> pass) and re-runs with the same outcome leave it valid."""
    if "commit" in gate.signoffs_invalidate_on and signature.sha != sha:
        before = (signature.sha or "no commit")[:12]
        return f"signed for {before}, release is now at {(sha or 'no commit')[:12]}"
    if "blockers" in gate.signoffs_invalidate_on and signature.passing is not None:
        now_passing = set(passing_blockers(gate, results))
        regressed = [c.title for c in gate.checks if c.id in signature.passing and c.id not in now_passing]
        if regressed:
            return f"blocker {', '.join(regressed)} passed when signed and no longer does"
    if gate.signoff_max_age is not None and now - signature.at > gate.signoff_max_age:
        return f"older than {format_duration(gate.signoff_max_age)}"
    return None


def override_expires_at(request: OverrideRequest, ttl: timedelta) -> datetime:
    return request.at + ttl
