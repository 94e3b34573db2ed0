"""The `tcp` check against real sockets: a listener, a closed port, an unresolvable name, no route."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.core.results import Status
from checks.base import CheckContext
from checks.tcp import Spec, run, target


def spec(**fields: Any) -> Spec:
    return Spec.model_validate({"id": "port", **fields})


@pytest.fixture
def ctx(http_session: aiohttp.ClientSession) -> CheckContext:
    return CheckContext(session=http_session, env={})


class Listener:
    """A real server on a free port that records the connections it saw end."""

    def __init__(self) -> None:
        self.closed_by_peer = asyncio.Event()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await reader.read() == b"":  # EOF: the check closed its side
            self.closed_by_peer.set()
        writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    state = Listener()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


def closed_port() -> int:
    """A port nothing listens on: bound once (so it is free), then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_listening_port_passes_with_the_connect_time(ctx: CheckContext, listener: Listener) -> None:
    outcome = await run(spec(host="127.0.0.1", port=listener.port), ctx)
    assert outcome.status is Status.PASS
    assert re.fullmatch(rf"127\.0\.0\.1:{listener.port} accepted in \d+ ms", outcome.summary)
    assert outcome.value is not None and 0 <= outcome.value < 1


async def test_the_connection_is_closed_after_the_check(ctx: CheckContext, listener: Listener) -> None:
    await run(spec(host="127.0.0.1", port=listener.port), ctx)
    await asyncio.wait_for(listener.closed_by_peer.wait(), 2)


async def test_a_host_name_is_resolved(ctx: CheckContext, listener: Listener) -> None:
    outcome = await run(spec(host="localhost", port=listener.port), ctx)
    assert outcome.status is Status.PASS, outcome.summary
    assert outcome.summary.startswith(f"localhost:{listener.port} accepted in ")


async def test_a_closed_port_fails_as_refused(ctx: CheckContext) -> None:
    port = closed_port()
    outcome = await run(spec(host="127.0.0.1", port=port), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary == f"127.0.0.1:{port}: connection refused"


async def test_an_unresolvable_name_fails_with_the_reason(ctx: CheckContext) -> None:
    # .invalid never resolves (RFC 2606). Offline the resolver answers at once; should a resolver
    # sit on it instead, the check's own timeout still makes it a clean FAIL.
    outcome = await run(spec(host="gonogo-test.invalid", port=443, timeout="2s"), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary.startswith(("gonogo-test.invalid:443: cannot resolve gonogo-test.invalid (", "no answer"))


async def test_no_answer_within_the_timeout_fails(ctx: CheckContext) -> None:
    # 192.0.2.1 is TEST-NET-1: never routed. Depending on the machine the SYN goes unanswered
    # (timeout) or there is no route at all; either way a FAIL, quickly.
    outcome = await run(spec(host="192.0.2.1", port=9, timeout="300ms"), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary.startswith(("no answer from 192.0.2.1:9 within 300ms", "192.0.2.1:9: "))
    assert outcome.duration_s < 2


@pytest.mark.parametrize(
    ("host", "port", "shown"),
    [("db.internal", 5432, "db.internal:5432"), ("10.0.0.7", 6379, "10.0.0.7:6379"), ("::1", 6379, "[::1]:6379")],
)
def test_target_brackets_ipv6_addresses(host: str, port: int, shown: str) -> None:
    assert target(host, port) == shown
