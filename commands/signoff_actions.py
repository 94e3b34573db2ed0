"""Sign-off, manual-check, risk and override buttons, and the modals they open.

Handlers ack first, then call `Signing`, then tell the clicker what happened (ephemeral). A click
is identified by user + action_ts: a retried payload or a second replica records it once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial, update_wrapper
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.durations import parse_duration
from bot.core.errors import CommitMoved, NotFound, UsageError
from bot.core.facts import Vote
from bot.services.signing import Outcome, Signing
from bot.slack.blocks import (
    ACTION_ACCEPT_RISK,
    ACTION_APPROVE,
    ACTION_APPROVE_COMMENT,
    ACTION_MANUAL_DONE,
    ACTION_MANUAL_REOPEN,
    ACTION_OVERRIDE_APPROVE,
    ACTION_REJECT,
    ACTION_WITHDRAW,
    escape,
    escape_message,
    section,
)
from bot.slack.modals import (
    MODAL_APPROVE,
    MODAL_MANUAL,
    MODAL_REJECT,
    MODAL_RISK,
    ModalContext,
    approve_modal,
    manual_modal,
    reject_modal,
    risk_modal,
    submitted,
)
from bot.slack.release_cards import state_card
from commands.inbound import typed
from commands.replies import Respond, ephemeral, replying_errors


def _split(value: str, parts: int) -> list[str]:
    pieces = value.split("|")
    if len(pieces) != parts:
        raise UsageError("this button is from an older version of the card: press Refresh")
    return pieces


def _signoff_value(value: str) -> tuple[str, str, str | None]:
    """(release, role, commit the card was drawn for) from an Approve/Reject button."""
    release_id, role, sha = _split(value, 3)
    return release_id, role, sha or None


async def show_current_card(respond: Respond, signing: Signing, moved: CommitMoved) -> None:
    """A click on a card drawn for an older commit: say so, and show the card as it is now."""
    releases = signing.releases
    card = state_card(await releases.state(await releases.resolve(moved.release_id)), releases.clock())
    note = f":warning: {escape(str(moved))}. Nothing was recorded; this is the card now:"
    await ephemeral(
        respond, f"{escape(str(moved))}. Nothing was recorded.", blocks=[section(note).to_dict(), *card.blocks][:50]
    )


def _click(body: dict[str, Any], action: dict[str, Any]) -> str:
    return f"{body['user']['id']}:{action.get('action_ts', '')}"


def _channel(body: dict[str, Any]) -> str:
    return str((body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or "")


def withdraw_blocks(outcome: Outcome, release_id: str, role: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f":white_check_mark: {escape_message(outcome.message)}"},
        },
        {
            "type": "actions",
            "block_id": "withdraw",
            "elements": [
                {
                    "type": "button",
                    "action_id": ACTION_WITHDRAW,
                    "text": {"type": "plain_text", "text": "Withdraw"},
                    "value": f"{release_id}|{role}",
                }
            ],
        },
    ]


class PostEphemeral:
    """A `respond` for view submissions, which carry no response_url: chat.postEphemeral."""

    def __init__(self, client: AsyncWebClient, channel: str, user: str) -> None:
        self.client, self.channel, self.user = client, channel, user

    async def __call__(self, text: str = "", **kwargs: Any) -> Any:
        blocks = kwargs.get("blocks")
        return await self.client.chat_postEphemeral(channel=self.channel, user=self.user, text=text, blocks=blocks)


def _typed(signing: Signing, body: dict[str, Any], block_id: str) -> str:
    return typed(submitted(body["view"], block_id), signing.releases.masker)


def _submission(body: dict[str, Any]) -> tuple[ModalContext, str, str]:
    view = body["view"]
    return ModalContext.decode(view["private_metadata"]), body["user"]["id"], f"{body['user']['id']}:{view['id']}"


# --- buttons: ack, parse, call one Signing method, answer the clicker ephemerally ---------------
# `signing` is keyword-only: Bolt passes the arguments a handler names positionally, and `register`
# binds `signing` with functools.partial.


async def approve(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: Respond, *, signing: Signing
) -> None:
    await ack()
    async with replying_errors(respond, ACTION_APPROVE, signing.releases.work, subject="your approval"):
        release_id, role, sha = _signoff_value(action["value"])
        try:
            outcome = await signing.vote(
                release_id, role, body["user"]["id"], Vote.APPROVE, drawn_for=sha, click=_click(body, action)
            )
        except CommitMoved as moved:
            await show_current_card(respond, signing, moved)
            return
        await ephemeral(respond, escape_message(outcome.message), blocks=withdraw_blocks(outcome, release_id, role))


async def open_modal(signing: Signing, body: dict[str, Any], client: AsyncWebClient, value: str, kind: str) -> None:
    """Authorise the clicker for what the modal records, then open it (the trigger lasts 3 s)."""
    sha: str | None = None
    if kind in ("approve", "reject"):
        release_id, subject, sha = _signoff_value(value)
    else:
        release_id, subject = _split(value, 2)
    user = body["user"]["id"]
    context = ModalContext(release=release_id, subject=subject, channel=_channel(body), sha=sha)
    release = await signing.releases.resolve(release_id)
    gate = signing.releases.gates.get(release.gate_id).gate
    if kind in ("approve", "reject"):
        role = gate.role(subject)
        if role is None:
            raise NotFound(f"gate {gate.id} has no role {subject!r}")
        await signing.authorise(release_id, role.role, user, f"sign as {role.title}", drawn_for=sha)
        view = approve_modal(context, role.title) if kind == "approve" else reject_modal(context, role.title)
    elif kind == "manual":
        check = next((c for c in gate.checks if c.id == subject and c.kind == "manual"), None)
        if check is None:
            raise NotFound(f"gate {gate.id} has no manual check {subject!r}")
        await signing.authorise(release_id, str(getattr(check, "owner")), user, f"mark {check.title} done")  # noqa: B009
        view = manual_modal(context, check.title, getattr(check, "instructions", None))
    else:
        risk = next((r for r in gate.risks if r.id == subject), None)
        if risk is None:
            raise NotFound(f"gate {gate.id} has no risk {subject!r}")
        await signing.authorise(release_id, risk.acceptor, user, f"accept risk {risk.id}")
        view = risk_modal(context, risk.description, risk.mitigation)
    await client.views_open(trigger_id=body["trigger_id"], view=view)


async def open_signoff_modal(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: Respond,
    client: AsyncWebClient,
    *,
    signing: Signing,
    kind: str,
) -> None:
    """Buttons whose work is a modal (comment, reject, manual check, risk)."""
    await ack()
    # No work slot: the trigger_id dies 3 s after the click, so a modal must not queue behind a
    # burst of other handlers' work (it only reads Redis and calls views.open).
    async with replying_errors(respond, action["action_id"], signing.releases.work, queue=False):
        try:
            await open_modal(signing, body, client, action["value"], kind)
        except CommitMoved as moved:
            await show_current_card(respond, signing, moved)


async def withdraw(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: Respond, *, signing: Signing
) -> None:
    await ack()
    async with replying_errors(respond, ACTION_WITHDRAW, signing.releases.work, subject="your withdrawal"):
        release_id, role = _split(action["value"], 2)
        outcome = await signing.withdraw(release_id, role, body["user"]["id"])
        await respond(text=escape_message(outcome.message), response_type="ephemeral", replace_original=True)


async def manual_reopen(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: Respond, *, signing: Signing
) -> None:
    await ack()
    async with replying_errors(respond, ACTION_MANUAL_REOPEN, signing.releases.work, subject="the reopening"):
        release_id, check = _split(action["value"], 2)
        outcome = await signing.reopen_manual(release_id, check, body["user"]["id"])
        await ephemeral(respond, escape_message(outcome.message))


async def override_approve(
    ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: Respond, *, signing: Signing
) -> None:
    await ack()
    async with replying_errors(
        respond, ACTION_OVERRIDE_APPROVE, signing.releases.work, subject="your override approval"
    ):
        release_id, request_id, role = _split(action["value"], 3)
        outcome = await signing.approve_override(
            release_id, request_id, role, body["user"]["id"], click=_click(body, action)
        )
        await ephemeral(respond, escape_message(outcome.message))


# --- modal submissions: ack (closing the modal), then record, then confirm ephemerally ---------


async def _vote_submitted(
    signing: Signing, body: dict[str, Any], client: AsyncWebClient, vote: Vote, text: str
) -> None:
    context, user, click = _submission(body)
    reply = PostEphemeral(client, context.channel, user)
    modal, subject = (MODAL_APPROVE, "your approval") if vote is Vote.APPROVE else (MODAL_REJECT, "your rejection")
    async with replying_errors(reply, modal, signing.releases.work, subject=subject):
        try:
            outcome = await signing.vote(
                context.release, context.subject, user, vote, text, drawn_for=context.sha, click=click
            )
        except CommitMoved as moved:
            await show_current_card(reply, signing, moved)
            return
        await ephemeral(
            reply, escape_message(outcome.message), blocks=withdraw_blocks(outcome, context.release, context.subject)
        )


async def approve_submitted(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, *, signing: Signing) -> None:
    await ack()
    await _vote_submitted(signing, body, client, Vote.APPROVE, _typed(signing, body, "comment"))


async def reject_submitted(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, *, signing: Signing) -> None:
    reason = _typed(signing, body, "reason")
    if not reason:  # Slack requires the input, but whitespace passes its check
        await ack(response_action="errors", errors={"reason": "A rejection needs a reason."})
        return
    await ack()
    await _vote_submitted(signing, body, client, Vote.REJECT, reason)


async def manual_submitted(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, *, signing: Signing) -> None:
    evidence = _typed(signing, body, "evidence")
    if not evidence:
        await ack(response_action="errors", errors={"evidence": "Give a link or a sentence as evidence."})
        return
    await ack()
    context, user, click = _submission(body)
    reply = PostEphemeral(client, context.channel, user)
    async with replying_errors(reply, MODAL_MANUAL, signing.releases.work, subject="your mark"):
        outcome = await signing.mark_done(context.release, context.subject, user, evidence, click=click)
        await ephemeral(reply, escape_message(outcome.message))


async def risk_submitted(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, *, signing: Signing) -> None:
    reason = _typed(signing, body, "reason")
    expires_text = _typed(signing, body, "expires")
    errors: dict[str, str] = {}
    expires_after: timedelta | None = None
    if not reason:
        errors["reason"] = "Say why the risk is acceptable."
    if expires_text:
        try:
            expires_after = parse_duration(expires_text)
        except ValueError:
            errors["expires"] = "Use a duration like 7d, 24h or 90m."
    if errors:
        await ack(response_action="errors", errors=errors)
        return
    await ack()
    context, user, click = _submission(body)
    reply = PostEphemeral(client, context.channel, user)
    async with replying_errors(reply, MODAL_RISK, signing.releases.work, subject="your risk acceptance"):
        now: datetime = signing.releases.clock()
        expires_at = now + expires_after if expires_after else None
        outcome = await signing.accept_risk(context.release, context.subject, user, reason, expires_at, click=click)
        await ephemeral(reply, escape_message(outcome.message))


MODAL_BUTTONS = {
    ACTION_APPROVE_COMMENT: "approve",
    ACTION_REJECT: "reject",
    ACTION_MANUAL_DONE: "manual",
    ACTION_ACCEPT_RISK: "risk",
}


def _bound(handler: Callable[..., Awaitable[None]], **bound: Any) -> Callable[..., Awaitable[None]]:
    """The handler with its keyword-only arguments bound, keeping its name (Bolt logs it) and the
    positional arguments Bolt reads to know what to pass."""
    return update_wrapper(partial(handler, **bound), handler)


def register(app: AsyncApp, signing: Signing) -> None:
    """Wire the handlers above, each bound to `signing`."""
    app.action(ACTION_APPROVE)(_bound(approve, signing=signing))
    for action_id, kind in MODAL_BUTTONS.items():
        app.action(action_id)(_bound(open_signoff_modal, signing=signing, kind=kind))
    app.action(ACTION_WITHDRAW)(_bound(withdraw, signing=signing))
    app.action(ACTION_MANUAL_REOPEN)(_bound(manual_reopen, signing=signing))
    app.action(ACTION_OVERRIDE_APPROVE)(_bound(override_approve, signing=signing))
    app.view(MODAL_APPROVE)(_bound(approve_submitted, signing=signing))
    app.view(MODAL_REJECT)(_bound(reject_submitted, signing=signing))
    app.view(MODAL_MANUAL)(_bound(manual_submitted, signing=signing))
    app.view(MODAL_RISK)(_bound(risk_submitted, signing=signing))
