"""Where the issues meet: webhook deploys and rollout stages (a deploy to a stage that is not GO is
flagged), deploys and the scheduler (100% starts the post-deploy window; a new commit asks the
stale signers again), and overdue stage conditions reminded like missing signers. Real Redis, the
Slack stand-in's renderers, a fake clock."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.core.events import DeployEvent
from bot.core.facts import Vote
from bot.core.gateset import GateSet
from bot.core.signature import signed_headers
from bot.playground.standin import SlackStandIn
from bot.services.events import EventService
from bot.services.scheduler import ESCALATION, REMINDER, REMINDER_ANSWERED, no_zone
from bot.services.signing import Signing
from bot.slack import announcements, reminders
from bot.slack.blocks import ACTION_SNOOZE
from bot.slack.release_cards import state_card
from bot.slack.renderers import RENDERERS
from bot.store import keys
from tests.bot_harness import RunningBot, bot_settings, write_gate
from tests.delivery_kit import Road
from tests.test_scheduler import RID, SHA, T0, World, checked_world, make_world

announcements.register(RENDERERS)
reminders.register(RENDERERS)


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
    due: 2026-12-09
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
    await Signing(world.releases, world.membership, store=world.store, gates=world.gates, clock=world.clock).vote(
        RID, "dev", "U0DEV", Vote.APPROVE, drawn_for=SHA
    )
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
    card = json.dumps(state_card(await world.releases.state(stored), world.clock.now).blocks, ensure_ascii=False)
    assert "⚠️ Deployed to *Canary 5%* while 3 conditions were open" in card
    audit = [e.type for e in await world.store.audit(RID)]
    assert audit.count("deploy") == 3


# --- a deploy of a new commit asks the stale signers again, in the move's MULTI ------------------


async def test_a_deploy_of_a_new_commit_asks_the_stale_signers_again_once(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    world = make_world(tmp_path)(redis_client, standin, http_session)
    await world.open()
    await Signing(world.releases, world.membership, store=world.store, gates=world.gates, clock=world.clock).vote(
        RID, "sre", "U0SRE1", Vote.APPROVE, drawn_for=SHA
    )
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
    assert str(token).startswith("sre|U0SRE1|")
    moved = await world.store.get_release(RID)
    assert moved is not None
    await world.releases.ask_stale_signers(moved)
    assert len(await world.notices("signoff_stale")) == 1


# --- overdue conditions: their owners reminded like missing signers ------------------------------


async def test_owners_of_an_overdue_condition_are_reminded_once_per_slot_up_to_max_then_told_it_is_done(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    world = staged_world(tmp_path, redis_client, standin, http_session)
    await world.open()
    signing = Signing(world.releases, world.membership, store=world.store, gates=world.gates, clock=world.clock)
    for role, user in (("dev", "U0DEV"), ("sre", "U0SRE1"), ("sre", "U0SRE2")):
        await signing.vote(RID, role, user, Vote.APPROVE, drawn_for=SHA)
    replicas = [world.replica(zones=no_zone) for _ in range(3)]
    for minutes in range(0, 12 * 60, 30):
        world.clock.now = T0 + timedelta(minutes=minutes)
        await asyncio.gather(*(r.reminders_tick("payments") for r in replicas))
    dms = await world.notices(REMINDER)
    # Nobody is missing a sign-off; the SREs own "Dashboards", due 9 Dec (Alerting is due 2d after a
    # dark launch that has not happened): 3 each (max), 2h apart, each slot once across replicas.
    assert sorted((str(n.target.channel), n.payload["number"]) for n in dms) == [
        ("U0SRE1", 1),
        ("U0SRE1", 2),
        ("U0SRE1", 3),
        ("U0SRE2", 1),
        ("U0SRE2", 2),
        ("U0SRE2", 3),
    ]
    assert {n.payload["why"] for n in dms} == {"overdue"}
    first = next(n for n in dms if n.target.channel == "U0SRE1" and n.payload["number"] == 1)
    assert first.created_at == T0
    rendered = RENDERERS.render(first)
    assert "*Dashboards* on *payments@1.4.0* is overdue (due 2026-12-09)" in json.dumps(rendered.blocks)
    actions = [e["action_id"] for b in rendered.blocks if b["type"] == "actions" for e in b["elements"]]
    assert actions and set(actions) == {ACTION_SNOOZE}  # nothing to sign: Snooze only
    assert await world.notices(ESCALATION) == []
    # Done: the last DM of each owner is updated to say so, once.
    await signing.mark_done(RID, "dashboards", "U0SRE1", "https://grafana.example/d/payments")
    for _ in range(2):
        await asyncio.gather(*(r.reminders_tick("payments") for r in replicas))
    answered = await world.notices(REMINDER_ANSWERED)
    assert sorted(str(n.target.channel) for n in answered) == ["U0SRE1", "U0SRE2"]
    assert all(n.payload["why"] == "Dashboards is no longer overdue" for n in answered)
    assert {n.updates for n in answered} == {n.key for n in dms if n.payload["number"] == 3}


# --- the running bot wires the ladder into the webhook ---------------------------------------------


async def test_the_running_bot_flags_a_webhook_deploy_to_a_stage_that_is_not_go(
    tmp_path: Path,
    redis_url: str,
    redis_client: aioredis.Redis,
    standin: SlackStandIn,
    http_session: aiohttp.ClientSession,
) -> None:
    road = Road(redis_client, standin, http_session)  # the deliverer, as in test_announcements_e2e
    await road.outbox.register(["payments"])
    road.start()
    secret = "whsec-glue-0123456789abcdef"
    gates = write_gate(tmp_path / "gates", STAGED, "payments.yml").parent
    settings = bot_settings(
        api_url=standin.api_url, redis_url=redis_url, gates=gates, data_dir=tmp_path / "d", GONOGO_WEBHOOK_SECRET=secret
    )
    bot = await RunningBot(settings).start()
    try:
        assert bot.session is not None
        for event in (
            {"type": "open", "id": "o1", "gate": "payments", "version": "1.4.0", "sha": SHA},
            {"type": "deploy", "id": "d1", "release": RID, "stage": "canary 1%", "status": "started"},
        ):
            body = json.dumps(event).encode()
            async with bot.session.post(
                f"{bot.url}/api/events",
                data=body,
                headers={"Content-Type": "application/json", **signed_headers(secret, body, time.time())},
            ) as response:
                assert response.status == 202, await response.text()
        flagged = await standin.wait_for(
            "chat.postMessage", lambda c: "deployed to" in c.args.get("text", ""), timeout=20
        )
        assert flagged.args["channel"] == "C0DEPLOYS"
        assert "payments@1.4.0 deployed to Canary 5% while 4 conditions are open" in flagged.args["text"]
    finally:
        await bot.stop()
        await road.kill()
