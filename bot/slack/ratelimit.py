"""Slack's rate limits, kept on our side of the wire.

- `MethodGate`: after a 429 with `Retry-After: N` on a method, no call of that method leaves this
  replica for N seconds: every client sharing the gate waits, not only the call that was refused
  (Slack limits per method and workspace). slack_sdk's own RateLimitErrorRetryHandler reads only the
  first character of the header ("10" -> 1 s) and delays only the retried call; we use neither.
- `ChannelPacer`: Slack posts about one message per second per channel, with short bursts. A token
  bucket per channel in Redis (shared by every replica) refills at one token a second, starts with
  one and holds at most `burst`: over any stretch longer than the burst the rate never passes 1/s,
  and a channel that lost seconds to a 429 catches up a little.
- `backoff`: exponential, with jitter, for 5xx and connection errors.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis.asyncio as aioredis

from bot.store import keys
from bot.store.outbox import raise_if_cancelled

DEFAULT_RETRY_AFTER_S = 1.0
Sleep = Callable[[float], Awaitable[Any]]


def parse_retry_after(headers: Mapping[str, Any] | None, default: float = DEFAULT_RETRY_AFTER_S) -> float:
    """Seconds from a Retry-After header (case-insensitive name; whole or decimal seconds)."""
    for name, value in (headers or {}).items():
        if str(name).lower() != "retry-after":
            continue
        raw = value[0] if isinstance(value, list | tuple) and value else value
        try:
            seconds: float = float(str(raw).strip())
        except ValueError:
            return default
        return seconds if math.isfinite(seconds) and seconds >= 0 else default
    return default


def backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1, 2, ...): half fixed, half jitter, doubling up to `cap`."""
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    jitter: float = (rng or random).uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


class MethodGate:
    """Per-method "not before" instants for one replica, shared by all its Slack clients."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self.clock = clock
        self.sleep = sleep
        self._until: dict[str, float] = {}

    def block(self, method: str, seconds: float) -> None:
        until = self.clock() + seconds
        self._until[method] = max(self._until.get(method, 0.0), until)

    def remaining(self, method: str) -> float:
        return max(0.0, self._until.get(method, 0.0) - self.clock())

    async def wait(self, method: str, *, early: float = 0.0) -> None:
        """Return once `method` may be called (or only `early` seconds are left, for work that must be
        done before the call); a 429 arriving meanwhile extends the wait."""
        while (delay := self.remaining(method) - early) > 0:
            await self.sleep(delay)


# KEYS: bucket. ARGV: ms per token, burst, idle ttl ms. Returns ms to wait (0: a token was taken).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if not tokens then tokens, at = 1, now end
tokens = math.min(burst, tokens + (now - at) / per)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * per) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return wait
"""

# A post Slack refused (429, 5xx) did not use the channel's budget: give the token back.
_REFUND = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens then redis.call('HSET', KEYS[1], 'tokens', tostring(math.min(tonumber(ARGV[1]), tokens + 1))) end
return 1
"""


class ChannelPacer:
    def __init__(
        self, client: aioredis.Redis, *, per_second: float = 1.0, burst: int = 3, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.per_ms = 1000.0 / per_second
        self.burst = burst
        self.sleep = sleep
        self._take = client.register_script(_TAKE)
        self._refund = client.register_script(_REFUND)

    async def acquire(self, channel: str) -> None:
        """Wait for the channel's next slot (Redis time, so replicas share one bucket)."""
        ttl_ms = int(self.per_ms * self.burst * 4) + 60_000
        while True:
            raise_if_cancelled()
            wait_ms = int(await self._take(keys=[keys.channel_pace(channel)], args=[self.per_ms, self.burst, ttl_ms]))
            if wait_ms <= 0:
                return
            await self.sleep(wait_ms / 1000)

    async def refund(self, channel: str) -> None:
        await self._refund(keys=[keys.channel_pace(channel)], args=[self.burst])
