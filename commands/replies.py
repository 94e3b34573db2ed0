"""Turning errors into clear ephemeral messages: a user never sees a stack trace."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from bot.core.errors import GonogoError, StoreUnavailable
from bot.slack.blocks import escape_message, reason_mrkdwn

log = logging.getLogger("gonogo.commands")


class Respond(Protocol):
    async def __call__(self, text: str = ..., **kwargs: Any) -> Any: ...


async def ephemeral(respond: Respond, text: str, **kwargs: Any) -> None:
    await respond(text=text, response_type="ephemeral", replace_original=False, **kwargs)


@asynccontextmanager
async def replying_errors(respond: Respond, what: str, slots: asyncio.Semaphore | None = None) -> AsyncIterator[None]:
    """Run a handler's work (after its ack) and turn any error into a clear ephemeral reply.

    `slots` bounds how much handler work runs at once: a burst of 200 clicks would otherwise
    starve the event loop until Redis replies time out and everyone hears "unavailable"."""
    try:
        async with slots or contextlib.nullcontext():
            yield
    except StoreUnavailable as exc:
        log.error("state store unavailable", extra={"handler": what, "detail": exc.detail})
        await _safe(respond, ":warning: State store unavailable, try again. Nothing was changed.")
    except GonogoError as exc:
        # Our messages may quote user input: escape it (our `code spans` stay); the {@U…} tokens
        # the bot wrote become mentions (typed text cannot carry one: commands/inbound.py).
        await _safe(respond, f":warning: {reason_mrkdwn(str(exc), escape_message)}")
    except Exception:
        ref = secrets.token_hex(4)
        log.exception("handler failed", extra={"handler": what, "ref": ref})
        await _safe(respond, f":warning: Something went wrong on our side (ref `{ref}`). Nothing was changed.")


async def _safe(respond: Respond, text: str) -> None:
    try:
        await ephemeral(respond, text)
    except Exception:  # the response_url may be gone; the log already has the story
        log.warning("could not deliver an error reply")
