"""Role membership through Slack user groups: cached, and the last known list while Slack is down."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.gate import Signoff
from bot.playground.standin import SlackStandIn
from bot.services.membership import Membership
from bot.store import keys
from bot.store.store import Store

ROLE = Signoff(role="sre", users=["U1"], usergroup="S0SRE")


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(usergroups={"S0SRE": ["U2", "U3"]}) as server:
        yield server


@pytest.fixture
def membership(standin: SlackStandIn, redis_client: aioredis.Redis) -> Membership:
    client = AsyncWebClient(token=standin.bot_token, base_url=standin.api_url)
    return Membership(Store(redis_client), client)


async def test_members_are_users_plus_the_usergroup_cached(membership: Membership, standin: SlackStandIn) -> None:
    assert await membership.members(ROLE) == {"U1", "U2", "U3"}
    assert await membership.members(ROLE) == {"U1", "U2", "U3"}
    assert len(standin.calls("usergroups.users.list")) == 1  # the second answer came from the cache


async def test_slack_down_uses_the_last_known_members(
    membership: Membership, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await membership.members(ROLE)
    await redis_client.delete(keys.usergroup("S0SRE"))  # the short-lived cache expired
    standin.fail_next("usergroups.users.list", status=500, times=5)
    assert await membership.members(ROLE) == {"U1", "U2", "U3"}


async def test_unknown_group_and_no_history_fails_closed(membership: Membership, standin: SlackStandIn) -> None:
    role = Signoff(role="x", users=[], usergroup="S0NOPE")
    assert await membership.members(role) == frozenset()
