"""`/gonogo <subcommand>`: ack at once, then do the work and answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.errors import Forbidden, UsageError
from bot.core.release import Release
from bot.services.lifecycle import Lifecycle
from bot.services.promotion import Promotion
from bot.services.releases import ReleaseService
from bot.services.signing import Signing
from bot.slack.blocks import escape, escape_code, escape_message
from bot.slack.history import render_history
from bot.slack.messages import render_help, render_release_list
from bot.slack.release_cards import state_card
from commands import operations as ops
from commands.inbound import decode_entities, typed
from commands.parse import USAGE, parse
from commands.replies import Respond, ephemeral, replying_errors


def register(
    app: AsyncApp,
    service: ReleaseService,
    signing: Signing,
    lifecycle: Lifecycle,
    operations: ops.Operations | None = None,
) -> None:
    promotion = Promotion(
        service, lifecycle.membership, store=lifecycle.store, gates=lifecycle.gates, clock=lifecycle.clock
    )

    @app.command("/gonogo")
    async def gonogo(ack: AsyncAck, command: dict[str, Any], respond: Respond, client: AsyncWebClient) -> None:
        await ack()
        # A modal must not queue behind other handlers' work: its trigger_id dies 3 s after the command.
        opens_modal = str(command.get("text") or "").lower().split()[:1] == ["rollback"]
        async with replying_errors(respond, "slash", service.work, subject="your command", queue=not opens_modal):
            await dispatch(
                service, signing, lifecycle, command, respond, promotion=promotion, operations=operations, client=client
            )


async def _may_see(service: ReleaseService, lifecycle: Lifecycle, release: Release, user: str, channel: str) -> bool:
    """Status, history and evidence are for the gate's channel (which may be private) and the
    members of the gate's roles, wherever they ask from."""
    gate = service.gates.get(release.gate_id).gate
    if channel in (gate.channel, release.card_channel):
        return True
    for role in gate.signoffs:
        if await lifecycle.membership.holds(role, user):
            return True
    return False


def _roles(service: ReleaseService, release: Release) -> str:
    titles = [r.title for r in service.gates.get(release.gate_id).gate.signoffs]
    return ", ".join(titles) or "the gate has none"


def _target_note(release: Release, at: datetime | None) -> str:
    """What `open … --at` did to an open release's target time."""
    if at is None or release.target_at != at:
        return ""
    return f" Target time set to {at.astimezone(UTC):%Y-%m-%d %H:%M} UTC: the pre-launch posts follow it."


def _page(args: tuple[str, ...]) -> int | None:
    """`history <release> [N | --page N]`."""
    rest = [a for a in args[1:] if a != "--page"]
    if not rest:
        return None
    if len(rest) > 1 or not rest[0].lstrip("-").isdigit():
        raise UsageError(f"bad page {' '.join(rest)!r}. Usage: `{USAGE['history']}`")
    return int(rest[0])


