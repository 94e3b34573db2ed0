"""Renderers of the card-thread notices (bot/core/thread_notices.py): check details, the results
listing and the open-conditions listing. Pure: Notice -> Message, from the payload alone; the
message builders they call (bot/slack/messages.py) escape every field. Stale sign-off re-asks use
the `signoff_stale` kind of bot/slack/announcements.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.core import thread_notices as t
from bot.core.notices import Notice
from bot.core.results import CheckResult
from bot.core.stages import Ladder
from bot.slack.blocks import Message, message, section
from bot.slack.messages import check_details_message, conditions_pages, results_pages
from bot.slack.renderers import Renderer, Renderers


def _first(pages: list[Message], what: str) -> Message:
    """A notice is one message: its payload is sized to fit one (bot/core/thread_notices.py)."""
    if not pages:
        return message(what, [section(what)])
    return pages[0]


def render_check_details(notice: Notice) -> Message:
    p = notice.payload
    return check_details_message(str(p.get("title", "")), CheckResult.model_validate(p["result"]))


def render_results_listing(notice: Notice) -> Message:
    p = notice.payload
    rows = []
    for row in p.get("rows") or []:
        if not isinstance(row, Mapping):
            raise ValueError("a listing row is an object")
        result: Any = row.get("result")
        rows.append((str(row.get("title", "")), CheckResult.model_validate(result) if result else None))
    gate, total = str(p.get("gate", "")), int(p.get("total") or len(rows))
    return _first(results_pages(gate, total, rows, notice.created_at), "No checks")


def render_conditions_listing(notice: Notice) -> Message:
    p = notice.payload
    ladder = Ladder.model_validate(p["ladder"])
    return _first(conditions_pages(str(p.get("gate", "")), ladder), "No open conditions")


KINDS: dict[str, Renderer] = {
    t.CHECK_DETAILS: render_check_details,
    t.RESULTS_LISTING: render_results_listing,
    t.CONDITIONS_LISTING: render_conditions_listing,
}


def register(renderers: Renderers) -> None:
    for kind, renderer in KINDS.items():
        if kind not in renderers:
            renderers.register(kind)(renderer)
