"""The release card, as a pure Block Kit rendering of one release's state at one instant.

A function of its arguments (the clock included): no Slack calls, no Redis. It keeps to Slack's
limits (50 blocks, 3000 characters a section, 150 a header) by folding rather than by letting Slack
reject the message: a big gate folds its passing checks into one summary line and lists everything
in the thread instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    DividerBlock,
    HeaderBlock,
    PlainTextObject,
    SectionBlock,
)

from bot.core.decision import Decision, Level, RiskScore, RoleStatus, ScoreTerm, Verdict
from bot.core.facts import DrillResult, ManualMark, Signature
from bot.core.gate import Gate, RiskScorePolicy, ThresholdPolicy
from bot.core.release import Release, RunRecord, State, short
from bot.core.results import CheckResult, Status
from bot.core.stages import Condition, Ladder
from bot.core.text import chunk_lines, cut, one_line

# The thread lists what the card folds: the bounds are the services' too.
from bot.core.thread_notices import FOLD_AT as FOLD_AT
from bot.core.thread_notices import MAX_CONDITIONS_SHOWN as MAX_CONDITIONS_SHOWN
from bot.slack.blocks import (
    ACTION_ACCEPT_RISK,
    ACTION_APPROVE,
    ACTION_APPROVE_COMMENT,
    ACTION_MANUAL_DONE,
    ACTION_MANUAL_REOPEN,
    ACTION_REFRESH,
    ACTION_REJECT,
    ACTION_RUN,
    HEADER_LIMIT,
    MAX_BLOCKS,
    MAX_BUTTONS,
    Message,
    age,
    button,
    confirm,
    context,
    escape,
    message,
    reason_mrkdwn,
    section,
    user_ref,
)
from checks.base import Severity, SpecBase

MAX_CHECK_SECTIONS = 8
CARD_SUMMARY_LIMIT = 160  # a check's summary on the card; the thread has the rest
MAX_REASONS_SHOWN = 12
RUNNING = "⏳"
MAX_ROLE_BUTTON_ROWS = 10


# --- the release card -----------------------------------------------------------------------


@dataclass(frozen=True)
class CardView:
    """Everything the card shows, gathered by the service at one instant."""

    gate: Gate
    release: Release
    decision: Decision
    results: Mapping[str, CheckResult]
    now: datetime
    running: frozenset[str] = frozenset()  # check ids of the run under way
    run_by: str | None = None
    run_started: datetime | None = None
    last_run: RunRecord | None = None
    drills: Mapping[str, DrillResult] = field(default_factory=dict)
    marks: Mapping[str, ManualMark] = field(default_factory=dict)
    ladder: Ladder | None = None  # gates with rollout stages: every stage's verdict
    outdated: Mapping[str, CheckResult] = field(default_factory=dict)  # results of another commit

    @property
    def frozen_verdict(self) -> Verdict | None:
        """The verdict of the decision record while the release is decided."""
        if self.release.state is not State.DECIDED:
            return None
        return self.release.decided_verdict or self.release.last_verdict

    @property
    def actionable(self) -> bool:
        """Sign-off, risk and manual buttons only while the release is open (decided = frozen)."""
        return self.release.state is State.OPEN

    def is_running(self, check_id: str) -> bool:
        """Running, and no result from this run yet (an older result is shown as ⏳)."""
        if check_id not in self.running:
            return False
        found = self.results.get(check_id)
        return found is None or self.run_started is None or found.finished_at < self.run_started

    @property
    def folded(self) -> bool:
        return len(self.gate.checks) > FOLD_AT


def headline(view: CardView) -> str:
    gate, release, decision = view.gate, view.release, view.decision
    if release.state is State.CLOSED:
        status = "⚫ CLOSED"
    elif release.state is State.ROLLED_BACK:
        status = "⏪ ROLLED BACK"
    elif view.frozen_verdict is not None:
        status = f"{view.frozen_verdict.emoji} {view.frozen_verdict.value} (decided)"
    elif view.running:
        status = f"{RUNNING} RUNNING"
    else:
        status = f"{decision.verdict.emoji} {decision.verdict.value}"
    title = f"{status} · {gate.name} {release.version}"
    if view.ladder is not None:
        title += f" · for {view.ladder.target.name}"
    if decision.score is not None:
        title += f" · risk {decision.score.score:g}"
    return cut(title, HEADER_LIMIT)


def _facts(view: CardView) -> str:
    release, decision, gate = view.release, view.decision, view.gate
    parts = [f"*{escape(release.id)}*"]
    parts.append(f"commit `{release.short_sha}`" if release.short_sha else "no commit")
    if view.frozen_verdict is not None and release.decided_at is not None:
        by = f" by {user_ref(release.decided_by)}" if release.decided_by else ""
        parts.append(f"decided {view.frozen_verdict.value} at {release.decided_at:%Y-%m-%d %H:%M} UTC{by}")
    else:
        parts.append(f"state {release.state.value}")
    parts.append(f"opened by {user_ref(release.opened_by)} {age(view.now, release.opened_at)}")
    policy = gate.policy
    if isinstance(policy, ThresholdPolicy):
        parts.append(f"threshold policy: GO at {policy.go:.0%}, review from {policy.review:.0%}")
    elif isinstance(policy, RiskScorePolicy):
        parts.append(f"risk-score policy: GO below {policy.go_below:g}, caution below {policy.caution_below:g}")
    else:
        parts.append("strict policy")
    counted = f"{decision.checks_passed}/{decision.checks_total} checks pass"
    return " · ".join(parts) + f"\n{counted}"


_LEVEL_MARK = {Level.BLOCKING: "🔴", Level.RISK: "🟡", Level.WARNING: "🔸", Level.INFO: "ℹ️"}


def _why(view: CardView) -> str:
    decision = view.decision
    shown_info = ("risk_score", "override", "threshold_reviewed", "window")
    reasons = [r for r in decision.reasons if r.level is not Level.INFO or r.code.startswith(shown_info)]
    if view.running:
        lead = f"*Why* (as of the last results; a run is under way, started by {user_ref(view.run_by or '?')})"
    else:
        lead = "*Why*"
    if not reasons:
        return f"{lead}\nEvery check passes and every required sign-off is in."
    lines = [f"{_LEVEL_MARK[r.level]} {reason_mrkdwn(one_line(r.text))}" for r in reasons[:MAX_REASONS_SHOWN]]
    if len(reasons) > MAX_REASONS_SHOWN:
        lines.append(f"…and {len(reasons) - MAX_REASONS_SHOWN} more (see `/gonogo status` in the thread)")
    if decision.score is not None:
        lines.append(score_line(decision.score))
    return "\n".join(chunk_lines([lead, *lines])[:1])


def score_term(term: ScoreTerm) -> str:
    """`infra 1/1×0.5` for pass/fail terms; a graded term shows its value and each check's score."""
    if not any(item.graded for item in term.checks):
        return f"{escape(term.key)} {term.passed}/{term.total}×{term.weight:g}"
    items = ", ".join(
        f"{escape(i.check)} {i.score:.2f}" if i.graded else f"{escape(i.check)} {'pass' if i.score else 'fail'}"
        for i in term.checks
    )
    return f"{escape(term.key)} {term.value:.2f}×{term.weight:g} [{items}]"


