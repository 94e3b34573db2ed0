"""`prometheus`: an instant query whose every series must satisfy a comparison.

GET {url}/api/v1/query with the query; the answer's vector (or scalar) is judged series by series
against `expect`. An empty vector is decided by `on_no_data`. Anything that leaves no number to
judge (bad PromQL, a range vector, an unreachable server) is an `error`, not a `fail`: the check
could not reach a verdict, and the card should point at the query or the monitoring, not the service.
"""

from __future__ import annotations

import base64
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.core.durations import format_duration
from bot.core.results import CheckResult, Status
from checks.base import CheckContext, SpecBase, result
from checks.http import describe_client_error, url_label
from checks.scoring import NoScore, ValueScore, number, scaled, unreadable, with_score

if TYPE_CHECKING:
    import aiohttp


OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_EXPECT = re.compile(r"^\s*([<>=!]+)\s*([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$")


def parse_expectation(text: str) -> tuple[str, float]:
    """ "< 0.2" -> ("<", 0.2); ValueError naming the problem otherwise."""
    match = _EXPECT.match(text)
    if not match:
        raise ValueError(f"expected an operator and a number like '< 0.2', got {text!r}")
    op, number = match.group(1), float(match.group(2))
    if op not in OPERATORS:
        raise ValueError(f"unknown operator {op!r} (use one of {', '.join(OPERATORS)})")
    return op, number


class BasicAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    username: str
    password_env: str = Field(description="Env var holding the password")


class Spec(SpecBase):
    kind: Literal["prometheus"] = "prometheus"
    url: str = Field(pattern=r"^https?://", description="Prometheus base URL")
    query: str = Field(min_length=1, description="PromQL instant query")
    expect: str = Field(description="Comparison each series must satisfy: <, <=, >, >=, ==, != and a number")
    on_no_data: Literal["fail", "pass", "warn"] = "fail"
    bearer_token_env: str | None = None
    basic_auth: BasicAuth | None = None
    verify_tls: bool = True
    score: ValueScore | None = Field(
        default=None, description="Graded score: the value itself / max (the worst series when there are several)"
    )

    default_timeout: ClassVar[timedelta] = timedelta(seconds=30)
    uses_http: ClassVar[bool] = True

    @field_validator("expect")
    @classmethod
    def _valid_expect(cls, value: str) -> str:
        parse_expectation(value)
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> Spec:
        # Both would put an Authorization header on the request; which one wins is not guessable.
        if self.bearer_token_env and self.basic_auth:
            raise ValueError("use bearer_token_env or basic_auth, not both")
        return self


# Enough for tens of thousands of series; a bigger answer is a query mistake (a bare metric
# name on a huge fleet), and reading it all would only eat the bot's memory.
MAX_BODY_BYTES = 8 * 1024 * 1024
# A query this short is its own best name in a summary ("up = 1 == 1"); longer ones say "value".
_SHORT_QUERY = 40
_SUMMARY_SERIES = 3
_DETAIL_SERIES = 40
_DETAIL_CHARS = 2400  # under the runner's 2800, so its tail-cut never drops the offenders listed first


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    raw: str  # Prometheus's own spelling of the value, exact, for the details
    value: float


class _NoVerdict(Exception):
    """The answer cannot be judged (error JSON, range vector, not a number): an `error` result."""

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(summary)
        self.summary = summary
        self.details = details


