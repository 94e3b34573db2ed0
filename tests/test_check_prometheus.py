"""The `prometheus` check against a real Prometheus scraping itself, plus a stand-in for auth.

A Prometheus of our own (tests/prometheus_server.py) answers real queries: `up`, summaries with
quantile labels, bad PromQL, range vectors, NaN. What a stock Prometheus cannot do (demand a
token, answer HTML, hang) is played by a small aiohttp server that records what it was sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from bot.core.results import Status
from checks import prometheus
from checks.base import CheckContext
from checks.prometheus import BasicAuth, Spec, format_number, parse_expectation, satisfies
from tests.prometheus_server import PrometheusServer
from tests.redis_server import free_port

# Two or three series told apart by one label, whatever Prometheus has scraped so far.
THREE_SERIES = " or ".join(f'label_replace(vector({n}), "x", "{x}", "", "")' for n, x in ((1, "a"), (2, "b"), (3, "c")))


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        if os.environ.get("CI") == "true":  # CI must exercise the real server, never skip it
            pytest.fail("prometheus binary not found in CI: .ci/run should have installed it")
        pytest.skip("prometheus binary not found; .ci/run installs the Debian package")
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus")).start()
    try:
        yield server.url
    finally:
        server.stop()


def make_spec(url: str, query: str, expect: str, **fields: Any) -> Spec:
    return Spec.model_validate({"id": "p", "url": url, "query": query, "expect": expect, **fields})


def make_ctx(session: aiohttp.ClientSession, env: dict[str, str] | None = None) -> CheckContext:
    return CheckContext(session=session, env=env or {})


# --- against a real Prometheus ---------------------------------------------------------------


async def test_up_equal_to_one_passes(prometheus_url: str, http_session: aiohttp.ClientSession) -> None:
    # A trailing slash on the base URL is common in configs and must not produce "//api".
    spec = make_spec(prometheus_url + "/", "up", "== 1")
    outcome = await prometheus.run(spec, make_ctx(http_session))
    assert outcome.status is Status.PASS, outcome.summary
    assert outcome.summary == "up = 1 == 1"
    assert outcome.value == 1
    assert 'up{instance="127.0.0.1:' in outcome.details and 'job="prometheus"}' in outcome.details


async def test_up_above_one_fails(prometheus_url: str, http_session: aiohttp.ClientSession) -> None:
    outcome = await prometheus.run(make_spec(prometheus_url, "up", "> 1"), make_ctx(http_session))
    assert outcome.status is Status.FAIL
    assert outcome.summary == "up = 1, expected > 1"
    assert outcome.value == 1
    assert outcome.details.splitlines()[2].startswith("FAIL up{")


async def test_every_series_of_a_real_summary_passes(prometheus_url: str, http_session: aiohttp.ClientSession) -> None:
    spec = make_spec(prometheus_url, "go_gc_duration_seconds", ">= 0")
    outcome = await prometheus.run(spec, make_ctx(http_session))
    assert outcome.status is Status.PASS, outcome.summary
    assert re.fullmatch(r"5 series, all >= 0 \(min [0-9.e+-]+\)", outcome.summary), outcome.summary
    for quantile in ("0", "0.25", "0.5", "0.75", "1"):
        assert f'quantile="{quantile}"' in outcome.details


async def test_offending_series_are_named_by_the_labels_that_differ(
    prometheus_url: str, http_session: aiohttp.ClientSession
) -> None:
    spec = make_spec(prometheus_url, "go_gc_duration_seconds", "< 0")
    outcome = await prometheus.run(spec, make_ctx(http_session))
    assert outcome.status is Status.FAIL
    assert outcome.summary.startswith("5 of 5 series break < 0: {quantile=")
    assert outcome.summary.endswith(", +2 more")
    # job and instance are the same on every series: the summary leaves them to the details.
    assert "job=" not in outcome.summary and 'job="prometheus"' in outcome.details


async def test_failing_series_are_listed_worst_first(prometheus_url: str, http_session: aiohttp.ClientSession) -> None:
    outcome = await prometheus.run(make_spec(prometheus_url, THREE_SERIES, "< 2"), make_ctx(http_session))
    assert outcome.status is Status.FAIL
    assert outcome.summary == '2 of 3 series break < 2: {x="c"} = 3, {x="b"} = 2'
    assert outcome.value == 3
    assert outcome.details.splitlines()[2:] == ['FAIL {x="c"} = 3', 'FAIL {x="b"} = 2', 'ok   {x="a"} = 1']


async def test_several_passing_series_report_the_worst(
    prometheus_url: str, http_session: aiohttp.ClientSession
) -> None:
    outcome = await prometheus.run(make_spec(prometheus_url, THREE_SERIES, "< 5"), make_ctx(http_session))
    assert (outcome.status, outcome.summary, outcome.value) == (Status.PASS, "3 series, all < 5 (max 3)", 3)
    outcome = await prometheus.run(make_spec(prometheus_url, THREE_SERIES, ">= 1"), make_ctx(http_session))
    assert (outcome.summary, outcome.value) == ("3 series, all >= 1 (min 1)", 1)


@pytest.mark.parametrize(
    ("on_no_data", "status", "summary"),
    [
        ("fail", Status.FAIL, "no data (the query returned no series)"),
        ("pass", Status.PASS, "no data (on_no_data: pass)"),
        ("warn", Status.WARN, "no data (on_no_data: warn)"),
    ],
)
async def test_no_data_follows_on_no_data(
    prometheus_url: str, http_session: aiohttp.ClientSession, on_no_data: str, status: Status, summary: str
) -> None:
    spec = make_spec(prometheus_url, 'up{job="nope"}', "== 1", on_no_data=on_no_data)
    outcome = await prometheus.run(spec, make_ctx(http_session))
    assert (outcome.status, outcome.summary, outcome.value) == (status, summary, None)


async def test_bad_promql_is_an_error_in_prometheus_words(
    prometheus_url: str, http_session: aiohttp.ClientSession
) -> None:
    outcome = await prometheus.run(make_spec(prometheus_url, "up{", "== 1"), make_ctx(http_session))
    assert outcome.status is Status.ERROR
    assert outcome.summary.startswith("Prometheus bad_data: ")
    assert "parse error" in outcome.summary


@pytest.mark.parametrize("query", ["scalar(up)", "vector(1)"])
async def test_scalar_and_label_free_vector(
    prometheus_url: str, http_session: aiohttp.ClientSession, query: str
) -> None:
    outcome = await prometheus.run(make_spec(prometheus_url, query, "== 1"), make_ctx(http_session))
    assert (outcome.status, outcome.summary, outcome.value) == (Status.PASS, f"{query} = 1 == 1", 1)


@pytest.mark.parametrize(("query", "expect"), [("0/0", "< 1"), ("vector(0/0)", "!= 0")])
async def test_nan_never_satisfies(
    prometheus_url: str, http_session: aiohttp.ClientSession, query: str, expect: str
) -> None:
    # "!= 0" is the trap: in Python (and IEEE 754) NaN != 0 is true.
    outcome = await prometheus.run(make_spec(prometheus_url, query, expect), make_ctx(http_session))
    assert outcome.status is Status.FAIL
    assert outcome.summary == f"{query} = NaN, expected {expect} (NaN never satisfies a comparison)"
    assert outcome.value is None


async def test_infinity_compares_like_a_number(prometheus_url: str, http_session: aiohttp.ClientSession) -> None:
    outcome = await prometheus.run(make_spec(prometheus_url, "1/0", "< 1e9"), make_ctx(http_session))
    assert (outcome.status, outcome.summary, outcome.value) == (Status.FAIL, "1/0 = +Inf, expected < 1000000000", None)


async def test_range_vector_is_an_error(prometheus_url: str, http_session: aiohttp.ClientSession) -> None:
    outcome = await prometheus.run(make_spec(prometheus_url, "up[1m]", "== 1"), make_ctx(http_session))
    assert outcome.status is Status.ERROR
    assert outcome.summary.startswith("range vector: use an instant query")


async def test_string_results_count_only_when_numeric(prometheus_url: str, http_session: aiohttp.ClientSession) -> None:
    outcome = await prometheus.run(make_spec(prometheus_url, '"3"', "== 3"), make_ctx(http_session))
    assert (outcome.status, outcome.value) == (Status.PASS, 3)
    outcome = await prometheus.run(make_spec(prometheus_url, '"hello"', "== 3"), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.ERROR, "string result 'hello' is not a number")


async def test_a_long_query_is_called_value(prometheus_url: str, http_session: aiohttp.ClientSession) -> None:
    query = 'sum(up{job="prometheus"}) / count(up{job="prometheus"})'
    outcome = await prometheus.run(make_spec(prometheus_url, query, ">= 1"), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.PASS, "value = 1 >= 1")
    assert outcome.details.startswith(f"query: {query}\nexpect: >= 1\n")


async def test_unreachable_prometheus_is_an_error(http_session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    outcome = await prometheus.run(make_spec(url, "up", "== 1"), make_ctx(http_session))
    assert outcome.status is Status.ERROR
    assert outcome.summary == f"cannot reach Prometheus at {url}: Connection refused"


# --- against a stand-in that records requests ------------------------------------------------


@dataclass
class FakePrometheus:
    """Answers /api/v1/query with whatever the test set, and remembers what it was asked."""

    url: str = ""
    status: int = 200
    body: str = '{"status":"success","data":{"resultType":"vector","result":[]}}'
    content_type: str = "application/json"
    delay: float = 0
    requests: list[web.Request] = field(default_factory=list)

    def answer(self, document: dict[str, Any], status: int = 200) -> None:
        self.status, self.body, self.content_type = status, json.dumps(document), "application/json"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text=self.body, content_type=self.content_type)


@pytest.fixture
async def fake() -> AsyncIterator[FakePrometheus]:
    stand_in = FakePrometheus()
    app = web.Application()
    app.router.add_get("/api/v1/query", stand_in.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)  # do not wait out a deliberately slow handler
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stand_in.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield stand_in
    finally:
        await runner.cleanup()


def one_series(value: str) -> dict[str, Any]:
    series = {"metric": {"__name__": "m"}, "value": [1.0, value]}
    return {"status": "success", "data": {"resultType": "vector", "result": [series]}}


async def test_bearer_token_is_sent(fake: FakePrometheus, http_session: aiohttp.ClientSession) -> None:
    fake.answer(one_series("1"))
    spec = make_spec(fake.url, "up", "== 1", bearer_token_env="PROM_TOKEN", timeout="30s")
    outcome = await prometheus.run(spec, make_ctx(http_session, {"PROM_TOKEN": "tok-123"}))
    assert outcome.status is Status.PASS, outcome.summary
    (request,) = fake.requests
    assert request.headers["Authorization"] == "Bearer tok-123"
    # The check's timeout goes along so Prometheus stops evaluating when we stop waiting.
    assert dict(request.query) == {"query": "up", "timeout": "30"}


async def test_basic_auth_is_sent(fake: FakePrometheus, http_session: aiohttp.ClientSession) -> None:
    fake.answer(one_series("1"))
    spec = make_spec(fake.url, "up", "== 1", basic_auth={"username": "gate", "password_env": "PROM_PASSWORD"})
    outcome = await prometheus.run(spec, make_ctx(http_session, {"PROM_PASSWORD": "pa:ss"}))
    assert outcome.status is Status.PASS, outcome.summary
    expected = "Basic " + base64.b64encode(b"gate:pa:ss").decode()
    assert fake.requests[0].headers["Authorization"] == expected


async def test_no_auth_configured_sends_none(fake: FakePrometheus, http_session: aiohttp.ClientSession) -> None:
    fake.answer(one_series("1"))
    await prometheus.run(make_spec(fake.url, "up", "== 1"), make_ctx(http_session, {"PROM_TOKEN": "x"}))
    assert "Authorization" not in fake.requests[0].headers


@pytest.mark.parametrize(
    ("fields", "summary"),
    [
        ({"bearer_token_env": "PROM_TOKEN"}, "env var PROM_TOKEN is not set (bearer_token_env)"),
        (
            {"basic_auth": {"username": "gate", "password_env": "PROM_PASSWORD"}},
            "env var PROM_PASSWORD is not set (basic_auth.password_env)",
        ),
    ],
)
async def test_missing_secret_is_an_error_naming_the_variable(
    fake: FakePrometheus, http_session: aiohttp.ClientSession, fields: dict[str, Any], summary: str
) -> None:
    outcome = await prometheus.run(make_spec(fake.url, "up", "== 1", **fields), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.ERROR, summary)
    assert fake.requests == []


def test_bearer_and_basic_auth_together_are_rejected() -> None:
    with pytest.raises(ValidationError, match="not both"):
        Spec(
            id="p",
            url="http://x",
            query="up",
            expect="== 1",
            bearer_token_env="T",
            basic_auth=BasicAuth(username="u", password_env="P"),
        )


async def test_unauthorized_is_an_error_with_a_hint(fake: FakePrometheus, http_session: aiohttp.ClientSession) -> None:
    fake.status, fake.body, fake.content_type = 401, "Unauthorized\n", "text/plain"
    outcome = await prometheus.run(make_spec(fake.url, "up", "== 1"), make_ctx(http_session))
    assert outcome.status is Status.ERROR
    assert outcome.summary == "HTTP 401 from Prometheus (check bearer_token_env / basic_auth): Unauthorized"


async def test_html_instead_of_the_api_is_an_error(fake: FakePrometheus, http_session: aiohttp.ClientSession) -> None:
    fake.body, fake.content_type = "<html><body>Grafana</body></html>", "text/html"
    outcome = await prometheus.run(make_spec(fake.url, "up", "== 1"), make_ctx(http_session))
    assert outcome.status is Status.ERROR
    assert outcome.summary.startswith("not a Prometheus API answer from /api/v1/query")


async def test_native_histogram_is_an_error(fake: FakePrometheus, http_session: aiohttp.ClientSession) -> None:
    series = {"metric": {"__name__": "h"}, "histogram": [1.0, {"count": "3", "sum": "1"}]}
    fake.answer({"status": "success", "data": {"resultType": "vector", "result": [series]}})
    outcome = await prometheus.run(make_spec(fake.url, "h", "< 1"), make_ctx(http_session))
    assert outcome.status is Status.ERROR
    assert outcome.summary.startswith("h is a native histogram")


async def test_prometheus_warnings_reach_the_details(fake: FakePrometheus, http_session: aiohttp.ClientSession) -> None:
    document = one_series("0.5") | {"warnings": ["partial response: store-2 down"]}
    fake.answer(document)
    outcome = await prometheus.run(make_spec(fake.url, "m", "< 1"), make_ctx(http_session))
    assert outcome.status is Status.PASS
    assert "warning: partial response: store-2 down" in outcome.details


async def test_silent_prometheus_is_an_error_within_the_timeout(
    fake: FakePrometheus, http_session: aiohttp.ClientSession
) -> None:
    fake.delay = 2
    spec = make_spec(fake.url, "up", "== 1", timeout="200ms")
    outcome = await prometheus.run(spec, make_ctx(http_session))
    assert outcome.status is Status.ERROR
    assert outcome.summary == f"no answer from Prometheus at {fake.url} within 200ms"
    assert outcome.duration_s < 1.5


async def test_a_value_that_rounds_to_the_threshold_is_shown_exactly(
    fake: FakePrometheus, http_session: aiohttp.ClientSession
) -> None:
    fake.answer(one_series("0.2000004"))
    outcome = await prometheus.run(make_spec(fake.url, "m", "< 0.2"), make_ctx(http_session))
    assert outcome.summary == "m = 0.2000004, expected < 0.2"


async def test_details_are_bounded(fake: FakePrometheus, http_session: aiohttp.ClientSession) -> None:
    result = [{"metric": {"__name__": "m", "pod": f"pod-{i:03}"}, "value": [1.0, str(i)]} for i in range(200)]
    fake.answer({"status": "success", "data": {"resultType": "vector", "result": result}})
    outcome = await prometheus.run(make_spec(fake.url, "m", "< 100"), make_ctx(http_session))
    assert outcome.status is Status.FAIL
    assert outcome.summary.startswith('100 of 200 series break < 100: {pod="pod-199"} = 199, {pod="pod-198"} = 198')
    assert len(outcome.details) < 2800
    assert outcome.details.endswith("more series")


# --- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("< 0.2", ("<", 0.2)),
        ("<=1", ("<=", 1.0)),
        (" >= -3 ", (">=", -3.0)),
        ("> +.5", (">", 0.5)),
        ("== 1e3", ("==", 1000.0)),
        ("!= 0", ("!=", 0.0)),
    ],
)
def test_parse_expectation(text: str, parsed: tuple[str, float]) -> None:
    assert parse_expectation(text) == parsed


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("=< 3", "unknown operator '=<'"),
        ("<> 1", "unknown operator '<>'"),
        ("0.2", "expected an operator and a number"),
        ("< fast", "expected an operator and a number"),
        ("", "expected an operator and a number"),
    ],
)
def test_parse_expectation_rejects(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_expectation(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.0, "1"), (0.184, "0.184"), (0.18367346938775508, "0.183673"), (math.nan, "NaN"), (-math.inf, "-Inf")],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


def test_nan_satisfies_no_operator() -> None:
    assert not any(satisfies(math.nan, op, 0) for op in prometheus.OPERATORS)
