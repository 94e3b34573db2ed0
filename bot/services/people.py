"""What people added to a release (votes, accepted risks, manual marks, an override), what CI
reported for its external checks, and the gate's latest drill runs, loaded from the store and
handed to the pure decision engine.

Shared by the bot and by `gonogo check --release`, so Slack and CI decide on the same facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from bot.core.decision import DecisionInput
from bot.core.facts import (
    DrillResult,
    ManualMark,
    OverrideApproval,
    OverrideRequest,
    RiskAcceptance,
    Signature,
)
from bot.core.gate import Gate
from bot.core.mentions import literal, mention
from bot.core.results import CheckResult, Status
from bot.store.gatestore import GateStore
from bot.store.store import Fact, Store
from checks import external


@dataclass(frozen=True)
class People:
    signatures: list[Signature] = field(default_factory=list)
    acceptances: list[RiskAcceptance] = field(default_factory=list)
    marks: dict[str, ManualMark] = field(default_factory=dict)
    override: OverrideRequest | None = None
    drills: dict[str, DrillResult] = field(default_factory=dict)  # the gate's latest run of each drill
    external: dict[str, external.ExternalResult] = field(default_factory=dict)

    def results_for(
        self, gate: Gate, results: Mapping[str, CheckResult], sha: str | None, now: datetime
    ) -> dict[str, CheckResult]:
        """The results the decision sees: manual marks and CI-reported results over what runs said."""
        return with_external_results(gate, with_manual_marks(gate, results, self.marks), self.external, sha, now)

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
            window=gate.window_at(now),  # the card, `decide` and `check --release` see the same windows
        )


async def load_people(store: Store, release_id: str) -> People:
    facts = await store.people(release_id)
    override_raw = await store.get_override(release_id)
    gates = GateStore(store.redis)
    drills = await gates.latest_drills(release_id.partition("@")[0])
    reported = await gates.external_results(release_id)
    override = None
    if override_raw:
        request = OverrideRequest.model_validate_json(override_raw)
        # Keyed by the request id: approvals of a request that was replaced never count for this one.
        raw_approvals = await store.override_approvals(release_id, request.id)
        approvals = tuple(
            sorted((OverrideApproval.model_validate_json(v) for v in raw_approvals.values()), key=lambda a: a.at)
        )
        override = request.model_copy(update={"approvals": approvals})
    return People(
        signatures=[Signature.model_validate_json(v) for v in facts[Fact.SIGNATURES].values()],
        acceptances=[RiskAcceptance.model_validate_json(v) for v in facts[Fact.ACCEPTANCES].values()],
        marks={k: ManualMark.model_validate_json(v) for k, v in facts[Fact.MANUAL].items()},
        override=override,
        drills=dict(drills),
        external=reported,
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


def with_external_results(
    gate: Gate,
    results: Mapping[str, CheckResult],
    reported: Mapping[str, external.ExternalResult],
    sha: str | None,
    now: datetime,
) -> dict[str, CheckResult]:
    """An external check's result is what CI reported for the release's commit (while fresh), never
    what a run said (a run can only say "waiting for CI")."""
    merged = dict(results)
    for check in gate.checks:
        if isinstance(check, external.Spec):
            merged[check.id] = external.effective(check, reported.get(check.id), sha=sha, now=now)
    return merged
