"""What people added to a release (votes, accepted risks, manual marks, an override, drill
results), loaded from the store in one snapshot and handed to the pure decision engine.

Shared by the bot and by `gonogo check --release`, so Slack and CI decide on the same facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from bot.core.decision import DecisionInput, literal, mention
from bot.core.facts import (
    DrillResult,
    ManualMark,
    OverrideApproval,
    OverrideRequest,
    RiskAcceptance,
    Signature,
)
from bot.core.gate import Gate
from bot.core.results import CheckResult, Status
from bot.store.store import Fact, Store


@dataclass(frozen=True)
class People:
    signatures: list[Signature] = field(default_factory=list)
    acceptances: list[RiskAcceptance] = field(default_factory=list)
    marks: dict[str, ManualMark] = field(default_factory=dict)
    override: OverrideRequest | None = None
    drills: dict[str, DrillResult] = field(default_factory=dict)

    def decision_input(
        self, gate: Gate, now: datetime, results: Mapping[str, CheckResult], sha: str | None
    ) -> DecisionInput:
        return DecisionInput(
            gate=gate,
            now=now,
            results=results,
            sha=sha,
            signatures=self.signatures,
            drills=self.drills,
            acceptances=self.acceptances,
            override=self.override,
        )


async def load_people(store: Store, release_id: str) -> People:
    facts = await store.people(release_id)
    override_raw = await store.get_override(release_id)
    drills_raw = await store.drills(release_id)
    override = None
    if override_raw:
        approvals = tuple(
            sorted(
                (OverrideApproval.model_validate_json(v) for v in facts[Fact.OVERRIDE_APPROVALS].values()),
                key=lambda a: a.at,
            )
        )
        override = OverrideRequest.model_validate_json(override_raw).model_copy(update={"approvals": approvals})
    return People(
        signatures=[Signature.model_validate_json(v) for v in facts[Fact.SIGNATURES].values()],
        acceptances=[RiskAcceptance.model_validate_json(v) for v in facts[Fact.ACCEPTANCES].values()],
        marks={k: ManualMark.model_validate_json(v) for k, v in facts[Fact.MANUAL].items()},
        override=override,
        drills={k: DrillResult.model_validate_json(v) for k, v in drills_raw.items()},
    )


def with_manual_marks(
    gate: Gate, results: Mapping[str, CheckResult], marks: Mapping[str, ManualMark]
) -> dict[str, CheckResult]:
    """A manual check marked done passes, whatever a run said (a run can only say "pending")."""
    merged = dict(results)
    for check in gate.checks:
        mark = marks.get(check.id)
        if check.kind == "manual" and mark is not None:
            merged[check.id] = CheckResult(
                check_id=check.id,
                status=Status.PASS,
                summary=f"done by {mention(mark.user)}: {literal(mark.evidence)}",
                started_at=mark.at,
                finished_at=mark.at,
            )
    return merged
