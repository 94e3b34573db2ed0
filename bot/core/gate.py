"""The gate file: pydantic models for one release gate, as written in YAML.

Everything here is pure data and validation. Cross-references (acceptors, verify, rollback roles,
override approvers, weights) are checked in `Gate._references` so one load reports them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.core.durations import Duration
from checks import AnyCheckSpec
from checks.base import CHECK_ID_PATTERN, Severity

ID_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
ROLE_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"

__all__ = ["Gate", "Severity"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _before() -> Any:
    return Field(default=None, description="Stage id it must hold before (default: the gate's first stage)")


class Stage(_Model):
    """A rollout stage (dark launch, canary, full): a release is promoted to them in order."""

    id: str = Field(pattern=ID_PATTERN, description="Stage id, e.g. canary")
    name: str | None = Field(default=None, description="Shown on the card, e.g. Canary 5%")

    @property
    def title(self) -> str:
        return self.name or self.id


class Signoff(_Model):
    role: str = Field(pattern=ROLE_PATTERN, description="Role id, e.g. tech-lead")
    label: str | None = Field(default=None, description="Shown on the card, e.g. Tech Lead")
    users: list[str] = Field(default_factory=list, description="Slack user ids")
    usergroup: str | None = Field(default=None, description="Slack user group id; its members count too")
    min_approvals: int = Field(default=1, ge=1, description="Quorum: distinct members who must approve")
    required: bool = Field(default=True, description="false: shown, but never blocks")
    before: str | None = _before()

    @property
    def title(self) -> str:
        return self.label or self.role

    @model_validator(mode="after")
    def _has_members(self) -> Signoff:
        if not self.users and not self.usergroup:
            raise ValueError(f"role {self.role!r} has no users and no usergroup: nobody could sign")
        if self.usergroup is None and self.min_approvals > len(set(self.users)):
            raise ValueError(f"min_approvals {self.min_approvals} exceeds the {len(set(self.users))} listed users")
        return self


class StrictPolicy(_Model):
    """Every non-advisory check passes."""

    kind: Literal["strict"] = "strict"


class ThresholdPolicy(_Model):
    """Share of non-advisory checks passing: >= go -> GO; >= review -> GO once review_role signs."""

    kind: Literal["threshold"] = "threshold"
    go: float = Field(default=1.0, gt=0, le=1)
    review: float = Field(default=0.9, gt=0, le=1)
    review_role: str | None = Field(default=None, description="Role whose sign-off lets a review band go")

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdPolicy:
        if self.review > self.go:
            raise ValueError(f"review ({self.review}) must not exceed go ({self.go})")
        if self.review < self.go and not self.review_role:
            # Without a reviewer the review band could never become GO: say so at load time.
            raise ValueError("a review band (review < go) needs review_role: the role whose sign-off lets it go")
        return self


class RiskScorePolicy(_Model):
    """risk = 100 - weighted pass percentage + penalty; < go_below GO, < caution_below GO WITH RISK."""

    kind: Literal["risk_score"] = "risk_score"
    weights: dict[str, float] = Field(description="check id or group -> weight")
    penalty: float = Field(default=0, ge=0, description="Fixed points added (complexity, change size)")
    go_below: float = 50
    caution_below: float = 65

    @field_validator("weights")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("weights must name at least one check or group")
        for key, weight in value.items():
            if weight <= 0:
                raise ValueError(f"weight of {key!r} must be positive, got {weight}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> RiskScorePolicy:
        if self.go_below > self.caution_below:
            raise ValueError("go_below must not exceed caution_below")
        return self


Policy = Annotated[StrictPolicy | ThresholdPolicy | RiskScorePolicy, Field(discriminator="kind")]


class Impact(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Risk(_Model):
    id: str = Field(pattern=CHECK_ID_PATTERN)
    description: str
    impact: Impact = Impact.MEDIUM
    mitigation: str | None = None
    acceptor: str = Field(description="Role that must accept it")
    before: str | None = _before()


class Override(_Model):
    approvers: dict[str, int] = Field(description="role -> how many distinct members must approve")
    ttl: Duration = timedelta(hours=24)

    @field_validator("approvers")
    @classmethod
    def _counts(cls, value: dict[str, int]) -> dict[str, int]:
        if not value:
            raise ValueError("an override needs at least one approver role")
        for role, count in value.items():
            if count < 1:
                raise ValueError(f"approvers.{role} must be at least 1")
        return value


class Drill(_Model):
    id: str = Field(pattern=CHECK_ID_PATTERN)
    name: str | None = None
    run: list[str] | str
    shell: bool = False
    cwd: str | None = None
    timeout: Duration = timedelta(minutes=5)
    required: bool = True
    max_age: Duration | None = Field(default=None, description="A result older than this is stale")
    before: str | None = _before()

    @property
    def title(self) -> str:
        return self.name or self.id

    @model_validator(mode="after")
    def _shell_only_when_asked(self) -> Drill:
        if isinstance(self.run, str) and not self.shell:
            raise ValueError("run is a string: use an argv list, or set shell: true")
        return self


class Rollback(_Model):
    run: list[str] | str
    shell: bool = False
    cwd: str | None = None
    timeout: Duration = timedelta(minutes=10)
    allowed_roles: list[str] = Field(min_length=1)
    verify: str | None = Field(default=None, description="Check id re-run after a rollback")

    @model_validator(mode="after")
    def _shell_only_when_asked(self) -> Rollback:
        if isinstance(self.run, str) and not self.shell:
            raise ValueError("run is a string: use an argv list, or set shell: true")
        return self


_HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")


class Reminders(_Model):
    every: Duration = timedelta(hours=2)
    working_hours: str | None = Field(default=None, description="HH:MM-HH:MM in `timezone`")
    timezone: str = "UTC"
    escalate_after: int | None = Field(default=None, ge=1, description="Reminders before escalating")
    escalate_to: str | None = Field(default=None, description="Channel or user to escalate to")

    @field_validator("working_hours")
    @classmethod
    def _hours(cls, value: str | None) -> str | None:
        if value is not None and not _HOURS.match(value):
            raise ValueError(f"working_hours must look like 09:00-18:00, got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}") from None
        return value


InvalidateOn = Literal["commit", "blockers"]


def _invalidate_default() -> list[InvalidateOn]:
    return ["commit", "blockers"]


class Gate(_Model):
    id: str = Field(pattern=ID_PATTERN, description="Gate id: [a-z0-9-]+")
    name: str
    description: str | None = None
    channel: str = Field(min_length=1, description="Slack channel id for cards and announcements")
    checks: list[AnyCheckSpec] = Field(default_factory=list)
    signoffs: list[Signoff] = Field(default_factory=list)
    policy: Policy = Field(default_factory=StrictPolicy)
    risks: list[Risk] = Field(default_factory=list)
    override: Override | None = None
    drills: list[Drill] = Field(default_factory=list)
    rollback: Rollback | None = None
    reminders: Reminders | None = None
    allow_self_approval: bool = Field(default=True, description="May the release's opener approve it")
    signoffs_invalidate_on: list[InvalidateOn] = Field(default_factory=_invalidate_default)
    signoff_max_age: Duration | None = None
    stages: list[Stage] = Field(
        default_factory=list, description="Rollout stages in order (none: one implicit stage, decided as a whole)"
    )
    promote_roles: list[str] = Field(
        default_factory=list, description="Roles that may promote (default: members of the required roles)"
    )
    allow_skip: bool = Field(default=False, description="May a promotion skip stages")

    def stage(self, stage_id: str) -> Stage | None:
        return next((s for s in self.stages if s.id == stage_id), None)

    def stage_index(self, stage_id: str | None) -> int:
        """Position of a `before:` stage; None (the default) is the first stage."""
        if stage_id is None:
            return 0
        return next(i for i, s in enumerate(self.stages) if s.id == stage_id)

    def role(self, role_id: str) -> Signoff | None:
        return next((s for s in self.signoffs if s.role == role_id), None)

    def check(self, check_id: str) -> AnyCheckSpec | None:
        return next((c for c in self.checks if c.id == check_id), None)

    @property
    def role_ids(self) -> set[str]:
        return {s.role for s in self.signoffs}

    @model_validator(mode="after")
    def _references(self) -> Gate:
        problems: list[str] = []
        for what, items in (
            ("checks", [c.id for c in self.checks]),
            ("signoffs", [s.role for s in self.signoffs]),
            ("risks", [r.id for r in self.risks]),
            ("drills", [d.id for d in self.drills]),
        ):
            seen: set[str] = set()
            for index, item in enumerate(items):
                if item in seen:
                    problems.append(f"{what}[{index}]: duplicate id {item!r}")
                seen.add(item)

        roles = self.role_ids
        check_ids = {c.id for c in self.checks}

        def need_role(path: str, role: str) -> None:
            if role not in roles:
                known = ", ".join(sorted(roles)) or "none defined"
                problems.append(f"{path}: unknown role {role!r} (signoffs define: {known})")

        for index, risk in enumerate(self.risks):
            need_role(f"risks[{index}].acceptor", risk.acceptor)
        for index, check in enumerate(self.checks):
            if check.kind == "manual":
                need_role(f"checks[{index}].owner", check.owner)
            if check.pass_score is not None and getattr(check, "score", None) is None:
                problems.append(f"checks[{index}].pass_score: the check reports no score (add `score:`)")
        if self.override:
            for role in self.override.approvers:
                need_role(f"override.approvers.{role}", role)
        if self.rollback:
            for index, role in enumerate(self.rollback.allowed_roles):
                need_role(f"rollback.allowed_roles[{index}]", role)
            if self.rollback.verify and self.rollback.verify not in check_ids:
                problems.append(f"rollback.verify: unknown check {self.rollback.verify!r}")
        if isinstance(self.policy, ThresholdPolicy) and self.policy.review_role:
            need_role("policy.review_role", self.policy.review_role)
        if isinstance(self.policy, RiskScorePolicy):
            groups = {c.group for c in self.checks if c.group}
            for key in self.policy.weights:
                if key not in check_ids and key not in groups:
                    problems.append(f"policy.weights.{key}: not a check id or group")
        self._stage_references(problems, need_role)
        if problems:
            # One problem per line: the loader splits them back into separate, path-prefixed errors.
            raise ValueError("\n".join(problems))
        return self

    def _stage_references(self, problems: list[str], need_role: Callable[[str, str], None]) -> None:
        stage_ids = [s.id for s in self.stages]
        for index, sid in enumerate(stage_ids):
            if sid in stage_ids[:index]:
                problems.append(f"stages[{index}]: duplicate id {sid!r}")
        known = ", ".join(stage_ids) or "none defined"

        def need_stage(path: str, stage: str | None) -> None:
            if stage is not None and stage not in stage_ids:
                problems.append(f"{path}: unknown stage {stage!r} (stages define: {known})")

        items: list[tuple[str, Sequence[Any]]] = [
            ("checks", self.checks),
            ("signoffs", self.signoffs),
            ("risks", self.risks),
            ("drills", self.drills),
        ]
        for what, listed in items:
            for index, item in enumerate(listed):
                need_stage(f"{what}[{index}].before", item.before)
        for index, check in enumerate(self.checks):
            if check.kind == "manual" and check.due_rule is not None:
                need_stage(f"checks[{index}].due", check.due_rule.stage)
        for index, role in enumerate(self.promote_roles):
            need_role(f"promote_roles[{index}]", role)