def score_line(score: RiskScore) -> str:
    terms = ", ".join(score_term(t) for t in score.terms)
    return f"ℹ️ score = 100 − {score.weighted_pass_pct:g}% weighted pass + {score.penalty:g} penalty ({terms})"


# --- rollout stages -----------------------------------------------------------------------------


def ladder_line(ladder: Ladder) -> str:
    """`🟢 Dark launch — GO · 🔴 Canary 5% — 3 conditions open · ⚪ Full production — 4 open`: the first
    blocked stage is red, the ones behind it grey (they wait for it anyway)."""
    rungs = []
    blocked = False
    for stage in ladder.stages:
        count = len(stage.conditions)
        if stage.verdict is not Verdict.NO_GO:
            mark, body = stage.verdict.emoji, stage.verdict.value
        elif not blocked:
            blocked = True
            mark, body = "🔴", f"{count} condition{'' if count == 1 else 's'} open"
        else:
            mark, body = "⚪", f"{count} open"
        here = " 📍" if stage.id == ladder.current else ""
        rungs.append(f"{mark} {escape(stage.name)}{here} — {body}")
    return " · ".join(rungs)


def condition_line(condition: Condition) -> str:
    parts = [f"🔴 {reason_mrkdwn(cut(one_line(condition.text), CARD_SUMMARY_LIMIT))}"]
    if condition.owner:
        parts.append(f"owner *{escape(condition.owner)}*")
    if condition.due:
        parts.append(("⏰ *overdue*, was due " if condition.overdue else "due ") + escape(condition.due))
    return " · ".join(parts)


