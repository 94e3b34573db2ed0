"""Notice kind -> pure renderer (Notice -> Message). The deliverer renders every notice with these.

A renderer reads only the notice's payload and returns Block Kit; it must escape whatever came from
outside (see bot/slack/card.py `escape`). The kinds below are the generic ones; each message the
services send (check details, stale sign-offs, override announcements, decision record) registers
its own kind when it moves onto this road.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from bot.core.notices import Notice, Target, notice_key
from bot.slack.blocks import Message, escape

Renderer = Callable[[Notice], Message]

CHANNEL_MESSAGE = "channel_message"
THREAD_MESSAGE = "thread_message"
INVITE_BOT = "invite_bot"
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")


class UnknownKind(LookupError):
    pass


class Renderers(Mapping[str, Renderer]):
    """A registry of renderers; `register(kind)` is a decorator."""

    def __init__(self, initial: Mapping[str, Renderer] | None = None) -> None:
        self._by_kind: dict[str, Renderer] = dict(initial or {})

    def register(self, kind: str) -> Callable[[Renderer], Renderer]:
        def add(renderer: Renderer) -> Renderer:
            if kind in self._by_kind:
                raise ValueError(f"a renderer for {kind!r} is already registered")
            self._by_kind[kind] = renderer
            return renderer

        return add

    def render(self, notice: Notice) -> Message:
        renderer = self._by_kind.get(notice.kind)
        if renderer is None:
            raise UnknownKind(notice.kind)
        return renderer(notice)

    def __getitem__(self, kind: str) -> Renderer:
        return self._by_kind[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_kind)

    def __len__(self) -> int:
        return len(self._by_kind)


RENDERERS = Renderers()


def channel_ref(channel: str) -> str:
    return f"<#{channel}>" if _CHANNEL_ID.fullmatch(channel) else escape(channel)


def _prerendered(notice: Notice) -> Message:
    """payload: {"text": ..., "blocks": [...]?}: a message one of our pure renderers already built
    (and escaped) when the state changed. Never put raw user or tool text here."""
    payload: Mapping[str, Any] = notice.payload
    blocks = payload.get("blocks") or []
    if not isinstance(blocks, list):
        raise ValueError("blocks must be a list")
    return Message(text=str(payload.get("text", "")), blocks=blocks)


RENDERERS.register(CHANNEL_MESSAGE)(_prerendered)
RENDERERS.register(THREAD_MESSAGE)(_prerendered)


def invite_bot(
    gate_id: str, release_id: str | None, actor: str, channel: str, error: str, about: str, now: datetime
) -> Notice:
    """Tell the person who acted that the bot is not in `channel` (`about`: what could not be posted).
    One per person, channel and hour, however many notices or cards failed."""
    return Notice(
        kind=INVITE_BOT,
        gate_id=gate_id,
        release_id=release_id,
        target=Target.to_user(actor),
        payload={"channel": channel, "error": error, "about": about},
        key=notice_key(INVITE_BOT, actor, channel, now.strftime("%Y%m%d%H")),
        created_at=now,
    )


@RENDERERS.register(INVITE_BOT)
def render_invite_bot(notice: Notice) -> Message:
    """payload: {"channel": id}: the bot could not post there (not_in_channel, channel_not_found)."""
    where = channel_ref(str(notice.payload.get("channel", "")))
    text = (
        f"I could not post in {where}: I am not a member of that channel. "
        f"Invite me into {where} with `/invite @gonogo`, then try again."
    )
    return Message(text=text, blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}])