def format_number(value: float) -> str:
    """ "0.184", "1", "NaN", "+Inf"; six significant digits are plenty for a one-line summary."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _shown(value: float, threshold: float) -> str:
    """The value, with full precision when rounding would make it read as the threshold itself
    ("0.2, expected < 0.2" for 0.2000004 would look like a bug in the comparison)."""
    text = format_number(value)
    return repr(value) if text == format_number(threshold) and value != threshold else text


def series_label(labels: dict[str, str], keys: list[str] | None = None) -> str:
    """PromQL-style `name{a="1", b="2"}`, limited to `keys` when given (the name is kept if listed)."""
    wanted = sorted(labels) if keys is None else [k for k in sorted(labels) if k in keys]
    name = labels.get("__name__", "") if "__name__" in wanted else ""
    pairs = ", ".join(f"{k}={json.dumps(labels[k], ensure_ascii=False)}" for k in wanted if k != "__name__")
    return f"{name}{{{pairs}}}" if pairs or not name else name


def _distinguishing(samples: list[Sample]) -> list[str]:
    """Labels whose values differ between series: all a summary needs to tell them apart
    (job and instance are usually the same everywhere and only make the line longer)."""
    keys = {k for s in samples for k in s.labels}
    return [k for k in keys if len({s.labels.get(k) for s in samples}) > 1]


def satisfies(value: float, op: str, threshold: float) -> bool:
    # NaN compares false with everything, except that Python's NaN != x is true: a NaN
    # (e.g. 0/0 from a quantile over no requests) must never pass a gate.
    return not math.isnan(value) and OPERATORS[op](value, threshold)


def _badness(value: float, op: str, threshold: float) -> float:
    """Higher is further from satisfying: orders series worst first."""
    if math.isnan(value):
        return math.inf
    if op in ("<", "<="):
        return value
    if op in (">", ">="):
        return -value
    if op == "==":
        return abs(value - threshold)
    return -abs(value - threshold)  # "!=": the closest to the forbidden value is the worst


def _number(raw: Any, what: str) -> float:
    if not isinstance(raw, str):
        raise _NoVerdict(f"unexpected answer from Prometheus: {what} is {raw!r}, not a number")
    try:
        return float(raw)  # Prometheus spells them "1", "0.184", "NaN", "+Inf": float() reads all
    except ValueError:
        raise _NoVerdict(f"{what} {raw!r} is not a number") from None


def samples_of(data: Any) -> list[Sample]:
    """The numbers in a successful answer's `data`; _NoVerdict for anything without a number."""
    kind = data.get("resultType") if isinstance(data, dict) else None
    found = data.get("result") if isinstance(data, dict) else None
    if kind == "matrix":
        raise _NoVerdict("range vector: use an instant query (drop the [range] or wrap it, e.g. in rate())")
    if kind in ("scalar", "string") and isinstance(found, list) and len(found) == 2:
        return [Sample({}, str(found[1]), _number(found[1], f"{kind} result"))]
    if kind == "vector" and isinstance(found, list):
        samples = []
        for item in found:
            metric = item.get("metric") if isinstance(item, dict) else None
            labels = {str(k): str(v) for k, v in metric.items()} if isinstance(metric, dict) else {}
            if isinstance(item, dict) and "histogram" in item:
                raise _NoVerdict(
                    f"{series_label(labels)} is a native histogram: query a number, e.g. histogram_quantile()"
                )
            pair = item.get("value") if isinstance(item, dict) else None
            if not isinstance(pair, list) or len(pair) != 2:
                raise _NoVerdict(f"unexpected answer from Prometheus: series {item!r:.100}")
            samples.append(Sample(labels, pair[1], _number(pair[1], f"value of {series_label(labels)}")))
        return samples
    raise _NoVerdict(f"unexpected answer from Prometheus: result type {kind!r}")


def _subject(spec: Spec) -> str:
    query = " ".join(spec.query.split())
    return query if len(query) <= _SHORT_QUERY else "value"


def _details(spec: Spec, expectation: str, ordered: list[tuple[Sample, bool]], warnings: list[str]) -> str:
    lines = [f"query: {' '.join(spec.query.split())[:300]}", f"expect: {expectation}"]
    lines += [f"warning: {w}" for w in warnings]
    size = sum(len(line) + 1 for line in lines)
    for index, (sample, ok) in enumerate(ordered):
        line = f"{'ok  ' if ok else 'FAIL'} {series_label(sample.labels)} = {sample.raw}"
        if index >= _DETAIL_SERIES or size + len(line) > _DETAIL_CHARS:
            lines.append(f"... and {len(ordered) - index} more series")
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def judge(spec: Spec, samples: list[Sample], warnings: list[str]) -> tuple[Status, str, str, float | None]:
    """Status, summary, details and value for a non-empty answer."""
    op, threshold = parse_expectation(spec.expect)
    expectation = f"{op} {format_number(threshold)}"
    ordered = sorted(
        ((s, satisfies(s.value, op, threshold)) for s in samples),
        key=lambda pair: (pair[1], -_badness(pair[0].value, op, threshold)),
    )  # offenders first, each group worst first
    worst = ordered[0][0]
    # The card's value is a number to compare runs by; NaN/Inf would only serialize as null anyway.
    value = worst.value if math.isfinite(worst.value) else None
    details = _details(spec, expectation, ordered, warnings)
    offenders = [s for s, ok in ordered if not ok]
    nan_note = " (NaN never satisfies a comparison)" if any(math.isnan(s.value) for s in offenders) else ""

    if len(samples) == 1:
        shown = _shown(worst.value, threshold)
        if offenders:
            return Status.FAIL, f"{_subject(spec)} = {shown}, expected {expectation}{nan_note}", details, value
        return Status.PASS, f"{_subject(spec)} = {shown} {expectation}", details, value

    keys = _distinguishing(samples)
    if offenders:
        listed = ", ".join(
            f"{series_label(s.labels, keys)} = {_shown(s.value, threshold)}" for s in offenders[:_SUMMARY_SERIES]
        )
        if len(offenders) > _SUMMARY_SERIES:
            listed += f", +{len(offenders) - _SUMMARY_SERIES} more"
        summary = f"{len(offenders)} of {len(samples)} series break {expectation}: {listed}{nan_note}"
        return Status.FAIL, summary, details, value
    extreme = {"<": "max", "<=": "max", ">": "min", ">=": "min"}.get(op)
    tail = f" ({extreme} {_shown(worst.value, threshold)})" if extreme else ""
    return Status.PASS, f"{len(samples)} series, all {expectation}{tail}", details, value


