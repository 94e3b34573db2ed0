"""Rollout stages: a verdict per stage (dark -> canary -> full) and what still blocks each.

A gate with `stages:` says, per check, manual item, drill, risk and sign-off role, which stage it
must hold `before:` (default: the first). Stage S is decided by the same engine as a whole gate
(`decide`), on the slice of the gate required before S or any earlier stage: so an earlier
stage's blocker blocks every later stage, and a later stage may be NO-GO while an earlier one is
GO. A gate without stages is one implicit stage: `decide` on the whole gate, unchanged.

Pure: the clock and the times the release reached its stages are parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.core.decision import Decision, DecisionInput, Level, Reason, Verdict, decide
from bot.core.due import Due
from bot.core.gate import Gate, RiskScorePolicy, Stage
from bot.core.mentions import MENTION

_NOTHING_REACHED: Mapping[str, datetime] = MappingProxyType({})


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Condition(_Out):
    """One thing that still blocks a stage: a blocking reason, with who owns it and when it is due."""

    stage: str  # the stage it must hold before
    code: str
    text: str
    subject: str | None = None
    owner: str | None = None  # the role that can clear it (manual owner, sign-off role, risk acceptor)
    due: str | None = None  # as written: "2026-12-01" or "7d after Dark launch"
    due_at: datetime | None = None
    overdue: bool = False

    def as_json(self) -> dict[str, Any]:
        """For --json and the evidence bundle: mentions as @U…, times in ISO 8601."""
        return {
            "stage": self.stage,
            "code": self.code,
            "text": MENTION.sub(r"@\1", self.text),
            "subject": self.subject,
            "owner": self.owner,
            "due": self.due,
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "overdue": self.overdue,
        }


class StageVerdict(_Out):
    id: str
    name: str
    decision: Decision
    conditions: list[Condition] = Field(default_factory=list)  # everything that blocks it, earliest stage first

    @property
    def verdict(self) -> Verdict:
        return self.decision.verdict

    @property
    def go(self) -> bool:
        return self.verdict is not Verdict.NO_GO

    def own(self) -> list[Condition]:
        """Its own conditions: those that must hold before this stage, not an earlier one."""
        return [c for c in self.conditions if c.stage == self.id]


class Ladder(_Out):
    """Every stage's verdict, in order, and where the release stands."""

    stages: list[StageVerdict]
    current: str | None = None  # the stage the release was last promoted to; None: not yet
    overdue: list[Condition] = Field(default_factory=list)  # open manual items past their due date

    def get(self, stage_id: str) -> StageVerdict | None:
        return next((s for s in self.stages if s.id == stage_id), None)

    @property
    def target(self) -> StageVerdict:
        """The stage a promotion would go to next (the last one once it is reached)."""
        ids = [s.id for s in self.stages]
        if self.current is None or self.current not in ids:
            return self.stages[0]
        return self.stages[min(ids.index(self.current) + 1, len(ids) - 1)]


def ladder_json(ladder: Ladder) -> list[dict[str, Any]]:
    """Every stage's verdict and open conditions, as plain JSON types."""
    return [
        {
            "id": s.id,
            "name": s.name,
            "verdict": s.verdict.value,
            "exit_code": s.verdict.exit_code,
            "open": [c.as_json() for c in s.conditions],
        }
        for s in ladder.stages
    ]


def stage_names(gate: Gate) -> dict[str, str]:
    return {s.id: s.title for s in gate.stages}


