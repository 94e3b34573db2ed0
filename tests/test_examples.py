"""The example gates in examples/: all valid, and each shows what it claims to show.

demo.yml is also checked against the demo service it ships with (started in-process on a free
port), so `make check-demo` and `make demo` cannot drift from examples/demo/service.py unnoticed.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.client import HTTPConnection
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bot.core.decision import DecisionInput, Verdict, decide
from bot.core.facts import RiskAcceptance, Signature, Vote
from bot.core.gate import Gate, RiskScorePolicy, StrictPolicy, ThresholdPolicy
from bot.core.results import CheckResult, Status
from bot.core.stages import decide_stages
from checks import command, file, github, http, manual, prometheus, tcp
from checks.base import Severity
from checks.http import DIRECTIVE_RULE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GATE_FILES = sorted(EXAMPLES.glob("*.yml"))
REQUIRED = {"prelaunch.yml", "deploy-10.yml", "preflight-risk.yml", "chat-service.yml", "category.yml", "demo.yml"}


def load(name: str) -> Gate:
    return Gate.model_validate(yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8")))


def counted(gate: Gate) -> list[Any]:
    return [c for c in gate.checks if c.severity is not Severity.ADVISORY]


# --- every example ---------------------------------------------------------------------------


def test_the_examples_are_all_there() -> None:
    assert {p.name for p in GATE_FILES} >= REQUIRED
    assert (EXAMPLES / "README.md").is_file()
    assert (EXAMPLES / "demo.py").is_file()
    assert (EXAMPLES / "demo" / "service.py").is_file()
    assert (EXAMPLES / "demo" / "runbook.md").is_file()


@pytest.mark.parametrize("path", GATE_FILES, ids=lambda p: p.name)
def test_example_is_a_valid_gate(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    gate = Gate.model_validate(yaml.safe_load(text))
    assert gate.checks, "an example without checks shows nothing"
    assert gate.signoffs, "every real checklist had sign-offs"
    # Examples are documentation: they explain their choices.
    assert sum(1 for line in text.splitlines() if line.lstrip().startswith("#")) >= 5


@pytest.mark.parametrize("path", GATE_FILES, ids=lambda p: p.name)
def test_example_ids_are_unique(path: Path) -> None:
    gate = Gate.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    for ids in (
        [c.id for c in gate.checks],
        [s.role for s in gate.signoffs],
        [r.id for r in gate.risks],
        [d.id for d in gate.drills],
    ):
        assert len(ids) == len(set(ids)), ids


def test_gate_ids_are_unique_across_examples() -> None:
    ids = [Gate.model_validate(yaml.safe_load(p.read_text(encoding="utf-8"))).id for p in GATE_FILES]
    assert len(ids) == len(set(ids)), ids


# --- what each example is meant to show ------------------------------------------------------


def test_prelaunch_is_the_twelve_step_script() -> None:
    gate = load("prelaunch.yml")
    assert isinstance(gate.policy, StrictPolicy)
    checks = {c.id: c for c in gate.checks}
    # the 12 steps: 11 automated checks and the redis-down fire drill
    steps = [c for c in gate.checks if (c.name or "").startswith("[")]
    assert len(steps) == 11
    assert [d.id for d in gate.drills] == ["redis-down"]
    assert gate.drills[0].max_age is not None
    assert checks["lint"].severity is Severity.ADVISORY
    assert checks["type-check"].severity is Severity.ADVISORY
    assert checks["security-tests"].severity is Severity.BLOCKER
    metrics = checks["slo-metrics"]
    assert isinstance(metrics, http.Spec)
    assert metrics.expect.body_contains == "chat_requests_total"
    assert {r.id for r in gate.risks} == {"materializer-latency", "cost-spike", "graph-slow-at-peak"}
    assert {r.acceptor for r in gate.risks} <= gate.role_ids
    assert {"tech-lead", "sre-lead", "security", "product", "director"} <= gate.role_ids


def test_deploy_10_is_a_ten_check_threshold_gate() -> None:
    gate = load("deploy-10.yml")
    policy = gate.policy
    assert isinstance(policy, ThresholdPolicy)
    assert (policy.go, policy.review, policy.review_role) == (1.0, 0.9, "cto")
    assert len(counted(gate)) == 10  # so 9/10 is exactly the review band
    assert gate.override is not None
    assert gate.override.approvers == {"cto": 1, "senior-eng": 2}

    headers = next(c for c in gate.checks if c.id == "security-headers")
    assert isinstance(headers, http.Spec)
    assert {"Content-Security-Policy", "Cross-Origin-Embedder-Policy", "Strict-Transport-Security"} <= set(
        headers.expect.headers
    )
    ci = next(c for c in gate.checks if isinstance(c, github.Spec))
    assert ci.max_age.total_seconds() == 24 * 3600
    runbook = next(c for c in gate.checks if c.id == "runbook-fresh")
    assert isinstance(runbook, file.Spec)
    assert runbook.max_age is not None and runbook.max_age.days == 7


def test_preflight_is_a_risk_score_over_graded_checks() -> None:
    gate = load("preflight-risk.yml")
    policy = gate.policy
    assert isinstance(policy, RiskScorePolicy)
    assert policy.weights == {"readiness": 0.5, "mvp": 0.5}
    assert (policy.penalty, policy.go_below, policy.caution_below) == (5, 50, 65)
    for check_id in ("readiness", "mvp"):  # the weights name the two graded checks
        check = gate.check(check_id)
        assert isinstance(check, command.Spec) and check.score is not None and check.score.max == 10
    assert not gate.risks  # the report said GO, not GO WITH RISK
    queries = [c.query for c in gate.checks if isinstance(c, prometheus.Spec)]
    assert any("histogram_quantile(0.95" in q for q in queries)
    assert any('status=~"5.."' in q for q in queries)


def test_chat_service_has_blockers_budgets_and_owners() -> None:
    gate = load("chat-service.yml")
    blockers = [c for c in gate.checks if c.severity is Severity.BLOCKER]
    assert len(blockers) >= 6
    smoke = [c for c in gate.checks if isinstance(c, http.Spec) and c.id.startswith("smoke-")]
    assert {"smoke-health", "smoke-greeting", "smoke-chat"} <= {c.id for c in smoke}
    assert all(c.expect.max_latency is not None and c.expect.max_latency.total_seconds() <= 2 for c in smoke)
    manual_checks = [c for c in gate.checks if isinstance(c, manual.Spec)]
    assert any(c.severity is Severity.BLOCKER for c in manual_checks)
    assert {c.owner for c in manual_checks} <= gate.role_ids
    assert any(isinstance(c, command.Spec) and "grep" in str(c.run) for c in gate.checks)
    assert any(isinstance(c, file.Spec) and c.max_age is not None for c in gate.checks)  # backups


def test_category_groups_risks_and_rollout() -> None:
    gate = load("category.yml")
    groups = {c.group for c in gate.checks}
    assert {"functionality", "testing", "performance", "reliability", "security"} <= groups
    assert gate.risks and all(r.acceptor in gate.role_ids for r in gate.risks)
    assert gate.rollback is not None
    assert gate.description is not None and "canary" in gate.description.lower()


def test_category_is_a_three_stage_rollout_with_four_condition_groups() -> None:
    gate = load("category.yml")
    assert [s.id for s in gate.stages] == ["dark", "canary", "full"]
    assert len(gate.signoffs) == 5 and set(gate.promote_roles) <= gate.role_ids
    manual_items = [c for c in gate.checks if isinstance(c, manual.Spec)]
    assert all(c.owner in gate.role_ids and c.due is not None for c in manual_items)
    # The four groups: immediate (before dark, a date), during dark and before canary (both before
    # canary, due 5 and 7 days after the dark launch), before full (due 7 days after the canary).
    dues = {(c.before or "dark", str(c.due)) for c in manual_items}
    assert {s for s, _ in dues} == {"dark", "canary", "full"}
    assert {d for s, d in dues if s == "canary"} == {"5d after dark", "7d after dark"}
    assert {d for s, d in dues if s == "full"} == {"7d after canary"}
    named = {c.id: c.before or "dark" for c in gate.checks}
    for stage, ids in {
        "dark": ["db-replication", "secret-store", "rbac-integration", "monitoring-stack"],
        "canary": ["baseline-metrics", "e2e-latency", "alert-rules", "dashboards", "ops-procedures", "ops-training"],
        "full": ["sla-compliance", "load-tests", "security-audit", "rollback-procedures"],
    }.items():
        assert all(named[i] == stage for i in ids), stage


def test_category_ladder_when_the_dark_launch_conditions_hold() -> None:
    """Everything before the dark launch holds and its risks are accepted: GO (with the accepted
    risks) for the dark launch, the canary and full production each with what still blocks them."""
    gate = load("category.yml")
    now = datetime(2026, 3, 3, tzinfo=UTC)
    dark = [c for c in gate.checks if (c.before or "dark") == "dark"]
    results = {
        c.id: CheckResult(check_id=c.id, status=Status.PASS, summary="", started_at=now, finished_at=now) for c in dark
    }
    signatures = [Signature(role=r.role, user=r.users[0], vote=Vote.APPROVE, at=now) for r in gate.signoffs]
    accepted = [
        RiskAcceptance(risk_id=r.id, role=r.acceptor, user="U", at=now, reason="mitigated")
        for r in gate.risks
        if (r.before or "dark") == "dark"
    ]
    ladder = decide_stages(
        DecisionInput(gate=gate, now=now, results=results, signatures=signatures, acceptances=accepted),
        current="dark",
        reached={"dark": now - timedelta(days=6)},
    )
    assert [(s.verdict, len(s.conditions)) for s in ladder.stages] == [
        (Verdict.GO_WITH_RISK, 0),
        (Verdict.NO_GO, 10),
        (Verdict.NO_GO, 14),
    ]
    # Six days into the dark launch, the "5d after dark" items are overdue, the "7d" ones not yet.
    assert sorted(c.subject or "" for c in ladder.overdue) == ["baseline-metrics", "e2e-latency", "shadow-traffic"]


# --- the offline demo ------------------------------------------------------------------------


def test_demo_is_offline() -> None:
    gate = load("demo.yml")
    for check in gate.checks:
        assert not isinstance(check, github.Spec | prometheus.Spec), check.id
        if isinstance(check, http.Spec):
            assert urlsplit(check.url).hostname == "127.0.0.1", check.id
        if isinstance(check, tcp.Spec):
            assert check.host == "127.0.0.1"
        if isinstance(check, command.Spec):
            argv0 = check.run[0] if isinstance(check.run, list) else "sh"
            assert argv0 in {"python3", "sh"}, check.id
            assert check.timeout is not None and check.timeout.total_seconds() <= 10
        if isinstance(check, file.Spec) and check.severity is not Severity.ADVISORY:
            assert (EXAMPLES / check.path).is_file(), check.path
            assert check.max_age is None  # a checkout sets every mtime to "now"
        if isinstance(check, manual.Spec):
            assert check.severity is Severity.ADVISORY  # nobody signs in the demo
    assert any(isinstance(c, command.Spec) and c.shell for c in gate.checks)
    assert any(c.severity is Severity.ADVISORY and not isinstance(c, manual.Spec) for c in gate.checks)
    assert all(not d.required for d in gate.drills)


def test_demo_runbook_mentions_rollback() -> None:
    gate = load("demo.yml")
    runbook = next(c for c in gate.checks if isinstance(c, file.Spec) and c.severity is not Severity.ADVISORY)
    assert runbook.contains is not None
    assert re.search(runbook.contains, (EXAMPLES / runbook.path).read_text(encoding="utf-8"))


def _results(gate: Gate, passing: bool) -> dict[str, CheckResult]:
    now = datetime.now(UTC)
    out = {}
    for check in gate.checks:
        status = Status.PASS if passing and check.severity is not Severity.ADVISORY else Status.FAIL
        out[check.id] = CheckResult(check_id=check.id, status=status, summary="", started_at=now, finished_at=now)
    return out


def test_demo_verdicts_when_its_checks_pass() -> None:
    """What demo.py expects: GO (WITH RISK) on checks alone, NO-GO for want of sign-offs."""
    gate = load("demo.yml")
    results = _results(gate, passing=True)
    now = datetime.now(UTC)
    alone = decide(DecisionInput(gate=gate, now=now, results=results, ignore_signoffs=True))
    assert alone.verdict in (Verdict.GO, Verdict.GO_WITH_RISK), alone.reasons
    signed = decide(DecisionInput(gate=gate, now=now, results=results))
    assert signed.verdict is Verdict.NO_GO
    assert {r.code for r in signed.blocking} >= {"signoff_missing"}


# The service, in-process on a free port.


def _load_service() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gonogo_demo_service", EXAMPLES / "demo" / "service.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def service_port() -> Iterator[int]:
    server = _load_service().make_server("127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_demo_service_default_port_matches_the_gate() -> None:
    assert _load_service().DEFAULT_PORT == 8084
    gate = load("demo.yml")
    ports = {urlsplit(c.url).port for c in gate.checks if isinstance(c, http.Spec)}
    ports |= {c.port for c in gate.checks if isinstance(c, tcp.Spec)}
    assert ports == {8084}


def _header_ok(rule: str, value: str | None) -> bool:
    if rule == "present":
        return value is not None
    if rule == "absent":
        return value is None
    if value is None:
        return False
    directive = DIRECTIVE_RULE.match(rule)
    if directive:
        name, op, number = directive.groups()
        found = re.search(rf"(?i)(?:^|[;,\s]){re.escape(name)}\s*=\s*(\d+)", value)
        ops = {">=": int.__ge__, "<=": int.__le__, "==": int.__eq__, "!=": int.__ne__, ">": int.__gt__, "<": int.__lt__}
        return found is not None and ops[op](int(found.group(1)), int(number))
    if rule.startswith("re:"):
        return re.search(rule[3:], value) is not None
    return value == rule


_MISSING = object()


def _dig(document: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(document, dict) or part not in document:
            return _MISSING
        document = document[part]
    return document


@pytest.mark.parametrize(
    "check_id", [c.id for c in load("demo.yml").checks if isinstance(c, http.Spec)], ids=lambda i: str(i)
)
def test_demo_service_meets_the_demo_gate(service_port: int, check_id: str) -> None:
    spec = load("demo.yml").check(check_id)
    assert isinstance(spec, http.Spec)
    url = urlsplit(spec.url)
    connection = HTTPConnection("127.0.0.1", service_port, timeout=5)
    try:
        started = time.monotonic()
        connection.request(spec.method, url.path or "/", body=spec.body, headers=dict(spec.request_headers))
        response = connection.getresponse()
        body = response.read().decode()
        elapsed = time.monotonic() - started
    finally:
        connection.close()

    expect = spec.expect
    assert response.status in expect.statuses
    if expect.max_latency is not None:
        assert elapsed <= expect.max_latency.total_seconds()
    for name, rule in expect.headers.items():
        assert _header_ok(rule, response.getheader(name)), (name, rule, response.getheader(name))
    if expect.body_contains is not None:
        assert re.search(expect.body_contains, body)
    if expect.json_ is not None:
        document = json.loads(body)
        for key, want in expect.json_.items():
            assert _dig(document, key) == want, key