def _credentials(spec: Spec, env: Mapping[str, str]) -> dict[str, str]:
    """The Authorization header, if any; _NoVerdict when its secret is missing from the env."""
    if spec.bearer_token_env:
        token = env.get(spec.bearer_token_env)
        if not token:
            raise _NoVerdict(f"env var {spec.bearer_token_env} is not set (bearer_token_env)")
        return {"Authorization": f"Bearer {token}"}
    if spec.basic_auth:
        password = env.get(spec.basic_auth.password_env)
        if not password:
            raise _NoVerdict(f"env var {spec.basic_auth.password_env} is not set (basic_auth.password_env)")
        # Built by hand: aiohttp deprecates BasicAuth/auth= and its replacement is too new for our floor.
        pair = f"{spec.basic_auth.username}:{password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    return {}


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.read(65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _NoVerdict(f"the answer is over {MAX_BODY_BYTES // 1048576} MiB: narrow the query")
        chunks.append(chunk)
    return b"".join(chunks)


def _http_problem(status: int, body: bytes, document: Any, endpoint: str) -> str:
    """Why an answer has no result, in Prometheus's words when it gave some."""
    if isinstance(document, dict) and document.get("status") == "error":
        # Bad PromQL (400 bad_data), evaluation errors (422), query timeouts (503) all land here.
        return f"Prometheus {document.get('errorType', 'error')}: {document.get('error', '(no message)')}"
    if status == 200:
        # Typically a url pointing at Grafana or a login page, which answer 200 with HTML.
        return f"not a Prometheus API answer from {url_label(endpoint)}: is url the Prometheus base URL?"
    excerpt = " ".join(body[:200].decode("utf-8", errors="replace").split())
    hint = " (check bearer_token_env / basic_auth)" if status in (401, 403) else ""
    return f"HTTP {status} from Prometheus{hint}" + (f": {excerpt}" if excerpt else "")


async def run(spec: Spec, ctx: CheckContext) -> CheckResult:
    import aiohttp  # here, not at import: loading gates must not pay for it

    started = ctx.clock()
    endpoint = spec.url.rstrip("/") + "/api/v1/query"
    limit = spec.timeout or Spec.default_timeout
    try:
        headers = _credentials(spec, ctx.env)
        try:
            async with ctx.http.get(
                endpoint,
                # `timeout` makes Prometheus give up evaluating too, instead of burning CPU on a
                # query nobody waits for any more (it reads a bare number as seconds).
                params={"query": spec.query, "timeout": f"{limit.total_seconds():g}"},
                headers=headers,
                ssl=spec.verify_tls,
                timeout=aiohttp.ClientTimeout(total=limit.total_seconds()),
            ) as response:
                body = await _read_limited(response)
                code = response.status
        # An unreachable or silent Prometheus is an `error`, not a `fail`: the metric may be
        # perfectly healthy, we only could not look. `error` still blocks GO, but the card then
        # points at the monitoring rather than at the service.
        except TimeoutError:
            # aiohttp's timeouts subclass both TimeoutError and ClientError: catch this one first.
            raise _NoVerdict(f"no answer from Prometheus at {spec.url} within {format_duration(limit)}") from None
        except aiohttp.ClientError as exc:
            raise _NoVerdict(f"cannot reach Prometheus at {spec.url}: {describe_client_error(exc)}") from None
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not (code == 200 and isinstance(document, dict) and document.get("status") == "success"):
            raise _NoVerdict(_http_problem(code, body, document, endpoint))
        warnings = [str(w) for w in document.get("warnings") or []]
        samples = samples_of(document.get("data"))
    except _NoVerdict as stop:
        # The query is what a reader needs next to "parse error at 1:4" or "range vector".
        details = stop.details or f"query: {' '.join(spec.query.split())[:300]}"
        return result(spec, Status.ERROR, stop.summary, details=details, started_at=started, finished_at=ctx.clock())

    if not samples:
        details = f"query: {' '.join(spec.query.split())[:300]}\nthe query returned no series"
        outcome = {
            "fail": (Status.FAIL, "no data (the query returned no series)"),
            "pass": (Status.PASS, "no data (on_no_data: pass)"),
            "warn": (Status.WARN, "no data (on_no_data: warn)"),
        }[spec.on_no_data]
        empty = result(spec, outcome[0], outcome[1], details=details, started_at=started, finished_at=ctx.clock())
        return unreadable(empty, "no score: the query returned no series") if spec.score else empty
    status, summary, details, value = judge(spec, samples, warnings)
    judged = result(spec, status, summary, details=details, value=value, started_at=started, finished_at=ctx.clock())
    if spec.score is None:
        return judged
    try:
        # judge() leaves `value` empty when the worst series is NaN or ±Inf: no score then.
        raw = number(value if value is not None else math.nan, "the value")
    except NoScore as exc:
        return unreadable(judged, f"no score: {exc}")
    return with_score(judged, raw, spec.score, scaled(raw, spec.score))
