"""The bot's other Slack messages: thread replies (check details, full listings, override
request and activation) and ephemeral answers (help, the open-release list). Pure renderings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
)

from bot.core.decision import Decision, Reason
from bot.core.gate import Gate
from bot.core.release import Release
from bot.core.results import CheckResult, Status
from bot.core.stages import Ladder
from bot.core.text import SECTION_LIMIT, chunk_lines, cut, one_line
from bot.slack.blocks import (
    ACTION_OVERRIDE_APPROVE,
    MAX_BLOCKS,
    MAX_BUTTONS,
    Message,
    age,
    button,
    code_block,
    confirm,
    escape,
    escape_code,
    escape_message,
    message,
    reason_mrkdwn,
    section,
    user_ref,
)
from bot.slack.card import condition_line, ladder_line

# --- messages in the card's thread ----------------------------------------------------------


def _role_label(gate: Gate, role: str) -> str:
    found = gate.role(role)
    return found.title if found else role


def render_override_request(gate: Gate, release: Release, request_id: str, requested_by: str, reason: str) -> Message:
    """The break-glass request, posted to the card's thread and the channel with Approve buttons."""
    assert gate.override is not None
    approvers = [(role, _role_label(gate, role), n) for role, n in gate.override.approvers.items()]
    return override_request_message(release.id, request_id, requested_by, reason, approvers)


def override_request_message(
    release_id: str, request_id: str, requested_by: str, reason: str, approvers: Sequence[tuple[str, str, int]]
) -> Message:
    """`approvers`: (role id, its title, approvals needed). Every text is escaped here."""
    needs = ", ".join(f"{n}× {escape(label)}" for _, label, n in approvers)
    text = (
        f"🟠 *Override requested* for *{escape(release_id)}* by {user_ref(requested_by)}\n"
        f"> {escape(one_line(reason))}\nNeeds: {needs}. The requester cannot approve it."
    )
    buttons = [
        button(
            f"Approve override as {label}",
            ACTION_OVERRIDE_APPROVE,
            f"{release_id}|{request_id}|{role}",
            "danger",
            confirm(
                "Approve override?",
                f"Let {release_id} go despite failing gates, as {label}?",
                "Approve",
            ),
        )
        for role, label, _ in approvers
    ]
    blocks: list[Block] = [
        section(text),
        ActionsBlock(block_id=f"override|{request_id}", elements=buttons[:MAX_BUTTONS]),
    ]
    return message(f"Override requested for {release_id}: {one_line(reason)}", blocks)


def render_override_active(
    release: Release | str, reason: str, approvers: Sequence[tuple[str, str]], failing: Sequence[str]
) -> Message:
    """Announced in the channel when the override's quorum is met. `failing`: reason texts, whose
    `{@U…}` tokens become mentions (reason_mrkdwn) and everything else is escaped."""
    release_id = release if isinstance(release, str) else release.id
    who = ", ".join(f"{user_ref(user)} ({escape(role)})" for user, role in approvers)
    lines = [f"🟠 *{escape(release_id)} is GO (OVERRIDE)*", f"Reason: {escape(one_line(reason))}", f"Approved by {who}"]
    if failing:
        lines.append("Failing at this moment:")
        lines += [f"• {reason_mrkdwn(one_line(f))}" for f in failing[:20]]
    return message(f"{release_id} is GO (OVERRIDE): {one_line(reason)}", [section(c) for c in chunk_lines(lines)[:10]])


def render_check_details(gate: Gate, result: CheckResult) -> Message:
    """A failed check's summary and output tail, posted as a reply in the card's thread."""
    check = next((c for c in gate.checks if c.id == result.check_id), None)
    return check_details_message(check.title if check else result.check_id, result)


def check_details_message(title: str, result: CheckResult) -> Message:
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
    rows = [(check.title, results.get(check.id)) for check in gate.checks]
    return results_pages(gate.name, len(gate.checks), rows, now)


def results_pages(
    gate_name: str, total: int, rows: Sequence[tuple[str, CheckResult | None]], now: datetime
) -> list[Message]:
    """`rows`: (check title, its latest result or None) in the gate's order."""
    lines = []
    for title, found in rows:
        if found is None:
            lines.append(f"⬜ *{escape(title)}* — not run yet")
        else:
            lines.append(
                f"{found.status.emoji} *{escape(title)}* — {escape(cut(one_line(found.summary), 200))}"
                f" · {found.duration_s:.1f} s · _{age(now, found.finished_at)}_"
            )
    sections = [section(text) for text in chunk_lines(lines)]
    pages = [sections[i : i + MAX_BLOCKS] for i in range(0, len(sections), MAX_BLOCKS)]
    return [message(f"All {total} checks of {gate_name}", page) for page in pages]


def render_conditions_listing(gate: Gate, ladder: Ladder) -> list[Message]:
    """Every stage's own open conditions, for the thread: the card folds them past a dozen."""
    return conditions_pages(gate.name, ladder)