def stages_section(view: CardView) -> SectionBlock | None:
    """The ladder at a glance, the current stage and what comes next."""
    ladder = view.ladder
    if ladder is None:
        return None
    lines = [ladder_line(ladder)]
    current = ladder.get(ladder.current) if ladder.current else None
    reached = view.release.stages_reached.get(ladder.current or "")
    if current is not None:
        since = f" since {age(view.now, reached)}" if reached else ""
        lines.append(f"📍 Current stage: *{escape(current.name)}*{since}")
    else:
        lines.append("📍 Not promoted yet")
    target = ladder.target
    if target.id != ladder.current:
        lines.append(f"Next: `/gonogo promote {escape(view.release.id)} {escape(target.id)}`")
    flag = view.release.deploy_flag
    if flag:
        n = int(flag.get("open", 0))
        lines.append(
            f"⚠️ Deployed to *{escape(str(flag.get('stage', '')))}* while {n} condition{'s' if n != 1 else ''}"
            f" {'were' if n != 1 else 'was'} open"
        )
    if ladder.overdue:
        names = ", ".join(escape(cut(one_line(c.text.removesuffix(" is overdue")), 60)) for c in ladder.overdue[:5])
        more = f" +{len(ladder.overdue) - 5} more" if len(ladder.overdue) > 5 else ""
        lines.append(f"⏰ {len(ladder.overdue)} overdue: {names}{more}")
    return section("\n".join(chunk_lines(lines)[:1]))


def staged_why(view: CardView, ladder: Ladder) -> str:
    """The next stage's conditions first (owner, due date), then what later stages still need; folded
    at MAX_CONDITIONS_SHOWN, the rest is listed in the card's thread."""
    target = ladder.target
    lead = f"*Why* — before *{escape(target.name)}*"
    if view.running:
        lead += f" (as of the last results; a run is under way, started by {user_ref(view.run_by or '?')})"
    lines = [lead]
    shown = 0
    total = 0
    for stage in ladder.stages[ladder.stages.index(target) :]:
        conditions = stage.conditions if stage is target else stage.own()
        total += len(conditions)
        if not conditions or shown >= MAX_CONDITIONS_SHOWN:
            continue
        if stage is not target:
            lines.append(f"_then before {escape(stage.name)}:_")
        for condition in conditions[: MAX_CONDITIONS_SHOWN - shown]:
            lines.append(condition_line(condition))
            shown += 1
    if total > shown:
        lines.append(f"…and {total - shown} more conditions (all listed in the thread)")
    if not target.conditions:
        lines.append(f"Everything required before {escape(target.name)} holds.")
    shown_info = ("risk_score", "override", "threshold_reviewed")
    others = [
        r
        for r in target.decision.reasons
        if r.level in (Level.RISK, Level.WARNING) or (r.level is Level.INFO and r.code.startswith(shown_info))
    ]
    lines += [f"{_LEVEL_MARK[r.level]} {reason_mrkdwn(one_line(r.text))}" for r in others[:5]]
    if len(others) > 5:
        lines.append(f"…and {len(others) - 5} more notes")
    if target.decision.score is not None:
        lines.append(score_line(target.decision.score))
    return "\n".join(chunk_lines(lines)[:1])


