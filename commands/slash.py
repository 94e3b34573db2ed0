"""`/gonogo <subcommand>`: ack at once, then do the work and answer."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.core.errors import UsageError
from bot.services.lifecycle import Lifecycle
from bot.services.releases import ReleaseService
from bot.services.signing import Signing
from bot.slack.messages import render_help, render_release_list
from commands.parse import USAGE, parse
from commands.replies import Respond, ephemeral, replying_errors


def register(app: AsyncApp, service: ReleaseService, signing: Signing, lifecycle: Lifecycle) -> None:
    @app.command("/gonogo")
    async def gonogo(ack: AsyncAck, command: dict[str, Any], respond: Respond) -> None:
        await ack()
        async with replying_errors(respond, "slash", service.work, subject="your command"):
            await dispatch(service, signing, lifecycle, command, respond)


def _page(args: tuple[str, ...]) -> int | None:
    """`history <release> [N | --page N]`."""
    rest = [a for a in args[1:] if a != "--page"]
    if not rest:
        return None
    if len(rest) > 1 or not rest[0].lstrip("-").isdigit():
        raise UsageError(f"bad page {' '.join(rest)!r}. Usage: `{USAGE['history']}`")
    return int(rest[0])


async def dispatch(
    service: ReleaseService, signing: Signing, lifecycle: Lifecycle, command: dict[str, Any], respond: Respond
) -> None:
    parsed = parse(command.get("text", ""))
    user = command["user_id"]
    channel = command.get("channel_id", "")
    args = parsed.args

    if parsed.name == "help":
        help_ = render_help(f"Unknown subcommand `{args[0]}`." if args else None)
        await ephemeral(respond, help_.text, blocks=help_.blocks)
    elif parsed.name == "open":
        release, changed = await service.open(args[0], args[1], args[2] if len(args) > 2 else None, user)
        if changed:
            await ephemeral(respond, f"Opened {release.id}: the card is in <#{release.card_channel}>.")
        else:
            await ephemeral(respond, f"{release.id} is already open: `/gonogo status {release.id}`.")
    elif (parsed.name == "status" and not args) or parsed.name == "list":
        listing = render_release_list(await service.list_open(), service.clock())
        await ephemeral(respond, listing.text, blocks=listing.blocks)
    elif parsed.name == "status":
        release = await service.resolve(args[0])
        gate_channel = service.gates.get(release.gate_id).gate.channel
        if channel in (gate_channel, release.card_channel):
            await service.publish_card(release, repost=True)
        else:
            # Elsewhere, show the card privately: the live one stays in the gate's channel.
            card = (await service.state(release)).card(service.clock())
            await ephemeral(respond, card.text, blocks=card.blocks)
    elif parsed.name == "run":
        release = await service.resolve(args[0])
        lease = await service.start_run(release, user, args[1:])
        await ephemeral(respond, f"Running {len(lease.check_ids)} check(s) of {release.id}; the card updates live.")
    elif parsed.name == "override":
        outcome = await signing.request_override(args[0], user, " ".join(args[1:]))
        channel = service.gates.get(outcome.release.gate_id).gate.channel
        await ephemeral(respond, f"{outcome.message} Approvers were asked in <#{channel}>.")
    elif parsed.name == "decide":
        decided = await lifecycle.decide(args[0], user)
        where = decided.release.card_channel
        await ephemeral(
            respond, f"{decided.release.id} decided: {decided.bundle.get('verdict')}. The record is in <#{where}>."
        )
    elif parsed.name == "evidence":
        filename = await lifecycle.upload_evidence(args[0], user)
        await ephemeral(respond, f"Uploaded `{filename}` to the card's thread.")
    elif parsed.name == "close":
        closed = await lifecycle.close(args[0], user)
        await ephemeral(respond, f"{closed.id} is closed.")
    elif parsed.name == "reopen":
        reopened = await lifecycle.reopen(args[0], user)
        await ephemeral(respond, f"{reopened.id} is open again.")
    elif parsed.name == "history":
        history = await lifecycle.history(args[0], _page(args))
        await ephemeral(respond, history.text, blocks=history.blocks)
    else:  # parse() knows a subcommand this dispatcher does not: a bug, never a silent no-op
        raise AssertionError(f"unhandled subcommand {parsed.name}")