def conditions_pages(gate_name: str, ladder: Ladder) -> list[Message]:
    lines = [ladder_line(ladder)]
    for stage in ladder.stages:
        own = stage.own()
        if own:
            lines.append(f"*Before {escape(stage.name)}* ({len(own)} open)")
            lines += [condition_line(c) for c in own]
    sections = [section(text) for text in chunk_lines(lines)]
    pages = [sections[i : i + MAX_BLOCKS] for i in range(0, len(sections), MAX_BLOCKS)]
    count = sum(len(s.own()) for s in ladder.stages)
    return [message(f"{count} open conditions of {gate_name}", page) for page in pages]


def render_promotion(release: Release | str, stage: str, user: str, *, override: bool, opened: int) -> Message:
    """The channel announcement: "🚀 payments@1.4.0 promoted to Canary 5% by @x"."""
    release_id = release if isinstance(release, str) else release.id
    line = f"🚀 *{escape(release_id)}* promoted to *{escape(stage)}* by {user_ref(user)}"
    if override:
        plural = "" if opened == 1 else "s"
        line += f"\n🟠 The stage was not GO ({opened} condition{plural} open): a break-glass override passed it."
    text = f"🚀 {release_id} promoted to {stage} by @{user}" + (" under a break-glass override" if override else "")
    return message(escape(text), [section(line)])


# --- ephemeral answers ----------------------------------------------------------------------

USAGE = [
    ("open <gate> <version> [sha]", "open a release and post its card in the gate's channel"),
    ("status [<release> | <gate>]", "show a release's card (here: at the bottom); alone: the open releases"),
    ("run <release> [check-id ...]", "run the checks now (all, or the ones named)"),
    ("list", "open releases with their verdicts and what blocks them"),
    ("override <release> <reason>", "break-glass: ask the override approvers to let a NO-GO go"),
    ("promote <release> <stage>", "promote to the next rollout stage once it is GO; announce it, keep its record"),
    ("override cancel <release>", "end a pending or active override (its requester or an override approver)"),
    ("decide <release>", "freeze the verdict: post the decision record, keep the evidence bundle"),
    ("evidence <release>", "upload the evidence bundle (Markdown) to the card's thread"),
    ("close <release> / reopen <release>", "close a release / open it again"),
    ("history <release> [--page N]", "the audit trail"),
    ("drill <drill-id> [<gate>]", "run a fire drill now; its result is announced in the gate's channel"),
    ("rollback <release> <reason>", "roll a release back (confirm in a modal): announced, verified, recorded"),
    ("help", "this message"),
]


def render_help(note: str | None = None) -> Message:
    lines = [f"• `/gonogo {escape_code(usage)}` — {escape(what)}" for usage, what in USAGE]
    text = "*gonogo* runs release GO/NO-GO gates.\n" + "\n".join(lines)
    text += f"\nA release is `{escape_code('<gate>@<version>')}`, e.g. `payments@1.4.0`."
    blocks: list[Block] = []
    if note:
        blocks.append(section(f":warning: {escape_message(note)}"))
    blocks.append(section(text))
    plain = "\n".join(f"/gonogo {usage} — {what}" for usage, what in USAGE)
    return message(f"{note}\n{plain}" if note else plain, blocks)


def release_line(release: Release, decision: Decision | None, now: datetime, ladder: Ladder | None = None) -> str:
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
    line = f"{head}{sha} — {rest} · opened {age(now, release.opened_at)} by {user_ref(release.opened_by)}"
    return line + (stage_note(ladder) if ladder is not None else "")


def stage_note(ladder: Ladder) -> str:
    """`` · stage Dark launch, next Canary 5% (3 open) · ⏰ 2 overdue: A, B`` for the release list."""
    current = ladder.get(ladder.current) if ladder.current else None
    target = ladder.target
    note = f"\n      📍 {escape(current.name) if current else 'not promoted yet'}"
    if target is not current:
        note += f", next {escape(target.name)} ({target.verdict.value}"
        note += f", {len(target.conditions)} open)" if target.conditions else ")"
    if ladder.overdue:
        names = ", ".join(escape(cut(one_line(c.text.removesuffix(" is overdue")), 60)) for c in ladder.overdue[:5])
        note += f" · ⏰ {len(ladder.overdue)} overdue: {names}"
    return note


def render_release_list(
    rows: Sequence[tuple[Release, Decision | None]], now: datetime, ladders: Mapping[str, Ladder] | None = None
) -> Message:
    if not rows:
        text = "No open releases. Open one with `/gonogo open <gate> <version>`."
        return message(text, [section(text)])
    staged = ladders or {}
    lines = [f"*Open releases* ({len(rows)})", *(release_line(r, d, now, staged.get(r.id)) for r, d in rows)]
    chunks = chunk_lines(lines)
    if len(chunks) > MAX_BLOCKS:
        chunks = [*chunks[: MAX_BLOCKS - 1], "…more releases than fit here"]
    plain = "; ".join(f"{r.id} {d.verdict.value if d else 'unknown'}" for r, d in rows)
    return message(f"Open releases: {plain}", [section(c) for c in chunks])
