"""The release card and the bot's other Slack messages, as pure Block Kit renderings.

Everything here is a function of its arguments (the clock included): no Slack calls, no Redis.
Blocks are built from `slack_sdk.models.blocks` objects, whose `to_dict()` validates them, and
every renderer keeps to Slack's limits (50 blocks, 3000 characters a section, 150 a header) by
folding rather than by letting Slack reject the message: a big gate folds its passing checks
into one summary line and lists everything in the thread instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.core.decision import MENTION, Decision, Level, Reason, RoleStatus
from bot.core.durations import humanize_age
from bot.core.facts import DrillResult, ManualMark, Signature
from bot.core.gate import Gate, RiskScorePolicy, ThresholdPolicy
from bot.core.release import Release, RunRecord, State
from bot.core.results import CheckResult, Status
from checks.base import Severity, SpecBase

ACTION_RUN = "gonogo_run"
ACTION_REFRESH = "gonogo_refresh"
ACTION_APPROVE = "gonogo_approve"
ACTION_APPROVE_COMMENT = "gonogo_approve_comment"
ACTION_REJECT = "gonogo_reject"
ACTION_WITHDRAW = "gonogo_withdraw"
ACTION_MANUAL_DONE = "gonogo_manual_done"
ACTION_MANUAL_REOPEN = "gonogo_manual_reopen"
ACTION_ACCEPT_RISK = "gonogo_accept_risk"
ACTION_OVERRIDE_APPROVE = "gonogo_override_approve"
MAX_ROLE_BUTTON_ROWS = 10
MAX_BUTTONS = 25  # per actions block

MAX_BLOCKS = 50
SECTION_LIMIT = 3000
HEADER_LIMIT = 150
TEXT_LIMIT = 3000  # the notification text; Slack allows 40k but nobody reads that much
FOLD_AT = 15  # above this many checks, passing ones fold into one line
MAX_CHECK_SECTIONS = 8
CARD_SUMMARY_LIMIT = 160  # a check's summary on the card; the thread has the rest
MAX_REASONS_SHOWN = 12
RUNNING = "⏳"

# --- text helpers ---------------------------------------------------------------------------


def escape(text: str) -> str:
    """Escape user or tool text for mrkdwn: only &, < and > are control characters in Slack."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def user_ref(user: str) -> str:
    """A mention for ids that look like Slack users; anything else (cli, ci) as plain text."""
    return f"<@{user}>" if re.fullmatch(r"[UW][A-Z0-9]+", user) else escape(user)


def reason_mrkdwn(text: str) -> str:
    """Reason text (which may quote tool output) escaped, with `{@U…}` tokens as real mentions."""
    out: list[str] = []
    last = 0
    for match in MENTION.finditer(text):
        out.append(escape(text[last : match.start()]))
        out.append(user_ref(match.group(1)))
        last = match.end()
    out.append(escape(text[last:]))
    return "".join(out)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(text: str) -> str:
    return " ".join(text.split())


def code_block(text: str) -> str:
    # A ``` inside the output would close our fence early.
    return "```" + escape(text).replace("```", "`\u200b``") + "```"


def age(now: datetime, then: datetime) -> str:
    text = humanize_age(max((now - then).total_seconds(), 0.0))
    return text if text == "just now" else f"{text} ago"


def chunk_lines(lines: Iterable[str], limit: int = SECTION_LIMIT) -> list[str]:
    """Join lines into texts of at most `limit` characters, never splitting a line."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        line = cut(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            chunks.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True)
class Message:
    """Slack message content: fallback `text` (notifications, screen readers) and blocks."""

    text: str
    blocks: list[dict[str, Any]]


def message(text: str, blocks: Sequence[Block]) -> Message:
    """Render blocks (validating each) into a Message, refusing more than Slack's 50."""
    rendered = [b.to_dict() for b in blocks]  # to_dict() validates every block
    assert len(rendered) <= MAX_BLOCKS, f"{len(rendered)} blocks"
    return Message(text=cut(text, TEXT_LIMIT), blocks=rendered)


def section(text: str, block_id: str | None = None) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=cut(text, SECTION_LIMIT)), block_id=block_id)


def context(text: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=cut(text, SECTION_LIMIT))])


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
    elif release.state is State.DECIDED and release.last_verdict is not None:
        status = f"{release.last_verdict.emoji} {release.last_verdict.value} (decided)"
    elif view.running:
        status = f"{RUNNING} RUNNING"
    else:
        status = f"{decision.verdict.emoji} {decision.verdict.value}"
    title = f"{status} · {gate.name} {release.version}"
    if decision.score is not None:
        title += f" · risk {decision.score.score:g}"
    return cut(title, HEADER_LIMIT)


def _facts(view: CardView) -> str:
    release, decision, gate = view.release, view.decision, view.gate
    parts = [f"*{escape(release.id)}*"]
    parts.append(f"commit `{release.short_sha}`" if release.short_sha else "no commit")
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
    shown_info = ("risk_score", "override", "threshold_reviewed")
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
        terms = ", ".join(f"{escape(t.key)} {t.passed}/{t.total}×{t.weight:g}" for t in decision.score.terms)
        lines.append(
            f"ℹ️ score = 100 − {decision.score.weighted_pass_pct:g}% weighted pass + {decision.score.penalty:g} penalty"
            f" ({terms})"
        )
    return "\n".join(chunk_lines([lead, *lines])[:1])


