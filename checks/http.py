"""`http`: status, JSON subset, response headers and latency of one HTTP request."""

from __future__ import annotations

import errno
import json
import operator
import os
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urljoin, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.core.durations import Duration, format_duration
from bot.core.results import CheckResult, Status
from checks.base import CheckContext, PatternTimeout, SpecBase, pattern_problem, pattern_search, result, seconds
from checks.scoring import JsonScore, NoScore, number, scaled, unreadable, with_score

if TYPE_CHECKING:
    import aiohttp


# A header expectation: "present", "absent", "max-age>=N" (any directive, any operator),
# "re:<pattern>" or "/<pattern>/" for a regex, anything else must equal the value exactly.
DIRECTIVE_RULE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_-]*)\s*(>=|<=|==|!=|>|<)\s*(\d+)\s*$")


def header_rule_problem(rule: str) -> str | None:
    """Why a header expectation is malformed, or None when it is fine."""
    pattern = None
    if rule.startswith("re:"):
        pattern = rule[3:]
    elif len(rule) >= 2 and rule.startswith("/") and rule.endswith("/"):
        pattern = rule[1:-1]
    return pattern_problem(pattern) if pattern is not None else None


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    status: int | list[int] = 200
    json_: dict[str, Any] | None = Field(
        default=None,
        alias="json",
        description='Subset the JSON body must contain; dotted paths allowed: {"data.status": "up"}',
    )
    max_latency: Duration | None = None
    headers: dict[str, str] = Field(
        default_factory=dict,
        description='Per header: "present", "absent", "max-age>=N", "re:<regex>" or an exact value',
    )
    body_contains: str | None = Field(default=None, description="Regex the body must match")

    @field_validator("headers")
    @classmethod
    def _valid_rules(cls, value: dict[str, str]) -> dict[str, str]:
        for name, rule in value.items():
            problem = header_rule_problem(rule)
            if problem:
                raise ValueError(f"header {name}: {problem}")
        return value

    @field_validator("body_contains")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        problem = pattern_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @property
    def statuses(self) -> list[int]:
        return [self.status] if isinstance(self.status, int) else list(self.status)


class Spec(SpecBase):
    kind: Literal["http"] = "http"
    url: str = Field(pattern=r"^https?://", description="http:// or https:// URL")
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    request_headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    bearer_token_env: str | None = Field(default=None, description="Env var holding a bearer token")
    verify_tls: bool = True
    follow_redirects: bool = Field(
        default=False,
        description="Follow 3xx redirects (never from https to http); off, a redirect is the status checked",
    )
    expect: Expect = Field(default_factory=Expect)
    score: JsonScore | None = Field(
        default=None, description='Graded score from the JSON body: {json: "data.score", max}'
    )

    default_timeout: ClassVar[timedelta] = timedelta(seconds=30)
    uses_http: ClassVar[bool] = True


# Enough for any health endpoint; a bigger body is read no further so a misconfigured URL
# (a download, a stream) cannot eat the bot's memory.
MAX_BODY_BYTES = 4 * 1024 * 1024
_DETAIL_BODY_BYTES = 2048
_SUMMARY_PROBLEMS = 3

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_MISSING = object()


def describe_client_error(exc: aiohttp.ClientError) -> str:
    """A short reason for a failed request, without aiohttp's repr noise."""
    import socket

    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        reason = getattr(cert_error, "verify_message", None) or str(cert_error)
        return f"TLS certificate verification failed: {reason}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        # asyncio words refusals as "Connect call failed ('127.0.0.1', 1)"; the errno says it better.
        if (
            not isinstance(os_error, socket.gaierror)
            and os_error.errno is not None
            and os_error.errno in errno.errorcode
        ):
            return os.strerror(os_error.errno)
        return os_error.strerror or str(os_error) or type(os_error).__name__
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    return str(exc) or type(exc).__name__


def url_label(url: str) -> str:
    """The path (and query) of a URL: what a summary names, the host is in the check's config."""
    parts = urlsplit(url)
    label = parts.path or "/"
    if parts.query:
        label += "?" + parts.query
    return label if len(label) <= 80 else label[:77] + "..."


