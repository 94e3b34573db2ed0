"""The Snooze buttons of a reminder DM (Approve / Reject there are the card's own handlers)."""

from __future__ import annotations

from typing import Any, cast

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.core.errors import UsageError
from bot.core.timeplan import SnoozeChoice
from bot.services.scheduler import Scheduler
from bot.slack.blocks import ACTION_SNOOZE, escape
from commands.replies import Respond, ephemeral, replying_errors

CHOICES = ("1h", "4h", "morning")


def snooze_value(value: str) -> tuple[str, SnoozeChoice]:
    release_id, _, choice = value.partition("|")
    if not release_id or choice not in CHOICES:
        raise UsageError("this button is from an older version of the reminder")
    return release_id, cast(SnoozeChoice, choice)


def register(app: AsyncApp, scheduler: Scheduler) -> None:
    @app.action(ACTION_SNOOZE)
    async def snooze(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        await ack()
        async with replying_errors(respond, ACTION_SNOOZE, scheduler.releases.work, subject="your snooze"):
            release_id, choice = snooze_value(str(action["value"]))
            user = str(body["user"]["id"])
            until = await scheduler.snooze(release_id, user, choice)
            gate_id = release_id.partition("@")[0]
            when = await scheduler.describe_for(gate_id, user, until)
            await ephemeral(respond, f"Snoozed: no reminders about {escape(release_id)} until {escape(when)}.")