def check_line(check: SpecBase, view: CardView) -> str:
    found = view.results.get(check.id)
    tag = {Severity.BLOCKER: " _(blocker)_", Severity.ADVISORY: " _(advisory)_"}.get(check.severity, "")
    name = f"*{escape(check.title)}*{tag}"
    if view.is_running(check.id):
        return f"{RUNNING} {name} — running…"
    if found is None:
        return f"⬜ {name} — not run yet"
    summary = reason_mrkdwn(cut(one_line(found.summary), CARD_SUMMARY_LIMIT))
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


def _confirm(title: str, text: str, yes: str) -> ConfirmObject:
    return ConfirmObject(title=cut(title, 100), text=cut(text, 300), confirm=yes, deny="Cancel")


def _button(
    text: str, action_id: str, value: str, style: str | None = None, confirm: ConfirmObject | None = None
) -> ButtonElement:
    return ButtonElement(text=cut(text, 75), action_id=action_id, value=value, style=style, confirm=confirm)


def role_buttons(view: CardView, role: str, label: str) -> ActionsBlock:
    rid = view.release.id
    value = f"{rid}|{role}"
    return ActionsBlock(
        block_id=cut(f"role|{role}", 255),
        elements=[
            _button(
                f"Approve as {label}",
                ACTION_APPROVE,
                value,
                "primary",
                _confirm("Approve?", f"Approve {rid} as {label}? Your approval is bound to this commit.", "Approve"),
            ),
            _button("Approve with comment…", ACTION_APPROVE_COMMENT, value),
            _button(
                "Reject",
                ACTION_REJECT,
                value,
                "danger",
                _confirm("Reject?", f"Reject {rid} as {label}? You will be asked for a reason.", "Reject"),
            ),
        ],
    )


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
            _button(f"Accept risk {risk.id}", ACTION_ACCEPT_RISK, f"{view.release.id}|{risk.id}")
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
            confirm = _confirm("Reopen?", f"Mark {check.title} as not done again?", "Reopen")
            elements.append(_button(f"Reopen {check.title}", ACTION_MANUAL_REOPEN, value, confirm=confirm))
        else:
            elements.append(_button(f"Mark done: {check.title}", ACTION_MANUAL_DONE, value))
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
        lines.append(
            f"{mark} *{escape(drill.title)}*{optional} — {verb} {age(view.now, found.finished_at)}{note}:"
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
    """The notification text: the verdict and the first blocking reason."""
    decision = view.decision
    verdict = "RUNNING" if view.running else decision.verdict.value
    text = f"{verdict}: {view.gate.name} {view.release.version}"
    if decision.blocking:
        extra = f" (+{len(decision.blocking) - 1} more)" if len(decision.blocking) > 1 else ""
        text += f" — {decision.blocking[0].text}{extra}"
    return escape(MENTION.sub(r"@\1", one_line(text)))


def render_card(view: CardView) -> Message:
    head: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=headline(view), emoji=True)),
        section(_facts(view)),
        section(_why(view)),
        DividerBlock(),
    ]
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


# --- messages in the card's thread ----------------------------------------------------------


def _role_label(gate: Gate, role: str) -> str:
    found = gate.role(role)
    return found.title if found else role


def render_override_request(gate: Gate, release: Release, request_id: str, requested_by: str, reason: str) -> Message:
    """The break-glass request, posted to the card's thread and the channel with Approve buttons."""
    assert gate.override is not None
    needs = ", ".join(f"{n}× {escape(_role_label(gate, role))}" for role, n in gate.override.approvers.items())
    text = (
        f"🟠 *Override requested* for *{escape(release.id)}* by {user_ref(requested_by)}\n"
        f"> {escape(one_line(reason))}\nNeeds: {needs}. The requester cannot approve it."
    )
    buttons = [
        _button(
            f"Approve override as {_role_label(gate, role)}",
            ACTION_OVERRIDE_APPROVE,
            f"{release.id}|{request_id}|{role}",
            "danger",
            _confirm(
                "Approve override?",
                f"Let {release.id} go despite failing gates, as {_role_label(gate, role)}?",
                "Approve",
            ),
        )
        for role in gate.override.approvers
    ]
    blocks: list[Block] = [
        section(text),
        ActionsBlock(block_id=f"override|{request_id}", elements=buttons[:MAX_BUTTONS]),
    ]
    return message(f"Override requested for {release.id}: {one_line(reason)}", blocks)


def render_override_active(
    release: Release, reason: str, approvers: Sequence[tuple[str, str]], failing: Sequence[str]
) -> Message:
    """Announced in the channel when the override's quorum is met."""
    who = ", ".join(f"{user_ref(user)} ({escape(role)})" for user, role in approvers)
    lines = [f"🟠 *{escape(release.id)} is GO (OVERRIDE)*", f"Reason: {escape(one_line(reason))}", f"Approved by {who}"]
    if failing:
        lines.append("Failing at this moment:")
        lines += [f"• {reason_mrkdwn(one_line(f))}" for f in failing[:20]]
    return message(f"{release.id} is GO (OVERRIDE): {one_line(reason)}", [section(c) for c in chunk_lines(lines)[:10]])


