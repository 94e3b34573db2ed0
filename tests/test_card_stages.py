"""The card of a staged release: the ladder at a glance, the current stage, the next stage's
conditions first under "Why" (owner, due date, overdue), within Slack's limits at 4 stages x 40
conditions (folded; the thread listing has them all). Graded risk-score terms on the card."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot.core.decision import DecisionInput, decide
from bot.core.facts import Signature, Vote
from bot.core.gate import Gate
from bot.core.release import Release
from bot.core.results import CheckResult, Status
from bot.core.stages import decide_stages
from bot.slack.card import MAX_CONDITIONS_SHOWN, CardView, render_card
from bot.slack.messages import render_conditions_listing, render_promotion, render_release_list
from tests.blockkit import all_text, assert_valid

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def gate_doc(conditions_per_stage: int = 2, stages: int = 3, **extra: Any) -> dict[str, Any]:
    ids = ["dark", "canary", "half", "full"] if stages == 4 else ["dark", "canary", "full"]
    names = {"dark": "Dark launch", "canary": "Canary 5%", "half": "Half traffic", "full": "Full production"}
    checks: list[dict[str, Any]] = [{"id": "unit", "kind": "command", "run": ["x"], "severity": "blocker"}]
    for stage in ids:
        for n in range(conditions_per_stage):
            checks.append(
                {
                    "id": f"{stage}-{n:02d}",
                    "name": f"Condition {n} before {names[stage]}: " + "finalise the rollback procedure " * 2,
                    "kind": "manual",
                    "owner": "ops" if n % 2 else "security",
                    "before": stage,
                    "due": "2026-11-20" if n == 0 else f"{n}d after dark",
                }
            )
    return {
        "id": "stage-e",
        "name": "Stage E execution engine",
        "channel": "C1",
        "stages": [{"id": s, "name": names[s]} for s in ids],
        "checks": checks,
        "signoffs": [
            {"role": "ops", "label": "Operations Lead", "users": ["U1"]},
            {"role": "security", "label": "Security Lead", "users": ["U2"], "before": ids[-1]},
        ],
        **extra,
    }


def card_view(gate: Gate, results: dict[str, CheckResult], current: str | None = None, **extra: Any) -> CardView:
    reached = {"dark": NOW - timedelta(days=3)} if current else {}
    release = Release(
        id=f"{gate.id}@1.0.0",
        gate_id=gate.id,
        version="1.0.0",
        opened_by="U1",
        opened_at=NOW - timedelta(days=4),
        current_stage=current,
        stages_reached=reached,
    )
    signatures = [Signature(role="ops", user="U1", vote=Vote.APPROVE, at=NOW)]
    ladder = decide_stages(
        DecisionInput(gate=gate, now=NOW, results=results, signatures=signatures), current=current, reached=reached
    )
    return CardView(
        gate=gate,
        release=release,
        decision=ladder.target.decision,
        results=results,
        now=NOW,
        ladder=ladder,
        **extra,
    )


def passed(*ids: str) -> dict[str, CheckResult]:
    return {i: CheckResult(check_id=i, status=Status.PASS, summary="ok", started_at=NOW, finished_at=NOW) for i in ids}


def test_the_ladder_at_a_glance() -> None:
    gate = Gate.model_validate(gate_doc())
    results = passed("unit", "dark-00", "dark-01")
    message = render_card(card_view(gate, results, current="dark"))
    assert_valid(message)
    text = all_text(message)
    assert (
        "🟢 Dark launch 📍 — GO · 🔴 Canary 5% — 2 conditions open · ⚪ Full production — 5 open" in text
    )  # full: its 2 items, the security sign-off, and the canary's 2 before it
    assert "📍 Current stage: *Dark launch* since 3d ago" in text
    assert "Next: `/gonogo promote stage-e@1.0.0 canary`" in text
    assert message.blocks[0]["text"]["text"].endswith("· for Canary 5%")


def test_why_lists_the_next_stage_first_with_owner_and_due_date() -> None:
    gate = Gate.model_validate(gate_doc())
    message = render_card(card_view(gate, passed("unit", "dark-00", "dark-01"), current="dark"))
    why = next(b["text"]["text"] for b in message.blocks if b.get("text", {}).get("text", "").startswith("*Why*"))
    lines = why.splitlines()
    assert lines[0] == "*Why* — before *Canary 5%*"
    assert lines[1].startswith("🔴 Condition 0 before Canary 5%") and lines[1].endswith(
        "owner *Security Lead* · ⏰ *overdue*, was due 2026-11-20"
    )
    assert lines[2].endswith("owner *Operations Lead* · ⏰ *overdue*, was due 1d after Dark launch")
    assert lines[3] == "_then before Full production:_"
    assert "sign-off missing: Security Lead" in why


def test_overdue_is_on_the_card_and_in_the_list() -> None:
    gate = Gate.model_validate(gate_doc())
    view = card_view(gate, passed("unit", "dark-00", "dark-01"), current="dark")
    text = all_text(render_card(view))
    # canary-00 and full-00 are due 2026-11-20; canary-01 and full-01 were due 1 day after the dark launch.
    assert "⏰ 4 overdue: Condition 0 before Canary 5%" in text
    assert view.ladder is not None
    listing = render_release_list([(view.release, view.decision)], NOW, {view.release.id: view.ladder})
    assert_valid(listing)
    listed = all_text(listing)
    assert "📍 Dark launch, next Canary 5% (NO-GO, 2 open) · ⏰ 4 overdue:" in listed


def test_four_stages_and_forty_conditions_each_stay_within_slacks_limits() -> None:
    gate = Gate.model_validate(gate_doc(conditions_per_stage=40, stages=4))
    view = card_view(gate, {})
    message = render_card(view)
    assert_valid(message, text_limit=3000)
    text = all_text(message)
    assert "⚪ Half traffic — 121 open" in text
    total = 4 * 40 + 1 + 1  # the items, the unit tests blocker, the security sign-off before full
    assert f"…and {total - MAX_CONDITIONS_SHOWN} more conditions (all listed in the thread)" in text
    # The thread listing has every one of them, within limits too.
    assert view.ladder is not None
    pages = render_conditions_listing(gate, view.ladder)
    for page in pages:
        assert_valid(page)
    listed = "\n".join(all_text(p) for p in pages)
    assert all(
        f"Condition {n} before {name}" in listed for n in range(40) for name in ("Dark launch", "Full production")
    )


def test_an_unstaged_card_has_no_ladder() -> None:
    doc = {**gate_doc(), "stages": [], "signoffs": [], "checks": [{"id": "t", "kind": "tcp", "host": "h", "port": 1}]}
    gate = Gate.model_validate(doc)
    decision = decide(DecisionInput(gate=gate, now=NOW))
    release = Release(id="stage-e@1", gate_id="stage-e", version="1", opened_by="U1", opened_at=NOW)
    text = all_text(render_card(CardView(gate=gate, release=release, decision=decision, results={}, now=NOW)))
    assert "📍" not in text and "Why* —" not in text


def test_promotion_announcement() -> None:
    release = Release(id="payments@1.4.0", gate_id="payments", version="1.4.0", opened_by="U1", opened_at=NOW)
    message = render_promotion(release, "Canary 5%", "U01X", override=False, opened=0)
    assert_valid(message)
    assert message.text == "🚀 payments@1.4.0 promoted to Canary 5% by @U01X"
    assert all_text(message) == "🚀 *payments@1.4.0* promoted to *Canary 5%* by <@U01X>"
    loud = render_promotion(release, "Full <!here>", "U01X", override=True, opened=3)
    assert "&lt;!here&gt;" in all_text(loud) and "<!here>" not in loud.text
    assert "3 conditions open): a break-glass override passed it" in all_text(loud)


def test_graded_terms_on_the_card() -> None:
    gate = Gate.model_validate(
        {
            "id": "pre",
            "name": "Preflight",
            "channel": "C1",
            "checks": [
                {"id": "readiness", "kind": "command", "run": ["x"], "score": {"regex": "r=(.+)", "max": 10}},
                {"id": "mvp", "kind": "command", "run": ["x"], "score": {"regex": "m=(.+)", "max": 10}},
            ],
            "policy": {"kind": "risk_score", "weights": {"readiness": 0.5, "mvp": 0.5}, "penalty": 5},
        }
    )
    results = {
        i: CheckResult(check_id=i, status=Status.PASS, summary="ok", score=0.7, started_at=NOW, finished_at=NOW)
        for i in ("readiness", "mvp")
    }
    decision = decide(DecisionInput(gate=gate, now=NOW, results=results))
    release = Release(id="pre@1", gate_id="pre", version="1", opened_by="U1", opened_at=NOW)
    message = render_card(CardView(gate=gate, release=release, decision=decision, results=results, now=NOW))
    assert message.blocks[0]["text"]["text"] == "🟢 GO · Preflight 1 · risk 35"
    assert (
        "score = 100 − 70% weighted pass + 5 penalty (readiness 0.70×0.5 [readiness 0.70], mvp 0.70×0.5 [mvp 0.70])"
        in all_text(message)
    )
