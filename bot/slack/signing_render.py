"""Renderers of the override, promotion and evidence-upload notices (bot/core/signing_notices.py).
Pure: Notice -> Message, from the payload alone; the messages themselves are built in
bot/slack/messages.py, which escapes every field that came from outside (reasons, stage names,
failing reasons, user ids that are not Slack ids). `register` is called once per process by
bot/slack/road.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.core import signing_notices as n
from bot.core.notices import Notice
from bot.slack.blocks import Message, escape, message, section
from bot.slack.messages import override_request_message, render_promotion
from bot.slack.messages import render_override_active as override_active_message
from bot.slack.renderers import Renderer, Renderers


def _s(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    return "" if value is None else str(value)


def _records(payload: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    return [r for r in payload.get(name) or [] if isinstance(r, Mapping)]


def render_override_request(notice: Notice) -> Message:
    p = notice.payload
    approvers = [(_s(a, "role"), _s(a, "label"), int(a.get("count") or 0)) for a in _records(p, "approvers")]
    return override_request_message(
        _s(p, "release"), _s(p, "request"), _s(p, "requested_by"), _s(p, "reason"), approvers
    )


def render_override_active(notice: Notice) -> Message:
    p = notice.payload
    approvers = [(_s(a, "user"), _s(a, "role")) for a in _records(p, "approvers")]
    failing = [str(f) for f in p.get("failing") or []]
    return override_active_message(_s(p, "release"), _s(p, "reason"), approvers, failing)


def render_promotion_notice(notice: Notice) -> Message:
    p = notice.payload
    return render_promotion(
        _s(p, "release"),
        _s(p, "stage"),
        _s(p, "actor"),
        override=bool(p.get("override")),
        opened=int(p.get("opened") or 0),
    )


def render_file_upload(notice: Notice) -> Message:
    """What the deliverer needs besides the file: its title (the upload's initial comment)."""
    title = _s(notice.payload, "title") or _s(notice.payload, "filename")
    return message(title, [section(escape(title))])


KINDS: dict[str, Renderer] = {
    n.OVERRIDE_REQUEST: render_override_request,
    n.OVERRIDE_ACTIVE: render_override_active,
    n.PROMOTION: render_promotion_notice,
    n.FILE_UPLOAD: render_file_upload,
}


def register(renderers: Renderers) -> None:
    for kind, renderer in KINDS.items():
        renderers.register(kind)(renderer)
