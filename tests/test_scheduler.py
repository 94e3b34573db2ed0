"""The scheduler over a real Redis and the Slack stand-in, driven by a fake clock: reminders to
missing and stale signers at their own working hours, Snooze, escalation, stopping (and the DM
updated), exactly once across replicas, kills and restarts, freeze announcements, pre-launch posts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import aiohttp
import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.decision import Verdict
from bot.core.facts import Vote
from bot.core.gateset import GateSet
from bot.core.notices import Notice
from bot.core.release import Release, State
from bot.playground.standin import DEFAULT_BOT_TOKEN, SlackStandIn
from bot.services.membership import Membership
from bot.services.releases import ReleaseService
from bot.services.scheduler import ESCALATION, FREEZE_EDGE, PRELAUNCH, REMINDER, REMINDER_ANSWERED, Scheduler
from bot.services.signing import Signing
from bot.slack import reminders
from bot.slack.blocks import ACTION_APPROVE, ACTION_REJECT, ACTION_SNOOZE
from bot.slack.renderers import RENDERERS
from bot.slack.zones import SlackZones
from bot.store import keys
from bot.store.schedule import ScheduleStore
from bot.store.store import AuditEvent, Store
from tests.bot_harness import write_gate
from tests.delivery_kit import Road, until
from tests.fault_proxy import FaultProxy

reminders.register(RENDERERS)

RID = "payments@1.4.0"
SHA = "abc1234"
# Thursday 10 Dec 2026, 10:00 UTC (11:00 in Madrid, 19:00 in Tokyo)
T0 = datetime(2026, 12, 10, 10, tzinfo=UTC)

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
signoffs:
  - {{role: sre, label: SRE, users: [U0SRE1, U0SRE2]}}
  - {{role: dev, label: Developer, users: [U0DEV]}}
reminders:
  every: 2h
  max: {max}
  timezone: UTC
{extra}
"""


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    users = {"U0TOKYO": {"tz": "Asia/Tokyo"}, "U0MADRID": {"tz": "Europe/Madrid"}}
    async with SlackStandIn(users=users) as server:
        yield server


class World:
    """A gate, its open release and as many scheduler replicas as asked, over one Redis."""

    def __init__(
        self, redis: aioredis.Redis, standin: SlackStandIn, session: aiohttp.ClientSession, gates: GateSet
    ) -> None:
        self.redis, self.standin, self.session, self.gates = redis, standin, session, gates
        self.clock = Clock()
        self.slack = AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=standin.api_url, session=session)
        self.store = Store(redis)
        self.releases = ReleaseService(
            store=self.store, gates=gates, session=session, env=dict(os.environ), clock=self.clock
        )
        self.membership = Membership(self.store, self.slack)

    def replica(
        self, zones: Callable[[str], object] | None = None, *, redis: aioredis.Redis | None = None
    ) -> Scheduler:
        """A scheduler replica; `redis`: its own connection (e.g. through a FaultProxy, to kill it)."""
        return Scheduler(
            releases=self.releases,
            store=ScheduleStore(redis or self.redis),
            members=self.membership.members,
            zones=zones or SlackZones(self.slack, self.redis),  # type: ignore[arg-type]
            clock=self.clock,
        )

    async def open(self, *, at: datetime = T0, target: datetime | None = None) -> Release:
        release = Release(
            id=RID,
            gate_id="payments",
            version="1.4.0",
            sha=SHA,
            opened_by="U0OPEN",
            opened_at=at,
            card_channel="C0DEPLOYS",
            card_ts="1700000000.000100",
            target_at=target,
        )
        await self.store.open_release(release, AuditEvent(type="opened", actor="U0OPEN", at=at))
        return release

    async def release(self) -> Release:
        found = await self.store.get_release(RID)
        assert found is not None
        return found

    async def set_state(self, state: State) -> None:
        current = await self.release()
        await self.store.update_release(
            current, current.model_copy(update={"state": state}), AuditEvent(type=state.value, actor="U0X", at=T0)
        )

    async def notices(self, kind: str | None = None) -> list[Notice]:
        raw = cast(list[tuple[str, dict[str, str]]], await self.redis.xrange(keys.outbox("payments")))
        found = [Notice.from_json(fields["notice"]) for _, fields in raw]
        return [n for n in found if kind is None or n.kind == kind]

    async def dm_counts(self) -> Counter[tuple[str, int]]:
        return Counter((str(n.target.channel), int(n.payload["number"])) for n in await self.notices(REMINDER))


def make_world(tmp_path: Path, extra: str = "", max_: int = 10) -> Callable[..., World]:
    gates = GateSet(write_gate(tmp_path / "gates", GATE.format(extra=extra, max=max_), "payments.yml").parent)

    def build(redis: aioredis.Redis, standin: SlackStandIn, session: aiohttp.ClientSession) -> World:
        return World(redis, standin, session, gates)

    return build