def scoped(gate: Gate, stage_id: str) -> Gate:
    """The slice of the gate that must hold before `stage_id` (and every earlier stage)."""
    upto = gate.stage_index(stage_id)

    def within(before: str | None) -> bool:
        return gate.stage_index(before) <= upto

    checks = [c for c in gate.checks if within(c.before)]
    policy = gate.policy
    if isinstance(policy, RiskScorePolicy):
        # A weighted check or group that belongs to a later stage does not score this one.
        keys = {c.id for c in checks} | {c.group for c in checks if c.group}
        policy = policy.model_copy(update={"weights": {k: w for k, w in policy.weights.items() if k in keys}})
    # model_copy skips validation on purpose: the slice may drop a role other parts name, and the
    # whole gate was validated when it was loaded.
    return gate.model_copy(
        update={
            "checks": checks,
            "signoffs": [s for s in gate.signoffs if within(s.before)],
            "risks": [r for r in gate.risks if within(r.before)],
            "drills": [d for d in gate.drills if within(d.before)],
            "policy": policy,
        }
    )


def decide_stages(
    inp: DecisionInput, *, current: str | None = None, reached: Mapping[str, datetime] | None = None
) -> Ladder:
    """A verdict per stage. `reached`: when the release reached each stage (for `due: 7d after …`)."""
    gate = inp.gate
    arrived = reached if reached is not None else _NOTHING_REACHED
    stages = gate.stages or [Stage(id="release", name=gate.name)]
    verdicts = []
    for stage in stages:
        if gate.stages:
            decision = decide(inp.model_copy(update={"gate": scoped(gate, stage.id), "whole_gate": gate}))
        else:
            decision = decide(inp)
        conditions = [condition(gate, r, arrived, inp.now, stage.id) for r in decision.blocking]
        conditions.sort(key=lambda c: gate.stage_index(c.stage) if gate.stages else 0)  # stable
        verdicts.append(StageVerdict(id=stage.id, name=stage.title, decision=decision, conditions=conditions))
    return Ladder(stages=verdicts, current=current, overdue=overdue(gate, inp, arrived))


# --- conditions: who owns a blocking reason, and by when ------------------------------------------


def _subject(gate: Gate, reason: Reason) -> Any:
    """The gate item a reason is about (check, role, drill or risk), told apart by the reason's code."""
    if reason.subject is None:
        return None
    if reason.code.startswith(("signoff_", "threshold_")):
        return gate.role(reason.subject)
    if reason.code.startswith("drill_"):
        return next((d for d in gate.drills if d.id == reason.subject), None)
    if reason.code.startswith("risk_"):
        return next((r for r in gate.risks if r.id == reason.subject), None)
    return gate.check(reason.subject)


def condition(gate: Gate, reason: Reason, reached: Mapping[str, datetime], now: datetime, deciding: str) -> Condition:
    item = _subject(gate, reason)
    # A reason about no item (a policy threshold) belongs to the stage being decided.
    stage = getattr(item, "before", None) or (gate.stages[0].id if gate.stages and item is not None else deciding)
    owner = None
    if item is not None:
        role_id = getattr(item, "owner", None) or getattr(item, "acceptor", None) or getattr(item, "role", None)
        role = gate.role(role_id) if role_id else None
        owner = role.title if role else role_id
    due = _due(item)
    due_at = due.at(reached) if due else None
    return Condition(
        stage=stage,
        code=reason.code,
        text=reason.text,
        subject=reason.subject,
        owner=owner,
        due=due.text(stage_names(gate)) if due else None,
        due_at=due_at,
        overdue=due_at is not None and now >= due_at,
    )


def _due(item: Any) -> Due | None:
    rule = getattr(item, "due_rule", None)
    return rule if isinstance(rule, Due) else None


def overdue(gate: Gate, inp: DecisionInput, reached: Mapping[str, datetime]) -> list[Condition]:
    """Manual items with a due date that are not done and past it, whichever stage they block."""
    found = []
    for check in gate.checks:
        due = _due(check)
        result = inp.results.get(check.id)
        if due is None or (result is not None and result.status.passing):
            continue
        due_at = due.at(reached)
        if due_at is not None and inp.now >= due_at:
            found.append(
                condition(
                    gate,
                    Reason(
                        level=Level.BLOCKING, code="manual_overdue", text=f"{check.title} is overdue", subject=check.id
                    ),
                    reached,
                    inp.now,
                    gate.stages[0].id if gate.stages else "release",
                )
            )
    return found