async def dispatch(
    service: ReleaseService,
    signing: Signing,
    lifecycle: Lifecycle,
    command: dict[str, Any],
    respond: Respond,
    *,
    promotion: Promotion,
    operations: ops.Operations | None = None,
    client: AsyncWebClient | None = None,
) -> None:
    parsed = parse(typed(decode_entities(str(command.get("text") or "")), service.masker))
    user = command["user_id"]
    channel = command.get("channel_id", "")
    args = parsed.args
    if parsed.name in ("status", "history", "evidence") and args:
        release = await service.resolve(args[0])
        if not await _may_see(service, lifecycle, release, user, channel):
            raise Forbidden(
                f"{release.id} is shown only in its gate's channel, or to members of the gate's roles"
                f" ({_roles(service, release)})."
            )

    if parsed.name == "help":
        help_ = render_help(f"Unknown subcommand `{args[0]}`." if args else None)
        await ephemeral(respond, help_.text, blocks=help_.blocks)
    elif parsed.name == "open":
        release, opened = await lifecycle.open(
            args[0], args[1], args[2] if len(args) > 2 else None, user, target_at=parsed.at
        )
        if opened == "opened":
            await ephemeral(respond, f"Opened {escape(release.id)}: the card is in <#{release.card_channel}>.")
        elif opened == "moved":
            await ephemeral(
                respond,
                f"Moved {escape(release.id)} to commit `{release.short_sha}`: results and sign-offs start afresh."
                + _target_note(release, parsed.at),
            )
        elif opened == "retargeted":
            await ephemeral(respond, f"{escape(release.id)} is open.{_target_note(release, parsed.at)}")
        else:
            await ephemeral(
                respond, f"{escape(release.id)} is already open: `/gonogo status {escape_code(release.id)}`."
            )
    elif (parsed.name == "status" and not args) or parsed.name == "list":
        states = [
            st
            for st in await service.list_open_states()
            if await _may_see(service, lifecycle, st.release, user, channel)
        ]
        ladders = {st.release.id: st.ladder for st in states if st.ladder is not None}
        listing = render_release_list([(st.release, st.decision) for st in states], service.clock(), ladders)
        await ephemeral(respond, listing.text, blocks=listing.blocks)
    elif parsed.name == "status":
        release = await service.resolve(args[0])
        gate_channel = service.gates.get(release.gate_id).gate.channel
        if channel in (gate_channel, release.card_channel):
            await service.publish_card(release, repost=True, actor=user)
        else:
            # Elsewhere, show the card privately: the live one stays in the gate's channel.
            card = state_card(await service.state(release), service.clock())
            await ephemeral(respond, card.text, blocks=card.blocks)
    elif parsed.name == "run":
        release = await service.resolve(args[0])
        lease = await service.start_run(release, user, args[1:])
        await ephemeral(
            respond, f"Running {len(lease.check_ids)} check(s) of {escape(release.id)}; the card updates live."
        )
    elif parsed.name == "override" and args[0] == "cancel" and len(args) == 2:
        cancelled = await signing.cancel_override(args[1], user)
        await ephemeral(respond, escape_message(cancelled.message))
    elif parsed.name == "override":
        outcome = await signing.request_override(args[0], user, " ".join(args[1:]))
        channel = service.gates.get(outcome.release.gate_id).gate.channel
        await ephemeral(respond, f"{escape_message(outcome.message)} Approvers were asked in <#{channel}>.")
    elif parsed.name == "decide":
        decided = await lifecycle.decide(args[0], user)
        where = decided.release.card_channel
        await ephemeral(
            respond,
            f"{escape(decided.release.id)} decided: {decided.bundle.get('verdict')}. The record is in <#{where}>.",
        )
    elif parsed.name == "promote":
        promoted = await promotion.promote(args[0], args[1], user)
        how = " under a break-glass override" if promoted.override else ""
        await ephemeral(
            respond,
            f"{promoted.release.id} promoted to {promoted.stage.name}{how}."
            f" Announced in <#{service.gates.get(promoted.release.gate_id).gate.channel}>.",
        )
    elif parsed.name == "evidence":
        filename, uploaded = await lifecycle.upload_evidence(args[0], user)
        done = "Uploaded" if uploaded else "Uploading"
        await ephemeral(respond, f"{done} `{escape_code(filename)}` to the card's thread.")
    elif parsed.name == "close":
        closed = await lifecycle.close(args[0], user)
        await ephemeral(respond, f"{escape(closed.id)} is closed.")
    elif parsed.name == "reopen":
        reopened = await lifecycle.reopen(args[0], user)
        await ephemeral(respond, f"{escape(reopened.id)} is open again.")
    elif parsed.name == "history":
        release, entries = await lifecycle.history(args[0])
        history = render_history(release.id, entries, page=_page(args), now=lifecycle.clock())
        await ephemeral(respond, history.text, blocks=history.blocks)
    elif parsed.name in ("drill", "rollback") and operations is None:
        raise UsageError(f"`/gonogo {parsed.name}` is not available on this bot")
    elif parsed.name == "drill":
        assert operations is not None
        await ops.drill_command(operations, args, user, respond)
    elif parsed.name == "rollback":
        assert operations is not None and client is not None
        await ops.rollback_command(operations, args, user, channel, str(command.get("trigger_id") or ""), client)
    else:  # parse() knows a subcommand this dispatcher does not: a bug, never a silent no-op
        raise AssertionError(f"unhandled subcommand {parsed.name}")