@pytest.fixture
async def world(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> World:
    return make_world(tmp_path)(redis_client, standin, http_session)


# --- reminders to missing signers ----------------------------------------------------------------


async def test_every_missing_signer_gets_one_dm_with_the_cards_buttons(world: World) -> None:
    await world.open()
    scheduler = world.replica()
    tick = await scheduler.reminders_tick("payments")
    assert sorted(tick.claimed) == ["remind|dev|U0DEV|1", "remind|sre|U0SRE1|1", "remind|sre|U0SRE2|1"]
    assert (await scheduler.reminders_tick("payments")).claimed == []  # the same minute: nothing new
    dms = await world.notices(REMINDER)
    assert sorted(str(n.target.channel) for n in dms) == ["U0DEV", "U0SRE1", "U0SRE2"]
    message = RENDERERS.render(next(n for n in dms if n.target.channel == "U0SRE1"))
    text = json.dumps(message.blocks)
    assert "waiting for your sign-off as *SRE*" in text
    assert "NO-GO" in text and "https://slack.com/archives/C0DEPLOYS/p1700000000000100" in text
    buttons = [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]]
    by_action = {b["action_id"]: b["value"] for b in buttons}
    # The card's own buttons: same action ids and value, so the same handlers and commit binding.
    assert by_action[ACTION_APPROVE] == by_action[ACTION_REJECT] == f"{RID}|sre|{SHA}"
    assert [b["value"] for b in buttons if b["action_id"] == ACTION_SNOOZE] == [
        f"{RID}|1h",
        f"{RID}|4h",
        f"{RID}|morning",
    ]


