"""`/gonogo drill` and `/gonogo rollback`: the gate's operations started from Slack.

Thin, like every handler: parse, call the service, answer the person who acted. The services
append the announcements to the gate's outbox in the atomic steps that make them true (the
deliverer posts them); the only Slack calls here are the ephemeral answers and `views.open`.
A drill runs in the background like a run of checks (`ReleaseService.spawn`: SIGTERM drains it).
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.errors import Forbidden, Restarting, UsageError
from bot.core.gate import Gate
from bot.core.release import Release
from bot.services.drills import DrillService, DrillStarted
from bot.services.releases import ReleaseService
from bot.services.rollbacks import RollbackService
from bot.slack.blocks import escape
from bot.slack.modals import MODAL_ROLLBACK, RUN_NOW, ModalContext, checked, rollback_modal, submitted
from bot.store.store import AuditEvent
from commands.inbound import typed
from commands.replies import Respond, ephemeral, replying_errors
from commands.signoff_actions import PostEphemeral

log = logging.getLogger("gonogo.operations")


class Operations:
    """What `/gonogo drill` and `/gonogo rollback` need: the services, no Slack client."""

    def __init__(self, releases: ReleaseService, drills: DrillService, rollbacks: RollbackService) -> None:
        self.releases = releases
        self.drills = drills
        self.rollbacks = rollbacks

    def gate_of_drill(self, drill_id: str, gate_id: str | None) -> Gate:
        """The gate named, or the only gate with that drill."""
        gates = self.releases.gates
        if gate_id is not None:
            return gates.get(gate_id).gate
        having = [g for g in (gates.get(i).gate for i in gates.ids) if g.drill(drill_id) is not None]
        if len(having) == 1:
            return having[0]
        if not having:
            raise UsageError(f"no gate has a drill {drill_id!r}")
        names = ", ".join(sorted(g.id for g in having))
        raise UsageError(f"gates {names} all have a drill {drill_id!r}: name one, `/gonogo drill {drill_id} <gate>`")

    async def start_drill(self, drill_id: str, gate_id: str | None, user: str) -> DrillStarted:
        """Authorise, take the gate's lease announcing the start, run it in the background."""
        gate = self.gate_of_drill(drill_id, gate_id)
        drill = gate.drill(drill_id)
        if drill is None:
            known = ", ".join(d.id for d in gate.drills) or "none defined"
            raise UsageError(f"gate {gate.id} has no drill {drill_id!r} (drills: {known})")
        await self.drills.authorise(gate, drill, user)
        self.refuse_while_draining()
        started = await self.drills.begin(gate, drill.id, user, source="slack", announce=True)
        self.releases.spawn(self.drills.finish(started), name=f"drill:{gate.id}:{drill.id}")
        return started

    def refuse_while_draining(self) -> None:
        """A drain (SIGTERM) waits for background work started before it, not after."""
        if not self.releases.accepting_runs:
            raise Restarting()

    async def authorise_rollback(self, release: Release, user: str) -> Gate:
        """Members of `rollback.allowed_roles` only; a refusal is audited on the release."""
        gate = self.releases.gates.get(release.gate_id).gate
        try:
            await self.rollbacks.authorise(gate, user)
        except Forbidden as refused:
            event = AuditEvent(
                type="rollback_refused", actor=user, at=self.releases.clock(), data={"why": str(refused)}
            )
            await self.releases.store.append_audit(release.id, event)
            raise
        return gate


def register(app: AsyncApp, operations: Operations) -> None:
    releases = operations.releases

    @app.view(MODAL_ROLLBACK)
    async def rollback_submitted(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        view = body["view"]
        reason = typed(submitted(view, "reason"), releases.masker)
        if not reason:
            await ack(response_action="errors", errors={"reason": "A rollback needs a reason."})
            return
        await ack()
        context = ModalContext.decode(view["private_metadata"])
        user = str(body["user"]["id"])
        reply = PostEphemeral(client, context.channel, user)
        async with replying_errors(reply, MODAL_ROLLBACK, releases.work, subject="your rollback"):
            operations.refuse_while_draining()
            # `begin` authorises again: the modal's metadata came back from the client.
            started = await operations.rollbacks.begin(
                context.release, user, reason, run_command=checked(view, RUN_NOW), announce=True
            )
            releases.spawn(operations.rollbacks.execute(started), name=f"rollback:{started.release.id}")
            what = "running the rollback command, then verifying" if started.run_command else "verifying"
            await ephemeral(
                reply,
                f"Rollback of {escape(started.release.id)} started ({what}); follow it in <#{started.gate.channel}>.",
            )


async def drill_command(operations: Operations, args: tuple[str, ...], user: str, respond: Respond) -> None:
    started = await operations.start_drill(args[0], args[1] if len(args) > 1 else None, user)
    await ephemeral(
        respond,
        f"Started fire drill *{escape(started.drill.title)}* of {escape(started.gate.id)};"
        f" results in <#{started.gate.channel}>.",
    )


async def rollback_command(
    operations: Operations,
    args: tuple[str, ...],
    user: str,
    channel: str,
    trigger_id: str,
    client: AsyncWebClient,
) -> None:
    """Open the confirmation modal (nothing changes until it is submitted)."""
    release = await operations.releases.resolve(args[0])
    gate = await operations.authorise_rollback(release, user)
    assert gate.rollback is not None  # authorise refuses a gate without a rollback section
    run = gate.rollback.run
    # Shown in the modal: masked like any command line we show (a gate may carry a token in it).
    command = operations.releases.masker.mask(run if isinstance(run, str) else " ".join(run)) if run else None
    context = ModalContext(release=release.id, subject="rollback", channel=channel or gate.channel)
    view = rollback_modal(context, gate.name, " ".join(args[1:]), command)
    await client.views_open(trigger_id=trigger_id, view=view)
