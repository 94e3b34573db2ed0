"""`gonogo notify <type> --field value ...`: how CI signs and sends an event to the bot.

The body is validated here first (a typo never leaves the machine), signed with the webhook
secret (GONOGO_WEBHOOK_SECRET, or the file named by GONOGO_WEBHOOK_SECRET_FILE) and posted to
$GONOGO_URL/api/events. The event id (given, or generated once per invocation) makes retries
safe: the bot applies an id once. 5xx answers and connection errors are retried with
exponential backoff; a 4xx is final.

Exit codes: 0 accepted, 1 refused (4xx) or undeliverable, 2 usage or configuration.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bot.core.errors import ConfigError
from bot.core.events import EVENT_TYPES, InvalidEvent, parse_event
from bot.core.signature import signed_headers

NUMERIC_FIELDS = frozenset({"duration"})
REQUEST_TIMEOUT_S = 10.0
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class Outcome:
    code: int
    status: int | None
    body: dict[str, Any]


def parse_fields(pairs: Sequence[str]) -> dict[str, Any]:
    """`--release payments@1.4.0 --status started` -> {"release": ..., "status": ...}."""
    fields: dict[str, Any] = {}
    items = list(pairs)
    while items:
        flag = items.pop(0)
        if not flag.startswith("--") or len(flag) < 3:
            raise ConfigError([f"expected --field value, got {flag!r}"])
        name, eq, inline = flag[2:].partition("=")
        if eq:
            value = inline
        elif items:
            value = items.pop(0)
        else:
            raise ConfigError([f"--{name} needs a value"])
        key = name.replace("-", "_")
        fields[key] = _number(value) if key in NUMERIC_FIELDS else value
    return fields


def _number(value: str) -> Any:
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        return value  # "41s" and friends: the model parses durations


def webhook_secret(env: Mapping[str, str]) -> str:
    secret = env.get("GONOGO_WEBHOOK_SECRET")
    if secret:
        return secret
    path = env.get("GONOGO_WEBHOOK_SECRET_FILE")
    if path:
        try:
            secret = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError([f"GONOGO_WEBHOOK_SECRET_FILE: cannot read {path}: {exc.strerror}"]) from None
        if secret:
            return secret
        raise ConfigError([f"GONOGO_WEBHOOK_SECRET_FILE: {path} is empty"])
    raise ConfigError(["set GONOGO_WEBHOOK_SECRET or GONOGO_WEBHOOK_SECRET_FILE"])


def build_body(event_type: str, fields: Mapping[str, Any]) -> bytes:
    if event_type not in EVENT_TYPES:
        raise ConfigError([f"unknown event type {event_type!r} (types: {', '.join(EVENT_TYPES)})"])
    document = {"type": event_type, **fields}
    document.setdefault("id", f"{event_type}-{uuid.uuid4().hex}")
    body = json.dumps(document, separators=(",", ":")).encode()
    try:
        parse_event(body)
    except InvalidEvent as exc:
        raise ConfigError([f"{_field(e['loc'])}: {e['msg']}" for e in exc.errors]) from None
    return body


def _field(loc: str) -> str:
    """ "rollback.reason" -> "--reason" (the flag the user should fix)."""
    _, _, name = loc.partition(".")
    return f"--{name.replace('_', '-')}" if name else loc


async def send(
    url: str, secret: str, body: bytes, *, retries: int, backoff_s: float, out: Any = sys.stdout, err: Any = sys.stderr
) -> Outcome:
    endpoint = url.rstrip("/") + "/api/events"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for attempt in range(retries + 1):
            headers = {"Content-Type": "application/json", **signed_headers(secret, body, time.time())}
            problem: str
            try:
                async with session.post(endpoint, data=body, headers=headers) as response:
                    text = await response.text()
                    answer = _json(text)
                    if response.status < 300:
                        note = "already accepted" if answer.get("duplicate") else "accepted"
                        print(f"{note}: {answer.get('id', '?')}", file=out)
                        return Outcome(0, response.status, answer)
                    if response.status < 500:
                        _print_refusal(response.status, answer, text, err)
                        return Outcome(1, response.status, answer)
                    problem = f"HTTP {response.status}: {answer.get('error') or text[:200]}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt == retries:
                print(f"error: giving up after {retries + 1} attempts; last: {problem}", file=err)
                return Outcome(1, None, {})
            delay = min(backoff_s * 2**attempt, MAX_BACKOFF_S)
            print(f"warning: {problem}; retrying in {delay:g} s", file=err)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def _json(text: str) -> dict[str, Any]:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _print_refusal(status: int, answer: Mapping[str, Any], text: str, err: Any) -> None:
    print(f"error: HTTP {status}: {answer.get('error') or text[:500]}", file=err)
    for problem in answer.get("errors") or []:
        if isinstance(problem, dict):
            print(f"  {problem.get('loc', '?')}: {problem.get('msg', '?')}", file=err)


def notify(event_type: str, pairs: Sequence[str], *, url: str | None, retries: int, backoff_s: float) -> int:
    env = os.environ
    target = url or env.get("GONOGO_URL")
    if not target:
        raise ConfigError(["set GONOGO_URL (the bot's base URL, e.g. https://gonogo.example.com) or pass --url"])
    if retries < 0 or backoff_s < 0:
        raise ConfigError(["--retries and --backoff must not be negative"])
    secret = webhook_secret(env)
    body = build_body(event_type, parse_fields(pairs))
    return asyncio.run(send(target, secret, body, retries=retries, backoff_s=backoff_s)).code
