"""The decision engine, as tables: every rule of the issue, with its edge cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.core.decision import DecisionInput, Level, Verdict, decide
from bot.core.facts import (
    DrillResult,
    OverrideApproval,
    OverrideRequest,
    RiskAcceptance,
    Signature,
    Vote,
    passing_blockers,
)
from bot.core.gate import Gate
from bot.core.results import CheckResult, Status

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def make_gate(**overrides: Any) -> Gate:
    doc: dict[str, Any] = {
        "id": "payments",
        "name": "Payments",
        "channel": "C1",
        "checks": [
            {"id": "tests", "kind": "command", "run": ["pytest"], "severity": "blocker"},
            {"id": "health", "kind": "tcp", "host": "127.0.0.1", "port": 1},
            {"id": "lint", "kind": "command", "run": ["ruff"], "severity": "advisory"},
        ],
        "signoffs": [
            {"role": "tech-lead", "users": ["U1", "U2"]},
            {"role": "sre", "users": ["U3", "U4"], "min_approvals": 2},
            {"role": "product", "users": ["U5"], "required": False},
        ],
    }
    doc.update(overrides)
    return Gate.model_validate(doc)


def res(check_id: str, status: str, at: datetime = NOW) -> CheckResult:
    return CheckResult(
        check_id=check_id, status=Status(status), summary=f"{check_id} {status}", started_at=at, finished_at=at
    )


def results(**statuses: str) -> dict[str, CheckResult]:
    return {k: res(k, v) for k, v in statuses.items()}


def sig(role: str, user: str, vote: str = "approve", *, at: datetime = NOW, sha: str | None = None) -> Signature:
    return Signature(role=role, user=user, vote=Vote(vote), at=at, sha=sha)


ALL_SIGNED = (sig("tech-lead", "U1"), sig("sre", "U3"), sig("sre", "U4"))
GREEN = results(tests="pass", health="pass", lint="pass")


def verdict_of(gate: Gate | None = None, **kwargs: Any) -> tuple[Verdict, list[str]]:
    decision = decide(DecisionInput(gate=gate or make_gate(), now=NOW, **kwargs))
    return decision.verdict, [r.code for r in decision.reasons if r.level is Level.BLOCKING]


@pytest.mark.parametrize(
    ("label", "kwargs", "verdict", "blocking"),
    [
        ("all green and signed", {"results": GREEN, "signatures": ALL_SIGNED}, Verdict.GO, []),
        (
            "failed blocker",
            {"results": results(tests="fail", health="pass", lint="pass"), "signatures": ALL_SIGNED},
            Verdict.NO_GO,
            ["blocker_not_passing"],
        ),
        (
            "errored blocker",
            {"results": results(tests="error", health="pass"), "signatures": ALL_SIGNED},
            Verdict.NO_GO,
            ["blocker_not_passing"],
        ),
        (
            "blocker never ran",
            {"results": results(health="pass"), "signatures": ALL_SIGNED},
            Verdict.NO_GO,
            ["blocker_not_passing"],
        ),
        (
            "required check failed (strict)",
            {"results": results(tests="pass", health="fail"), "signatures": ALL_SIGNED},
            Verdict.NO_GO,
            ["check_not_passing"],
        ),
        (
            "required check never ran",
            {"results": results(tests="pass"), "signatures": ALL_SIGNED},
            Verdict.NO_GO,
            ["check_not_passing"],
        ),
        (
            "advisory failure only warns",
            {"results": results(tests="pass", health="pass", lint="fail"), "signatures": ALL_SIGNED},
            Verdict.GO,
            [],
        ),
        (
            "warn counts as passing",
            {"results": results(tests="warn", health="warn"), "signatures": ALL_SIGNED},
            Verdict.GO,
            [],
        ),
        (
            "pending counts as not passing",
            {"results": results(tests="pass", health="pending"), "signatures": ALL_SIGNED},
            Verdict.NO_GO,
            ["check_not_passing"],
        ),
        ("no signatures", {"results": GREEN}, Verdict.NO_GO, ["signoff_missing", "signoff_missing"]),
        (
            "quorum not met",
            {"results": GREEN, "signatures": (sig("tech-lead", "U1"), sig("sre", "U3"))},
            Verdict.NO_GO,
            ["signoff_missing"],
        ),
        (
            "same person twice never makes a quorum",
            {"results": GREEN, "signatures": (sig("tech-lead", "U1"), sig("sre", "U3"), sig("sre", "U3"))},
            Verdict.NO_GO,
            ["signoff_missing"],
        ),
        (
            "rejection blocks",
            {"results": GREEN, "signatures": (*ALL_SIGNED, sig("tech-lead", "U2", "reject"))},
            Verdict.NO_GO,
            ["signoff_rejected"],
        ),
        (
            "changed vote: latest wins",
            {
                "results": GREEN,
                "signatures": (
                    sig("tech-lead", "U1", "reject", at=NOW - timedelta(minutes=5)),
                    sig("tech-lead", "U1", "approve"),
                    sig("sre", "U3"),
                    sig("sre", "U4"),
                ),
            },
            Verdict.GO,
            [],
        ),
        (
            "optional role rejecting does not block",
            {"results": GREEN, "signatures": (*ALL_SIGNED, sig("product", "U5", "reject"))},
            Verdict.GO,
            [],
        ),
        ("ignore sign-offs", {"results": GREEN, "ignore_signoffs": True}, Verdict.GO, []),
    ],
)
def test_common_rules(label: str, kwargs: dict[str, Any], verdict: Verdict, blocking: list[str]) -> None:
    assert verdict_of(**kwargs) == (verdict, blocking), label


def test_no_checks_at_all_is_go_once_signed() -> None:
    gate = make_gate(checks=[])
    assert verdict_of(gate, signatures=ALL_SIGNED) == (Verdict.GO, [])


def test_everything_advisory_failing_is_go_with_warnings() -> None:
    gate = make_gate(checks=[{"id": "lint", "kind": "command", "run": ["x"], "severity": "advisory"}])
    decision = decide(DecisionInput(gate=gate, now=NOW, results=results(lint="fail"), signatures=ALL_SIGNED))
    assert decision.verdict is Verdict.GO
    assert [r.code for r in decision.reasons] == ["advisory_not_passing"]
    assert (decision.checks_passed, decision.checks_total) == (0, 0)


def test_blocking_reasons_come_first() -> None:
    decision = decide(
        DecisionInput(gate=make_gate(), now=NOW, results=results(tests="fail", health="pass", lint="fail"))
    )
    levels = [r.level for r in decision.reasons]
    assert levels == sorted(levels, key=[Level.BLOCKING, Level.RISK, Level.WARNING, Level.INFO].index)
    assert decision.reasons[0].code == "blocker_not_passing"
    assert "tests failed" in decision.reasons[0].text


# --- threshold policy (the 10/10 · 9/10 · <9 deploy checklist) -------------------------------

TEN = [{"id": f"c{i}", "kind": "tcp", "host": "h", "port": 1} for i in range(10)]
CTO = [{"role": "cto", "users": ["UCTO"]}]


def ten(passing: int) -> dict[str, CheckResult]:
    return {f"c{i}": res(f"c{i}", "pass" if i < passing else "fail") for i in range(10)}


@pytest.mark.parametrize(
    ("passing", "cto_signed", "verdict", "blocking"),
    [
        (10, False, Verdict.NO_GO, ["signoff_missing"]),  # the CTO role is still a required sign-off
        (10, True, Verdict.GO, []),
        (9, False, Verdict.NO_GO, ["threshold_review", "signoff_missing"]),
        (9, True, Verdict.GO, []),
        (8, True, Verdict.NO_GO, ["threshold_below"]),
        (0, True, Verdict.NO_GO, ["threshold_below"]),
    ],
)
def test_threshold_policy(passing: int, cto_signed: bool, verdict: Verdict, blocking: list[str]) -> None:
    gate = make_gate(
        checks=TEN, signoffs=CTO, policy={"kind": "threshold", "go": 1.0, "review": 0.9, "review_role": "cto"}
    )
    signatures = (sig("cto", "UCTO"),) if cto_signed else ()
    assert verdict_of(gate, results=ten(passing), signatures=signatures) == (verdict, blocking)


def test_threshold_still_honours_blockers() -> None:
    checks = [dict(TEN[0], severity="blocker"), *TEN[1:]]
    gate = make_gate(checks=checks, signoffs=CTO, policy={"kind": "threshold", "review_role": "cto"})
    results_ = ten(10) | {"c0": res("c0", "fail")}
    verdict, blocking = verdict_of(gate, results=results_, signatures=(sig("cto", "UCTO"),))
    assert verdict is Verdict.NO_GO and "blocker_not_passing" in blocking


# --- risk score policy (preflight: weights 0.5/0.5, penalty 5, 50/65) --------------------------


def risk_gate() -> Gate:
    checks = [{"id": f"r{i}", "kind": "tcp", "host": "h", "port": 1, "group": "readiness"} for i in range(10)] + [
        {"id": f"m{i}", "kind": "tcp", "host": "h", "port": 1, "group": "mvp"} for i in range(10)
    ]
    policy = {"kind": "risk_score", "weights": {"readiness": 0.5, "mvp": 0.5}, "penalty": 5, "go_below": 50}
    return make_gate(checks=checks, signoffs=CTO, policy=policy | {"caution_below": 65})


@pytest.mark.parametrize(
    ("readiness", "mvp", "score", "verdict"),
    [
        (7, 7, 35.0, Verdict.GO),  # the seed's own example: 100 - 70 + 5
        (10, 10, 5.0, Verdict.GO),
        (6, 5, 50.0, Verdict.GO_WITH_RISK),  # exactly go_below is not below it
        (5, 5, 55.0, Verdict.GO_WITH_RISK),
        (4, 4, 65.0, Verdict.NO_GO),  # exactly caution_below is not below it
        (0, 0, 105.0, Verdict.NO_GO),
    ],
)
def test_risk_score_policy(readiness: int, mvp: int, score: float, verdict: Verdict) -> None:
    results_ = {f"r{i}": res(f"r{i}", "pass" if i < readiness else "fail") for i in range(10)}
    results_ |= {f"m{i}": res(f"m{i}", "pass" if i < mvp else "fail") for i in range(10)}
    decision = decide(DecisionInput(gate=risk_gate(), now=NOW, results=results_, signatures=(sig("cto", "UCTO"),)))
    assert decision.score is not None
    assert decision.score.score == score
    assert [(t.key, t.weight, t.passed, t.total) for t in decision.score.terms] == [
        ("readiness", 0.5, readiness, 10),
        ("mvp", 0.5, mvp, 10),
    ]
    assert decision.verdict is verdict


# --- drills -------------------------------------------------------------------------------------

DRILL = [{"id": "redis-down", "name": "Redis down", "run": ["x"], "max_age": "7d"}]


@pytest.mark.parametrize(
    ("drill", "required", "verdict"),
    [
        (None, True, Verdict.NO_GO),
        (
            DrillResult(drill_id="redis-down", passed=True, summary="ok", finished_at=NOW - timedelta(days=1)),
            True,
            Verdict.GO,
        ),
        (DrillResult(drill_id="redis-down", passed=False, summary="boom", finished_at=NOW), True, Verdict.NO_GO),
        (
            DrillResult(drill_id="redis-down", passed=True, summary="ok", finished_at=NOW - timedelta(days=8)),
            True,
            Verdict.NO_GO,
        ),
        (None, False, Verdict.GO),
        (DrillResult(drill_id="redis-down", passed=False, summary="boom", finished_at=NOW), False, Verdict.GO),
    ],
)
def test_drills(drill: DrillResult | None, required: bool, verdict: Verdict) -> None:
    gate = make_gate(drills=[dict(DRILL[0], required=required)])
    drills = {"redis-down": drill} if drill else {}
    decision = decide(DecisionInput(gate=gate, now=NOW, results=GREEN, signatures=ALL_SIGNED, drills=drills))
    assert decision.verdict is verdict
    if verdict is Verdict.NO_GO:
        assert decision.reasons[0].code == "drill_not_passing"
        assert "Redis down" in decision.reasons[0].text


def test_stale_drill_reason_names_age_and_limit() -> None:
    gate = make_gate(drills=DRILL)
    old = DrillResult(drill_id="redis-down", passed=True, summary="ok", finished_at=NOW - timedelta(days=9))
    decision = decide(
        DecisionInput(gate=gate, now=NOW, results=GREEN, signatures=ALL_SIGNED, drills={"redis-down": old})
    )
    assert decision.reasons[0].text == "drill Redis down is stale: last passed 9d ago (max 7d)"


# --- risks ---------------------------------------------------------------------------------------

RISKS = [
    {"id": "latency", "description": "slow at first", "impact": "medium", "acceptor": "tech-lead"},
    {"id": "cache", "description": "cold cache", "impact": "low", "acceptor": "sre"},
]


def accept(risk: str, role: str, user: str, expires: datetime | None = None) -> RiskAcceptance:
    return RiskAcceptance(risk_id=risk, role=role, user=user, at=NOW, reason="ok", expires_at=expires)


@pytest.mark.parametrize(
    ("acceptances", "verdict", "blocking"),
    [
        ((), Verdict.NO_GO, ["risk_not_accepted", "risk_not_accepted"]),
        ((accept("latency", "tech-lead", "U1"),), Verdict.NO_GO, ["risk_not_accepted"]),
        ((accept("latency", "tech-lead", "U1"), accept("cache", "sre", "U3")), Verdict.GO_WITH_RISK, []),
        # accepted by the wrong role does not count
        ((accept("latency", "sre", "U3"), accept("cache", "sre", "U3")), Verdict.NO_GO, ["risk_not_accepted"]),
        (
            (accept("latency", "tech-lead", "U1", expires=NOW - timedelta(seconds=1)), accept("cache", "sre", "U3")),
            Verdict.NO_GO,
            ["risk_not_accepted"],
        ),
    ],
)
def test_risks(acceptances: tuple[RiskAcceptance, ...], verdict: Verdict, blocking: list[str]) -> None:
    gate = make_gate(risks=RISKS)
    got = verdict_of(gate, results=GREEN, signatures=ALL_SIGNED, acceptances=acceptances)
    assert got == (verdict, blocking)


def test_risks_with_ignored_signoffs_cap_at_go_with_risk() -> None:
    assert verdict_of(make_gate(risks=RISKS), results=GREEN, ignore_signoffs=True) == (Verdict.GO_WITH_RISK, [])


def test_risks_do_not_hide_failures() -> None:
    gate = make_gate(risks=RISKS)
    accepted = (accept("latency", "tech-lead", "U1"), accept("cache", "sre", "U3"))
    bad = results(tests="fail", health="pass")
    assert verdict_of(gate, results=bad, signatures=ALL_SIGNED, acceptances=accepted)[0] is Verdict.NO_GO


# --- sign-off staleness ------------------------------------------------------------------------


def test_signature_for_old_commit_is_stale() -> None:
    gate = make_gate()
    signatures = (sig("tech-lead", "U1", sha="aaa"), sig("sre", "U3", sha="bbb"), sig("sre", "U4", sha="bbb"))
    decision = decide(DecisionInput(gate=gate, now=NOW, results=GREEN, signatures=signatures, sha="bbb"))
    assert decision.verdict is Verdict.NO_GO
    tech = decision.roles[0]
    assert tech.approvals == [] and "signed for aaa" in tech.stale[0].reason


TWO_BLOCKERS = [
    {"id": "tests", "kind": "command", "run": ["pytest"], "severity": "blocker"},
    {"id": "migrate", "kind": "command", "run": ["migrate"], "severity": "blocker"},
]


@pytest.mark.parametrize(
    ("label", "signed_on", "now_on", "stale"),
    [
        # (a) material: a blocker that passed when they signed no longer does.
        ("pass -> fail", {"tests": "pass"}, {"tests": "fail"}, "blocker tests passed when signed and no longer does"),
        ("pass -> error", {"tests": "pass", "migrate": "pass"}, {"tests": "pass", "migrate": "error"}, "migrate"),
        ("pass -> pending", {"tests": "pass"}, {"tests": "pending"}, "tests"),
        # Not material: results that improve, and re-runs with the same outcome.
        ("not run -> pass", {}, {"tests": "pass", "migrate": "pass"}, None),
        ("fail -> pass", {"tests": "fail"}, {"tests": "pass"}, None),
        ("same outcome again", {"tests": "pass", "migrate": "fail"}, {"tests": "pass", "migrate": "fail"}, None),
        ("error -> fail", {"tests": "error"}, {"tests": "fail"}, None),
        ("warn -> pass", {"tests": "warn"}, {"tests": "pass"}, None),
    ],
)
def test_signatures_go_stale_only_when_a_passing_blocker_regresses(
    label: str, signed_on: dict[str, str], now_on: dict[str, str], stale: str | None
) -> None:
    gate = make_gate(checks=TWO_BLOCKERS, signoffs=[{"role": "tech-lead", "users": ["U1"]}])
    signature = sig("tech-lead", "U1").model_copy(update={"passing": passing_blockers(gate, results(**signed_on))})
    decision = decide(DecisionInput(gate=gate, now=NOW, results=results(**now_on), signatures=(signature,)))
    (role,) = decision.roles
    if stale is None:
        assert role.stale == [] and role.approvals == [signature], label
    else:
        assert role.approvals == [] and stale in role.stale[0].reason, label


def test_signatures_stored_before_passing_was_recorded_never_go_stale_on_results() -> None:
    gate = make_gate()
    decision = decide(DecisionInput(gate=gate, now=NOW, results=results(tests="fail"), signatures=ALL_SIGNED))
    assert all(not r.stale for r in decision.roles)


def test_blocker_invalidation_can_be_turned_off() -> None:
    gate = make_gate(signoffs_invalidate_on=["commit"])
    seen = passing_blockers(gate, GREEN)
    signatures = tuple(s.model_copy(update={"passing": seen}) for s in ALL_SIGNED)
    failing = results(tests="fail", health="pass", lint="pass")
    decision = decide(DecisionInput(gate=gate, now=NOW, results=failing, signatures=signatures))
    assert all(not r.stale for r in decision.roles)


def test_signoff_max_age_expires_old_signatures() -> None:
    gate = make_gate(signoff_max_age="7d")
    old = NOW - timedelta(days=8)
    signatures = (sig("tech-lead", "U1", at=old), sig("sre", "U3"), sig("sre", "U4"))
    assert verdict_of(gate, results=GREEN, signatures=signatures) == (Verdict.NO_GO, ["signoff_missing"])


# --- override ----------------------------------------------------------------------------------

OVERRIDE_GATE = {
    "signoffs": [
        {"role": "cto", "users": ["UCTO", "UCTO2"]},
        {"role": "senior-eng", "users": ["S1", "S2", "S3"], "required": False},
    ],
    "override": {"approvers": {"cto": 1, "senior-eng": 2}, "ttl": "24h"},
}


def override(
    *approvals: tuple[str, str], at: datetime = NOW, sha: str | None = None, by: str = "S3"
) -> OverrideRequest:
    return OverrideRequest(
        requested_by=by,
        reason="hotfix for outage",
        at=at,
        sha=sha,
        approvals=tuple(OverrideApproval(role=r, user=u, at=at) for r, u in approvals),
    )


@pytest.mark.parametrize(
    ("request_", "verdict"),
    [
        (override(("cto", "UCTO"), ("senior-eng", "S1"), ("senior-eng", "S2")), Verdict.OVERRIDE),
        (override(("cto", "UCTO"), ("senior-eng", "S1")), Verdict.NO_GO),
        (override(("cto", "UCTO"), ("senior-eng", "S1"), ("senior-eng", "S1")), Verdict.NO_GO),
        # the requester's own approval never counts
        (override(("cto", "UCTO"), ("senior-eng", "S1"), ("senior-eng", "S3")), Verdict.NO_GO),
        (
            override(("cto", "UCTO"), ("senior-eng", "S1"), ("senior-eng", "S2"), at=NOW - timedelta(hours=25)),
            Verdict.NO_GO,
        ),
        (override(("cto", "UCTO"), ("senior-eng", "S1"), ("senior-eng", "S2"), sha="old"), Verdict.NO_GO),
    ],
)
def test_override(request_: OverrideRequest, verdict: Verdict) -> None:
    gate = make_gate(**OVERRIDE_GATE)
    failing = results(tests="fail", health="fail")
    assert verdict_of(gate, results=failing, override=request_)[0] is verdict


def test_override_keeps_listing_what_was_failing() -> None:
    gate = make_gate(**OVERRIDE_GATE)
    request_ = override(("cto", "UCTO"), ("senior-eng", "S1"), ("senior-eng", "S2"))
    decision = decide(DecisionInput(gate=gate, now=NOW, results=results(tests="fail"), override=request_))
    assert decision.verdict is Verdict.OVERRIDE
    assert decision.override is not None and decision.override.active
    assert any(r.code == "blocker_not_passing" for r in decision.blocking)


def test_decide_is_pure() -> None:
    inp = DecisionInput(gate=make_gate(risks=RISKS), now=NOW, results=GREEN, signatures=ALL_SIGNED)
    assert decide(inp) == decide(inp)


@pytest.mark.parametrize(
    ("verdict", "code"), [(Verdict.GO, 0), (Verdict.NO_GO, 1), (Verdict.GO_WITH_RISK, 3), (Verdict.OVERRIDE, 0)]
)
def test_exit_codes(verdict: Verdict, code: int) -> None:
    assert verdict.exit_code == code