def check_line(check: SpecBase, view: CardView) -> str:
    found = view.results.get(check.id)
    tag = {Severity.BLOCKER: " _(blocker)_", Severity.ADVISORY: " _(advisory)_"}.get(check.severity, "")
    name = f"*{escape(check.title)}*{tag}"
    if view.is_running(check.id):
        return f"{RUNNING} {name} — running…"
    if found is None and check.id in view.outdated:
        old = view.outdated[check.id]
        was = f"{old.status.emoji} {age(view.now, old.finished_at)}"
        return f"⬜ {name} — from {short(old.sha)}, not run on {short(view.release.sha)} _(was {was})_"
    if found is None:
        return f"⬜ {name} — not run yet"
    # Only the bot's own "done by {@U…}" of a manual mark becomes a mention; a check's output never.
    text = cut(one_line(found.summary), CARD_SUMMARY_LIMIT)
    summary = reason_mrkdwn(text) if getattr(check, "kind", None) == "manual" else escape(text)
    return f"{found.status.emoji} {name} — {summary} · _{age(view.now, found.finished_at)}_"


def _needs_attention(check: SpecBase, view: CardView) -> bool:
    found = view.results.get(check.id)
    return view.is_running(check.id) or found is None or found.status is not Status.PASS


def _check_sections(view: CardView) -> list[SectionBlock]:
    checks = view.gate.checks
    shown = [c for c in checks if _needs_attention(c, view)] if view.folded else list(checks)
    lines = [f"*Checks* ({view.decision.checks_passed}/{view.decision.checks_total} counted checks pass)"]
    lines += [check_line(c, view) for c in shown]
    hidden = len(checks) - len(shown)
    if hidden:
        lines.append(f"✅ {hidden} more checks pass (full list in the thread)")
    if not checks:
        lines.append("_This gate has no checks._")
    chunks = chunk_lines(lines)
    if len(chunks) > MAX_CHECK_SECTIONS:
        left = sum(c.count("\n") + 1 for c in chunks[MAX_CHECK_SECTIONS - 1 :])
        chunks = [*chunks[: MAX_CHECK_SECTIONS - 1], f"…and {left} more lines: the full list is in the thread"]
    return [section(text) for text in chunks]


def _signature_line(sig: Signature, now: datetime) -> str:
    comment = f": “{escape(cut(one_line(sig.comment), 200))}”" if sig.comment else ""
    return f"{user_ref(sig.user)} {age(now, sig.at)}{comment}"


def role_line(role: RoleStatus, members: Sequence[str], usergroup: str | None, now: datetime) -> str:
    optional = " _(optional)_" if not role.required else ""
    count = f"({len(role.approvals)}/{role.min_approvals})"
    if role.rejections:
        mark = "❌"
        body = "rejected by " + "; ".join(_signature_line(s, now) for s in role.rejections)
    elif role.met:
        mark = "✅"
        body = "approved by " + "; ".join(_signature_line(s, now) for s in role.approvals)
    else:
        mark = "⬜"
        who = [user_ref(u) for u in members]
        if usergroup:
            who.append(f"<!subteam^{usergroup}>")
        approved = "; ".join(_signature_line(s, now) for s in role.approvals)
        body = (f"approved by {approved}; " if approved else "") + "waiting for " + (", ".join(who) or "anyone")
    lines = [f"{mark} *{escape(role.label)}* {count}{optional} — {body}"]
    for stale in role.stale:
        lines.append(
            f"      ~{user_ref(stale.signature.user)} {stale.signature.vote.value}d {age(now, stale.signature.at)}~"
            f" _stale: {escape(stale.reason)}_"
        )
    return "\n".join(lines)


def role_buttons(view: CardView, role: str, label: str) -> ActionsBlock:
    return ActionsBlock(
        block_id=cut(f"role|{role}", 255), elements=signoff_buttons(view.release.id, role, label, view.release.sha)
    )


