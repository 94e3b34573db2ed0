"""Buttons on the release card."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.services.releases import ReleaseService
from bot.slack.blocks import ACTION_REFRESH, ACTION_RUN
from commands.replies import Respond, replying_errors


def register(app: AsyncApp, service: ReleaseService) -> None:
    @app.action(ACTION_RUN)
    async def run_checks(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        await ack()
        async with replying_errors(respond, ACTION_RUN, service.work, subject="your run request"):
            release = await service.resolve(action["value"])
            await service.start_run(release, body["user"]["id"])

    @app.action(ACTION_REFRESH)
    async def refresh(ack: AsyncAck, action: dict[str, Any], respond: Respond) -> None:
        await ack()
        async with replying_errors(respond, ACTION_REFRESH, service.work):
            await service.publish_card(await service.resolve(action["value"]))
