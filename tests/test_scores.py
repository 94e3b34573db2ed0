"""Graded scores: read from a command's output, a Prometheus value and an HTTP JSON path; clamped
to [0, 1]; unreadable means ⚠️ error (never a silent 0); `pass_score`; `risk_score` using them."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from bot.core.decision import DecisionInput, decide
from bot.core.gate import Gate
from bot.core.results import CheckResult, Status
from bot.services.runner import run_one
from checks import command, http, prometheus
from checks.base import CheckContext
from tests.prometheus_server import PrometheusServer

PY = sys.executable
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def ctx(http_session: aiohttp.ClientSession, tmp_path: Path) -> CheckContext:
    return CheckContext(session=http_session, base_dir=tmp_path, env={"PATH": os.environ["PATH"]})


def printing(text: str, *, exit_code: int = 0, **fields: Any) -> command.Spec:
    script = f"import sys; print({text!r}); sys.exit({exit_code})"
    return command.Spec.model_validate({"id": "score", "run": [PY, "-c", script], **fields})


# --- command: the last match of a regex ------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "score", "expected"),
    [
        ("readiness=7.0", {"regex": "readiness=([0-9.]+)", "max": 10}, 0.7),
        ("readiness=2\nreadiness=9", {"regex": "readiness=([0-9.]+)", "max": 10}, 0.9),  # the last match
        ("42", {"regex": "[0-9]+", "max": 100}, 0.42),  # no group: the whole match
        ("readiness=12.5", {"regex": "readiness=([0-9.]+)", "max": 10}, 1.0),  # clamped
        ("delta=-3", {"regex": "delta=(-?[0-9.]+)", "max": 10}, 0.0),  # clamped
    ],
)
async def test_command_score_from_output(
    ctx: CheckContext, output: str, score: dict[str, Any], expected: float
) -> None:
    outcome = await command.run(printing(output, score=score), ctx)
    assert outcome.status is Status.PASS, outcome.summary
    assert outcome.score == pytest.approx(expected)
    assert "score " in outcome.summary


@pytest.mark.parametrize(
    ("output", "regex", "why"),
    [
        ("all good", "readiness=([0-9.]+)", "does not match the output"),
        ("readiness=high", "readiness=(\\w+)", "not a number"),
        ("readiness=nan", "readiness=(\\w+)", "not a finite number"),
    ],
)
async def test_command_without_a_readable_score_is_an_error(
    ctx: CheckContext, output: str, regex: str, why: str
) -> None:
    outcome = await command.run(printing(output, score={"regex": regex, "max": 10}), ctx)
    assert outcome.status is Status.ERROR
    assert outcome.score is None
    assert why in outcome.summary and "exit 0" in outcome.summary


async def test_a_failing_command_keeps_its_score_and_its_failure(ctx: CheckContext) -> None:
    outcome = await command.run(printing("mvp=3", exit_code=1, score={"regex": "mvp=([0-9]+)", "max": 10}), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.score == pytest.approx(0.3)


def test_score_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="invalid regex"):
        printing("x", score={"regex": "([0-9]", "max": 10})
    with pytest.raises(ValidationError, match="greater than 0"):
        printing("x", score={"regex": "([0-9])", "max": 0})
    with pytest.raises(ValidationError):  # a command reads a regex, not a JSON path
        printing("x", score={"json": "a.b", "max": 1})


# --- pass_score (applied by the runner to every kind) --------------------------------------------


@pytest.mark.parametrize(("output", "status"), [("s=7", Status.PASS), ("s=6.9", Status.FAIL), ("s=10", Status.PASS)])
async def test_pass_score(ctx: CheckContext, output: str, status: Status) -> None:
    from bot.core.masking import Masker

    spec = printing(output, score={"regex": "s=([0-9.]+)", "max": 10}, pass_score=0.7)
    outcome = await run_one(spec, ctx, Masker.from_env({}))
    assert outcome.status is status, outcome.summary
    if status is Status.FAIL:
        assert "below pass_score 0.7" in outcome.summary


def test_pass_score_needs_a_score() -> None:
    with pytest.raises(ValidationError, match=r"checks\[0\].pass_score: the check reports no score"):
        Gate.model_validate(
            {
                "id": "g",
                "name": "G",
                "channel": "C1",
                "checks": [{"id": "t", "kind": "tcp", "host": "h", "port": 1, "pass_score": 0.5}],
            }
        )


# --- prometheus: the value itself ----------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus binary not found in CI: .ci/run should have installed it")
        pytest.skip("prometheus binary not found; .ci/run installs the Debian package")
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("query", "expect", "status", "score"),
    [
        ("vector(0.82)", ">= 0", Status.PASS, 0.82),
        ("vector(3)", ">= 0", Status.PASS, 1.0),  # clamped
        ("vector(-1)", "< 0", Status.PASS, 0.0),  # clamped
        ("vector(0.4)", ">= 0.5", Status.FAIL, 0.4),  # the expectation still judges pass/fail
        ("vector(0) / 0", ">= 0", Status.ERROR, None),  # NaN: no score
        ("absent(up)", "== 1", Status.ERROR, None),  # no series: no score, whatever on_no_data says
    ],
)
async def test_prometheus_score_is_the_value(
    prometheus_url: str, http_session: aiohttp.ClientSession, query: str, expect: str, status: Status, score: float
) -> None:
    spec = prometheus.Spec.model_validate(
        {"id": "p", "url": prometheus_url, "query": query, "expect": expect, "score": {"max": 1}, "on_no_data": "pass"}
    )
    outcome = await prometheus.run(spec, CheckContext(session=http_session, env={}))
    assert outcome.status is status, outcome.summary
    assert outcome.score == (pytest.approx(score) if score is not None else None)
    if status is Status.ERROR:
        assert "no score" in outcome.summary


# --- http: a JSON path -----------------------------------------------------------------------------


async def scored(request: web.Request) -> web.Response:
    return web.json_response({"data": {"score": 87, "text": "87.5", "flag": True}, "over": 250})


async def not_json(request: web.Request) -> web.Response:
    return web.Response(text="<html>login</html>")


@pytest.fixture
async def service() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/score", scored)
    app.router.add_get("/html", not_json)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("path", "where", "status", "score"),
    [
        ("/score", "data.score", Status.PASS, 0.87),
        ("/score", "data.text", Status.PASS, 0.875),  # a number spelled as a string
        ("/score", "over", Status.PASS, 1.0),  # clamped
        ("/score", "data.missing", Status.ERROR, None),
        ("/score", "data.flag", Status.ERROR, None),  # a boolean is not a score
        ("/html", "data.score", Status.ERROR, None),
    ],
)
async def test_http_score_from_a_json_path(
    service: str, http_session: aiohttp.ClientSession, path: str, where: str, status: Status, score: float | None
) -> None:
    spec = http.Spec.model_validate({"id": "h", "url": service + path, "score": {"json": where, "max": 100}})
    outcome = await http.run(spec, CheckContext(session=http_session, env={}))
    assert outcome.status is status, outcome.summary
    assert outcome.score == (pytest.approx(score) if score is not None else None)


# --- risk_score uses the scores ----------------------------------------------------------------------


def result(check_id: str, status: str, score: float | None = None) -> CheckResult:
    return CheckResult(
        check_id=check_id, status=Status(status), summary="", score=score, started_at=NOW, finished_at=NOW
    )


def graded_gate() -> Gate:
    return Gate.model_validate(
        {
            "id": "pre",
            "name": "Preflight",
            "channel": "C1",
            "checks": [
                {"id": "readiness", "kind": "command", "run": ["x"], "score": {"regex": "r=([0-9.]+)", "max": 10}},
                {"id": "health", "kind": "tcp", "host": "h", "port": 1, "group": "ops"},
                {"id": "p95", "kind": "tcp", "host": "h", "port": 1, "group": "ops"},
                {"id": "mvp", "kind": "command", "run": ["x"], "group": "ops", "score": {"regex": "m=(.+)", "max": 10}},
            ],
            "policy": {"kind": "risk_score", "weights": {"readiness": 0.5, "ops": 0.5}, "penalty": 5},
        }
    )


def test_risk_score_uses_scores_and_group_means() -> None:
    results = {
        "readiness": result("readiness", "pass", 0.7),
        "health": result("health", "pass"),
        "p95": result("p95", "fail"),
        "mvp": result("mvp", "pass", 0.4),
    }
    decision = decide(DecisionInput(gate=graded_gate(), now=NOW, results=results))
    score = decision.score
    assert score is not None
    readiness, ops = score.terms
    assert readiness.value == pytest.approx(0.7) and readiness.weight == 0.5
    assert [(i.check, i.score, i.graded) for i in readiness.checks] == [("readiness", 0.7, True)]
    assert ops.value == pytest.approx((1 + 0 + 0.4) / 3)
    assert [(i.check, i.score, i.graded) for i in ops.checks] == [
        ("health", 1.0, False),
        ("p95", 0.0, False),
        ("mvp", 0.4, True),
    ]
    assert [i.weight for i in ops.checks] == pytest.approx([0.5 / 3] * 3)
    # 100 - (0.5 * 70 + 0.5 * 46.67) + 5
    assert score.score == pytest.approx(100 - (35 + 0.5 * 140 / 3) + 5, abs=0.05)


def test_an_errored_scored_check_counts_zero_and_says_so() -> None:
    results = {"readiness": result("readiness", "error"), "health": result("health", "pass")}
    decision = decide(DecisionInput(gate=graded_gate(), now=NOW, results=results))
    assert decision.score is not None
    assert decision.score.terms[0].checks[0].score == 0.0
    assert any(r.subject == "readiness" and "errored" in r.text for r in decision.reasons)
