"""Renderers of the scheduler's notices (pure): reminder DMs, their "answered" updates, escalations,
freeze announcements and pre-launch posts. `register(renderers)` adds them; the server calls it once.

A reminder DM carries the card's own Approve / Reject buttons (same action ids, same value
`<release>|<role>|<sha>`, so the same handlers, authorisation and commit binding) and Snooze.
Everything that came from outside (reason texts, names, labels) is escaped.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import ActionsBlock, Block

from bot.core.notices import Notice
from bot.services.scheduler import (
    ESCALATION,
    FREEZE_EDGE,
    POSTDEPLOY_FAILED,
    POSTDEPLOY_SUMMARY,
    PRELAUNCH,
    RECHECK_CHANGED,
    REMINDER,
    REMINDER_ANSWERED,
)
from bot.slack.blocks import ACTION_SNOOZE, Message, button, context, escape, message, reason_mrkdwn, section, user_ref
from bot.slack.card import signoff_buttons
from bot.slack.renderers import Renderers

SNOOZES = (("1h", "Snooze 1 hour"), ("4h", "Snooze 4 hours"), ("morning", "Until my next morning"))


def _p(notice: Notice, name: str, default: Any = "") -> Any:
    return notice.payload.get(name, default)


def _why_now(notice: Notice) -> str:
    verdict = escape(str(_p(notice, "verdict", "")))
    blocking = [f"• {reason_mrkdwn(str(r))}" for r in _p(notice, "blocking", [])]
    text = f"Current verdict: *{verdict}*"
    return text + ("\nBlocking:\n" + "\n".join(blocking) if blocking else "")


def _card_link(notice: Notice) -> str:
    link = _p(notice, "card", None)
    return f"<{link}|Open the release card>" if link else "The card is in the gate's channel."


def render_reminder(notice: Notice) -> Message:
    release, label = escape(str(_p(notice, "release"))), escape(str(_p(notice, "label")))
    rid, role = str(_p(notice, "release")), str(_p(notice, "role"))
    if _p(notice, "why") == "overdue":
        condition, due = escape(str(_p(notice, "condition"))), escape(str(_p(notice, "due")))
        ask = f"*{condition}* on *{release}* is overdue (due {due}): it is yours to do as *{label}*."
        text = f"{_p(notice, 'condition')} on {_p(notice, 'release')} is overdue: it is yours as {_p(notice, 'label')}"
        snoozes = [button(label_, ACTION_SNOOZE, f"{rid}|{choice}") for choice, label_ in SNOOZES]
        return message(
            text,
            [
                section(ask),
                section(_why_now(notice)),
                context(f"{_card_link(notice)} · reminder {_p(notice, 'number')} of at most {_p(notice, 'max')}"),
                ActionsBlock(block_id=f"overdue|{role}"[:255], elements=snoozes),
            ],
        )
    if _p(notice, "why") == "stale":
        reason = escape(str(_p(notice, "stale_reason")))
        ask = f"Your sign-off on *{release}* as *{label}* went stale ({reason}): please review and sign again."
        text = f"Your sign-off on {release} as {label} went stale: please sign again"
    else:
        ask = f"*{release}* is waiting for your sign-off as *{label}*."
        text = f"{release} is waiting for your sign-off as {label}"
    elements = signoff_buttons(rid, role, str(_p(notice, "label")), str(_p(notice, "sha")) or None)
    elements += [button(label_, ACTION_SNOOZE, f"{rid}|{choice}") for choice, label_ in SNOOZES]
    blocks: list[Block] = [
        section(ask),
        section(_why_now(notice)),
        context(f"{_card_link(notice)} · reminder {_p(notice, 'number')} of at most {_p(notice, 'max')}"),
        ActionsBlock(block_id=f"remind|{role}"[:255], elements=elements),
    ]
    return message(text, blocks)


def render_answered(notice: Notice) -> Message:
    release, label = escape(str(_p(notice, "release"))), escape(str(_p(notice, "label")))
    why = escape(str(_p(notice, "why")))
    text = f"✅ {release}: no longer waiting for you as {label}: {why}."
    return message(text, [section(text), context(_card_link(notice))])


def render_escalation(notice: Notice) -> Message:
    release, label = escape(str(_p(notice, "release"))), escape(str(_p(notice, "label")))
    asked = ", ".join(user_ref(str(u)) for u in _p(notice, "asked", []))
    text = (
        f":rotating_light: {release} is still waiting for *{label}* after {_p(notice, 'reminders')} reminders."
        f" Asked: {asked or 'nobody'}."
    )
    return message(text, [section(text), section(_why_now(notice)), context(_card_link(notice))])


def render_freeze(notice: Notice) -> Message:
    reason, at, status = (escape(str(_p(notice, name))) for name in ("reason", "at", "status"))
    if _p(notice, "starts"):
        text = f":snowflake: Deploy freeze *{reason}* started {at}: {status}."
    else:
        text = f":sunny: Deploy freeze *{reason}* ended {at}: {status}."
    return message(text, [section(text)])


def render_prelaunch(notice: Notice) -> Message:
    release = escape(str(_p(notice, "release")))
    text = (
        f":alarm_clock: {release} ships in {escape(str(_p(notice, 'before')))} ({escape(str(_p(notice, 'target')))})."
    )
    blocks: list[Block] = [section(text), section(_why_now(notice))]
    checklist = [f"☐ {escape(str(item))}" for item in _p(notice, "checklist", [])]
    if checklist:
        blocks.append(section("*Checklist*\n" + "\n".join(checklist)))
    blocks.append(context(_card_link(notice)))
    return message(text, blocks)


def render_recheck(notice: Notice) -> Message:
    before, after = escape(str(_p(notice, "before"))), escape(str(_p(notice, "after")))
    decided = _p(notice, "decided", None)
    if decided is None:
        text = f"Scheduled re-check #{_p(notice, 'slot')}: the verdict changed from {before} to *{after}*."
        return message(text, [section(text)])
    # A decided release is frozen: the re-check says what its checks would decide now, nothing more.
    text = (
        f"Scheduled re-check #{_p(notice, 'slot')} after the decision: the checks would now say *{after}*"
        f" (last re-check: {before}). The decision ({escape(str(decided))}) stands: a decided release is frozen."
    )
    blocks: list[Block] = [section(text)]
    blocking = [f"• {escape(str(b))}" for b in _p(notice, "blocking", [])]
    if blocking and after != "GO":
        blocks.append(section("\n".join(blocking)))
    return message(text, blocks)


def render_postdeploy_failed(notice: Notice) -> Message:
    release = escape(str(_p(notice, "release")))
    failed = [str(c) for c in _p(notice, "failed", [])]
    summaries = _p(notice, "summaries", {})
    lines = [f"• *{escape(c)}*: {escape(str(summaries.get(c, '')))}" for c in failed]
    text = f":x: Post-deploy verification of {release}, run {_p(notice, 'slot')}: {len(failed)} check(s) failing."
    return message(text, [section(text), section("\n".join(lines) or "(no details)")])


def render_postdeploy_summary(notice: Notice) -> Message:
    release, span = escape(str(_p(notice, "release"))), escape(str(_p(notice, "for")))
    runs, green, slots = int(_p(notice, "runs", 0)), int(_p(notice, "green", 0)), int(_p(notice, "slots", 0))
    if green == runs == slots:
        text = f":white_check_mark: {release}: {span} post-deploy verification passed: {green}/{runs} runs green."
    else:
        skipped = f", {slots - runs} slot(s) missed" if runs < slots else ""
        text = f":warning: {release}: {span} post-deploy verification ended: {green}/{runs} runs green{skipped}."
    return message(text, [section(text)])


def register(renderers: Renderers) -> None:
    """Add the scheduler's renderers (once: a second call, e.g. a second bot in one process, is a no-op)."""
    if REMINDER in renderers:
        return
    renderers.register(REMINDER)(render_reminder)
    renderers.register(REMINDER_ANSWERED)(render_answered)
    renderers.register(ESCALATION)(render_escalation)
    renderers.register(FREEZE_EDGE)(render_freeze)
    renderers.register(PRELAUNCH)(render_prelaunch)
    renderers.register(RECHECK_CHANGED)(render_recheck)
    renderers.register(POSTDEPLOY_FAILED)(render_postdeploy_failed)
    renderers.register(POSTDEPLOY_SUMMARY)(render_postdeploy_summary)
