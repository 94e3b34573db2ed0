"""Renderers of the drill, rollback and deploy announcements (bot/core/announcements.py). Pure.

Every field of a payload came from outside (drill titles are ours, but actors, reasons, stage
names and command output are not): each is escaped here, in the blocks and in the `text` fallback,
so nothing becomes a mention, a link or formatting. Actors that are Slack user ids are mentioned.
`register(renderers)` adds them to the deliverer's registry (the server calls it once).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.core import announcements as a
from bot.core.notices import Notice
from bot.core.text import cut
from bot.slack.blocks import TEXT_LIMIT, Message, code_block, context, escape, message, section, user_ref
from bot.slack.renderers import RENDERERS, Renderer, Renderers, channel_ref


def _s(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    return "" if value is None else str(value)


def _took(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds:.0f} s"


def _plain(*parts: str) -> str:
    """The fallback text is rendered by `message` (escaped there): user ids as `{@U…}`."""
    return "".join(parts)


def _who_plain(user: str) -> str:
    return f"{{@{user}}}" if user_ref(user).startswith("<@") else user


def render_drill_started(notice: Notice) -> Message:
    p = notice.payload
    title, actor = _s(p, "title"), _s(p, "actor")
    line = f"🔥 Fire drill *{escape(title)}* started by {user_ref(actor)}"
    return message(_plain("🔥 Fire drill ", title, " started by ", _who_plain(actor)), [section(line)])


def render_drill_result(notice: Notice) -> Message:
    p = notice.payload
    title, actor, passed = _s(p, "title"), _s(p, "actor"), bool(p.get("passed"))
    verdict = "✅ PASSED" if passed else "❌ FAILED"
    took = _took(float(p.get("duration_s") or 0.0))
    line = f"{verdict}: fire drill *{escape(title)}* in {took}, run by {user_ref(actor)}"
    return message(
        _plain(verdict, ": fire drill ", title, " in ", took, ", run by ", _who_plain(actor)),
        [section(line), context(escape(_s(p, "summary")) or " ")],
    )


def render_output(notice: Notice) -> Message:
    output = _s(notice.payload, "output")
    head = _s(notice.payload, "summary")
    blocks = [section(escape(head))] if head else []
    return message(f"Output: {head}" if head else "Output", [*blocks, section(code_block(output or "(no output)"))])


def _record_link(record: Mapping[str, Any]) -> str:
    channel, ts = _s(record, "channel"), _s(record, "ts")
    if channel and ts:
        return f" · decision record: the card in {channel_ref(channel)} (ts {escape(ts)})"
    if channel:
        return f" · decision record: {channel_ref(channel)}"
    return ""


def render_rollback_started(notice: Notice) -> Message:
    p = notice.payload
    release, actor, reason = _s(p, "release"), _s(p, "actor"), _s(p, "reason")
    record = p.get("record") or {}
    line = f"🚨 *ROLLBACK* of {escape(release)} started by {user_ref(actor)}: {escape(reason)}"
    return message(
        _plain("🚨 ROLLBACK of ", release, " started by ", _who_plain(actor), ": ", reason),
        [section(line), context((_record_link(record) or " · no decision record").lstrip(" ·"))],
    )


def render_rollback_step(notice: Notice) -> Message:
    p = notice.payload
    status, actor = _s(p, "status"), _s(p, "actor")
    icon = {"succeeded": "✅", "failed": "❌"}.get(status, "🚨")
    line = (
        f"{icon} Rollback of {escape(_s(p, 'release'))} {escape(status)} ({user_ref(actor)}): {escape(_s(p, 'reason'))}"
    )
    return message(
        _plain(icon, " Rollback of ", _s(p, "release"), " ", status, " (", _who_plain(actor), "): ", _s(p, "reason")),
        [section(line)],
    )


def render_rollback_people(notice: Notice) -> Message:
    people = [str(u) for u in notice.payload.get("people") or []]
    release = _s(notice.payload, "release")
    refs = ", ".join(user_ref(u) for u in people)
    return message(
        _plain("Heads-up ", ", ".join(_who_plain(u) for u in people), ": ", release, " was rolled back."),
        [section(f"Heads-up {refs}: you signed or opened {escape(release)}; it was rolled back.")],
    )


def render_rollback_verify(notice: Notice) -> Message:
    p = notice.payload
    check, summary = _s(p, "check"), _s(p, "summary")
    after = _took(float(p.get("after_s") or 0.0))
    passed = bool(p.get("passed"))
    head = f"✅ {check} green {after} after rollback" if passed else f"❌ {check} still failing after rollback"
    return message(_plain(head, ": ", summary), [section(f"{escape(head)}: {escape(summary)}")])


def render_deploy_progress(notice: Notice) -> Message:
    p = notice.payload
    release, sha = _s(p, "release"), _s(p, "sha")
    stages = [s for s in p.get("stages") or [] if isinstance(s, Mapping)]
    steps = " → ".join(f"{escape(_s(s, 'stage'))} ({escape(_s(s, 'status'))})" for s in stages)
    plain_steps = " → ".join(f"{_s(s, 'stage')} ({_s(s, 'status')})" for s in stages)
    at = f" at `{escape(sha[:12])}`" if sha else ""
    return message(
        _plain("🚀 Deploy of ", release, ": ", plain_steps),
        [section(f"🚀 Deploy of *{escape(release)}*{at}: {steps or 'starting'}")],
    )


def render_deploy_flagged(notice: Notice) -> Message:
    p = notice.payload
    release, stage = _s(p, "release"), _s(p, "stage")
    conditions = [str(c) for c in p.get("conditions") or []]
    n = len(conditions)
    head = f"deployed to {stage} while {n} condition{'s' if n != 1 else ''} {'are' if n != 1 else 'is'} open"
    listed = "\n".join(f"• {escape(c)}" for c in conditions[:10])
    return message(
        _plain("⚠️ ", release, " ", head),
        [section(f"⚠️ *{escape(release)}* {escape(head)}"), *([section(listed)] if listed else [])],
    )


def render_signoff_stale(notice: Notice) -> Message:
    """The ask mentions each signer in its `text` too (escaped like the blocks): the notification
    is what reaches them."""
    signers = [s for s in notice.payload.get("signers") or [] if isinstance(s, Mapping)]
    lines = [
        f"{user_ref(_s(s, 'user'))}: your {escape(_s(s, 'vote'))} as {escape(_s(s, 'label'))}"
        f" is stale ({escape(_s(s, 'reason'))})"
        for s in signers
    ]
    body = "Please review and sign again:\n" + "\n".join(lines)
    return Message(text=cut(body, TEXT_LIMIT), blocks=message("", [section(body)]).blocks)


KINDS: dict[str, Renderer] = {
    a.DRILL_STARTED: render_drill_started,
    a.DRILL_RESULT: render_drill_result,
    a.DRILL_OUTPUT: render_output,
    a.ROLLBACK_STARTED: render_rollback_started,
    a.ROLLBACK_STEP: render_rollback_step,
    a.ROLLBACK_PEOPLE: render_rollback_people,
    a.ROLLBACK_OUTPUT: render_output,
    a.ROLLBACK_VERIFY: render_rollback_verify,
    a.DEPLOY_PROGRESS: render_deploy_progress,
    a.DEPLOY_FLAGGED: render_deploy_flagged,
    a.SIGNOFF_STALE: render_signoff_stale,
}


def register(renderers: Renderers = RENDERERS) -> Renderers:
    """Add these kinds to `renderers` (idempotent: a kind already there is left alone)."""
    for kind, renderer in KINDS.items():
        if kind not in renderers:
            renderers.register(kind)(renderer)
    return renderers
