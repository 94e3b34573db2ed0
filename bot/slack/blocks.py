"""Block Kit building blocks shared by every Slack message gonogo renders: action ids, Slack's
limits, escaping, and small validated builders. Pure: no Slack calls, no Redis."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.core.decision import MENTION
from bot.core.durations import humanize_age
from bot.core.text import SECTION_LIMIT, cut

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
MAX_BUTTONS = 25  # per actions block

MAX_BLOCKS = 50
HEADER_LIMIT = 150
TEXT_LIMIT = 3000  # the notification text; Slack allows 40k but nobody reads that much

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


def code_block(text: str) -> str:
    # A ``` inside the output would close our fence early.
    return "```" + escape(text).replace("```", "`\u200b``") + "```"


def age(now: datetime, then: datetime) -> str:
    text = humanize_age(max((now - then).total_seconds(), 0.0))
    return text if text == "just now" else f"{text} ago"


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


def confirm(title: str, text: str, yes: str) -> ConfirmObject:
    return ConfirmObject(title=cut(title, 100), text=cut(text, 300), confirm=yes, deny="Cancel")


def button(
    text: str, action_id: str, value: str, style: str | None = None, confirm: ConfirmObject | None = None
) -> ButtonElement:
    return ButtonElement(text=cut(text, 75), action_id=action_id, value=value, style=style, confirm=confirm)
