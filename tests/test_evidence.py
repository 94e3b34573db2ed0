"""The decision record: one JSON bundle, rendered to Markdown and Slack from the bundle alone."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bot.core.decision import DecisionInput, Verdict, decide
from bot.core.evidence import NEXT_GO, NEXT_RISK, build_bundle, stamp
from bot.core.evidence_markdown import md_cell, md_fence, render_markdown
from bot.core.facts import DrillResult, OverrideApproval, OverrideRequest, RiskAcceptance, Signature, Vote
from bot.core.gate import RiskScorePolicy
from bot.core.loader import LoadedGate, load_gate
from bot.core.release import Release, RunRecord, State
from bot.core.results import CheckResult, Status
from bot.slack.record import render_record
from tests.blockkit import all_text, assert_valid

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SHA = "abc1234def"
LOADED = load_gate(Path(__file__).parent / "data" / "contract.yml")
GATE = LOADED.gate

RELEASE = Release(
    id="payments@1.4.0",
    gate_id="payments",
    version="1.4.0",
    sha=SHA,
    opened_by="U01TECH",
    opened_at=NOW - timedelta(hours=3),
    state=State.DECIDED,
)


def result(check_id: str, status: str, summary: str = "", details: str = "", value: float | None = None) -> CheckResult:
    return CheckResult(
        check_id=check_id,
        status=Status(status),
        summary=summary or f"{check_id} {status}ed",
        details=details,
        value=value,
        started_at=NOW - timedelta(minutes=5, seconds=3),
        finished_at=NOW - timedelta(minutes=5),
    )


def passing() -> dict[str, CheckResult]:
    return {c.id: result(c.id, "pass", f"{c.id} is fine") for c in GATE.checks}


SIGNATURES = (
    Signature(
        role="tech-lead", user="U01TECH", vote=Vote.APPROVE, at=NOW - timedelta(hours=1), comment="ship it", sha=SHA
    ),
    Signature(role="sre", user="U02SRE", vote=Vote.APPROVE, at=NOW - timedelta(minutes=50), sha=SHA),
    Signature(
        role="security",
        user="U03SEC",
        vote=Vote.APPROVE,
        at=NOW - timedelta(minutes=40),
        comment="pen test ok",
        sha=SHA,
    ),
    # Signed for an older commit: stale, and the record says why.
    Signature(role="product", user="U04PROD", vote=Vote.APPROVE, at=NOW - timedelta(hours=2), sha="0000000aaa"),
)
DRILLS = {
    "redis-down": DrillResult(
        drill_id="redis-down", passed=True, summary="failover in 4 s", finished_at=NOW - timedelta(days=1), by="U02SRE"
    )
}
ACCEPTANCE = RiskAcceptance(
    risk_id="async-latency",
    role="tech-lead",
    user="U01TECH",
    at=NOW - timedelta(minutes=30),
    reason="canary at 5% first",
    expires_at=NOW + timedelta(days=7),
)
RUNS = (
    RunRecord(
        run_id="run0001",
        release_id=RELEASE.id,
        actor="U02SRE",
        started_at=NOW - timedelta(minutes=6),
        finished_at=NOW - timedelta(minutes=5),
        check_ids=[c.id for c in GATE.checks],
        verdict=Verdict.NO_GO,
        counts={"pass": 6, "fail": 2},
    ),
)


def bundle_for(
    loaded: LoadedGate = LOADED,
    results: Mapping[str, CheckResult] | None = None,
    *,
    signatures: tuple[Signature, ...] = SIGNATURES,
    acceptances: tuple[RiskAcceptance, ...] = (ACCEPTANCE,),
    override: OverrideRequest | None = None,
    decided_at: datetime = NOW,
) -> dict[str, Any]:
    results = passing() if results is None else results
    decision = decide(
        DecisionInput(
            gate=loaded.gate,
            now=NOW,
            results=results,
            sha=SHA,
            signatures=signatures,
            drills=DRILLS,
            acceptances=acceptances,
            override=override,
        )
    )
    return build_bundle(
        loaded=loaded,
        release=RELEASE,
        decision=decision,
        results=results,
        decided_by="U02SRE",
        decided_at=decided_at,
        drills=DRILLS,
        runs=RUNS,
    )


def failing_results() -> dict[str, CheckResult]:
    results = passing()
    results["unit-tests"] = result(
        "unit-tests",
        "fail",
        "3 failed | 120 passed",
        details="FAILED test_refund.py::test_partial\n```\nnot a fence end\n```\nE   assert 2 == 3\n",
    )
    results["p95-latency"] = result("p95-latency", "fail", "p95 0.31 s, expected < 0.2", value=0.31)
    results["lint"] = result("lint", "fail", "exit 1: 4 problems", details="E501 line too long")
    del results["pen-test"]  # never ran
    return results


OVERRIDE = OverrideRequest(
    id="ovr-7f3a",
    requested_by="U05DEV",
    reason="hotfix for the refund outage; tests fixed in 1.4.1",
    at=NOW - timedelta(hours=1),
    sha=SHA,
    approvals=(
        OverrideApproval(role="tech-lead", user="U01TECH", at=NOW - timedelta(minutes=45)),
        OverrideApproval(role="sre", user="U02SRE2", at=NOW - timedelta(minutes=20)),
    ),
)


def no_risks() -> LoadedGate:
    return LoadedGate(gate=GATE.model_copy(update={"risks": []}), path=LOADED.path, sha256=LOADED.sha256)


def risk_scored() -> LoadedGate:
    policy = RiskScorePolicy(weights={"unit-tests": 3, "p95-latency": 1}, penalty=5)
    return LoadedGate(gate=GATE.model_copy(update={"policy": policy}), path=LOADED.path, sha256=LOADED.sha256)


SCENARIOS: dict[str, Any] = {
    "go": lambda: bundle_for(no_risks()),
    "go-with-risk": lambda: bundle_for(),
    "no-go": lambda: bundle_for(results=failing_results(), signatures=SIGNATURES[:1]),
    "override": lambda: bundle_for(results=failing_results(), override=OVERRIDE),
    "risk-score": lambda: bundle_for(risk_scored(), results=failing_results()),
}


# --- the "identical content" walker -----------------------------------------------------------

# Data-carrying dict keys (statuses, roles, check ids) are facts too.
KEYED = {"counts", "missing", "weights"}
# A check's start is carried by its finish and duration in the table.
SKIPPED = {("checks", "started_at")}


def leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if path and path[-1] in KEYED:
                yield (*path, "<key>"), key
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for item in node:
            yield from leaves(item, path)
    else:
        yield path, node


def renderings(key: str, value: str) -> list[str]:
    """The ways the Markdown may carry a string: as is, on one line, or escaped in a table cell."""
    if key == "at" or key.endswith("_at"):
        return [stamp(value)]
    flat = " ".join(value.split())
    return [value.rstrip("\n"), flat, flat.replace("\\", "\\\\").replace("|", "\\|")]


def assert_same_content(bundle: Mapping[str, Any], markdown: str) -> int:
    checked = 0
    for path, value in leaves(bundle):
        if not isinstance(value, str) or not value.strip() or (path[0], path[-1]) in SKIPPED:
            continue
        assert any(form in markdown for form in renderings(path[-1], value)), f"{'.'.join(path)}={value!r} missing"
        checked += 1
    for number in ("checks_passed", "checks_total", "exit_code"):
        assert str(bundle[number]) in markdown
    return checked


# --- the bundle -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_bundle_is_json_and_round_trips(name: str) -> None:
    bundle = SCENARIOS[name]()
    assert json.loads(json.dumps(bundle)) == bundle
    assert bundle["version"] == 1
    # Rendering the reloaded JSON gives the same file: the bundle is all the renderers need.
    assert render_markdown(json.loads(json.dumps(bundle))) == render_markdown(bundle)


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_fact_of_the_bundle_is_in_the_markdown(name: str) -> None:
    bundle = SCENARIOS[name]()
    assert assert_same_content(bundle, render_markdown(bundle)) > 40


def test_the_walker_notices_a_missing_fact() -> None:
    bundle = SCENARIOS["no-go"]()
    markdown = render_markdown(bundle)
    with pytest.raises(AssertionError, match=r"gate\.sha256"):
        assert_same_content(bundle, markdown.replace(LOADED.sha256, "(elided)"))


def test_no_go_bundle_records_everything() -> None:
    paris = timezone(timedelta(hours=1))
    bundle = bundle_for(results=failing_results(), signatures=SIGNATURES[:1], decided_at=NOW.astimezone(paris))
    assert bundle["verdict"] == "NO-GO"
    assert bundle["decided_at"] == "2026-11-22T12:00:00+00:00"  # UTC whatever the clock's zone
    assert bundle["decided_by"] == "U02SRE"
    assert bundle["release"] == {
        "id": "payments@1.4.0",
        "gate": "payments",
        "version": "1.4.0",
        "sha": SHA,
        "opened_by": "U01TECH",
        "opened_at": "2026-11-22T09:00:00+00:00",
        "state": "decided",
    }
    assert bundle["gate"]["sha256"] == LOADED.sha256 and bundle["gate"]["file"].endswith("contract.yml")
    assert bundle["policy"] == {"kind": "strict"}
    assert (bundle["checks_passed"], bundle["checks_total"]) == (4, 7)
    assert bundle["failing_checks"] == ["unit-tests", "lint", "p95-latency", "pen-test"]
    unit = next(c for c in bundle["checks"] if c["id"] == "unit-tests")
    assert unit["status"] == "fail" and unit["duration_s"] == 3.0 and "assert 2 == 3" in unit["details"]
    assert unit["started_at"] == "2026-11-22T11:54:57+00:00"
    p95 = next(c for c in bundle["checks"] if c["id"] == "p95-latency")
    assert p95["value"] == 0.31
    pen = next(c for c in bundle["checks"] if c["id"] == "pen-test")
    assert pen["status"] == "not_run" and pen["duration_s"] is None
    tech = next(r for r in bundle["signoffs"] if r["role"] == "tech-lead")
    assert tech["met"] and tech["approvals"][0] == {
        "user": "U01TECH",
        "vote": "approve",
        "at": "2026-11-22T11:00:00+00:00",
        "comment": "ship it",
        "sha": SHA,
    }
    sre = next(r for r in bundle["signoffs"] if r["role"] == "sre")
    assert not sre["met"] and sre["approvals"] == []
    assert bundle["accepted_risks"] == [
        {
            "risk_id": "async-latency",
            "description": "Async materializers may exceed 5s at first",
            "impact": "medium",
            "mitigation": "Gradual canary, kill switch ready",
            "user": "U01TECH",
            "role": "tech-lead",
            "at": "2026-11-22T11:30:00+00:00",
            "reason": "canary at 5% first",
            "expires_at": "2026-11-29T12:00:00+00:00",
        }
    ]
    assert bundle["drills"][0]["passed"] is True and bundle["drills"][0]["max_age"] == "7d"
    assert bundle["override"] is None and bundle["score"] is None
    assert bundle["runs"][0]["counts"] == {"pass": 6, "fail": 2}
    reasons = {r["code"] for r in bundle["reasons"]}
    assert {"blocker_not_passing", "check_not_passing", "signoff_missing"} <= reasons


def test_stale_signatures_keep_their_reason() -> None:
    bundle = bundle_for()
    product = next(r for r in bundle["signoffs"] if r["role"] == "product")
    assert product["approvals"] == []
    assert product["stale"] == [
        {
            "user": "U04PROD",
            "vote": "approve",
            "at": "2026-11-22T10:00:00+00:00",
            "comment": "",
            "sha": "0000000aaa",
            "reason": "signed for 0000000aaa, release is now at abc1234def",
        }
    ]
    assert "stale: signed for 0000000aaa, release is now at abc1234def" in render_markdown(bundle)


def test_reason_mentions_are_plain_in_json_and_listed() -> None:
    rejected = (Signature(role="security", user="U03SEC", vote=Vote.REJECT, at=NOW, comment="no", sha=SHA),)
    bundle = bundle_for(signatures=rejected)
    reason = next(r for r in bundle["reasons"] if r["code"] == "signoff_rejected")
    assert reason["text"] == "Security rejected by @U03SEC" and reason["users"] == ["U03SEC"]
    record = render_record(bundle)
    assert "• Security rejected by <@U03SEC>" in all_text(record)


# --- next step ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "verdict", "text"),
    [
        ("go", "GO", NEXT_GO),
        ("go-with-risk", "GO WITH RISK", NEXT_RISK),
        ("override", "GO (OVERRIDE)", "proceed under override: fix blocker Unit tests failed: 3 failed | 120 passed"),
        ("no-go", "NO-GO", "fix: blocker Unit tests failed: 3 failed | 120 passed"),
    ],
)
def test_next_step(name: str, verdict: str, text: str) -> None:
    bundle = SCENARIOS[name]()
    assert bundle["verdict"] == verdict
    assert bundle["next_step"]["text"].startswith(text)
    assert bundle["next_step"]["text"] in render_markdown(bundle)


def test_no_go_next_step_lists_what_must_be_fixed() -> None:
    step = SCENARIOS["no-go"]()["next_step"]
    assert step["fix"] == [
        "blocker Unit tests failed: 3 failed | 120 passed",
        "p95-latency failed: p95 0.31 s, expected < 0.2",
        "pen-test has not run",
        "sign-off missing: SRE Lead (0/1)",
        "sign-off missing: Security (0/1)",
    ]
    assert step["text"] == "fix: " + "; ".join(step["fix"])


def test_go_with_risk_names_the_risks_to_monitor() -> None:
    step = SCENARIOS["go-with-risk"]()["next_step"]
    assert step == {"text": NEXT_RISK, "fix": [], "monitor": ["async-latency"]}


def test_override_bundle_names_approvers_and_what_was_failing() -> None:
    bundle = SCENARIOS["override"]()
    override = bundle["override"]
    assert override["active"] is True and override["invalid_reason"] is None
    assert (override["id"], override["requested_by"]) == ("ovr-7f3a", "U05DEV")
    assert [(a["role"], a["user"]) for a in override["approvals"]] == [("tech-lead", "U01TECH"), ("sre", "U02SRE2")]
    assert override["expires_at"] == "2026-11-23T11:00:00+00:00"
    assert override["failing"] == [
        "blocker Unit tests failed: 3 failed | 120 passed",
        "p95-latency failed: p95 0.31 s, expected < 0.2",
        "pen-test has not run",
    ]
    assert bundle["next_step"]["text"].endswith("pen-test has not run after release")
    markdown = render_markdown(bundle)
    assert "@U01TECH as tech-lead" in markdown and "@U02SRE2 as sre" in markdown
    assert "  - pen-test has not run" in markdown
    text = all_text(render_record(bundle))
    assert "<@U01TECH> as tech-lead" in text and "<@U02SRE2> as sre" in text
    assert "hotfix for the refund outage" in text and "• pen-test has not run" in text
    assert "*Next step:* proceed under override; fix what was failing (above) after release" in text


def test_an_expired_override_is_recorded_as_not_active() -> None:
    stale = OVERRIDE.model_copy(update={"at": NOW - timedelta(days=2)})
    bundle = bundle_for(results=failing_results(), override=stale)
    assert bundle["verdict"] == "NO-GO"
    assert bundle["override"]["active"] is False and bundle["override"]["invalid_reason"] == "expired"
    assert "not active (expired)" in render_markdown(bundle)


# --- Markdown -------------------------------------------------------------------------------------


def cells(row: str) -> list[str]:
    """Split a GFM table row on the pipes that are not escaped (a `\\\\` escapes itself)."""
    inner = row.strip()[1:-1]
    return [c.strip() for c in re.split(r"(?<!\\)((?:\\\\)*)\|", inner)[::2]]


def test_markdown_title_and_facts() -> None:
    markdown = render_markdown(SCENARIOS["no-go"]())
    assert markdown.startswith("# payments@1.4.0 — 🔴 NO-GO\n")
    assert "- **Decided:** 2026-11-22 12:00:00 UTC by @U02SRE" in markdown
    assert f"sha256 `{LOADED.sha256}`" in markdown
    assert "- **Commit:** `abc1234def`" in markdown
    assert "- **Policy:** strict" in markdown
    assert "Checks passed 4/7" in markdown


@pytest.mark.parametrize(
    ("raw", "cell"),
    [
        ("plain", "plain"),
        ("a | b", "a \\| b"),
        ("ends with \\", "ends with \\\\"),
        ("\\| sneaky", "\\\\\\| sneaky"),
        ("two\nlines", "two lines"),
        ("", " "),
    ],
)
def test_md_cell(raw: str, cell: str) -> None:
    assert md_cell(raw) == cell


def test_markdown_table_escapes_pipes() -> None:
    results = failing_results()
    results["health"] = result("health", "pass", "200 | 12 ms \\| odd")
    markdown = render_markdown(bundle_for(results=results))
    lines = markdown.splitlines()
    header = next(line for line in lines if line.startswith("| Status | Check |"))
    width = len(cells(header))
    for check, summary in (
        ("Unit tests (unit-tests)", "3 failed \\| 120 passed"),
        ("health", "200 \\| 12 ms \\\\\\| odd"),
    ):
        row = next(line for line in lines if line.startswith("| ") and cells(line)[1] == check)
        assert summary in row
        assert len(cells(row)) == width, row
        assert cells(row)[4] == summary


def test_code_fence_cannot_be_closed_by_the_details() -> None:
    markdown = render_markdown(SCENARIOS["no-go"]())
    details = "FAILED test_refund.py::test_partial\n```\nnot a fence end\n```\nE   assert 2 == 3"
    assert f"````\n{details}\n````" in markdown  # byte for byte, inside a longer fence


@pytest.mark.parametrize(
    ("text", "fence"),
    [("plain", "```"), ("a ``` b", "````"), ("`````", "``````"), ("`x`", "```")],
)
def test_md_fence_is_longer_than_any_backtick_run(text: str, fence: str) -> None:
    assert md_fence(text) == f"{fence}\n{text}\n{fence}"


def test_markdown_sections_for_signoffs_risks_drills_runs() -> None:
    markdown = render_markdown(SCENARIOS["go-with-risk"]())
    assert "| Tech Lead (tech-lead) | yes | 1/1 | ✅ met | @U01TECH | — |" in markdown
    assert "| Product (product) | no (optional) | 0/1 | ⬜ not met | — | — |" in markdown
    assert "- ✅ **Tech Lead**: @U01TECH approved at 2026-11-22 11:00:00 UTC on commit `abc1234def` — “ship it”" in (
        markdown
    )
    assert "- 🟡 **async-latency** (medium) — Async materializers may exceed 5s at first" in markdown
    assert "| ✅ passed | Redis down (redis-down) | required, max age 7d | failover in 4 s |" in markdown
    assert "| run0001 | @U02SRE |" in markdown and "6 pass, 2 fail" in markdown
    assert "## Override\n\nNone requested." in markdown


def test_markdown_shows_the_risk_score() -> None:
    bundle = SCENARIOS["risk-score"]()
    assert bundle["score"] is not None
    markdown = render_markdown(bundle)
    assert "- **Risk score:** 105 = 100 − 0% weighted pass + 5 penalty" in markdown
    assert '- **Policy:** risk_score {"caution_below": 65.0' in markdown


# --- the Slack record -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_record_is_valid_block_kit(name: str) -> None:
    bundle = SCENARIOS[name]()
    message = render_record(bundle)
    assert_valid(message, text_limit=3000)
    verdict = Verdict(bundle["verdict"])
    assert message.blocks[0]["text"]["text"] == f"{verdict.emoji} {verdict.value} · payments@1.4.0"
    text = all_text(message)
    assert "Decided 2026-11-22 12:00 UTC by <@U02SRE>" in text
    assert f"*Checks passed {bundle['checks_passed']}/{bundle['checks_total']}*" in text
    assert bundle["next_step"]["fix"] or f"*Next step:* {bundle['next_step']['text']}" in text


def test_record_names_the_failing_checks_and_what_to_fix() -> None:
    message = render_record(SCENARIOS["no-go"]())
    text = all_text(message)
    assert "❌ *Unit tests* _(blocker)_ — 3 failed | 120 passed" in text
    assert "⬜ *pen-test* — not run" in text
    assert "❌ *lint* _(advisory)_" in text
    assert "*Next step:* fix:\n• blocker Unit tests failed" in text
    assert "✅ *Tech Lead* (1/1) — approved by <@U01TECH> 2026-11-22 11:00 UTC: “ship it”" in text
    assert message.text.startswith("NO-GO: payments@1.4.0 decided by @U02SRE — 4/7 checks pass, failing: unit-tests")


def test_record_of_a_go() -> None:
    text = all_text(render_record(SCENARIOS["go"]()))
    assert "Every check passes." in text
    assert "*Next step:* proceed to canary" in text


def test_record_escapes_user_text() -> None:
    signatures = (
        Signature(role="tech-lead", user="U01TECH", vote=Vote.APPROVE, at=NOW, comment="<!channel> go & ship", sha=SHA),
    )
    results = passing()
    results["health"] = result("health", "fail", "<!here> HTTP 503 <@U999>")
    bundle = bundle_for(results=results, signatures=signatures)
    text = all_text(render_record(bundle))
    assert "<!channel>" not in text and "<!here>" not in text and "<@U999>" not in text
    assert "&lt;!channel&gt; go &amp; ship" in text
    assert "&lt;!here&gt; HTTP 503 &lt;@U999&gt;" in text


def test_record_of_a_huge_gate_stays_within_slack_limits() -> None:
    checks = [{"id": f"c{i:03d}", "kind": "tcp", "host": "h", "port": 1000 + i} for i in range(200)]
    gate = GATE.model_validate({"id": "big", "name": "Big", "channel": "C1", "checks": checks})
    loaded = LoadedGate(gate=gate, path=Path("big.yml"), sha256="0" * 64)
    results = {str(c["id"]): result(str(c["id"]), "fail", "x" * 500) for c in checks}
    bundle = bundle_for(loaded, results=results)
    message = render_record(bundle)
    assert_valid(message, text_limit=3000)
    assert "more failing checks in the evidence bundle" in all_text(message)
    assert len(bundle["failing_checks"]) == 200
    assert_same_content(bundle, render_markdown(bundle))
