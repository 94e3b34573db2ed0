"""Where the issues meet: webhook deploys and rollout stages (a deploy to a stage that is not GO is
flagged), deploys and the scheduler (100% starts the post-deploy window; a new commit asks the
stale signers again), and overdue stage conditions reminded like missing signers. Real Redis, the
Slack stand-in's renderers, a fake clock."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.core.events import DeployEvent
from bot.core.facts import Vote
from bot.core.gateset import GateSet
from bot.playground.standin import SlackStandIn
from bot.services.events import EventService
from bot.services.signing import Signing
from bot.slack import announcements
from bot.slack.renderers import RENDERERS
from bot.store import keys
from tests.bot_harness import write_gate
from tests.test_scheduler import RID, SHA, T0, World, checked_world, make_world

announcements.register(RENDERERS)


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


# --- a deploy to a stage that is not GO is accepted, and flagged ------------------------------------

STAGED = """
id: payments
name: Payments API
channel: C0DEPLOYS
stages:
  - {id: dark, name: Dark launch}
  - {id: canary, name: "Canary 5%"}
checks:
  - id: alerting
    name: Alerting rules
    kind: manual
    owner: sre
    before: canary
    due: 2d after dark
  - id: dashboards
    name: Dashboards
    kind: manual
    owner: sre
    before: canary
signoffs:
  - {role: dev, label: Developer, users: [U0DEV]}
  - {role: sre, label: SRE, users: [U0SRE1, U0SRE2], before: canary}
reminders:
  every: 2h
  max: 3
  timezone: UTC
"""


def staged_world(tmp_path: Path, redis: aioredis.Redis, standin: SlackStandIn, session: aiohttp.ClientSession) -> World:
    return World(redis, standin, session, GateSet(write_gate(tmp_path / "gates", STAGED, "payments.yml").parent))


def staged_events(world: World) -> EventService:
    return EventService(
        store=world.store, gates=world.gates, env=dict(os.environ), clock=world.clock, evaluate=world.releases.state
    )


async def test_a_deploy_to_a_stage_that_is_not_go_is_flagged_in_the_channel_and_on_the_card(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    world = staged_world(tmp_path, redis_client, standin, http_session)
    await world.open()
    events = staged_events(world)
    await Signing(world.releases, world.membership).vote(RID, "dev", "U0DEV", Vote.APPROVE, drawn_for=SHA)
    # Dark launch is GO (the developer signed): no flag.
    await events.accept(DeployEvent(type="deploy", id="d1", release=RID, stage="dark launch", status="succeeded"))
    assert await world.notices("deploy_flagged") == []
    assert (await world.release()).deploy_flag is None
    # The canary still waits on two manual items and the SRE sign-off: accepted, flagged once.
    for event_id, status in (("d2", "started"), ("d3", "succeeded")):
        await events.accept(DeployEvent(type="deploy", id=event_id, release=RID, stage="canary 1%", status=status))
    (flag,) = await world.notices("deploy_flagged")
    rendered = RENDERERS.render(flag)
    assert flag.target.channel == "C0DEPLOYS"
    assert "payments@1.4.0 deployed to Canary 5% while 3 conditions are open" in rendered.text
    assert "Alerting rules" in json.dumps(rendered.blocks)
    stored = await world.release()
    assert stored.deploy_flag is not None and stored.deploy_flag["open"] == 3
    card = json.dumps((await world.releases.state(stored)).card(world.clock.now).blocks, ensure_ascii=False)
    assert "⚠️ Deployed to *Canary 5%* while 3 conditions were open" in card
    audit = [e.type for e in await world.store.audit(RID)]
    assert audit.count("deploy") == 3


# --- a deploy of a new commit asks the stale signers again, in the move's MULTI ------------------


async def test_a_deploy_of_a_new_commit_asks_the_stale_signers_again_once(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    world = make_world(tmp_path)(redis_client, standin, http_session)
    await world.open()
    await Signing(world.releases, world.membership).vote(RID, "sre", "U0SRE1", Vote.APPROVE, drawn_for=SHA)
    events = EventService(
        store=world.store, gates=world.gates, env=dict(os.environ), clock=world.clock, evaluate=world.releases.state
    )
    await events.accept(DeployEvent(type="deploy", id="d1", release=RID, stage="canary 1%", status="started"))
    assert await world.notices("signoff_stale") == []  # same commit: nothing went stale
    for event_id in ("d2", "d3"):
        event = DeployEvent(type="deploy", id=event_id, release=RID, stage="100%", status="started", sha="fedcba9876")
        await events.accept(event)
    (asked,) = await world.notices("signoff_stale")
    assert asked.target.card_thread and asked.payload["sha"] == "fedcba9876"
    rendered = RENDERERS.render(asked)
    assert "<@U0SRE1>: your approve as SRE is stale" in json.dumps(rendered.blocks)
    stale = [e.data for e in await world.store.audit(RID) if e.type == "signoff_stale"]
    assert [(d["role"], d["user"]) for d in stale] == [("sre", "U0SRE1")]
    # The release service's own question after a move finds it asked already: no second one.
    (token,) = await redis_client.smembers(keys.stale_notified(RID))
    assert not await world.store.first_notice(RID, str(token))
