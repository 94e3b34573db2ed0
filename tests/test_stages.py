"""Rollout stages, pure: a verdict per stage, conditions with owners and due dates, overdue items,
stage-scoped sign-offs, and the gate file's stage references."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from bot.core.decision import DecisionInput, Verdict, decide
from bot.core.due import parse_due
from bot.core.facts import OverrideApproval, OverrideRequest, RiskAcceptance, Signature, Vote
from bot.core.gate import Gate
from bot.core.results import CheckResult, Status
from bot.core.stages import Ladder, decide_stages

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
STAGES = [{"id": "dark", "name": "Dark launch"}, {"id": "canary", "name": "Canary 5%"}, {"id": "full"}]


def staged_gate(**overrides: Any) -> Gate:
    doc: dict[str, Any] = {
        "id": "payments",
        "name": "Payments",
        "channel": "C1",
        "stages": STAGES,
        "checks": [
            {"id": "tests", "kind": "command", "run": ["pytest"], "severity": "blocker"},
            {"id": "alerting", "kind": "manual", "owner": "sre", "before": "canary", "due": "7d after dark"},
            {"id": "dashboards", "kind": "manual", "owner": "sre", "before": "canary", "due": "2026-11-30"},
            {"id": "audit", "kind": "manual", "owner": "security", "before": "full"},
        ],
        "signoffs": [
            {"role": "tech-lead", "label": "Tech Lead", "users": ["U1"]},
            {"role": "sre", "label": "SRE", "users": ["U2"]},
            {"role": "security", "label": "Security", "users": ["U3"], "before": "full"},
        ],
        "override": {"approvers": {"tech-lead": 1}},
    }
    doc.update(overrides)
    return Gate.model_validate(doc)


def res(check_id: str, status: str) -> CheckResult:
    return CheckResult(check_id=check_id, status=Status(status), summary=status, started_at=NOW, finished_at=NOW)


def results(**statuses: str) -> dict[str, CheckResult]:
    return {k: res(k, v) for k, v in statuses.items()}


def sig(role: str, user: str) -> Signature:
    return Signature(role=role, user=user, vote=Vote.APPROVE, at=NOW)


SIGNED = (sig("tech-lead", "U1"), sig("sre", "U2"))
ALL_SIGNED = (*SIGNED, sig("security", "U3"))


def ladder(gate: Gate | None = None, *, reached: dict[str, datetime] | None = None, **kwargs: Any) -> Ladder:
    return decide_stages(DecisionInput(gate=gate or staged_gate(), now=NOW, **kwargs), reached=reached)


def verdicts(found: Ladder) -> list[tuple[str, Verdict, int]]:
    return [(s.id, s.verdict, len(s.conditions)) for s in found.stages]


GO, NO_GO, OVERRIDE = Verdict.GO, Verdict.NO_GO, Verdict.OVERRIDE


@pytest.mark.parametrize(
    ("label", "kwargs", "expected"),
    [
        (
            "conditions before canary open: dark GO, canary and full NO-GO",
            {"results": results(tests="pass"), "signatures": SIGNED},
            [("dark", GO, 0), ("canary", NO_GO, 2), ("full", NO_GO, 4)],
        ),
        (
            "an earlier stage's blocker blocks every later stage",
            {
                "results": results(tests="fail", alerting="pass", dashboards="pass", audit="pass"),
                "signatures": ALL_SIGNED,
            },
            [("dark", NO_GO, 1), ("canary", NO_GO, 1), ("full", NO_GO, 1)],
        ),
        (
            "everything holds: every stage GO",
            {
                "results": results(tests="pass", alerting="pass", dashboards="pass", audit="pass"),
                "signatures": ALL_SIGNED,
            },
            [("dark", GO, 0), ("canary", GO, 0), ("full", GO, 0)],
        ),
        (
            "a stage-scoped sign-off role blocks only its stage",
            {
                "results": results(tests="pass", alerting="pass", dashboards="pass", audit="pass"),
                "signatures": SIGNED,
            },
            [("dark", GO, 0), ("canary", GO, 0), ("full", NO_GO, 1)],
        ),
        (
            "a first-stage sign-off missing blocks them all",
            {
                "results": results(tests="pass", alerting="pass", dashboards="pass", audit="pass"),
                "signatures": (sig("tech-lead", "U1"), sig("security", "U3")),
            },
            [("dark", NO_GO, 1), ("canary", NO_GO, 1), ("full", NO_GO, 1)],
        ),
    ],
)
def test_verdict_per_stage(label: str, kwargs: dict[str, Any], expected: list[tuple[str, Verdict, int]]) -> None:
    assert verdicts(ladder(**kwargs)) == expected, label


def test_conditions_carry_their_stage_owner_and_due_date() -> None:
    found = ladder(results=results(tests="pass"), signatures=SIGNED)
    canary = found.stages[1]
    assert [(c.subject, c.stage, c.owner, c.due) for c in canary.conditions] == [
        ("alerting", "canary", "SRE", "7d after Dark launch"),
        ("dashboards", "canary", "SRE", "2026-11-30"),
    ]
    full = found.stages[2]
    assert [(c.subject, c.stage, c.owner) for c in full.own()] == [
        ("audit", "full", "Security"),
        ("security", "full", "Security"),
    ]
    assert [c.subject for c in full.conditions[:2]] == ["alerting", "dashboards"]  # earliest stage first


@pytest.mark.parametrize(
    ("now", "dark_reached", "overdue"),
    [
        (NOW, None, []),  # dark not reached: "7d after dark" is not due yet; 2026-11-30 not yet either
        (NOW, NOW - timedelta(days=6), []),
        (NOW, NOW - timedelta(days=7), ["alerting"]),  # due the moment 7 days have passed
        (datetime(2026, 12, 1, 0, 0, tzinfo=UTC), None, ["dashboards"]),  # a date is due by the end of that day
        (datetime(2026, 11, 30, 23, 59, tzinfo=UTC), None, []),
    ],
)
def test_overdue_conditions(now: datetime, dark_reached: datetime | None, overdue: list[str]) -> None:
    reached = {"dark": dark_reached} if dark_reached else {}
    found = decide_stages(
        DecisionInput(gate=staged_gate(), now=now, results=results(tests="pass"), signatures=SIGNED), reached=reached
    )
    assert [c.subject for c in found.overdue] == overdue
    assert [c.subject for c in found.stages[1].conditions if c.overdue] == overdue
    # Overdue is shown, it does not change a verdict: the dark launch stays GO.
    assert found.stages[0].verdict is GO


def test_a_done_item_is_never_overdue() -> None:
    found = ladder(
        results=results(tests="pass", alerting="pass"), signatures=SIGNED, reached={"dark": NOW - timedelta(days=30)}
    )
    assert found.overdue == []


def test_an_override_passes_every_stage_and_says_so() -> None:
    request = OverrideRequest(
        id="o1",
        requested_by="U9",
        reason="hotfix",
        at=NOW - timedelta(minutes=5),
        approvals=(OverrideApproval(role="tech-lead", user="U1", at=NOW),),
    )
    found = ladder(results=results(tests="pass"), signatures=SIGNED, override=request)
    assert verdicts(found) == [("dark", GO, 0), ("canary", OVERRIDE, 2), ("full", OVERRIDE, 4)]


def test_risks_and_drills_are_scoped_too() -> None:
    gate = staged_gate(
        risks=[{"id": "load", "description": "unknown load", "acceptor": "sre", "before": "canary"}],
        drills=[{"id": "failover", "run": ["x"], "before": "full"}],
    )
    found = ladder(
        gate, results=results(tests="pass", alerting="pass", dashboards="pass", audit="pass"), signatures=ALL_SIGNED
    )
    assert verdicts(found) == [("dark", GO, 0), ("canary", NO_GO, 1), ("full", NO_GO, 2)]
    accepted = RiskAcceptance(risk_id="load", role="sre", user="U2", at=NOW, reason="watched")
    found = ladder(
        gate,
        results=results(tests="pass", alerting="pass", dashboards="pass", audit="pass"),
        signatures=ALL_SIGNED,
        acceptances=(accepted,),
    )
    assert [s.verdict for s in found.stages] == [GO, Verdict.GO_WITH_RISK, NO_GO]


def test_risk_score_counts_only_the_checks_of_the_stage() -> None:
    gate = staged_gate(
        checks=[
            {"id": "readiness", "kind": "tcp", "host": "h", "port": 1},
            {"id": "load", "kind": "tcp", "host": "h", "port": 1, "before": "canary"},
        ],
        signoffs=[{"role": "sre", "users": ["U2"]}],
        override=None,
        policy={"kind": "risk_score", "weights": {"readiness": 0.5, "load": 0.5}},
    )
    found = ladder(gate, results=results(readiness="pass", load="fail"), signatures=(sig("sre", "U2"),))
    scores = [s.decision.score.score if s.decision.score else None for s in found.stages]
    assert scores == [0, 50, 50]
    assert [s.verdict for s in found.stages] == [GO, Verdict.GO_WITH_RISK, Verdict.GO_WITH_RISK]


def test_signatures_stay_bound_to_the_whole_gates_blockers() -> None:
    """A stage sees a slice of the gate, but a signature is bound to the whole gate's blockers: the
    slice alone never makes it stale, and a later stage's blocker regressing makes it stale in every
    stage (the signer approved with that blocker passing)."""
    gate = staged_gate(
        checks=[
            {"id": "tests", "kind": "command", "run": ["pytest"], "severity": "blocker"},
            {"id": "soak", "kind": "command", "run": ["x"], "severity": "blocker", "before": "full"},
        ]
    )
    signed = tuple(s.model_copy(update={"passing": ("soak", "tests")}) for s in ALL_SIGNED)
    inp = DecisionInput(gate=gate, now=NOW, results=results(tests="pass", soak="pass"), signatures=signed)
    found = decide_stages(inp)
    assert [s.verdict for s in found.stages] == [GO, GO, GO]
    assert all(not role.stale for s in found.stages for role in s.decision.roles)

    regressed = decide_stages(inp.model_copy(update={"results": results(tests="pass", soak="fail")}))
    dark = regressed.stages[0].decision
    assert dark.verdict is Verdict.NO_GO  # soak is not dark's condition, but the sign-offs went stale
    assert {role.role for role in dark.roles if role.stale} == {"tech-lead", "sre"}


def test_a_gate_without_stages_is_one_stage_decided_as_before() -> None:
    gate = staged_gate(stages=[], checks=[{"id": "tests", "kind": "command", "run": ["x"]}], signoffs=[], override=None)
    inp = DecisionInput(gate=gate, now=NOW, results=results(tests="pass"))
    found = decide_stages(inp)
    assert [s.id for s in found.stages] == ["release"]
    assert found.stages[0].decision == decide(inp)


def test_ladder_target_is_the_next_stage() -> None:
    found = ladder(results=results(tests="pass"), signatures=SIGNED)
    assert found.target.id == "dark"
    assert found.model_copy(update={"current": "dark"}).target.id == "canary"
    assert found.model_copy(update={"current": "full"}).target.id == "full"


# --- the gate file ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"stages": [*STAGES, {"id": "dark"}]}, "stages[3]: duplicate id 'dark'"),
        (
            {"checks": [{"id": "t", "kind": "tcp", "host": "h", "port": 1, "before": "prod"}]},
            "checks[0].before: unknown stage 'prod' (stages define: dark, canary, full)",
        ),
        (
            {"signoffs": [{"role": "sre", "users": ["U2"], "before": "later"}], "override": None},
            "signoffs[0].before: unknown stage 'later'",
        ),
        (
            {"checks": [{"id": "m", "kind": "manual", "owner": "sre", "due": "3d after prod"}]},
            "checks[0].due: unknown stage 'prod'",
        ),
        ({"promote_roles": ["release-manager"]}, "promote_roles[0]: unknown role 'release-manager'"),
        (
            {"stages": [], "checks": [{"id": "t", "kind": "tcp", "host": "h", "port": 1, "before": "canary"}]},
            "checks[0].before: unknown stage 'canary' (stages define: none defined)",
        ),
    ],
)
def test_stage_references_are_checked(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        staged_gate(**change)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("value", "on", "after", "stage"),
    [
        (date(2026, 12, 1), date(2026, 12, 1), None, None),
        ("2026-12-01", date(2026, 12, 1), None, None),
        ("7d after dark", None, timedelta(days=7), "dark"),
        ("36h after canary", None, timedelta(hours=36), "canary"),
    ],
)
def test_due_forms(value: Any, on: date | None, after: timedelta | None, stage: str | None) -> None:
    due = parse_due(value)
    assert (due.on, due.after, due.stage) == (on, after, stage)


@pytest.mark.parametrize("value", ["soon", "7 days after dark", "7d before dark", "2026-13-01"])
def test_bad_due_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="due must be a date"):
        parse_due(value)


def test_the_contract_declares_stages() -> None:
    from pathlib import Path

    from bot.core.loader import load_gate

    gate = load_gate(Path(__file__).parent / "data" / "contract.yml").gate
    assert [(s.id, s.title) for s in gate.stages] == [("canary", "Canary 5%"), ("full", "Full production")]
    assert gate.promote_roles == ["tech-lead", "sre"] and gate.allow_skip is False
    pen_test = gate.check("pen-test")
    assert pen_test is not None and pen_test.before == "full"
    due = pen_test.due_rule  # type: ignore[union-attr]
    assert due is not None and (due.after, due.stage) == (timedelta(days=7), "canary")
