"""User mentions inside reason text: `mention` writes the bot's own token, `literal` keeps a
look-alike in outside text from becoming one. Renderers turn `MENTION` matches into <@U…> or @U….

Apart from the decision engine so that the runner (which makes check output `literal`) can use
them without importing it: `gonogo check` starts its checks before it loads the engine.
"""

from __future__ import annotations

import re


def mention(user: str) -> str:
    """A user reference inside reason text; renderers turn it into <@U…> or @U…."""
    return "{@" + user + "}"


MENTION = re.compile(r"\{@([A-Z0-9]+)\}")
_TOKEN_START = re.compile(r"\{@(?=[A-Z0-9]+\})")


def literal(text: str) -> str:
    """Outside text (check output, what people type, gate titles) put into reason text: a `{@U…}`
    in it stays text (a word joiner breaks it); only the bot's own `mention` tokens become mentions."""
    return _TOKEN_START.sub("{@\u2060", text)
