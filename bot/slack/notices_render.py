"""Renderers of the notices the release services emit (run details, stale sign-offs, overrides,
the decision and promotion records). Pure: Notice -> Message, from the payload alone.

Services emit either a kind below with the facts it needs (the decision record carries its frozen
bundle), or a generic `thread_message` / `channel_message` with a message one of the pure renderers
already built (bot/slack/renderers.py). Add a kind here with its renderer; `register` is called once
per process by bot/slack/road.py.
"""

from __future__ import annotations

from bot.core.notices import DECISION_RECORD, Notice
from bot.slack.blocks import Message
from bot.slack.record import render_record
from bot.slack.renderers import Renderers


def render_decision_record(notice: Notice) -> Message:
    bundle = notice.payload.get("bundle")
    if not isinstance(bundle, dict):
        raise ValueError("a decision record needs its bundle")
    return render_record(bundle)


def register(renderers: Renderers) -> None:
    renderers.register(DECISION_RECORD)(render_decision_record)
