"""The sign-off service says what it changes in the change's own atomic step (issue 8): real Redis,
the services with a fake clock and no deliverer, so what a call leaves in the outbox is exactly what
its write wrote. The override-active announcement comes with the approval that completes the quorum
(once, however approvals race), and says when it passes a freeze (issue 9)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import aiohttp
import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.facts import Vote
from bot.core.gateset import GateSet
from bot.core.notices import Notice, Target
from bot.core.release import Release
from bot.core.signing_notices import OVERRIDE_ACTIVE, OVERRIDE_REQUEST, override_request, promotion
from bot.playground.standin import DEFAULT_BOT_TOKEN, SlackStandIn
from bot.services.membership import Membership
from bot.services.releases import ReleaseService
from bot.services.signing import Signing
from bot.slack.road import bot_renderers
from bot.store import keys
from bot.store.store import AuditEvent, Store
from tests.bot_harness import write_gate

RID = "payments@1.4.0"
SHA = "abc1234"
IN_FREEZE = datetime(2026, 12, 22, 10, tzinfo=UTC)

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
signoffs:
  - {role: sre, label: SRE, users: [U0SRE1, U0SRE2]}
  - {role: dev, label: Developer, users: [U0DEV]}
override:
  approvers: {sre: 2}
windows:
  timezone: Europe/Madrid
  freeze:
    - {from: 2026-12-20, to: 2027-01-04, reason: holiday freeze}
"""


@pytest.fixture
async def signing(tmp_path: Path, redis_client: aioredis.Redis, http_session: aiohttp.ClientSession) -> Signing:
    gates = GateSet(write_gate(tmp_path / "gates", GATE, "payments.yml").parent)
    store = Store(redis_client)

    def clock() -> datetime:
        return IN_FREEZE

    releases = ReleaseService(store=store, gates=gates, session=http_session, env=dict(os.environ), clock=clock)
    async with SlackStandIn() as standin:  # only for the client's sake: no role has a user group
        slack = AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=standin.api_url, session=http_session)
        release = Release(id=RID, gate_id="payments", version="1.4.0", sha=SHA, opened_by="U0DEV", opened_at=clock())
        await store.open_release(release, AuditEvent(type="opened", actor="U0DEV", at=clock()))
        return Signing(releases, Membership(store, slack), store=store, gates=gates, clock=clock)


async def queued(redis_client: aioredis.Redis) -> list[Notice]:
    raw = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.outbox("payments")))
    return [Notice.from_json(fields["notice"]) for _, fields in raw]


async def wanted(redis_client: aioredis.Redis) -> int:
    return int(await redis_client.hget(keys.card(RID), "wanted") or 0)


async def audit_types(redis_client: aioredis.Redis) -> list[str]:
    raw = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.audit(RID)))
    return [fields["type"] for _, fields in raw]


async def test_a_vote_and_its_withdrawal_mark_the_card_in_their_own_write(
    signing: Signing, redis_client: aioredis.Redis
) -> None:
    await signing.vote(RID, "sre", "U0SRE1", Vote.APPROVE, drawn_for=SHA)
    assert await wanted(redis_client) == 1
    await signing.vote(RID, "sre", "U0SRE1", Vote.APPROVE, drawn_for=SHA)  # a double click: no new revision
    assert await wanted(redis_client) == 1
    await signing.withdraw(RID, "sre", "U0SRE1")
    assert await wanted(redis_client) == 2
    assert await queued(redis_client) == []  # a vote says nothing but the card


async def test_racing_approvals_that_complete_the_quorum_announce_it_once_and_say_it_passes_the_freeze(
    signing: Signing, redis_client: aioredis.Redis
) -> None:
    await signing.request_override(RID, "U0DEV", "payments outage <!channel> hotfix")
    requests = await queued(redis_client)
    assert sorted(n.key.rsplit("|", 1)[1] for n in requests) == ["channel", "thread"]
    assert {n.kind for n in requests} == {OVERRIDE_REQUEST}
    request_id = str(requests[0].payload["request"])

    # The two SRE approvals race: together (and only together) they complete the quorum.
    outcomes = await asyncio.gather(
        signing.approve_override(RID, request_id, "sre", "U0SRE1"),
        signing.approve_override(RID, request_id, "sre", "U0SRE2"),
    )
    assert all(o.written for o in outcomes)
    active = [n for n in await queued(redis_client) if n.kind == OVERRIDE_ACTIVE]
    assert len(active) == 1
    assert (await audit_types(redis_client)).count("override_active") == 1
    assert await wanted(redis_client) == 3  # the request and each approval moved the card

    (notice,) = active
    assert sorted(a["user"] for a in notice.payload["approvers"]) == ["U0SRE1", "U0SRE2"]
    freeze = "holiday freeze until Mon 4 Jan 00:00 CET (the break-glass override passes this freeze)"
    assert freeze in notice.payload["failing"]
    # Rendered by the deliverer's renderer: the freeze is said, the outside reason is escaped.
    message = bot_renderers().render(notice)
    assert "is GO (OVERRIDE)" in message.text
    shown = str(message.blocks)
    assert "the break-glass override passes this freeze" in shown
    assert "<!channel>" not in shown and "<!channel>" not in message.text


def test_the_request_and_promotion_renderers_escape_what_came_from_outside() -> None:
    renderers = bot_renderers()
    (request,) = override_request(
        "payments",
        RID,
        request_id="r1",
        requested_by="U0DEV",
        reason="<!channel> ship *now*",
        approvers=[("sre", "SRE", 2)],
        targets=[("channel", Target.to_channel("C0DEPLOYS"))],
        at=IN_FREEZE,
    )
    shown = renderers.render(request)
    assert "<!channel>" not in str(shown.blocks) + shown.text and "&lt;!channel&gt;" in shown.text
    assert f"{RID}|r1|sre" in str(shown.blocks)  # the Approve button names this request
    promoted = promotion(
        "payments", RID, "C0DEPLOYS", stage="Full <!here>", rev=3, actor="U0DEV", override=True, opened=2, at=IN_FREEZE
    )
    shown = renderers.render(promoted)
    assert "<!here>" not in str(shown.blocks) + shown.text
    assert "a break-glass override passed it" in str(shown.blocks)
