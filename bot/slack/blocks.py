"""Block Kit building blocks shared by every Slack message gonogo renders: action ids, Slack's
limits, escaping, and small validated builders. Pure: no Slack calls, no Redis."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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

from bot.core.durations import humanize_age
from bot.core.mentions import MENTION
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
ACTION_SNOOZE = "gonogo_snooze"  # reminder DMs: value "<release>|<1h|4h|morning>"
MAX_BUTTONS = 25  # per actions block

MAX_BLOCKS = 50
HEADER_LIMIT = 150
TEXT_LIMIT = 3000  # the notification text; Slack allows 40k but nobody reads that much

# --- text helpers ---------------------------------------------------------------------------
#
# Outside text (what people type, what checks print, gate titles) reaches Slack only through
# these helpers, so nothing from outside can ping, link or format:
# - control characters (and bidi overrides, zero-width characters) are dropped;
# - `&`, `<` and `>` become `&amp;`, `&lt;`, `&gt;`: without a raw `<`, no `<!channel>`,
#   `<@U…>`, `<#C…>`, `<!subteam^…>` or `<url|label>` can form;
# - mrkdwn has no escape character, so a formatting character (`*`, `_`, `~`, a backtick) that
#   could open a span (one not preceded by a letter or digit) gets a ZERO WIDTH SPACE after it:
#   Slack never opens a span before a space, so `*bold*` shows with its asterisks. The character
#   itself is kept (copying the text gives it back); mid-word ones (`snake_case`) are untouched;
# - `@channel`, `@here` and `@everyone` get the same zero-width space after the `@`;
# - every mrkdwn text object is sent `verbatim`, so Slack does not auto-link URLs or names.
# Only the bot's own references (`user_ref`, `{@U…}` tokens the bot generated, `<#C…>` it
# writes) become mentions or links. Inside code spans and blocks only `& < >` are escaped.

ZWSP = "\u200b"
_DROPPED = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_OPENER = re.compile(r"(?<![^\W_])([*_~`])")
_SPECIAL = re.compile(r"(?<![^\W_])@(?=(?:channel|here|everyone)\b)", re.IGNORECASE)
_CODE_SPAN = re.compile(r"(`[^`\n]+`)")


def drop_controls(text: str) -> str:
    """Without control characters, bidi overrides and zero-width characters (tabs and newlines stay)."""
    return _DROPPED.sub("", text)


def escape_code(text: str) -> str:
    """Outside text inside a code span or block: only `&`, `<` and `>` mean anything there."""
    return drop_controls(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape(text: str) -> str:
    """Outside text for mrkdwn, shown literally: it cannot mention, link or format (see above)."""
    text = escape_code(text)
    text = _OPENER.sub(lambda m: m.group(1) + ZWSP, text)
    return _SPECIAL.sub("@" + ZWSP, text)


def escape_message(text: str) -> str:
    """A message the bot wrote around outside text (errors, confirmations): escaped like `escape`,
    but the bot's own `code spans` keep working (their content is escaped as code)."""
    parts = _CODE_SPAN.split(text)
    return "".join(escape_code(p) if i % 2 else escape(p) for i, p in enumerate(parts))


def user_ref(user: str) -> str:
    """A mention for ids that look like Slack users; anything else (cli, ci) as plain text."""
    return f"<@{user}>" if re.fullmatch(r"[UW][A-Z0-9]+", user) else escape(user)


def reason_mrkdwn(text: str, escaper: Callable[[str], str] = escape) -> str:
    """Reason text escaped, with the `{@U…}` tokens the bot wrote as real mentions.

    Outside text inside a reason was made `literal` by the decision engine, so a `{@U…}` printed
    by a check or typed by a person never matches here."""
    out: list[str] = []
    last = 0
    for match in MENTION.finditer(text):
        out.append(escaper(text[last : match.start()]))
        out.append(user_ref(match.group(1)))
        last = match.end()
    out.append(escaper(text[last:]))
    return "".join(out)


def fallback(text: str) -> str:
    """A message's `text` (notifications, screen readers): outside text escaped, `{@U…}` as @U…."""
    return escape_message(MENTION.sub(r"@\1", text))


def quiet(message: Message) -> Message:
    """The same message with the bot's mentions as plain `@U…` text: a re-posted card must not
    notify signers or user groups again (the full card follows as an edit, which notifies nobody)."""

    def hush(value: Any) -> Any:
        if isinstance(value, str):
            return _BOT_MENTION.sub(lambda m: "@" + m.group(1), value)
        if isinstance(value, list):
            return [hush(v) for v in value]
        if isinstance(value, dict):
            return {k: hush(v) for k, v in value.items()}
        return value

    return Message(text=hush(message.text), blocks=hush(message.blocks))


_BOT_MENTION = re.compile(r"<(?:@|!subteam\^)([A-Z0-9]+)(?:\|[^>]*)?>")


def code_block(text: str) -> str:
    # A ``` inside the output would close our fence early.
    return "```" + escape_code(text).replace("```", "`\u200b``") + "```"


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
    """`text` is plain: it is escaped here (see `fallback`)."""
    rendered = [b.to_dict() for b in blocks]  # to_dict() validates every block
    assert len(rendered) <= MAX_BLOCKS, f"{len(rendered)} blocks"
    return Message(text=cut(fallback(text), TEXT_LIMIT), blocks=rendered)


def section(text: str, block_id: str | None = None) -> SectionBlock:
    return SectionBlock(text=mrkdwn(cut(text, SECTION_LIMIT)), block_id=block_id)


def context(text: str) -> ContextBlock:
    return ContextBlock(elements=[mrkdwn(cut(text, SECTION_LIMIT))])


def mrkdwn(text: str) -> MarkdownTextObject:
    """Every mrkdwn object is verbatim: Slack must not turn outside URLs or names into links."""
    return MarkdownTextObject(text=text, verbatim=True)


def confirm(title: str, text: str, yes: str) -> ConfirmObject:
    """`text` is plain (a release id, a role title): it is escaped here."""
    return ConfirmObject(title=cut(title, 100), text=mrkdwn(escape(cut(text, 300))), confirm=yes, deny="Cancel")


def button(
    text: str, action_id: str, value: str, style: str | None = None, confirm: ConfirmObject | None = None
) -> ButtonElement:
    return ButtonElement(text=cut(text, 75), action_id=action_id, value=value, style=style, confirm=confirm)
