"""The bot's Slack Web API client: AsyncWebClient with our rate limiting, retries and metrics.

`RateLimitedClient` overrides `api_call`, which every `chat_postMessage`, `views_open`... goes
through, so code written against AsyncWebClient adopts it by construction alone. Build every client
of one replica with the same `MethodGate`: a 429 on a method then holds back that method in all of
them until Retry-After has passed.

Retries here are bounded (an interactive answer must not wait forever); the deliverer and the card
refresher use a client with no retries of its own and retry without a cap in their loops, where a
notice's age decides when to give up.
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from typing import Any

import aiohttp
from aiohttp import FormData
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.metrics import Metrics
from bot.slack.ratelimit import MethodGate, Sleep, backoff, parse_retry_after

log = logging.getLogger("gonogo.slack")

# Slack answers these with HTTP 200 and ok=false, yet trying again later may well work.
TRANSIENT_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"})
AUTH_ERRORS = frozenset({"invalid_auth", "token_revoked", "account_inactive", "not_authed", "token_expired"})
NOT_IN_CHANNEL_ERRORS = frozenset({"not_in_channel", "channel_not_found"})
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, ConnectionError)


class Failure(StrEnum):
    """What to do about a failed call."""

    RATE_LIMITED = "rate_limited"  # wait (the gate says how long), then again
    TRANSIENT = "transient"  # 5xx, connection errors: back off, then again
    AUTH = "auth"  # our token is refused: nothing works until an operator acts
    NOT_IN_CHANNEL = "not_in_channel"  # someone has to /invite the bot
    INVALID_BLOCKS = "invalid_blocks"  # our rendering is wrong: a bug, never retried
    PERMANENT = "permanent"  # any other error Slack states: retrying gives the same answer


def slack_error(exc: BaseException) -> str:
    """A short label for a failure: Slack's error code, `429`, `5xx` or `connection`."""
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        if status == 429:
            return "429"
        if status >= 500:
            return "5xx"
        return str(exc.response.get("error") or f"http_{status}")
    return "connection"


def classify(exc: BaseException) -> Failure:
    if not isinstance(exc, SlackApiError):
        return Failure.TRANSIENT if isinstance(exc, CONNECTION_ERRORS) else Failure.PERMANENT
    error = slack_error(exc)
    if error == "429":
        return Failure.RATE_LIMITED
    if error == "5xx" or error in TRANSIENT_ERRORS:
        return Failure.TRANSIENT
    if error in AUTH_ERRORS:
        return Failure.AUTH
    if error in NOT_IN_CHANNEL_ERRORS:
        return Failure.NOT_IN_CHANNEL
    if error == "invalid_blocks":
        return Failure.INVALID_BLOCKS
    return Failure.PERMANENT


class RateLimitedClient(AsyncWebClient):
    """AsyncWebClient that waits on a shared per-method gate before every call, closes the gate for
    Retry-After on a 429, retries 429s and 5xx/connection errors a bounded number of times (0 is
    fine), and counts every call by method and outcome."""

    def __init__(
        self,
        *,
        gate: MethodGate | None = None,
        metrics: Metrics | None = None,
        rate_limit_retries: int = 3,
        server_error_retries: int = 2,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        **kwargs: Any,
    ) -> None:
        # slack_sdk's retry handlers would retry behind our back (and mis-read Retry-After).
        kwargs["retry_handlers"] = []
        super().__init__(**kwargs)
        self.gate = gate or MethodGate()
        self.metrics = metrics
        self.rate_limit_retries = rate_limit_retries
        self.server_error_retries = server_error_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.sleep = sleep

    def sibling(self, **overrides: Any) -> RateLimitedClient:
        """Another client on the same token, session, gate and metrics (e.g. with no retries)."""
        settings: dict[str, Any] = {
            "gate": self.gate,
            "metrics": self.metrics,
            "rate_limit_retries": self.rate_limit_retries,
            "server_error_retries": self.server_error_retries,
            "backoff_base_s": self.backoff_base_s,
            "backoff_cap_s": self.backoff_cap_s,
            "sleep": self.sleep,
            "token": self.token,
            "base_url": self.base_url,
            "session": self.session,
            "timeout": self.timeout,
        }
        settings.update(overrides)
        return RateLimitedClient(**settings)

    def _count(self, method: str, status: str) -> None:
        if self.metrics is not None:
            self.metrics.slack_api_calls.labels(method=method, status=status).inc()

    async def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | FormData | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> AsyncSlackResponse:
        limited = failed = 0
        while True:
            await self.gate.wait(api_method)
            try:
                response = await super().api_call(
                    api_method,
                    http_verb=http_verb,
                    files=files,
                    data=data,
                    params=params,
                    json=json,
                    headers=dict(headers) if headers else None,
                    auth=auth,
                )
            except SlackApiError as exc:
                error = slack_error(exc)
                self._count(api_method, error)
                kind = classify(exc)
                if kind is Failure.RATE_LIMITED:
                    retry_after = parse_retry_after(exc.response.headers)
                    self.gate.block(api_method, retry_after)
                    log.warning("slack rate limit", extra={"method": api_method, "retry_after_s": retry_after})
                    limited += 1
                    if limited <= self.rate_limit_retries:
                        continue
                elif kind is Failure.TRANSIENT:
                    failed += 1
                    if failed <= self.server_error_retries:
                        await self.sleep(backoff(failed, base=self.backoff_base_s, cap=self.backoff_cap_s))
                        continue
                raise
            except CONNECTION_ERRORS:
                self._count(api_method, "connection")
                failed += 1
                if failed <= self.server_error_retries:
                    await self.sleep(backoff(failed, base=self.backoff_base_s, cap=self.backoff_cap_s))
                    continue
                raise
            self._count(api_method, "ok")
            return response
