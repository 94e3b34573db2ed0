"""A Slack user's time zone (users.info `tz`), cached in Redis: the scheduler's working hours are
the signer's own. Unknown (no tz, Slack unreachable) is None: the gate's timezone applies."""

from __future__ import annotations

import logging

import aiohttp
import redis.asyncio as aioredis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.store import keys

log = logging.getLogger("gonogo.zones")

ZONE_TTL_S = 24 * 3600
UNKNOWN_TTL_S = 3600  # retry a failed lookup within the hour, not on every tick


class SlackZones:
    def __init__(self, client: AsyncWebClient, redis: aioredis.Redis, ttl_s: int = ZONE_TTL_S) -> None:
        self.client = client
        self.redis = redis
        self.ttl_s = ttl_s

    async def __call__(self, user: str) -> str | None:
        cached = await self.redis.get(keys.user_zone(user))
        if cached is not None:
            return str(cached) or None
        try:
            response = await self.client.users_info(user=user)
            zone = str((response.get("user") or {}).get("tz") or "")
            ttl = self.ttl_s
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "users.info failed: using the gate's time zone", extra={"user": user, "error": type(exc).__name__}
            )
            zone, ttl = "", UNKNOWN_TTL_S
        await self.redis.set(keys.user_zone(user), zone, ex=ttl)
        return zone or None
