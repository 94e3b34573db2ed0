"""Checks a gate file cannot turn against the bot: redirects are followed only when asked (never
down to plain http), and a catastrophic regex costs its check an error, never the bot's acks."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.core.results import Status
from checks import file as file_check
from checks import http as http_check
from checks.base import CheckContext
from tests.test_check_http import self_signed  # noqa: F401 - a fixture

CATASTROPHIC = "^(a+)+$"  # exponential backtracking on "aaa…ab"
LONG_BODY = "a" * 200_000 + "b"


async def start(routes: dict[str, Any], ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, str]:
    application = web.Application()
    for path, handler in routes.items():
        application.router.add_get(path, handler)
    runner = web.AppRunner(application, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    scheme = "https" if ssl_context else "http"
    return runner, f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"


async def login_page(request: web.Request) -> web.Response:
    return web.Response(text="<form>Sign in</form>")


async def long_body(request: web.Request) -> web.Response:
    return web.Response(text=LONG_BODY)


@pytest.fixture
async def plain() -> AsyncIterator[str]:
    runner, base = await start({"/login": login_page, "/long": long_body})
    try:
        yield base
    finally:
        await runner.cleanup()


@pytest.fixture
async def redirecting(plain: str) -> AsyncIterator[str]:
    async def health(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{plain}/login")

    async def relative(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/final")

    async def final(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    runner, base = await start({"/health": health, "/relative": relative, "/final": final})
    try:
        yield base
    finally:
        await runner.cleanup()


@pytest.fixture
def ctx(http_session: aiohttp.ClientSession, tmp_path: Path) -> CheckContext:
    return CheckContext(session=http_session, base_dir=tmp_path, env={})


def http(url: str, **fields: Any) -> http_check.Spec:
    return http_check.Spec.model_validate({"id": "svc", "url": url, **fields})


async def test_a_redirect_to_a_login_page_is_not_followed(ctx: CheckContext, redirecting: str) -> None:
    outcome = await http_check.run(http(f"{redirecting}/health"), ctx)
    assert outcome.status is Status.FAIL
    assert "HTTP 302" in outcome.summary and "/login" in outcome.summary
    assert "redirects are not followed (follow_redirects: false)" in outcome.details


async def test_redirects_are_followed_when_asked(ctx: CheckContext, redirecting: str) -> None:
    followed = await http_check.run(http(f"{redirecting}/relative", follow_redirects=True), ctx)
    assert followed.status is Status.PASS, followed.summary
    to_login = await http_check.run(
        http(f"{redirecting}/health", follow_redirects=True, expect={"body_contains": "healthy"}), ctx
    )
    assert to_login.status is Status.FAIL  # followed, and the login page is judged


async def test_never_from_https_to_plain_http(
    ctx: CheckContext,
    plain: str,
    self_signed: tuple[Path, Path],  # noqa: F811
) -> None:
    async def health(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(f"{plain}/login")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*self_signed)
    runner, base = await start({"/health": health}, context)
    try:
        outcome = await http_check.run(http(f"{base}/health", follow_redirects=True, verify_tls=False), ctx)
    finally:
        await runner.cleanup()
    assert outcome.status is Status.FAIL
    assert "from https to plain http" in outcome.summary


async def _heartbeat(stop: asyncio.Event) -> float:
    """The longest the event loop went without running this task (should be ~10 ms)."""
    worst, last = 0.0, time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    return worst


async def test_a_catastrophic_body_regex_times_out_while_the_loop_stays_responsive(
    ctx: CheckContext, plain: str
) -> None:
    stop = asyncio.Event()
    beat = asyncio.create_task(_heartbeat(stop))
    outcome = await http_check.run(http(f"{plain}/long", expect={"body_contains": CATASTROPHIC}), ctx)
    stop.set()
    assert outcome.status is Status.ERROR
    assert "took longer than" in outcome.summary
    assert await beat < 0.5  # the regex ran in a thread without the GIL: the loop kept going


async def test_a_catastrophic_header_regex_times_out(ctx: CheckContext, plain: str) -> None:
    async def header(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"X-Build": "a" * 5000 + "b"})  # within HTTP header limits

    runner, base = await start({"/h": header})
    try:
        outcome = await http_check.run(http(f"{base}/h", expect={"headers": {"X-Build": "re:^(a|aa)+$"}}), ctx)
    finally:
        await runner.cleanup()
    assert outcome.status is Status.ERROR and "took longer than" in outcome.summary


async def test_a_catastrophic_file_regex_times_out(ctx: CheckContext, tmp_path: Path) -> None:
    (tmp_path / "build.log").write_text(LONG_BODY)
    spec = file_check.Spec.model_validate({"id": "log", "kind": "file", "path": "build.log", "contains": CATASTROPHIC})
    stop = asyncio.Event()
    beat = asyncio.create_task(_heartbeat(stop))
    outcome = await file_check.run(spec, ctx)
    stop.set()
    assert outcome.status is Status.ERROR and "took longer than" in outcome.summary
    assert await beat < 0.5