def _latency(seconds_taken: float) -> str:
    return f"{seconds_taken * 1000:.0f} ms" if seconds_taken < 1 else seconds(timedelta(seconds=seconds_taken))


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _same(expected: Any, actual: Any) -> bool:
    """JSON equality without Python's True == 1 and 1 == 1.0 surprises for booleans."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    return bool(expected == actual)


def _lookup(document: Any, key: str) -> Any:
    """`key` as a literal member first (keys may contain dots), else as a dotted path."""
    if isinstance(document, dict) and key in document:
        return document[key]
    current = document
    for part in key.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def json_mismatches(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where `actual` fails to contain `expected`: dicts match as subsets (recursively, dotted keys
    allowed), lists element by element, everything else by equality."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict | list):
            return [f"{path or 'body'} is {_show(actual)}, expected an object"]
        problems: list[str] = []
        for key, want in expected.items():
            where = f"{path}.{key}" if path else key
            got = _lookup(actual, key)
            if got is _MISSING:
                problems.append(f"{where} is missing")
            else:
                problems.extend(json_mismatches(want, got, where))
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path or 'body'} is {_show(actual)}, expected {_show(expected)}"]
        problems = []
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            problems.extend(json_mismatches(want, got, f"{path}.{index}" if path else str(index)))
        return problems
    if not _same(expected, actual):
        return [f"{path or 'body'} is {_show(actual)}, expected {_show(expected)}"]
    return []


def _directives(value: str) -> dict[str, str]:
    """ "max-age=31536000; includeSubDomains" -> {"max-age": "31536000", "includesubdomains": ""}.

    Both separators are accepted: HSTS uses ';', Cache-Control uses ','."""
    found: dict[str, str] = {}
    for part in re.split(r"[;,]", value):
        name, _, raw = part.partition("=")
        if name.strip():
            found.setdefault(name.strip().lower(), raw.strip().strip('"'))
    return found


def _regex(rule: str) -> str | None:
    if rule.startswith("re:"):
        return rule[3:]
    if len(rule) >= 2 and rule.startswith("/") and rule.endswith("/"):
        return rule[1:-1]
    return None


def header_problem(name: str, rule: str, values: list[str]) -> str | None:
    """Why the response's `name` header values break `rule`, or None when they satisfy it."""
    if rule == "present":
        return None if values else f"no {name} header"
    if rule == "absent":
        return f"{name} header is present ({_show(values[0])})" if values else None
    if not values:
        return f"no {name} header (expected {rule})"
    shown = _show(", ".join(values))
    pattern = _regex(rule)
    if pattern is not None:
        if any(pattern_search(pattern, value) for value in values):
            return None
        return f"{name} is {shown}, expected to match /{pattern}/"
    directive_rule = DIRECTIVE_RULE.match(rule)
    if directive_rule:
        directive, op, limit = directive_rule.groups()
        raw = next((d[directive.lower()] for d in map(_directives, values) if directive.lower() in d), None)
        if raw is None:
            return f"{name} has no {directive} directive ({shown}), expected {rule}"
        try:
            number = float(raw)
        except ValueError:
            return f"{name} {directive} is {raw!r}, not a number (expected {rule})"
        if _COMPARE[op](number, float(limit)):
            return None
        return f"{name} {directive}={raw}, expected {directive}{op}{limit}"
    return None if rule in values else f"{name} is {shown}, expected {_show(rule)}"


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know: still worth a regex search
        return body.decode("utf-8", errors="replace")


