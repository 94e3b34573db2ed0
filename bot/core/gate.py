"""The gate file: pydantic models for one release gate, as written in YAML.

Everything here is pure data and validation. Cross-references (acceptors, verify, rollback roles,
override approvers, weights) are checked in `Gate._references` so one load reports them all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.core.durations import Duration
from bot.core.wallclock import DAYS, DEFAULT_PRELAUNCH, parse_hours, parse_window, zone_of
from checks import AnyCheckSpec
from checks.base import CHECK_ID_PATTERN, Severity

if TYPE_CHECKING:
    # The time logic behind windows and reminders is imported where it is used: loading and
    # validating a gate needs only the spellings (bot/core/wallclock.py).
    from bot.core.timeplan import FreezePeriod, ReminderRules, WindowRules, WindowStatus, WorkingTime

ID_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
_SLACK_TARGET = re.compile(r"^[CGUW][A-Z0-9]{2,}$")  # escalate_to: a channel or user id rather than a role
ROLE_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"

__all__ = ["Gate", "Severity"]


class _Model(BaseModel):
    # defer_build: a part of the gate is validated as part of `Gate`, whose validator is built
    # once, on first use; building one per part at import would only slow down start-up.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


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


class _Command(_Model):
    """A command gonogo runs for the gate (a drill, a rollback): the `command` check's engine and rules."""

    run: list[str] | str
    shell: bool = False
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the child")
    pass_env: list[str] = Field(
        default_factory=list, description="Secret-looking variables of gonogo's environment passed on (never its own)"
    )

    @model_validator(mode="after")
    def _shell_only_when_asked(self) -> _Command:
        if isinstance(self.run, str) and not self.shell:
            raise ValueError("run is a string: use an argv list, or set shell: true")
        if not self.run:
            raise ValueError("run must not be empty")
        return self


class Drill(_Command):
    id: str = Field(pattern=CHECK_ID_PATTERN)
    name: str | None = None
    timeout: Duration = timedelta(minutes=5)
    required: bool = True
    max_age: Duration | None = Field(default=None, description="A result older than this is stale")
    allowed_roles: list[str] = Field(
        default_factory=list, description="Roles whose members may run it from Slack (default: any role of the gate)"
    )
    before: str | None = _before()

    @property
    def title(self) -> str:
        return self.name or self.id


class Rollback(_Model):
    run: list[str] | str | None = Field(default=None, description="The rollback command; without it: announce + verify")
    shell: bool = False
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the child")
    pass_env: list[str] = Field(default_factory=list)
    timeout: Duration = timedelta(minutes=10)
    allowed_roles: list[str] = Field(min_length=1)
    verify: str | None = Field(default=None, description="Check id re-run after a rollback")

    @model_validator(mode="after")
    def _shell_only_when_asked(self) -> Rollback:
        if isinstance(self.run, str) and not self.shell:
            raise ValueError("run is a string: use an argv list, or set shell: true")
        if self.run is not None and not self.run:
            raise ValueError("run must not be empty (leave it out for announce + verify only)")
        return self


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _known_zone(value: str) -> str:
    zone_of(value)  # ValueError("unknown timezone ...") becomes the field's error
    return value


Zone = Annotated[str, AfterValidator(_known_zone)]


def _hours(value: str) -> str:
    try:
        parse_hours(value)
    except ValueError as exc:
        raise ValueError(f"working_hours must look like 09:00-18:00: {exc}") from None
    return value


def _window(value: str) -> str:
    parse_window(value)
    return value


class Reminders(_Model):
    every: Duration = timedelta(hours=2)
    first_after: Duration = Field(default=timedelta(0), description="Wait this long before the first reminder")
    max: int = Field(default=10, ge=1, description="Reminders per person per release, at most")
    working_hours: Annotated[str, AfterValidator(_hours)] | None = Field(
        default=None, description="HH:MM-HH:MM in the signer's Slack time zone (else `timezone`)"
    )
    quiet_days: list[Day] = Field(default_factory=list, description="No reminders on these days, e.g. [sat, sun]")
    timezone: Zone = Field(default="UTC", description="For signers whose Slack time zone is unknown")
    escalate_after: int | None = Field(default=None, ge=1, description="Unanswered reminders before escalating")
    escalate_to: str | None = Field(default=None, description="Channel id, user id or role to escalate to")

    @field_validator("every")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(minutes=1):
            raise ValueError("reminders every less than 1m would flood people")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Reminders:
        if len(set(self.quiet_days)) == 7:
            raise ValueError("quiet_days covers the whole week: nobody could ever be reminded")
        if (self.escalate_after is None) != (self.escalate_to is None):
            raise ValueError("escalate_after and escalate_to go together: after how many reminders, and to whom")
        return self

    def rules(self) -> ReminderRules:
        from bot.core.timeplan import ReminderRules

        return ReminderRules(
            every=self.every, first_after=self.first_after, max=self.max, escalate_after=self.escalate_after
        )

    def working_time(self, person_tz: str | None = None) -> WorkingTime:
        """A person's working time: their Slack zone when it is a known one, else the gate's `timezone`."""
        from bot.core.timeplan import WorkingTime

        try:
            zone = zone_of(person_tz) if person_tz else zone_of(self.timezone)
        except ValueError:
            zone = zone_of(self.timezone)
        return WorkingTime(
            zone=zone,
            hours=parse_hours(self.working_hours) if self.working_hours else None,
            quiet_days=frozenset(DAYS.index(d) for d in self.quiet_days),
        )