def signoff_buttons(release_id: str, role: str, label: str, sha: str | None) -> list[ButtonElement]:
    """Approve / Approve with comment / Reject for one role: the card's, and a reminder DM's."""
    # The commit the card is drawn for: a click after the release moved is refused, not counted.
    value = f"{release_id}|{role}|{sha or ''}"
    return [
        button(
            f"Approve as {label}",
            ACTION_APPROVE,
            value,
            "primary",
            confirm("Approve?", f"Approve {release_id} as {label}? Your approval is bound to this commit.", "Approve"),
        ),
        button("Approve with comment…", ACTION_APPROVE_COMMENT, value),
        button(
            "Reject",
            ACTION_REJECT,
            value,
            "danger",
            confirm("Reject?", f"Reject {release_id} as {label}? You will be asked for a reason.", "Reject"),
        ),
    ]


def _signoff_blocks(view: CardView) -> list[Block]:
    if not view.gate.signoffs:
        return []
    by_role = {r.role: r for r in view.decision.roles}
    blocks: list[Block] = [section("*Sign-offs*")]
    with_buttons = view.actionable and len(view.gate.signoffs) <= MAX_ROLE_BUTTON_ROWS
    lines = []
    for spec in view.gate.signoffs:
        status = by_role.get(spec.role)
        if status is None:  # the CLI ignored sign-offs; the card never does, but stay total
            status = RoleStatus(
                role=spec.role, label=spec.title, required=spec.required, min_approvals=spec.min_approvals
            )
        line = role_line(status, spec.users, spec.usergroup, view.now)
        if with_buttons:
            blocks += [section(line), role_buttons(view, spec.role, spec.title)]
        else:
            lines.append(line)
    blocks += [section(text) for text in chunk_lines(lines)[:2]]
    return blocks


def _risk_section(view: CardView) -> SectionBlock | None:
    if not view.gate.risks:
        return None
    accepted = {a.risk_id: a for a in view.decision.accepted_risks}
    lines = ["*Risks*"]
    for risk in view.gate.risks:
        role = view.gate.role(risk.acceptor)
        label = role.title if role else risk.acceptor
        acceptance = accepted.get(risk.id)
        if acceptance:
            state = f"accepted by {user_ref(acceptance.user)} {age(view.now, acceptance.at)}"
        else:
            state = f"not accepted (needs {escape(label)})"
        mitigation = f" · mitigation: {escape(one_line(risk.mitigation))}" if risk.mitigation else ""
        lines.append(
            f"{'🟡' if acceptance else '⚠️'} *{escape(risk.id)}* ({risk.impact.value}) —"
            f" {escape(one_line(risk.description))}{mitigation} · {state}"
        )
    return section("\n".join(chunk_lines(lines)[:1]))


def _risk_buttons(view: CardView) -> ActionsBlock | None:
    accepted = {a.risk_id for a in view.decision.accepted_risks}
    open_risks = [r for r in view.gate.risks if r.id not in accepted]
    if not view.actionable or not open_risks:
        return None
    return ActionsBlock(
        block_id="risks",
        elements=[
            button(f"Accept risk {risk.id}", ACTION_ACCEPT_RISK, f"{view.release.id}|{risk.id}")
            for risk in open_risks[:MAX_BUTTONS]
        ],
    )


def _manual_buttons(view: CardView) -> ActionsBlock | None:
    manual = [c for c in view.gate.checks if c.kind == "manual"]
    if not view.actionable or not manual:
        return None
    elements = []
    for check in manual[:MAX_BUTTONS]:
        value = f"{view.release.id}|{check.id}"
        if check.id in view.marks:
            ask = confirm("Reopen?", f"Mark {check.title} as not done again?", "Reopen")
            elements.append(button(f"Reopen {check.title}", ACTION_MANUAL_REOPEN, value, confirm=ask))
        else:
            elements.append(button(f"Mark done: {check.title}", ACTION_MANUAL_DONE, value))
    return ActionsBlock(block_id="manual", elements=elements)