async def _read_body(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """At most MAX_BODY_BYTES of the body, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    while size < MAX_BODY_BYTES:
        chunk = await response.content.read(min(65536, MAX_BODY_BYTES - size))
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), not response.content.at_eof()


def _evaluate(
    expect: Expect, response: aiohttp.ClientResponse, body: bytes, truncated: bool, took: float
) -> list[tuple[str, str]]:
    """Every failed assertion, as (short phrase for the summary, full line for the details)."""
    problems: list[tuple[str, str]] = []
    statuses = expect.statuses
    if response.status not in statuses:
        wanted = str(statuses[0]) if len(statuses) == 1 else "one of " + ", ".join(map(str, statuses))
        problems.append((f"expected {wanted}", f"status {response.status}, expected {wanted}"))
    text = _decode(body, response.charset)
    if expect.json_ is not None:
        try:
            document = json.loads(body)
        except ValueError:
            why = "body is not JSON" + (f" (cut at {MAX_BODY_BYTES // 1048576} MiB)" if truncated else "")
            problems.append((why, why))
        else:
            problems.extend((p, f"JSON: {p}") for p in json_mismatches(expect.json_, document))
    for name, rule in expect.headers.items():
        problem = header_problem(name, rule, response.headers.getall(name, []))
        if problem:
            problems.append((problem, f"header: {problem}"))
    if expect.body_contains is not None and not pattern_search(expect.body_contains, text):
        phrase = f"body does not match /{expect.body_contains}/"
        problems.append((phrase, phrase))
    if expect.max_latency is not None and took > expect.max_latency.total_seconds():
        limit = format_duration(expect.max_latency)
        problems.append((f"max {limit}", f"took {_latency(took)}, max {limit}"))
    return problems


REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10


def _redirect_problem(source: str, target: str) -> str | None:
    scheme = urlsplit(target).scheme
    if scheme not in ("http", "https"):
        return f"redirected to {url_label(target)} ({scheme or 'no'} scheme): not followed"
    if urlsplit(source).scheme == "https" and scheme == "http":
        return f"redirected from https to plain http ({target}): refused"
    return None


def _not_followed(location: str, following: bool) -> tuple[str, str]:
    why = "too many redirects" if following else "redirects are not followed (follow_redirects: false)"
    return (f"redirect to {location}", f"redirect to {location}: {why}")


async def run(spec: Spec, ctx: CheckContext) -> CheckResult:
    import asyncio  # here, not at import: loading gates must not pay for it

    import aiohttp

    started = ctx.clock()
    headers = dict(spec.request_headers)
    if spec.bearer_token_env:
        token = ctx.env.get(spec.bearer_token_env)
        if not token:
            # A config problem on this machine, not a verdict on the service.
            return result(
                spec,
                Status.ERROR,
                f"env var {spec.bearer_token_env} is not set",
                started_at=started,
                finished_at=ctx.clock(),
            )
        headers["Authorization"] = f"Bearer {token}"

    limit = spec.timeout or Spec.default_timeout
    where = url_label(spec.url)
    # Latency is measured on the monotonic clock: ctx.clock() is wall time (and may be faked).
    begin = time.perf_counter()
    got_headers = False
    url, method, data = spec.url, spec.method, spec.body.encode() if spec.body is not None else None
    try:
        for hop in range(MAX_REDIRECTS + 1):
            async with ctx.http.request(
                method,
                url,
                headers=headers,
                data=data,
                ssl=spec.verify_tls,  # True: the default context, which verifies
                timeout=aiohttp.ClientTimeout(total=limit.total_seconds()),
                allow_redirects=False,  # followed below, only when asked and never to plain http
            ) as response:
                got_headers = True
                location = response.headers.get("Location") if response.status in REDIRECTS else None
                if location and spec.follow_redirects and hop < MAX_REDIRECTS:
                    target = urljoin(str(response.url), location)
                    refused = _redirect_problem(url, target)
                    if refused:
                        return result(spec, Status.FAIL, refused, started_at=started, finished_at=ctx.clock())
                    if urlsplit(target).netloc != urlsplit(url).netloc:
                        headers.pop("Authorization", None)  # a token is for the host it was meant for
                    if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                        method, data = "GET", None
                    url = target
                    continue
                body, truncated = await _read_body(response)
                took = time.perf_counter() - begin
                # Gate regexes may be slow: evaluated in a thread, each within its time budget.
                problems = await asyncio.to_thread(_evaluate, spec.expect, response, body, truncated, took)
                if location and response.status not in spec.expect.statuses:
                    problems.append(_not_followed(location, spec.follow_redirects))
                break
    except PatternTimeout as exc:
        return result(spec, Status.ERROR, str(exc), started_at=started, finished_at=ctx.clock())
    except TimeoutError:
        # aiohttp's own timeouts subclass both TimeoutError and ClientError: test this one first.
        what = "no complete response" if got_headers else "no response"
        return result(
            spec,
            Status.FAIL,
            f"{what} from {where} within {format_duration(limit)}",
            started_at=started,
            finished_at=ctx.clock(),
        )
    except aiohttp.ClientError as exc:
        verb = "cannot connect to" if isinstance(exc, aiohttp.ClientConnectorError) else "request failed:"
        return result(
            spec,
            Status.FAIL,
            f"{verb} {spec.url}: {describe_client_error(exc)}",
            started_at=started,
            finished_at=ctx.clock(),
        )

    outcome = _outcome(spec, response, body, truncated, took, problems, started, ctx.clock())
    if spec.score is None:
        return outcome
    try:
        raw = body_score(spec.score, body)
    except NoScore as exc:
        return unreadable(outcome, f"no score: {exc}")
    return with_score(outcome, raw, spec.score, scaled(raw, spec.score))


def body_score(spec: JsonScore, body: bytes) -> float:
    """The number at the score's JSON path; NoScore when the body has none."""
    try:
        document = json.loads(body)
    except ValueError:
        raise NoScore("the body is not JSON") from None
    found = _lookup(document, spec.json_)
    if found is _MISSING:
        raise NoScore(f"{spec.json_} is missing from the body")
    return number(found, spec.json_)


def _outcome(
    spec: Spec,
    response: aiohttp.ClientResponse,
    body: bytes,
    truncated: bool,
    took: float,
    problems: list[tuple[str, str]],
    started: datetime,
    finished: datetime,
) -> CheckResult:
    where = url_label(spec.url)
    if not problems:
        return result(
            spec,
            Status.PASS,
            f"HTTP {response.status} from {where} in {_latency(took)}",
            started_at=started,
            finished_at=finished,
            value=took,
        )
    phrases = [short for short, _ in problems]
    shown = "; ".join(phrases[:_SUMMARY_PROBLEMS])
    if len(phrases) > _SUMMARY_PROBLEMS:
        shown += f"; +{len(phrases) - _SUMMARY_PROBLEMS} more"
    excerpt = body[:_DETAIL_BODY_BYTES].decode("utf-8", errors="replace")
    more = " (truncated)" if len(body) > _DETAIL_BODY_BYTES or truncated else ""
    details = "\n".join(f"- {line}" for _, line in problems)
    details += f"\n\nbody{more}:\n{excerpt}" if body else "\n\n(empty body)"
    return result(
        spec,
        Status.FAIL,
        f"HTTP {response.status} from {where} after {_latency(took)} ({shown})",
        started_at=started,
        finished_at=finished,
        details=details,
        value=took,
    )
