"""What people type, on its way in: decoded once, cleaned, masked, before anything stores, posts or
logs it. (Escaping happens once on the way out, in bot/slack/blocks.py.)

- Slack entity-encodes `&`, `<` and `>` in slash command text; modal inputs arrive as typed.
- Control characters, bidi overrides and zero-width characters are dropped.
- A `{@U…}` typed by a person stays text: only the bot's own tokens become mentions.
- Secrets (a token pasted into a reason) are masked with the same masker as check output.
"""

from __future__ import annotations

from bot.core.masking import Masker
from bot.core.mentions import literal
from bot.slack.blocks import drop_controls


def decode_entities(text: str) -> str:
    """Undo Slack's encoding of slash command text, once (`&amp;lt;` is the text `&lt;`)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def typed(text: str, masker: Masker) -> str:
    """Text a person typed, as gonogo keeps it: no control characters, tokens inert, secrets masked."""
    return masker.mask(literal(drop_controls(text))).strip()
