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
    digest: str | None = None  # blocker_digest() of the results the signer saw


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
    """A short fingerprint of every blocker's status: sign-offs go stale when it changes."""
    parts = [
        f"{check.id}={results[check.id].status if check.id in results else 'not-run'}"
        for check in gate.checks
        if check.severity is Severity.BLOCKER
    ]
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


def staleness(signature: Signature, *, gate: Gate, sha: str | None, digest: str, now: datetime) -> str | None:
    """Why a signature no longer counts, or None while it does."""
    if "commit" in gate.signoffs_invalidate_on and signature.sha != sha:
        before = (signature.sha or "no commit")[:12]
        return f"signed for {before}, release is now at {(sha or 'no commit')[:12]}"
    if "blockers" in gate.signoffs_invalidate_on and signature.digest is not None and signature.digest != digest:
        return "blocker results changed since signing"
    if gate.signoff_max_age is not None and now - signature.at > gate.signoff_max_age:
        return f"older than {format_duration(gate.signoff_max_age)}"
    return None


def override_expires_at(request: OverrideRequest, ttl: timedelta) -> datetime:
    return request.at + ttl
