"""Notices: what a state change wants said in Slack, as a small typed record (pure).

A service that changes state appends the notices it causes to the gate's outbox in the same atomic
step (bot/store/outbox.py); the deliverer (bot/slack/deliverer.py) renders and posts them. A notice
carries only what its renderer needs, never a Slack client or a rendered card: the card itself is
not a notice but a dirty marker the card refresher turns into a render of the current state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_KEY = 256  # the key is part of a Redis key name (the delivered marker)


class Target(BaseModel):
    """Where a notice goes: a channel (or a user id, which posts into the app's DM with that user),
    optionally a thread in it, or the thread of the release's card, resolved when it is delivered
    (the card may not be posted yet when the notice is written)."""

    model_config = ConfigDict(frozen=True)

    channel: str | None = None
    thread_ts: str | None = None
    card_thread: bool = False
    thread_of: str | None = None  # the key of an earlier notice in `channel`: its message's thread

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if self.card_thread == bool(self.channel):
            raise ValueError("a target is either a channel (optionally a thread) or the card's thread")
        if self.thread_ts and not self.channel:
            raise ValueError("a thread needs its channel")
        if self.thread_of and (not self.channel or self.thread_ts):
            raise ValueError("the thread of an earlier notice needs its channel, and no other thread")
        return self

    @classmethod
    def to_channel(cls, channel: str) -> Target:
        return cls(channel=channel)

    @classmethod
    def to_thread(cls, channel: str, thread_ts: str) -> Target:
        return cls(channel=channel, thread_ts=thread_ts)

    @classmethod
    def to_thread_of(cls, channel: str, key: str) -> Target:
        """The thread of the message an earlier notice (by key) posted in `channel`."""
        return cls(channel=channel, thread_of=key)

    @classmethod
    def to_card_thread(cls) -> Target:
        return cls(card_thread=True)

    @classmethod
    def to_user(cls, user: str) -> Target:
        """A direct message: chat.postMessage to a user id posts into the app's DM with them."""
        return cls(channel=user)


class Notice(BaseModel):
    """One message to post, exactly once per `key`."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(min_length=1)  # selects the renderer
    gate_id: str = Field(min_length=1)  # whose outbox (hash tag) it lives in
    release_id: str | None = None
    target: Target
    payload: dict[str, Any] = {}  # JSON-able, only what the renderer needs
    key: str = Field(min_length=1, max_length=MAX_KEY)  # idempotency: one post per key, ever
    created_at: datetime
    actor: str | None = None  # who acted: told about permanent failures (e.g. invite the bot)
    # The key of an earlier notice whose message this one replaces (chat.update): a drill's "started"
    # line becoming its result, a reminder DM whose question was answered elsewhere. Same channel, so
    # the same lane: delivered after it; its own key stays unique.
    updates: str | None = Field(default=None, min_length=1, max_length=MAX_KEY)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.release_id is not None and self.release_id.partition("@")[0] != self.gate_id:
            raise ValueError(f"release {self.release_id} is not of gate {self.gate_id}")
        if self.target.card_thread and self.release_id is None:
            raise ValueError("only a release has a card thread")
        if self.updates is not None and (self.target.channel is None or self.target.thread_ts is not None):
            raise ValueError("an update goes to the channel of the message it replaces")
        return self

    @property
    def lane(self) -> str:
        """Notices of one lane are delivered in order by a deliverer (one Slack channel, or one card's
        thread before its channel is known)."""
        return self.target.channel or f"card:{self.release_id}"

    def age(self, now: datetime) -> timedelta:
        return now - self.created_at

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Notice:
        return cls.model_validate_json(raw)


def notice_key(*parts: str) -> str:
    """An idempotency key from the facts that make a notice unique, e.g.
    notice_key("decision-record", release_id, str(rev))."""
    return "|".join(parts)[:MAX_KEY]


# Kinds the services emit (bot/slack/renderers.py and bot/slack/notices_render.py render them).
CHANNEL_MESSAGE = "channel_message"  # payload: {"text", "blocks"} pre-rendered by a pure renderer
THREAD_MESSAGE = "thread_message"  # the same, in a thread
DECISION_RECORD = "decision_record"  # payload: {"bundle": the frozen evidence bundle}
