"""`gonogo notify` against a real local server: retries 5xx with backoff and a fresh signature each
time, stops at a 4xx, gives up on a dead address; field parsing and the secret file."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.core.errors import ConfigError
from bot.core.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from bot.notify import build_body, parse_fields, send, webhook_secret
from tests.redis_server import free_port

SECRET = "whsec-notify-test-secret"


class Server:
    """Answers with the queued statuses in order (202 once they run out), checking signatures."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.seen: list[tuple[bytes, str | None]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        problem = verify(
            SECRET, request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER), body, time.time()
        )
        self.seen.append((body, problem))
        status = self.statuses.pop(0) if self.statuses else 202
        event_id = json.loads(body)["id"]
        if status == 400:
            return web.json_response(
                {"ok": False, "error": "invalid event", "errors": [{"loc": "drill.status", "msg": "bad"}]}, status=400
            )
        return web.json_response({"ok": status < 300, "id": event_id, "duplicate": False}, status=status)


@pytest.fixture
async def server_url() -> AsyncIterator[tuple[str, Server]]:
    server = Server([])
    app = web.Application()
    app.router.add_post("/api/events", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/", server
    finally:
        await runner.cleanup()


BODY = build_body("deploy", {"release": "payments@1.4.0", "stage": "100%", "status": "started", "id": "dep-1"})


async def test_5xx_is_retried_with_the_same_id_until_accepted(server_url: tuple[str, Server]) -> None:
    url, server = server_url
    server.statuses = [500, 503]
    out, err = io.StringIO(), io.StringIO()
    outcome = await send(url, SECRET, BODY, retries=3, backoff_s=0.01, out=out, err=err)
    assert outcome.code == 0 and out.getvalue() == "accepted: dep-1\n"
    assert [problem for _, problem in server.seen] == [None, None, None]  # every attempt signed
    assert {json.loads(body)["id"] for body, _ in server.seen} == {"dep-1"}
    assert err.getvalue().count("retrying") == 2


async def test_4xx_is_final_and_prints_the_errors(server_url: tuple[str, Server]) -> None:
    url, server = server_url
    server.statuses = [400]
    err = io.StringIO()
    outcome = await send(url, SECRET, BODY, retries=3, backoff_s=0.01, out=io.StringIO(), err=err)
    assert outcome.code == 1 and len(server.seen) == 1
    assert "HTTP 400: invalid event" in err.getvalue() and "drill.status: bad" in err.getvalue()


async def test_gives_up_after_the_retries_on_a_dead_address() -> None:
    err = io.StringIO()
    outcome = await send(f"http://127.0.0.1:{free_port()}", SECRET, BODY, retries=2, backoff_s=0.01, err=err)
    assert outcome.code == 1 and "giving up after 3 attempts" in err.getvalue()


def test_fields_and_generated_ids() -> None:
    assert parse_fields(["--release", "p@1", "--stage=canary 1%", "--duration", "41"]) == {
        "release": "p@1",
        "stage": "canary 1%",
        "duration": 41,
    }
    with pytest.raises(ConfigError, match="--status needs a value"):
        parse_fields(["--status"])
    first = json.loads(
        build_body("drill", {"gate": "g", "drill": "d", "status": "passed", "duration": 1, "actor": "ci"})
    )
    second = json.loads(
        build_body("drill", {"gate": "g", "drill": "d", "status": "passed", "duration": 1, "actor": "ci"})
    )
    assert first["id"].startswith("drill-") and first["id"] != second["id"]
    with pytest.raises(ConfigError, match="unknown event type 'launch'"):
        build_body("launch", {})


def test_secret_from_env_or_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    assert webhook_secret({"GONOGO_WEBHOOK_SECRET": "from-env", "GONOGO_WEBHOOK_SECRET_FILE": str(path)}) == "from-env"
    assert webhook_secret({"GONOGO_WEBHOOK_SECRET_FILE": str(path)}) == "from-file"
    with pytest.raises(ConfigError, match="cannot read"):
        webhook_secret({"GONOGO_WEBHOOK_SECRET_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="set GONOGO_WEBHOOK_SECRET"):
        webhook_secret({})
