"""The `http` check against a real aiohttp server on a free port: status, JSON subset, headers,
latency, timeouts, connection errors, bearer tokens and TLS verification."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.core.results import Status
from checks.base import CheckContext
from checks.http import Spec, run

TOKEN = "s3cret-token-value"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Cross-Origin-Opener-Policy": "same-origin",
}


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "data": {"status": "up", "replicas": 3}, "version": "1.4.2"})


async def down(request: web.Request) -> web.Response:
    return web.Response(status=503, text="maintenance until 14:00")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "0.3")))
    return web.json_response({"ok": True})


async def bad_json(request: web.Request) -> web.Response:
    return web.Response(text='{"ok": true,', content_type="application/json")


async def secure(request: web.Request) -> web.Response:
    return web.Response(text="hello", headers=SECURITY_HEADERS)


async def private(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return web.Response(status=401, text="unauthorized")
    return web.json_response({"ok": True})


def app() -> web.Application:
    application = web.Application()
    application.router.add_get("/health", health)
    application.router.add_get("/down", down)
    application.router.add_get("/slow", slow)
    application.router.add_get("/bad-json", bad_json)
    application.router.add_get("/secure", secure)
    application.router.add_get("/private", private)
    return application


@dataclass(frozen=True)
class Server:
    base: str

    def url(self, path: str) -> str:
        return self.base + path


async def serve(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    # A short shutdown timeout: a /slow handler the check gave up on must not hold the teardown.
    runner = web.AppRunner(app(), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    scheme = "https" if ssl_context else "http"
    try:
        yield Server(f"{scheme}://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async for running in serve():
        yield running


@pytest.fixture
def ctx(http_session: aiohttp.ClientSession) -> CheckContext:
    return CheckContext(session=http_session, env={"SVC_TOKEN": TOKEN, "EMPTY_TOKEN": ""})


def spec(url: str, **fields: Any) -> Spec:
    return Spec.model_validate({"id": "svc", "url": url, **fields})


# --- status -------------------------------------------------------------------------------------


async def test_expected_status_passes_with_the_latency(ctx: CheckContext, server: Server) -> None:
    outcome = await run(spec(server.url("/health")), ctx)
    assert outcome.status is Status.PASS
    assert re.fullmatch(r"HTTP 200 from /health in \d+ ms", outcome.summary)
    assert outcome.value is not None and 0 < outcome.value < 1
    assert outcome.details == ""


async def test_unexpected_status_fails_and_shows_the_body(ctx: CheckContext, server: Server) -> None:
    outcome = await run(spec(server.url("/down")), ctx)
    assert outcome.status is Status.FAIL
    assert re.fullmatch(r"HTTP 503 from /down after \d+ ms \(expected 200\)", outcome.summary)
    assert "- status 503, expected 200" in outcome.details
    assert "maintenance until 14:00" in outcome.details


async def test_status_may_be_a_list(ctx: CheckContext, server: Server) -> None:
    assert (await run(spec(server.url("/down"), expect={"status": [200, 503]}), ctx)).status is Status.PASS
    outcome = await run(spec(server.url("/health"), expect={"status": [201, 204]}), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary.endswith("(expected one of 201, 204)")


# --- JSON ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subset",
    [
        {"ok": True},
        {"data.status": "up"},
        {"data": {"status": "up"}},
        {"ok": True, "data.status": "up", "data.replicas": 3, "version": "1.4.2"},
    ],
)
async def test_json_subset_passes(ctx: CheckContext, server: Server, subset: dict[str, Any]) -> None:
    outcome = await run(spec(server.url("/health"), expect={"json": subset}), ctx)
    assert outcome.status is Status.PASS, outcome.summary


@pytest.mark.parametrize(
    ("subset", "phrase"),
    [
        ({"data.status": "down"}, 'data.status is "up", expected "down"'),
        ({"data": {"status": "down"}}, 'data.status is "up", expected "down"'),
        ({"data.region": "eu"}, "data.region is missing"),
        ({"ok": 1}, "ok is true, expected 1"),  # JSON true is not the number 1
        ({"data.replicas": "3"}, 'data.replicas is 3, expected "3"'),
    ],
)
async def test_json_mismatch_is_named_in_the_summary(
    ctx: CheckContext, server: Server, subset: dict[str, Any], phrase: str
) -> None:
    outcome = await run(spec(server.url("/health"), expect={"json": subset}), ctx)
    assert outcome.status is Status.FAIL
    assert re.fullmatch(rf"HTTP 200 from /health after \d+ ms \({re.escape(phrase)}\)", outcome.summary)
    assert f"- JSON: {phrase}" in outcome.details


async def test_a_body_that_is_not_json_fails(ctx: CheckContext, server: Server) -> None:
    outcome = await run(spec(server.url("/bad-json"), expect={"json": {"ok": True}}), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary.endswith("(body is not JSON)")
    assert '{"ok": true,' in outcome.details


async def test_body_contains_is_a_regex(ctx: CheckContext, server: Server) -> None:
    assert (await run(spec(server.url("/secure"), expect={"body_contains": "^hel+o$"}), ctx)).status is Status.PASS
    outcome = await run(spec(server.url("/secure"), expect={"body_contains": "goodbye"}), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary.endswith("(body does not match /goodbye/)")


# --- headers ------------------------------------------------------------------------------------


async def test_header_rules_pass(ctx: CheckContext, server: Server) -> None:
    rules = {
        "Content-Security-Policy": "present",
        "content-security-policy": "re:frame-ancestors 'none'",  # header names are case-insensitive
        "Strict-Transport-Security": "max-age>=31536000",
        "Cross-Origin-Opener-Policy": "same-origin",
        "X-Powered-By": "absent",
        "Content-Type": "/^text/plain/",
    }
    outcome = await run(spec(server.url("/secure"), expect={"headers": rules}), ctx)
    assert outcome.status is Status.PASS, outcome.summary


@pytest.mark.parametrize(
    ("name", "rule", "phrase"),
    [
        ("X-Frame-Options", "present", "no X-Frame-Options header"),
        ("X-Frame-Options", "DENY", "no X-Frame-Options header (expected DENY)"),
        ("Cross-Origin-Opener-Policy", "same-origin-allow-popups", "Cross-Origin-Opener-Policy is"),
        ("Strict-Transport-Security", "max-age>=63072000", "Strict-Transport-Security max-age=31536000, expected"),
        ("Strict-Transport-Security", "preload>=1", "Strict-Transport-Security has no preload directive"),
        ("Content-Security-Policy", "re:script-src", "expected to match /script-src/"),
        ("Content-Security-Policy", "absent", "Content-Security-Policy header is present"),
    ],
)
async def test_header_rules_fail_with_the_reason(
    ctx: CheckContext, server: Server, name: str, rule: str, phrase: str
) -> None:
    outcome = await run(spec(server.url("/secure"), expect={"headers": {name: rule}}), ctx)
    assert outcome.status is Status.FAIL
    assert phrase in outcome.summary
    assert any(line.startswith("- header: ") and phrase in line for line in outcome.details.splitlines())


# --- latency, timeouts, connection errors -------------------------------------------------------


async def test_max_latency_exceeded_fails(ctx: CheckContext, server: Server) -> None:
    outcome = await run(spec(server.url("/slow?s=0.3"), expect={"max_latency": "100ms"}), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary.endswith("(max 100ms)")
    assert re.search(r"- took \d+ ms, max 100ms", outcome.details)
    assert outcome.value is not None and outcome.value >= 0.3


async def test_within_max_latency_passes(ctx: CheckContext, server: Server) -> None:
    outcome = await run(spec(server.url("/slow?s=0.05"), expect={"max_latency": "5s"}), ctx)
    assert outcome.status is Status.PASS


async def test_timeout_is_a_fail_reported_by_the_check(ctx: CheckContext, server: Server) -> None:
    outcome = await run(spec(server.url("/slow?s=3"), timeout="200ms"), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary == "no response from /slow?s=3 within 200ms"
    assert outcome.duration_s < 1.5


async def test_connection_refused_fails(ctx: CheckContext) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/health"
    outcome = await run(spec(url), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary == f"cannot connect to {url}: Connection refused"


# --- credentials --------------------------------------------------------------------------------


async def test_bearer_token_comes_from_the_environment(ctx: CheckContext, server: Server) -> None:
    outcome = await run(spec(server.url("/private"), bearer_token_env="SVC_TOKEN"), ctx)
    assert outcome.status is Status.PASS, outcome.summary
    assert TOKEN not in outcome.summary + outcome.details


async def test_without_the_token_the_endpoint_refuses(ctx: CheckContext, server: Server) -> None:
    outcome = await run(spec(server.url("/private")), ctx)
    assert outcome.status is Status.FAIL
    assert "HTTP 401" in outcome.summary


@pytest.mark.parametrize("variable", ["NOT_SET_ANYWHERE", "EMPTY_TOKEN"])
async def test_a_missing_token_variable_is_an_error(ctx: CheckContext, server: Server, variable: str) -> None:
    outcome = await run(spec(server.url("/private"), bearer_token_env=variable), ctx)
    assert outcome.status is Status.ERROR
    assert outcome.summary == f"env var {variable} is not set"


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    options = "-x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1"
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        ["openssl", "req", *options.split(), "-addext", "subjectAltName=IP:127.0.0.1", *files],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def tls_server(self_signed: tuple[Path, Path]) -> AsyncIterator[Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*self_signed)
    async for running in serve(context):
        yield running


async def test_tls_certificates_are_verified_by_default(ctx: CheckContext, tls_server: Server) -> None:
    url = tls_server.url("/health")
    outcome = await run(spec(url), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary.startswith(f"cannot connect to {url}: TLS certificate verification failed")


async def test_verify_tls_false_accepts_a_self_signed_certificate(ctx: CheckContext, tls_server: Server) -> None:
    outcome = await run(spec(tls_server.url("/health"), verify_tls=False), ctx)
    assert outcome.status is Status.PASS, outcome.summary
