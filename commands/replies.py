"""Turning errors into clear ephemeral messages: a user never sees a stack trace, always gets an
answer within Slack's 3 s, and hears "nothing was changed" only when that is known."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from slack_bolt.response import BoltResponse

from bot.core.errors import RESTARTING, GonogoError, OutcomeUnknown, StoreUnavailable
from bot.services.releases import HandlerWork
from bot.slack.blocks import escape_message, reason_mrkdwn
from bot.store.store import WriteLog, tracking_writes

log = logging.getLogger("gonogo.commands")

# The whole of a handler's work after its ack (queueing for a work slot included) gets this long;
# then it is cancelled and the user told. Slack shows an answer for 3 s after the click: the rest is
# for the reply's own round trip.
ANSWER_BUDGET_S = 2.0


class Respond(Protocol):
    async def __call__(self, text: str = ..., **kwargs: Any) -> Any: ...


async def ephemeral(respond: Respond, text: str, **kwargs: Any) -> None:
    await respond(text=text, response_type="ephemeral", replace_original=False, **kwargs)


@asynccontextmanager
async def replying_errors(
    respond: Respond,
    what: str,
    work: HandlerWork | None = None,
    *,
    subject: str = "your request",
    queue: bool = True,
) -> AsyncIterator[None]:
    """Run a handler's work (after its ack) and turn any error into a clear ephemeral reply.

    `work` bounds how much handler work runs at once (a burst of 200 clicks would otherwise starve
    the event loop until Redis replies time out and everyone hears "unavailable") and lets SIGTERM
    wait for it; `queue=False` tracks without queueing (a modal's trigger_id dies 3 s after the
    click). `subject` names what the user did, for "could not confirm that <subject> was recorded".
    """
    deadline = asyncio.get_running_loop().time() + ANSWER_BUDGET_S
    async with work.tracked() if work is not None else contextlib.nullcontext():
        with tracking_writes() as writes:
            budget = asyncio.timeout_at(None)
            try:
                async with work.slot(deadline) if work is not None and queue else _no_queue() as started:
                    if not started:
                        # Out of time in the queue, and a with-body cannot be skipped: it runs, but
                        # its first store call fails before sending anything.
                        writes.closed = True
                    budget = asyncio.timeout_at(deadline if started else None)
                    async with budget:
                        yield
            except TimeoutError:
                if not budget.expired():
                    await _failed(respond, what, writes)
                    return
                log.error("handler ran out of time", extra={"handler": what, "writes": writes.sent})
                await _safe(respond, _store_trouble(writes, subject, "gonogo did not finish in time"))
            except StoreUnavailable as exc:
                log.error("state store unavailable", extra={"handler": what, "detail": exc.detail})
                unknown = isinstance(exc, OutcomeUnknown)
                cause = "the state store did not answer"
                await _safe(respond, _store_trouble(writes, subject, cause, unknown=unknown))
            except GonogoError as exc:
                # Our messages may quote user input: escape it (our `code spans` stay); the {@U…} tokens
                # the bot wrote become mentions (typed text cannot carry one: commands/inbound.py).
                await _safe(respond, f":warning: {reason_mrkdwn(str(exc), escape_message)}")
            except Exception:
                await _failed(respond, what, writes)


@asynccontextmanager
async def _no_queue() -> AsyncIterator[bool]:
    yield True


def _store_trouble(writes: WriteLog, subject: str, cause: str, *, unknown: bool = False) -> str:
    if unknown or writes.unconfirmed:
        # The write left for Redis and no answer came back: it may well be stored.
        return f":warning: Could not confirm that {subject} was recorded: {cause}. Check the card before trying again."
    if writes.confirmed:
        return f":warning: {subject[0].upper()}{subject[1:]} was recorded, but then {cause}: the card may be behind."
    if writes.closed:
        return ":warning: gonogo is too busy to answer in time, try again in a few seconds. Nothing was changed."
    return ":warning: State store unavailable, try again. Nothing was changed."


async def _failed(respond: Respond, what: str, writes: WriteLog) -> None:
    ref = secrets.token_hex(4)
    log.exception("handler failed", extra={"handler": what, "ref": ref})
    done = "Nothing was changed." if not writes.sent else "Part of it may have been done: check the card."
    await _safe(respond, f":warning: Something went wrong on our side (ref `{ref}`). {done}")


async def _safe(respond: Respond, text: str) -> None:
    try:
        await ephemeral(respond, text)
    except Exception:  # the response_url may be gone; the log already has the story
        log.warning("could not deliver an error reply")


def answer_while_restarting(stopping: Callable[[], bool]) -> Callable[..., Any]:
    """Bolt middleware: while gonogo drains for a restart, answer every (verified) request at once
    with "restarting" in a form Slack shows, instead of starting work that cannot finish."""

    async def restarting(body: dict[str, Any], ack: Any, respond: Any, next: Callable[[], Any]) -> BoltResponse | None:
        if not stopping():
            await next()
            return None  # Bolt carries on with the listeners
        kind = body.get("type")
        if body.get("command"):  # slash command: the HTTP answer is shown to the user
            response: BoltResponse = await ack(text=f":hourglass: {RESTARTING}", response_type="ephemeral")
            return response
        if kind == "view_submission":  # a modal: show it on the form, which stays open
            fields = list(((body.get("view") or {}).get("state") or {}).get("values") or {})
            if fields:
                response = await ack(response_action="errors", errors={fields[0]: RESTARTING})
                return response
        response = await ack()
        if respond is not None:
            try:
                await respond(text=f":hourglass: {RESTARTING}", response_type="ephemeral", replace_original=False)
            except Exception:
                log.warning("could not deliver the restarting answer")
        return response

    return restarting