async def test_reminders_repeat_every_interval_up_to_max(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    world = make_world(tmp_path, max_=3)(redis_client, standin, http_session)
    await world.open()
    scheduler = world.replica()
    for minutes in range(0, 12 * 60, 30):
        world.clock.now = T0 + timedelta(minutes=minutes)
        await scheduler.reminders_tick("payments")
    counts = await world.dm_counts()
    assert sorted(n for (user, n) in counts if user == "U0DEV") == [1, 2, 3]  # max 3, 2h apart
    at = [n.created_at for n in await world.notices(REMINDER) if n.target.channel == "U0DEV"]
    assert at == [T0, T0 + timedelta(hours=2), T0 + timedelta(hours=4)]


async def test_no_dm_outside_the_signers_own_working_hours_across_dst(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    extra = "  working_hours: '09:00-18:00'\n  quiet_days: [sat, sun]"
    gate = GATE.replace("users: [U0SRE1, U0SRE2]", "users: [U0TOKYO, U0MADRID]").replace(
        "  - {{role: dev, label: Developer, users: [U0DEV]}}\n", ""
    )
    gates = GateSet(write_gate(tmp_path / "gates", gate.format(extra=extra, max=10), "payments.yml").parent)
    world = World(redis_client, standin, http_session, gates)
    # Friday 23 Oct 2026 16:30 UTC: 18:30 CEST in Madrid (after hours), 01:30 JST Saturday in Tokyo.
    opened = datetime(2026, 10, 23, 16, 30, tzinfo=UTC)
    await world.open(at=opened)
    scheduler = world.replica()

    async def tick_at(at: datetime) -> list[str]:
        world.clock.now = at
        return [u for u in (await scheduler.reminders_tick("payments")).claimed if u.endswith("|1")]

    assert await tick_at(opened) == []
    assert await tick_at(datetime(2026, 10, 24, 12, tzinfo=UTC)) == []  # Saturday: quiet for both
    # Clocks went back in Madrid on Sunday 25 Oct. Monday 09:00 JST is Sunday 24:00 UTC.
    assert await tick_at(datetime(2026, 10, 25, 23, 59, tzinfo=UTC)) == []
    assert await tick_at(datetime(2026, 10, 26, 0, 0, tzinfo=UTC)) == ["remind|sre|U0TOKYO|1"]
    # Madrid's Monday 09:00 is 08:00 UTC now (CET); with summer time it would have been 07:00.
    assert await tick_at(datetime(2026, 10, 26, 7, 0, tzinfo=UTC)) == []
    assert await tick_at(datetime(2026, 10, 26, 7, 59, tzinfo=UTC)) == []
    assert await tick_at(datetime(2026, 10, 26, 8, 0, tzinfo=UTC)) == ["remind|sre|U0MADRID|1"]
    assert await redis_client.get(keys.user_zone("U0TOKYO")) == "Asia/Tokyo"  # users.info, cached
    assert len(standin.calls("users.info")) == 2


async def test_snooze_holds_reminders_to_that_person_until_it_ends(world: World) -> None:
    await world.open()
    scheduler = world.replica()
    await scheduler.reminders_tick("payments")
    world.clock.now = T0 + timedelta(minutes=30)
    until_at = await scheduler.snooze(RID, "U0DEV", "4h")
    assert until_at == T0 + timedelta(hours=4, minutes=30)
    for minutes in (120, 180, 269):
        world.clock.now = T0 + timedelta(minutes=minutes)
        claimed = (await scheduler.reminders_tick("payments")).claimed
        assert not [u for u in claimed if "U0DEV" in u]
    world.clock.now = T0 + timedelta(minutes=270)
    assert "remind|dev|U0DEV|2" in (await scheduler.reminders_tick("payments")).claimed


async def test_escalation_after_n_unanswered_reminders_then_at_most_daily(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    extra = "  escalate_after: 2\n  escalate_to: C0ESCAL"
    world = make_world(tmp_path, extra=extra)(redis_client, standin, http_session)
    await world.open()
    scheduler = world.replica()
    for minutes in range(0, 30 * 60, 15):
        world.clock.now = T0 + timedelta(minutes=minutes)
        await scheduler.reminders_tick("payments")
    escalations = await world.notices(ESCALATION)
    by_role = Counter((n.payload["role"], n.payload["number"]) for n in escalations)
    assert by_role == {("sre", 1): 1, ("dev", 1): 1, ("sre", 2): 1, ("dev", 2): 1}
    first = [n for n in escalations if n.payload["role"] == "sre"]
    assert [n.created_at for n in first] == [T0 + timedelta(hours=2), T0 + timedelta(hours=26)]
    assert {n.target.channel for n in escalations} == {"C0ESCAL"}
    assert first[0].payload["asked"] == ["U0SRE1", "U0SRE2"]
    text = json.dumps(RENDERERS.render(first[0]).blocks)
    assert "after 2 reminders" in text and "<@U0SRE1>, <@U0SRE2>" in text


async def test_escalation_counting_restarts_when_the_quorum_is_met_then_lost_again(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    extra = "  escalate_after: 2\n  escalate_to: C0ESCAL"
    world = make_world(tmp_path, extra=extra)(redis_client, standin, http_session)
    await world.open()
    scheduler = world.replica()
    signing = Signing(world.releases, world.membership, store=world.store, gates=world.gates, clock=world.clock)

    async def sre_escalations_until(hours: float) -> list[Notice]:
        while world.clock.now < T0 + timedelta(hours=hours):
            await scheduler.reminders_tick("payments")
            world.clock.now += timedelta(minutes=15)
        return [n for n in await world.notices(ESCALATION) if n.payload["role"] == "sre"]

    assert len(await sre_escalations_until(2.5)) == 1  # after reminders 1 and 2
    await signing.vote(RID, "sre", "U0SRE1", Vote.APPROVE, drawn_for=SHA)  # quorum met: the ask is over
    assert len(await sre_escalations_until(3)) == 1
    current = await world.release()  # the sign-off goes stale: a new ask of the sre role
    await world.store.update_release(
        current, current.model_copy(update={"sha": "def5678"}), AuditEvent(type="sha_moved", actor="U0X", at=T0)
    )
    assert len(await sre_escalations_until(5.5)) == 1  # one reminder of the new ask (at 4h): not yet
    second = (await sre_escalations_until(6.5))[1:]  # its second (at 6h): escalated again, not a day later
    assert [(n.payload["number"], n.payload["reminders"], n.created_at) for n in second] == [
        (2, 2, T0 + timedelta(hours=6))
    ]


async def test_escalation_to_a_role_dms_its_members(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    world = make_world(tmp_path, extra="  escalate_after: 1\n  escalate_to: sre")(redis_client, standin, http_session)
    await world.open()
    await world.replica().reminders_tick("payments")
    dev = [n for n in await world.notices(ESCALATION) if n.payload["role"] == "dev"]
    assert sorted(str(n.target.channel) for n in dev) == ["U0SRE1", "U0SRE2"]


async def test_an_overdue_condition_of_a_gate_without_stages_gets_its_owners_reminded(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    extra = "checks:\n  - {id: dashboards, name: Dashboards, kind: manual, owner: dev, due: 2026-12-09}"
    world = make_world(tmp_path, extra=extra)(redis_client, standin, http_session)
    assert not world.gates.get("payments").gate.stages
    await world.open()
    signing = Signing(world.releases, world.membership, store=world.store, gates=world.gates, clock=world.clock)
    await signing.vote(RID, "dev", "U0DEV", Vote.APPROVE, drawn_for=SHA)
    tick = await world.replica().reminders_tick("payments")
    assert "remind|due:dashboards|U0DEV|1" in tick.claimed  # signed, but owns an overdue item
    (dm,) = [n for n in await world.notices(REMINDER) if n.target.channel == "U0DEV"]
    assert (dm.payload["why"], dm.payload["condition"], dm.payload["due"]) == ("overdue", "Dashboards", "2026-12-09")
    await signing.mark_done(RID, "dashboards", "U0DEV", "https://grafana.example/d/payments")
    world.clock.now = T0 + timedelta(minutes=1)
    tick = await world.replica().reminders_tick("payments")
    assert tick.claimed == ["answered|due:dashboards|U0DEV|1"]


# --- stopping, and the DM updated --------------------------------------------------------------------


async def test_quorum_decide_and_close_stop_reminders_and_update_the_dms(world: World) -> None:
    await world.open()
    scheduler = world.replica()
    await scheduler.reminders_tick("payments")
    signing = Signing(world.releases, world.membership, store=world.store, gates=world.gates, clock=world.clock)
    await signing.vote(RID, "sre", "U0SRE1", Vote.APPROVE, drawn_for=SHA)
    world.clock.now = T0 + timedelta(minutes=1)
    tick = await scheduler.reminders_tick("payments")
    assert sorted(tick.claimed) == ["answered|sre|U0SRE1|1", "answered|sre|U0SRE2|1"]
    answered = {str(n.target.channel): n for n in await world.notices(REMINDER_ANSWERED)}
    assert answered["U0SRE1"].payload["why"] == "your sign-off as SRE is recorded"
    assert answered["U0SRE2"].payload["why"] == "the SRE sign-off is complete"
    assert answered["U0SRE2"].updates == next(
        n.key for n in await world.notices(REMINDER) if n.target.channel == "U0SRE2"
    )
    world.clock.now = T0 + timedelta(hours=3)
    assert (await scheduler.reminders_tick("payments")).claimed == ["remind|dev|U0DEV|2"]  # sre: never again
    await world.set_state(State.DECIDED)
    world.clock.now = T0 + timedelta(hours=6)
    assert (await scheduler.reminders_tick("payments")).claimed == ["answered|dev|U0DEV|2"]
    (dev,) = [n for n in await world.notices(REMINDER_ANSWERED) if n.target.channel == "U0DEV"]
    assert dev.payload["why"].startswith(f"{RID} was decided")
    world.clock.now = T0 + timedelta(hours=12)
    assert (await scheduler.reminders_tick("payments")).claimed == []


async def test_closing_the_release_updates_the_open_dms(world: World) -> None:
    await world.open()
    scheduler = world.replica()
    await scheduler.reminders_tick("payments")
    await world.set_state(State.CLOSED)
    await world.redis.delete(keys.open_release("payments"))
    tick = await scheduler.reminders_tick("payments")
    assert len(tick.claimed) == 3 and all(u.startswith("answered|") for u in tick.claimed)
    assert {n.payload["why"] for n in await world.notices(REMINDER_ANSWERED)} == {f"{RID} is closed"}


async def test_a_stale_sign_off_gets_its_signer_a_dm(world: World) -> None:
    await world.open()
    scheduler = world.replica()
    signing = Signing(world.releases, world.membership, store=world.store, gates=world.gates, clock=world.clock)
    await signing.vote(RID, "dev", "U0DEV", Vote.APPROVE, drawn_for=SHA)
    assert "remind|dev|U0DEV|1" not in (await scheduler.reminders_tick("payments")).claimed
    current = await world.release()
    await world.store.update_release(
        current, current.model_copy(update={"sha": "def5678"}), AuditEvent(type="sha_moved", actor="U0X", at=T0)
    )
    world.clock.now = T0 + timedelta(minutes=1)
    assert "remind|dev|U0DEV|1" in (await scheduler.reminders_tick("payments")).claimed
    (dm,) = [n for n in await world.notices(REMINDER) if n.target.channel == "U0DEV"]
    assert dm.payload["why"] == "stale" and dm.payload["sha"] == "def5678"
    assert "went stale" in RENDERERS.render(dm).text


# --- exactly once across replicas, kills and restarts -------------------------------------------------


async def test_three_replicas_send_exactly_one_dm_per_person_per_slot(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    world = make_world(tmp_path, max_=20)(redis_client, standin, http_session)
    await world.open()
    replicas = [world.replica() for _ in range(3)]
    for minutes in range(0, 40 * 60, 20):
        world.clock.now = T0 + timedelta(minutes=minutes)
        await asyncio.gather(*(r.reminders_tick("payments") for r in replicas))
    counts = await world.dm_counts()
    assert set(counts.values()) == {1}  # no duplicate
    for user in ("U0SRE1", "U0SRE2", "U0DEV"):
        assert sorted(n for (u, n) in counts if u == user) == list(range(1, 21))  # none missing


async def test_a_replica_killed_mid_tick_leaves_the_rest_to_another(world: World) -> None:
    await world.open()
    stuck = asyncio.Event()

    async def hangs_on_the_second(user: str) -> str | None:
        if user == "U0DEV":  # the sre members were done first; the kill comes before dev's claim
            stuck.set()
            await asyncio.Event().wait()
        return None

    doomed = asyncio.create_task(world.replica(hangs_on_the_second).reminders_tick("payments"))
    await until(stuck.is_set)
    doomed.cancel()
    await asyncio.gather(doomed, return_exceptions=True)
    assert sorted(await world.dm_counts()) == [("U0SRE1", 1), ("U0SRE2", 1)]
    tick = await world.replica().reminders_tick("payments")
    assert tick.claimed == ["remind|dev|U0DEV|1"] and len(tick.taken) == 0
    assert set((await world.dm_counts()).values()) == {1}


async def test_a_claim_refused_because_the_release_moved_is_retried_within_the_same_tick(world: World) -> None:
    await world.open()
    moved = asyncio.Event()

    async def card_stored_meanwhile(user: str) -> str | None:
        if not moved.is_set():  # between the tick's read of the release and its first claim
            moved.set()
            current = await world.release()
            relocated = current.model_copy(update={"card_ts": "1700000000.000200"})
            await world.store.update_release(current, relocated, AuditEvent(type="card", actor="gonogo", at=T0))
        return None

    tick = await world.replica(card_stored_meanwhile).reminders_tick("payments")
    assert moved.is_set()
    assert sorted(tick.claimed) == ["remind|dev|U0DEV|1", "remind|sre|U0SRE1|1", "remind|sre|U0SRE2|1"]
    assert tick.moved == []
    assert {n.payload["card"] for n in await world.notices(REMINDER)} == {
        "https://slack.com/archives/C0DEPLOYS/p1700000000000200"  # decided on the fresh read
    }


async def test_after_a_restart_the_next_reminder_is_on_time_and_none_repeats(world: World) -> None:
    await world.open()
    await world.replica().reminders_tick("payments")
    world.clock.now = T0 + timedelta(hours=1, minutes=59)
    assert (await world.replica().reminders_tick("payments")).claimed == []  # a fresh process: nothing yet
    world.clock.now = T0 + timedelta(hours=2)
    restarted = world.replica()
    assert len((await restarted.reminders_tick("payments")).claimed) == 3
    assert set((await world.dm_counts()).values()) == {1}


# --- delivered: the DM through the deliverer, its buttons, and its update -----------------------------


async def test_dm_delivered_and_updated_when_answered(world: World) -> None:
    await world.open()
    scheduler = world.replica()
    road = Road(world.redis, world.standin, world.session).start()
    try:
        await scheduler.reminders_tick("payments")
        dm_channel = world.standin.dm_channel("U0DEV")
        (dm,) = await until(lambda: world.standin.messages(dm_channel))
        assert "waiting for your sign-off as Developer" in dm["text"]
        signing = Signing(world.releases, world.membership, store=world.store, gates=world.gates, clock=world.clock)
        await signing.vote(RID, "dev", "U0DEV", Vote.APPROVE, drawn_for=SHA)
        await scheduler.reminders_tick("payments")
        await until(lambda: "edited" in dm)
        assert dm["text"].startswith("✅") and "your sign-off as Developer is recorded" in dm["text"]
        assert not [b for b in dm["blocks"] if b["type"] == "actions"]  # no dead buttons left behind
        assert len(world.standin.messages(dm_channel)) == 1
    finally:
        await road.kill()


# --- freeze announcements and pre-launch posts ---------------------------------------------------------


async def test_freeze_start_and_end_announced_once(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    extra = (
        "windows:\n  timezone: Europe/Madrid\n  freeze:\n"
        "    - {from: 2026-12-20, to: 2027-01-04, reason: holiday freeze}"
    )
    world = make_world(tmp_path, extra=extra)(redis_client, standin, http_session)
    replicas = [world.replica() for _ in range(3)]
    start = datetime(2026, 12, 19, 22, tzinfo=UTC)
    for hours in range(0, 16 * 24, 1):
        world.clock.now = start + timedelta(hours=hours)
        await asyncio.gather(*(r.windows_tick("payments") for r in replicas))
    posts = await world.notices(FREEZE_EDGE)
    assert [(n.payload["starts"], n.created_at) for n in posts] == [
        (True, datetime(2026, 12, 19, 23, tzinfo=UTC)),  # midnight in Madrid
        (False, datetime(2027, 1, 3, 23, tzinfo=UTC)),
    ]
    assert {n.target.channel for n in posts} == {"C0DEPLOYS"}
    assert "holiday freeze" in RENDERERS.render(posts[0]).text


async def test_prelaunch_posts_24h_and_1h_before_the_target(world: World) -> None:
    target = T0 + timedelta(days=2)
    await world.open(target=target)
    replicas = [world.replica() for _ in range(2)]
    claimed: list[tuple[datetime, list[str]]] = []
    for minutes in range(0, 48 * 60 + 60, 30):
        world.clock.now = T0 + timedelta(minutes=minutes)
        for tick in await asyncio.gather(*(r.prelaunch_tick("payments") for r in replicas)):
            if tick.claimed:
                claimed.append((world.clock.now, tick.claimed))
    assert claimed == [
        (target - timedelta(hours=24), ["prelaunch|24h"]),
        (target - timedelta(hours=1), ["prelaunch|1h"]),
    ]
    posts = await world.notices(PRELAUNCH)
    assert [p.payload["before"] for p in posts] == ["24h", "1h"]
    text = json.dumps(RENDERERS.render(posts[1]).blocks)
    assert "ships in 1h" in text and "NO-GO" in text


async def test_prelaunch_posts_follow_a_changed_target_without_repeating_an_offset(world: World) -> None:
    target = T0 + timedelta(days=2)
    await world.open(target=target)
    replicas = [world.replica() for _ in range(2)]
    claimed: list[tuple[timedelta, list[str]]] = []

    async def retarget(to: datetime) -> None:
        current = await world.release()
        moved = current.model_copy(update={"target_at": to})
        await world.store.update_release(current, moved, AuditEvent(type="target_set", actor="U0OPEN", at=T0))

    for minutes in range(0, 5 * 24 * 60, 30):
        world.clock.now = T0 + timedelta(minutes=minutes)
        if world.clock.now == target - timedelta(hours=23):
            await retarget(target + timedelta(minutes=30))  # a small adjustment: 24h is not repeated
        if world.clock.now == target - timedelta(hours=20):
            await retarget(target + timedelta(days=2))  # postponed: 24h before the new time again
        for tick in await asyncio.gather(*(r.prelaunch_tick("payments") for r in replicas)):
            if tick.claimed:
                claimed.append((world.clock.now - T0, tick.claimed))
    later = T0 + timedelta(days=4)
    assert claimed == [
        (timedelta(days=1), ["prelaunch|24h"]),
        (later - timedelta(hours=24) - T0, [f"prelaunch|24h|{later.isoformat()}"]),
        (later - timedelta(hours=1) - T0, ["prelaunch|1h"]),
    ]
    posts = await world.notices(PRELAUNCH)
    assert [p.payload["target"] for p in posts] == ["Sat 12 Dec 10:00 UTC"] + ["Mon 14 Dec 10:00 UTC"] * 2


# --- scheduled re-checks and post-deploy verification --------------------------------------------------

CHECKED = """
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - id: health
    kind: command
    run: ["{py}", "-c", "import pathlib, sys; sys.exit(int(pathlib.Path('{flag}').read_text()))"]
{extra}
"""


def checked_world(
    tmp_path: Path, redis: aioredis.Redis, standin: SlackStandIn, session: aiohttp.ClientSession, extra: str
) -> tuple[World, Path]:
    import sys

    flag = tmp_path / "flag"
    flag.write_text("0")
    text = CHECKED.format(py=sys.executable, flag=flag, extra=extra)
    gates = GateSet(write_gate(tmp_path / "gates", text, "payments.yml").parent)
    return World(redis, standin, session, gates), flag


async def test_recheck_runs_each_slot_once_and_posts_only_when_the_verdict_changes(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    world, flag = checked_world(tmp_path, redis_client, standin, http_session, "recheck: {every: 15m}")
    await world.open()
    replicas = [world.replica() for _ in range(3)]
    for minutes in (5, 15, 20, 30, 44, 45):
        if minutes == 45:
            flag.write_text("1")
        world.clock.now = T0 + timedelta(minutes=minutes)
        await asyncio.gather(*(r.recheck_tick("payments") for r in replicas))
    runs = await world.store.runs(RID, count=10)
    assert len(runs) == 3  # slots 1, 2, 3: each once across three replicas
    changes = await world.notices("recheck_changed")
    assert [(n.payload["slot"], n.payload["before"], n.payload["after"]) for n in changes] == [
        (1, "NO-GO", "GO"),
        (3, "GO", "NO-GO"),
    ]
    assert all(n.target.card_thread for n in changes)


@contextlib.asynccontextmanager
async def doomed_replica(world: World, redis_url: str) -> AsyncIterator[tuple[Scheduler, FaultProxy]]:
    """A replica whose Redis connection goes through a FaultProxy, so a test can kill it just
    before (cut_before) or just after (lose_answer_after) one of its claims."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with FaultProxy(port) as proxy:
        client = aioredis.Redis.from_url(proxy.url, decode_responses=True)
        try:
            yield world.replica(redis=client), proxy
        finally:
            await client.aclose(close_connection_pool=True)


async def kill_when(task: asyncio.Task[object], event: asyncio.Event) -> None:
    await until(event.is_set)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_recheck_killed_between_the_run_and_its_post_the_post_still_comes_once(
    tmp_path: Path,
    redis_url: str,
    redis_client: aioredis.Redis,
    standin: SlackStandIn,
    http_session: aiohttp.ClientSession,
) -> None:
    world, _flag = checked_world(tmp_path, redis_client, standin, http_session, "recheck: {every: 15m}")
    await world.open()
    world.clock.now = T0 + timedelta(minutes=15)
    async with doomed_replica(world, redis_url) as (doomed, proxy):
        proxy.cut_before(b"recheck-settled|1")  # the run is recorded, then the replica dies
        await kill_when(asyncio.create_task(doomed.recheck_tick("payments")), proxy.cut)
    assert len(await world.store.runs(RID)) == 1 and await world.notices("recheck_changed") == []
    world.clock.now = T0 + timedelta(minutes=16)
    replicas = [world.replica() for _ in range(2)]
    await asyncio.gather(*(r.recheck_tick("payments") for r in replicas))
    (changed,) = await world.notices("recheck_changed")
    assert (changed.payload["slot"], changed.payload["before"], changed.payload["after"]) == (1, "NO-GO", "GO")
    assert len(await world.store.runs(RID)) == 1  # settled from the dead replica's run, not run again


async def test_recheck_claimed_by_a_replica_that_died_is_run_by_another(
    tmp_path: Path,
    redis_url: str,
    redis_client: aioredis.Redis,
    standin: SlackStandIn,
    http_session: aiohttp.ClientSession,
) -> None:
    world, _flag = checked_world(tmp_path, redis_client, standin, http_session, "recheck: {every: 15m}")
    await world.open()
    world.clock.now = T0 + timedelta(minutes=15)
    async with doomed_replica(world, redis_url) as (doomed, proxy):
        proxy.lose_answer_after(b"recheck|1")  # the slot is claimed, then the replica dies
        await kill_when(asyncio.create_task(doomed.recheck_tick("payments")), proxy.lost)
    survivor = world.replica()
    assert (await survivor.recheck_tick("payments")).claimed == []  # its claimer may still be starting it
    assert await world.store.runs(RID) == []
    world.clock.now = T0 + timedelta(minutes=16)
    assert (await survivor.recheck_tick("payments")).claimed == ["recheck-settled|1"]
    assert len(await world.store.runs(RID)) == 1
    (changed,) = await world.notices("recheck_changed")
    assert (changed.payload["slot"], changed.payload["after"]) == (1, "GO")


@pytest.mark.parametrize("until_", ["decided", "closed"])
async def test_recheck_until_closed_keeps_checking_a_decided_release_without_changing_its_decision(
    tmp_path: Path,
    redis_client: aioredis.Redis,
    standin: SlackStandIn,
    http_session: aiohttp.ClientSession,
    until_: str,
) -> None:
    extra = f"recheck: {{every: 15m, until: {until_}}}"
    world, flag = checked_world(tmp_path, redis_client, standin, http_session, extra)
    await world.open()
    await decided_go(world)
    replicas = [world.replica() for _ in range(3)]
    for slot, failing in ((1, "0"), (2, "1"), (3, "1"), (4, "0")):
        flag.write_text(failing)
        world.clock.now = T0 + timedelta(minutes=15 * slot)
        await asyncio.gather(*(r.recheck_tick("payments") for r in replicas))
    changes = await world.notices("recheck_changed")
    after = await world.release()
    assert after.state is State.DECIDED and after.decided_verdict is Verdict.GO  # frozen
    assert await world.store.runs(RID) == [] and await world.store.results(RID) == {}  # no evidence stored
    if until_ == "decided":
        assert changes == [] and await ScheduleStore(world.redis).claimed(RID) == set()
        return
    assert [(n.payload["slot"], n.payload["before"], n.payload["after"]) for n in changes] == [
        (2, "GO", "NO-GO"),  # the first time the checks would decide otherwise
        (4, "NO-GO", "GO"),  # and when they would decide as decided again
    ]
    text = RENDERERS.render(changes[0]).text
    assert "would now say" in text and "NO-GO" in text and "The decision (GO) stands" in text
    assert len([u for u in await ScheduleStore(world.redis).claimed(RID) if u.startswith("recheck|")]) == 4


async def test_postdeploy_runs_the_checks_after_a_go_and_posts_the_summary_once(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    extra = "postdeploy: {every: 5m, for: 4h, checks: [health]}"
    world, _flag = checked_world(tmp_path, redis_client, standin, http_session, extra)
    await world.open()
    current = await world.release()
    decided = current.model_copy(update={"state": State.DECIDED, "decided_verdict": Verdict.GO, "decided_at": T0})
    await world.store.update_release(current, decided, AuditEvent(type="decided", actor="U0X", at=T0))
    replicas = [world.replica() for _ in range(2)]
    for slot in range(1, 50):
        world.clock.now = T0 + timedelta(minutes=5 * slot)
        await asyncio.gather(*(r.postdeploy_tick("payments") for r in replicas))
    (summary,) = await world.notices("postdeploy_summary")
    assert summary.target.channel == "C0DEPLOYS"
    assert "4h post-deploy verification passed: 48/48 runs green" in RENDERERS.render(summary).text
    assert await world.notices("postdeploy_failed") == []


async def test_postdeploy_posts_a_failure_and_a_summary_that_says_so(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    extra = "postdeploy: {every: 5m, for: 20m, checks: [health]}"
    world, flag = checked_world(tmp_path, redis_client, standin, http_session, extra)
    await world.open()
    current = await world.release()
    decided = current.model_copy(update={"state": State.DECIDED, "decided_verdict": Verdict.GO, "decided_at": T0})
    await world.store.update_release(current, decided, AuditEvent(type="decided", actor="U0X", at=T0))
    scheduler = world.replica()
    for slot in range(1, 6):
        flag.write_text("1" if slot == 2 else "0")
        world.clock.now = T0 + timedelta(minutes=5 * slot)
        await scheduler.postdeploy_tick("payments")
    (failed,) = await world.notices("postdeploy_failed")
    assert failed.payload["slot"] == 2 and failed.payload["failed"] == ["health"]
    (summary,) = await world.notices("postdeploy_summary")
    assert "20m post-deploy verification ended: 3/4 runs green" in RENDERERS.render(summary).text


async def decided_go(world: World) -> None:
    current = await world.release()
    decided = current.model_copy(update={"state": State.DECIDED, "decided_verdict": Verdict.GO, "decided_at": T0})
    await world.store.update_release(current, decided, AuditEvent(type="decided", actor="U0X", at=T0))


async def test_postdeploy_slot_claimed_by_a_replica_that_died_is_run_by_another_and_counted(
    tmp_path: Path,
    redis_url: str,
    redis_client: aioredis.Redis,
    standin: SlackStandIn,
    http_session: aiohttp.ClientSession,
) -> None:
    extra = "postdeploy: {every: 5m, for: 30m, checks: [health]}"
    world, _flag = checked_world(tmp_path, redis_client, standin, http_session, extra)
    await world.open()
    await decided_go(world)
    survivor = world.replica()
    for slot in range(1, 8):
        world.clock.now = T0 + timedelta(minutes=5 * slot)
        if slot in (3, 6):  # the claim of slot 3 (and of the last, 6) lands, then its replica dies
            async with doomed_replica(world, redis_url) as (doomed, proxy):
                proxy.lose_answer_after(f"postdeploy|{slot}".encode())
                await kill_when(asyncio.create_task(doomed.postdeploy_tick("payments")), proxy.lost)
        tick = await survivor.postdeploy_tick("payments")
        if slot == 6:
            assert tick.claimed == []  # the last slot is someone's: no summary while it may still run
    world.clock.now = T0 + timedelta(minutes=45)
    assert (await survivor.postdeploy_tick("payments")).claimed == [
        "postdeploy|6|try2",
        "postdeploy-done|6",
        "postdeploy|summary",
    ]
    (summary,) = await world.notices("postdeploy_summary")
    assert "30m post-deploy verification passed: 6/6 runs green" in RENDERERS.render(summary).text


async def test_postdeploy_slot_never_run_after_its_takeovers_is_counted_as_missed(
    tmp_path: Path,
    redis_url: str,
    redis_client: aioredis.Redis,
    standin: SlackStandIn,
    http_session: aiohttp.ClientSession,
) -> None:
    extra = "postdeploy: {every: 5m, for: 10m, checks: [health]}"
    world, _flag = checked_world(tmp_path, redis_client, standin, http_session, extra)
    await world.open()
    await decided_go(world)
    world.clock.now = T0 + timedelta(minutes=5)
    await world.replica().postdeploy_tick("payments")
    for attempt, minutes in enumerate((10, 20, 30), start=1):  # slot 2 and both of its takeovers die
        world.clock.now = T0 + timedelta(minutes=minutes)
        async with doomed_replica(world, redis_url) as (doomed, proxy):
            proxy.lose_answer_after(b"postdeploy|2" if attempt == 1 else f"postdeploy|2|try{attempt}".encode())
            await kill_when(asyncio.create_task(doomed.postdeploy_tick("payments")), proxy.lost)
    world.clock.now = T0 + timedelta(minutes=40)
    tick = await world.replica().postdeploy_tick("payments")
    assert tick.claimed == ["postdeploy-lost|2", "postdeploy|summary"]
    (summary,) = await world.notices("postdeploy_summary")
    assert "10m post-deploy verification ended: 1/1 runs green, 1 slot(s) missed" in RENDERERS.render(summary).text


async def test_jobs_have_fixed_ids_from_the_gates_and_a_tick_claims(world: World) -> None:
    from bot.scheduling import Jobs, job_specs, run_job

    await world.open()
    scheduler = world.replica()
    jobs = Jobs(scheduler)
    assert jobs.sync() == ["prelaunch:payments", "reminders:payments", "runs:payments"]
    assert jobs.sync() == ["prelaunch:payments", "reminders:payments", "runs:payments"]  # again (SIGHUP): not doubled
    assert sorted(j.id for j in jobs.aps.get_jobs()) == ["prelaunch:payments", "reminders:payments", "runs:payments"]
    (reminding,) = [s for s in job_specs(scheduler, jobs.gates()) if s.id == "reminders:payments"]
    await run_job(reminding)
    assert len(await world.dm_counts()) == 3


async def test_max_counts_per_person_across_roles_and_a_removed_member_is_told(
    tmp_path: Path, redis_client: aioredis.Redis, standin: SlackStandIn, http_session: aiohttp.ClientSession
) -> None:
    world = make_world(tmp_path, max_=3)(redis_client, standin, http_session)
    path = tmp_path / "gates" / "payments.yml"
    path.write_text(path.read_text().replace("users: [U0DEV]", "users: [U0DEV, U0SRE1]"))
    world.gates.reload()
    await world.open()
    scheduler = world.replica()
    for minutes in range(0, 12 * 60, 30):
        world.clock.now = T0 + timedelta(minutes=minutes)
        await scheduler.reminders_tick("payments")
    counts = await world.dm_counts()
    assert sum(n for (user, _), n in counts.items() if user == "U0SRE1") == 3  # two roles, one max
    assert sum(n for (user, _), n in counts.items() if user == "U0SRE2") == 3
    # U0SRE2 leaves the role: their open DM says they are no longer asked.
    path.write_text(path.read_text().replace("users: [U0SRE1, U0SRE2]", "users: [U0SRE1]"))
    world.gates.reload()
    tick = await scheduler.reminders_tick("payments")
    assert tick.claimed == ["answered|sre|U0SRE2|3"]
    (note,) = await world.notices(REMINDER_ANSWERED)
    assert note.payload["why"] == "you are no longer asked to sign as SRE"
