"""Where the issues meet: webhook deploys and rollout stages (a deploy to a stage that is not GO is
flagged), deploys and the scheduler (100% starts the post-deploy window; a new commit asks the
stale signers again), and overdue stage conditions reminded like missing signers. Real Redis, the
Slack stand-in's renderers, a fake clock."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.core.events import DeployEvent
from bot.playground.standin import SlackStandIn
from bot.services.events import EventService
from bot.slack.renderers import RENDERERS
from tests.test_scheduler import RID, T0, World, checked_world


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


def events_of(world: World) -> EventService:
    return EventService(store=world.store, gates=world.gates, env=dict(os.environ), clock=world.clock)


async def deploy(world: World, event_id: str, stage: str, status: str, sha: str | None = None) -> None:
    event = DeployEvent(type="deploy", id=event_id, release=RID, stage=stage, status=status, sha=sha)
    await events_of(world).accept(event)


# --- a deploy reaching 100% starts the post-deploy window ------------------------------------------


async def test_a_deploy_reaching_100_percent_starts_the_postdeploy_window(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    extra = "postdeploy: {every: 5m, for: 20m, checks: [health]}"
    world, _flag = checked_world(tmp_path, redis_client, standin, http_session, extra)
    await world.open()  # open, no decision: before the deploy nothing runs
    scheduler = world.replica()
    world.clock.now = T0 + timedelta(minutes=30)
    assert (await scheduler.postdeploy_tick("payments")).claimed == []
    await deploy(world, "d1", "canary 1%", "succeeded")
    await deploy(world, "d2", "100%", "started")
    world.clock.now = T0 + timedelta(minutes=40)
    assert (await scheduler.postdeploy_tick("payments")).claimed == []  # not at 100% yet
    await deploy(world, "d3", "100%", "succeeded")
    deployed = world.clock.now
    for slot in range(1, 7):
        world.clock.now = deployed + timedelta(minutes=5 * slot)
        await scheduler.postdeploy_tick("payments")
        if slot == 2:
            await deploy(world, "d4", "100%", "succeeded")  # a repeated report does not restart it
    (summary,) = await world.notices("postdeploy_summary")
    assert summary.created_at == deployed + timedelta(minutes=20)
    assert "20m post-deploy verification passed: 4/4 runs green" in RENDERERS.render(summary).text
