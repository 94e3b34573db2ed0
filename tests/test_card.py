"""The release card and the other Slack renderings: pure functions, checked against Slack's limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.core.decision import DecisionInput, Verdict, decide
from bot.core.facts import DrillResult, Signature, Vote
from bot.core.gate import Gate
from bot.core.loader import load_gate
from bot.core.mentions import mention
from bot.core.release import Release, RunRecord, State
from bot.core.results import CheckResult, Status
from bot.slack.blocks import ACTION_REFRESH, ACTION_RUN, escape, reason_mrkdwn
from bot.slack.card import FOLD_AT, CardView, render_card
from bot.slack.messages import render_check_details, render_help, render_release_list, render_results_listing
from tests.blockkit import all_text, assert_valid

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CONTRACT = load_gate(Path(__file__).parent / "data" / "contract.yml").gate


def release(gate: Gate, **changes: Any) -> Release:
    base = Release(
        id=f"{gate.id}@1.4.0",
        gate_id=gate.id,
        version="1.4.0",
        sha="abc1234def",
        opened_by="U01TECH",
        opened_at=NOW - timedelta(hours=2),
    )
    return base.model_copy(update=changes)


def result(check_id: str, status: str, summary: str = "", at: datetime = NOW, details: str = "") -> CheckResult:
    return CheckResult(
        check_id=check_id,
        status=Status(status),
        summary=summary or f"{check_id} {status}",
        details=details,
        started_at=at - timedelta(seconds=2),
        finished_at=at,
    )


def view(gate: Gate, results: dict[str, CheckResult], **extra: Any) -> CardView:
    signatures = extra.pop("signatures", ())
    drills = extra.get("drills", {})
    decision = decide(
        DecisionInput(gate=gate, now=NOW, results=results, sha="abc1234def", signatures=signatures, drills=drills)
    )
    return CardView(gate=gate, release=release(gate), decision=decision, results=results, now=NOW, **extra)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ("<!channel> ping", "&lt;!channel&gt; ping"),
        ("a & b", "a &amp; b"),
        ("<@U123|x>", "&lt;@U123|x&gt;"),
        ("&lt;", "&amp;lt;"),
    ],
)
def test_escape(raw: str, escaped: str) -> None:
    assert escape(raw) == escaped


def test_reason_text_keeps_our_mentions_and_escapes_the_rest() -> None:
    text = f"Security rejected by {mention('U03SEC')}: <!here> & friends"
    assert reason_mrkdwn(text) == "Security rejected by <@U03SEC>: &lt;!here&gt; &amp; friends"


def test_card_of_a_fresh_release_shows_no_go_with_reasons() -> None:
    message = render_card(view(CONTRACT, {}))
    assert_valid(message)
    header = message.blocks[0]["text"]["text"]
    assert header.startswith("🔴 NO-GO · Payments API 1.4.0")
    text = all_text(message)
    assert "blocker Unit tests has not run" in text
    assert "sign-off missing: Tech Lead" in text
    assert "⬜ *Unit tests* _(blocker)_ — not run yet" in text
    assert "commit `abc1234`" in text
    assert "not run yet: press *Run checks*" in text
    assert message.text.startswith("NO-GO: Payments API 1.4.0 — blocker Unit tests has not run")


def test_card_has_run_and_refresh_buttons_carrying_the_release() -> None:
    message = render_card(view(CONTRACT, {}))
    actions = message.blocks[-1]
    assert actions["type"] == "actions"
    assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
        (ACTION_RUN, "payments@1.4.0"),
        (ACTION_REFRESH, "payments@1.4.0"),
    ]


def test_blocking_reasons_come_first_in_why() -> None:
    results = {c.id: result(c.id, "pass") for c in CONTRACT.checks}
    results["lint"] = result("lint", "fail", "exit 1 after 2 s")
    results["health"] = result("health", "fail", "HTTP 503 from /health after 2.3 s")
    message = render_card(view(CONTRACT, results))
    why = message.blocks[2]["text"]["text"]
    lines = why.splitlines()
    assert lines[0] == "*Why*"
    assert lines[1].startswith("🔴 health failed: HTTP 503")
    assert any(line.startswith("🔸 advisory lint failed") for line in lines)


def test_go_card() -> None:
    gate = Gate.model_validate(
        {"id": "tiny", "name": "Tiny", "channel": "C1", "checks": [{"id": "up", "kind": "tcp", "host": "h", "port": 1}]}
    )
    message = render_card(view(gate, {"up": result("up", "pass", "h:1 accepted in 3 ms")}))
    assert_valid(message)
    assert message.blocks[0]["text"]["text"].startswith("🟢 GO · Tiny 1.4.0")
    assert "Every check passes" in all_text(message)
    assert "✅ *up* — h:1 accepted in 3 ms · _just now_" in all_text(message) or "✅ *up* — h:1" in all_text(message)


def test_running_card_shows_hourglass_until_this_runs_result_arrives() -> None:
    started = NOW - timedelta(seconds=5)
    results = {
        "unit-tests": result("unit-tests", "fail", "old failure", at=NOW - timedelta(hours=1)),
        "lint": result("lint", "pass", "fresh", at=NOW),
    }
    card = render_card(
        view(
            CONTRACT,
            results,
            running=frozenset({"unit-tests", "lint"}),
            run_by="U02SRE",
            run_started=started,
        )
    )
    assert_valid(card)
    assert card.blocks[0]["text"]["text"].startswith("⏳ RUNNING")
    text = all_text(card)
    assert "⏳ *Unit tests* _(blocker)_ — running…" in text
    assert "✅ *lint* _(advisory)_ — fresh" in text
    assert "started by <@U02SRE>" in text


def big_gate(count: int, summary: str = "ok") -> tuple[Gate, dict[str, CheckResult]]:
    ids = [f"c{i:03d}" for i in range(count)]
    checks = [{"id": cid, "kind": "tcp", "host": "127.0.0.1", "port": 1000 + i} for i, cid in enumerate(ids)]
    gate = Gate.model_validate({"id": "big", "name": "Big", "channel": "C1", "checks": checks})
    return gate, {cid: result(cid, "pass", summary) for cid in ids}


def test_120_checks_fold_passing_ones_and_stay_within_limits() -> None:
    gate, results = big_gate(120)
    results["c007"] = result("c007", "fail", "connection refused")
    results["c099"] = result("c099", "error", "timed out after 5 s")
    message = render_card(view(gate, results))
    assert_valid(message)
    text = all_text(message)
    assert "connection refused" in text and "timed out after 5 s" in text
    assert "✅ 118 more checks pass (full list in the thread)" in text
    assert "c050" not in text


@pytest.mark.parametrize(("count", "status"), [(120, "fail"), (120, "error"), (400, "fail")])
def test_many_failing_checks_with_long_summaries_still_fit(count: int, status: str) -> None:
    gate, results = big_gate(count)
    long = "x" * 400 + " <script> & " + "y" * 400
    results = {k: result(k, status, long) for k in results}
    message = render_card(view(gate, results))
    assert_valid(message)
    text = all_text(message)
    assert "<script>" not in text
    shown = sum(1 for i in range(count) if f"*c{i:03d}*" in text)
    assert shown == count or "more lines: the full list is in the thread" in text


def test_small_gates_list_every_check() -> None:
    gate, results = big_gate(FOLD_AT)
    text = all_text(render_card(view(gate, results)))
    assert all(f"*c{i:03d}*" in text for i in range(FOLD_AT))


def test_signoff_rows_show_who_when_and_stale_ones_struck_through() -> None:
    signatures = (
        Signature(role="tech-lead", user="U01TECH", vote=Vote.APPROVE, at=NOW - timedelta(minutes=5), sha="abc1234def"),
        Signature(
            role="security", user="U03SEC", vote=Vote.REJECT, at=NOW, comment="pen test <pending>", sha="abc1234def"
        ),
        Signature(role="sre", user="U02SRE", vote=Vote.APPROVE, at=NOW, sha="0000000"),
    )
    text = all_text(render_card(view(CONTRACT, {}, signatures=signatures)))
    assert "✅ *Tech Lead* (1/1) — approved by <@U01TECH> 5m ago" in text
    assert "❌ *Security* (0/1) — rejected by <@U03SEC> just now: “pen test &lt;pending&gt;”" in text
    assert "⬜ *SRE Lead* (0/1) — waiting for <@U02SRE>, <@U02SRE2>, <!subteam^S0SRE>" in text
    assert "~<@U02SRE> approved just now~ _stale: signed for 0000000" in text
    assert "*Product* (0/1) _(optional)_" in text


def test_risks_and_drills_are_listed() -> None:
    drills = {
        "redis-down": DrillResult(
            drill_id="redis-down", passed=True, summary="failover in 4 s", finished_at=NOW - timedelta(days=8)
        )
    }
    text = all_text(render_card(view(CONTRACT, {}, drills=drills)))
    assert "*async-latency* (medium) — Async materializers may exceed 5s at first" in text
    assert "not accepted (needs Tech Lead)" in text
    assert "🕰️ *Redis down* — passed 8d ago (stale): failover in 4 s" in text


def test_risk_score_is_in_the_header_with_its_terms() -> None:
    gate = Gate.model_validate(
        {
            "id": "pre",
            "name": "Preflight",
            "channel": "C1",
            "checks": [
                {"id": "a", "kind": "tcp", "host": "h", "port": 1, "group": "infra"},
                {"id": "b", "kind": "tcp", "host": "h", "port": 2, "group": "app"},
            ],
            "policy": {"kind": "risk_score", "weights": {"infra": 0.5, "app": 0.5}, "penalty": 5},
        }
    )
    message = render_card(view(gate, {"a": result("a", "pass"), "b": result("b", "fail")}))
    assert message.blocks[0]["text"]["text"] == "🟡 GO WITH RISK · Preflight 1.4.0 · risk 55"
    assert "infra 1/1×0.5, app 0/1×0.5" in all_text(message)


def test_last_run_context() -> None:
    run = RunRecord(
        run_id="r1",
        release_id="payments@1.4.0",
        actor="U02SRE",
        started_at=NOW - timedelta(minutes=3, seconds=4),
        finished_at=NOW - timedelta(minutes=3),
        check_ids=["a", "b"],
        verdict=Verdict.NO_GO,
        counts={"pass": 1, "fail": 1},
    )
    text = all_text(render_card(view(CONTRACT, {}, last_run=run)))
    assert "last run by <@U02SRE> 3m ago: 2 check(s) in 4.0 s → NO-GO" in text


def test_check_details_fence_cannot_be_broken_by_output() -> None:
    details = "line1\n```\n<!channel> injected\n" + "z" * 2700
    message = render_check_details(CONTRACT, result("unit-tests", "fail", "exit 1 after 41 s", details=details))
    assert_valid(message)
    body = message.blocks[1]["text"]["text"]
    assert body.startswith("```") and body.endswith("```")
    assert body.count("```") == 2
    assert "&lt;!channel&gt;" in body
    assert message.blocks[0]["text"]["text"].startswith("❌ *Unit tests* failed after 2.0 s: exit 1 after 41 s")


def test_results_listing_pages_every_check() -> None:
    gate, results = big_gate(300, summary="s" * 150)
    pages = render_results_listing(gate, results, NOW)
    for page in pages:
        assert_valid(page)
    text = "\n".join(all_text(p) for p in pages)
    assert all(f"*c{i:03d}*" in text for i in range(300))


def test_help_names_every_subcommand_and_the_unknown_one() -> None:
    message = render_help("Unknown subcommand `frobnicate`.")
    assert_valid(message)
    text = all_text(message).replace("&lt;", "<").replace("&gt;", ">")  # as Slack shows it
    for usage in ("open <gate> <version> [sha]", "status [<release> | <gate>]", "run <release>", "list", "help"):
        assert f"/gonogo {usage}" in text
    assert "frobnicate" in message.text


def test_release_list() -> None:
    empty = render_release_list([], NOW)
    assert "No open releases" in empty.text
    decision = decide(DecisionInput(gate=CONTRACT, now=NOW, results={}))
    listing = render_release_list([(release(CONTRACT), decision)], NOW)
    assert_valid(listing)
    line = all_text(listing).splitlines()[1]
    assert line.startswith("🔴 *payments@1.4.0* NO-GO `abc1234` — blocker Unit tests has not run (+")
    assert line.endswith("opened 2h ago by <@U01TECH>")


def test_a_decided_card_shows_the_recorded_verdict_whatever_the_results_say_now() -> None:
    green = {c.id: result(c.id, "pass") for c in CONTRACT.checks}
    live = view(CONTRACT, green)
    decided = release(
        CONTRACT,
        state=State.DECIDED,
        last_verdict=Verdict.GO,  # what a later run wrote, before runs were refused when decided
        decided_verdict=Verdict.NO_GO,
        decided_by="U0DECIDER",
        decided_at=NOW - timedelta(minutes=5),
    )
    message = render_card(CardView(**{**live.__dict__, "release": decided}))
    assert message.blocks[0]["text"]["text"].startswith("🔴 NO-GO (decided)")
    assert message.text.startswith("NO-GO (decided)")
    assert "decided NO-GO at 2026-11-22 11:55 UTC by <@U0DECIDER>" in all_text(message)


def test_results_of_another_commit_show_as_not_run_on_this_one() -> None:
    old = result(CONTRACT.checks[0].id, "pass").model_copy(update={"sha": "aaaaaaa1234"})
    message = render_card(view(CONTRACT, {}, outdated={old.check_id: old}))
    line = next(line for line in all_text(message).splitlines() if "not run on" in line)
    assert line.startswith("⬜") and CONTRACT.checks[0].title in line
    assert "from aaaaaaa, not run on abc1234" in line and "was ✅" in line


def test_signoff_buttons_carry_the_commit_the_card_is_drawn_for() -> None:
    gate = CONTRACT
    message = render_card(view(gate, {}))
    values = [
        e["value"] for b in message.blocks for e in b.get("elements", []) if e.get("action_id") == "gonogo_approve"
    ]
    assert values and all(v.endswith("|abc1234def") and v.count("|") == 2 for v in values)