def _drill_section(view: CardView) -> SectionBlock | None:
    if not view.gate.drills:
        return None
    lines = ["*Fire drills*"]
    for drill in view.gate.drills:
        found = view.drills.get(drill.id)
        optional = "" if drill.required else " _(optional)_"
        if found is None:
            lines.append(f"⬜ *{escape(drill.title)}*{optional} — never run")
            continue
        stale = drill.max_age is not None and view.now - found.finished_at > drill.max_age
        mark = "❌" if not found.passed else ("🕰️" if stale else "✅")
        verb = "passed" if found.passed else "failed"
        note = " (stale)" if stale and found.passed else ""
        by = f" by {user_ref(found.by)}" if found.by else ""
        lines.append(
            f"{mark} *{escape(drill.title)}*{optional} — {verb}{by} {age(view.now, found.finished_at)}{note}:"
            f" {escape(cut(one_line(found.summary), CARD_SUMMARY_LIMIT))}"
        )
    return section("\n".join(chunk_lines(lines)[:1]))


def _footer(view: CardView) -> str:
    parts = []
    if view.running:
        started = f" {age(view.now, view.run_started)}" if view.run_started else ""
        who = user_ref(view.run_by or "?")
        parts.append(f"{RUNNING} running {len(view.running)} check(s), started by {who}{started}")
    if view.last_run is not None:
        run = view.last_run
        parts.append(
            f"last run by {user_ref(run.actor)} {age(view.now, run.finished_at)}:"
            f" {len(run.check_ids)} check(s) in {run.duration_s:.1f} s → {run.verdict.value}"
            + (f" (⚠️ interrupted: {escape(run.interrupted)})" if run.interrupted else "")
        )
    elif not view.running:
        parts.append("not run yet: press *Run checks*")
    parts.append(f"updated {view.now:%Y-%m-%d %H:%M} UTC")
    return " · ".join(parts)


def _buttons(view: CardView) -> ActionsBlock:
    value = view.release.id
    return ActionsBlock(
        block_id="gonogo_card_actions",
        elements=[
            ButtonElement(text="Run checks", action_id=ACTION_RUN, value=value, style="primary"),
            ButtonElement(text="Refresh", action_id=ACTION_REFRESH, value=value),
        ],
    )


def card_text(view: CardView) -> str:
    """The notification text (plain; `message` escapes it): the verdict and the first blocking reason."""
    decision = view.decision
    if view.frozen_verdict is not None:
        verdict = f"{view.frozen_verdict.value} (decided)"
    else:
        verdict = "RUNNING" if view.running else decision.verdict.value
    text = f"{verdict}: {view.gate.name} {view.release.version}"
    if decision.blocking:
        extra = f" (+{len(decision.blocking) - 1} more)" if len(decision.blocking) > 1 else ""
        text += f" — {decision.blocking[0].text}{extra}"
    return one_line(text)


def render_card(view: CardView) -> Message:
    head: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=headline(view), emoji=True)),
        section(_facts(view)),
        *([section(staged_why(view, view.ladder))] if view.ladder is not None else [section(_why(view))]),
        DividerBlock(),
    ]
    ladder = stages_section(view)
    if ladder is not None:
        head.insert(2, ladder)
    checks: list[Block] = list(_check_sections(view))
    manual = _manual_buttons(view)
    if manual is not None:
        checks.append(manual)
    rest: list[Block] = [*_signoff_blocks(view)]
    for optional in (_risk_section(view), _risk_buttons(view), _drill_section(view)):
        if optional is not None:
            rest.append(optional)
    tail: list[Block] = [context(_footer(view)), _buttons(view)]
    # Check sections give way first: the thread has the full list, the buttons exist nowhere else.
    room = MAX_BLOCKS - len(head) - len(rest) - len(tail)
    if len(checks) > room:
        checks = [*checks[: max(room - 1, 0)], section("…more checks than fit here: the full list is in the thread")]
    return message(card_text(view), [*head, *checks, *rest, *tail])