class Freeze(_Model):
    start: datetime | date = Field(alias="from", description="First frozen day (or local date-time)")
    end: datetime | date = Field(alias="to", description="Deploys allowed again from this day (or local date-time)")
    reason: str = Field(default="deploy freeze", min_length=1, description='Shown as "<reason> until …"')

    @field_validator("start", "end")
    @classmethod
    def _local(cls, value: datetime | date) -> datetime | date:
        if isinstance(value, datetime) and value.tzinfo is not None:
            raise ValueError("give a local date or date-time without an offset: windows.timezone applies")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Freeze:
        if _as_datetime(self.end) <= _as_datetime(self.start):
            raise ValueError(f"to ({self.end}) must be after from ({self.start}); to is the first day deploys resume")
        return self

    def period(self) -> FreezePeriod:
        from bot.core.timeplan import FreezePeriod

        return FreezePeriod(start=self.start, end=self.end, reason=self.reason)


def _as_datetime(value: datetime | date) -> datetime:
    return value if isinstance(value, datetime) else datetime.combine(value, datetime.min.time())


class Windows(_Model):
    allow: list[Annotated[str, AfterValidator(_window)]] = Field(
        default_factory=list,
        description='Deploys allowed only inside these, e.g. "mon-thu 09:00-16:00" (empty: always)',
    )
    freeze: list[Freeze] = Field(default_factory=list)
    timezone: Zone = "UTC"

    def rules(self) -> WindowRules:
        from bot.core.timeplan import WindowRules

        return WindowRules(
            zone=zone_of(self.timezone),
            allow=tuple(parse_window(a) for a in self.allow),
            freezes=tuple(f.period() for f in self.freeze),
        )


class Recheck(_Model):
    every: Duration = timedelta(minutes=15)
    until: Literal["decided", "closed"] = Field(default="decided", description="Stop re-checking at this state")

    @field_validator("every")
    @classmethod
    def _sane(cls, value: timedelta) -> timedelta:
        if value < timedelta(minutes=1):
            raise ValueError("recheck every less than 1m would run checks back to back")
        return value


class Postdeploy(_Model):
    every: Duration = timedelta(minutes=5)
    duration: Duration = Field(default=timedelta(hours=4), alias="for", description="How long to keep verifying")
    checks: list[str] = Field(min_length=1, description="Check ids re-run after a GO deploy")

    @model_validator(mode="after")
    def _sane(self) -> Postdeploy:
        if self.every < timedelta(seconds=30):
            raise ValueError("every must be at least 30s")
        if self.duration < self.every:
            raise ValueError(f"for ({self.duration}) is shorter than every ({self.every}): not a single run")
        return self


class Prelaunch(_Model):
    before: list[Duration] = Field(
        default_factory=lambda: list(DEFAULT_PRELAUNCH), description="Post the checklist this long before the target"
    )
    checklist: list[str] = Field(default_factory=list, description="Reminders listed with what still blocks")

    @field_validator("before")
    @classmethod
    def _positive(cls, value: list[timedelta]) -> list[timedelta]:
        if any(v <= timedelta(0) for v in value):
            raise ValueError("offsets must be positive durations before the target time")
        if len(set(value)) != len(value):
            raise ValueError("offsets must be distinct")
        return sorted(value, reverse=True)


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
    windows: Windows | None = None
    recheck: Recheck | None = None
    postdeploy: Postdeploy | None = None
    prelaunch: Prelaunch | None = Field(default=None, description="Default: posts 24h and 1h before a target time")
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

    def window_at(self, at: datetime) -> WindowStatus | None:
        """Whether a deploy may happen at `at`; None when the gate has no `windows`."""
        from bot.core.timeplan import window_status

        return window_status(self.windows.rules(), at) if self.windows else None

    @property
    def prelaunch_offsets(self) -> list[timedelta]:
        return self.prelaunch.before if self.prelaunch else list(DEFAULT_PRELAUNCH)

    def drill(self, drill_id: str) -> Drill | None:
        return next((d for d in self.drills if d.id == drill_id), None)

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
        for index, drill in enumerate(self.drills):
            for role_index, role in enumerate(drill.allowed_roles):
                need_role(f"drills[{index}].allowed_roles[{role_index}]", role)
        if self.override:
            for role in self.override.approvers:
                need_role(f"override.approvers.{role}", role)
        if self.rollback:
            for index, role in enumerate(self.rollback.allowed_roles):
                need_role(f"rollback.allowed_roles[{index}]", role)
            if self.rollback.verify and self.rollback.verify not in check_ids:
                problems.append(f"rollback.verify: unknown check {self.rollback.verify!r}")
        target = self.reminders.escalate_to if self.reminders else None
        if target and not _SLACK_TARGET.match(target) and target not in roles:
            known = ", ".join(sorted(roles)) or "none defined"
            problems.append(
                f"reminders.escalate_to: {target!r} is neither a channel or user id (C…, G…, U…)"
                f" nor a role (signoffs define: {known})"
            )
        if self.postdeploy:
            for index, check_id in enumerate(self.postdeploy.checks):
                if check_id not in check_ids:
                    problems.append(f"postdeploy.checks[{index}]: unknown check {check_id!r}")
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