def render_check_details(gate: Gate, result: CheckResult) -> Message:
    """A failed check's summary and output tail, posted as a reply in the card's thread."""
    check = next((c for c in gate.checks if c.id == result.check_id), None)
    title = check.title if check else result.check_id
    verb = {Status.FAIL: "failed", Status.ERROR: "errored", Status.SKIPPED: "was skipped"}.get(
        result.status, result.status.value
    )
    summary = escape(one_line(result.summary))
    head = f"{result.status.emoji} *{escape(title)}* {verb} after {result.duration_s:.1f} s: {summary}"
    blocks: list[Block] = [section(head)]
    if result.details.strip():
        # The runner keeps details under 2800 characters; escaping can grow them, so cut the head.
        body = code_block(result.details)
        if len(body) > SECTION_LIMIT:
            body = code_block("…" + result.details[-(SECTION_LIMIT - 200) :])
        blocks.append(section(body))
    return message(f"{title} {verb}: {one_line(result.summary)}", blocks)


def render_results_listing(gate: Gate, results: Mapping[str, CheckResult], now: datetime) -> list[Message]:
    """Every check of a big gate, for the thread: the card only shows what needs attention."""
    lines = []
    for check in gate.checks:
        found = results.get(check.id)
        if found is None:
            lines.append(f"⬜ *{escape(check.title)}* — not run yet")
        else:
            lines.append(
                f"{found.status.emoji} *{escape(check.title)}* — {escape(cut(one_line(found.summary), 200))}"
                f" · {found.duration_s:.1f} s · _{age(now, found.finished_at)}_"
            )
    sections = [section(text) for text in chunk_lines(lines)]
    pages = [sections[i : i + MAX_BLOCKS] for i in range(0, len(sections), MAX_BLOCKS)]
    return [message(f"All {len(gate.checks)} checks of {gate.name}", page) for page in pages]


# --- ephemeral answers ----------------------------------------------------------------------

USAGE = [
    ("open <gate> <version> [sha]", "open a release and post its card in the gate's channel"),
    ("status [<release> | <gate>]", "show a release's card (here: at the bottom); alone: the open releases"),
    ("run <release> [check-id ...]", "run the checks now (all, or the ones named)"),
    ("list", "open releases with their verdicts and what blocks them"),
    ("override <release> <reason>", "break-glass: ask the override approvers to let a NO-GO go"),
    ("decide <release>", "freeze the verdict: post the decision record, keep the evidence bundle"),
    ("evidence <release>", "upload the evidence bundle (Markdown) to the card's thread"),
    ("close <release> / reopen <release>", "close a release / open it again"),
    ("history <release> [--page N]", "the audit trail"),
    ("help", "this message"),
]


def render_help(note: str | None = None) -> Message:
    lines = [f"• `/gonogo {usage}` — {what}" for usage, what in USAGE]
    text = "*gonogo* runs release GO/NO-GO gates.\n" + "\n".join(lines)
    text += "\nA release is `<gate>@<version>`, e.g. `payments@1.4.0`."
    blocks: list[Block] = []
    if note:
        blocks.append(section(f":warning: {escape(note)}"))
    blocks.append(section(text))
    plain = "\n".join(f"/gonogo {usage} — {what}" for usage, what in USAGE)
    return message(f"{note}\n{plain}" if note else plain, blocks)


def release_line(release: Release, decision: Decision | None, now: datetime) -> str:
    if decision is None:
        head = f"❔ *{escape(release.id)}*"
        rest = "verdict unknown"
    else:
        head = f"{decision.verdict.emoji} *{escape(release.id)}* {decision.verdict.value}"
        blocking: list[Reason] = decision.blocking
        if blocking:
            more = f" (+{len(blocking) - 1} more)" if len(blocking) > 1 else ""
            rest = reason_mrkdwn(cut(one_line(blocking[0].text), 150)) + more
        else:
            rest = f"{decision.checks_passed}/{decision.checks_total} checks pass"
    sha = f" `{release.short_sha}`" if release.short_sha else ""
    return f"{head}{sha} — {rest} · opened {age(now, release.opened_at)} by {user_ref(release.opened_by)}"


def render_release_list(rows: Sequence[tuple[Release, Decision | None]], now: datetime) -> Message:
    if not rows:
        text = "No open releases. Open one with `/gonogo open <gate> <version>`."
        return message(text, [section(text)])
    lines = [f"*Open releases* ({len(rows)})", *(release_line(r, d, now) for r, d in rows)]
    chunks = chunk_lines(lines)
    if len(chunks) > MAX_BLOCKS:
        chunks = [*chunks[: MAX_BLOCKS - 1], "…more releases than fit here"]
    plain = "; ".join(f"{r.id} {d.verdict.value if d else 'unknown'}" for r, d in rows)
    return message(f"Open releases: {plain}", [section(c) for c in chunks])
