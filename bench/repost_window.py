"""The repost window of docs/delivery.md, measured: from Slack's answer to a chat.postMessage to the
delivered marker of that notice reaching Redis.

A process killed inside that window leaves a notice that Slack has posted but Redis still holds as
undelivered: the next deliverer posts it again. This runs one deliverer (the bot's, with its default
settings) over a real redis-server and the Slack stand-in, 200 notices across 50 channels, and
pairs, for every notice, the instant the stand-in answered its post (`Call.at`, on the wall clock
here) with the instant Redis received the script that writes its marker (MONITOR's timestamp, same
machine, same clock). Prints p50 / p99 / max of the difference.

Usage: python bench/repost_window.py
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.core.notices import Notice, Target, notice_key
from bot.playground.standin import DEFAULT_BOT_TOKEN, SlackStandIn
from bot.slack.client import RateLimitedClient
from bot.slack.deliverer import Deliverer, DeliveryConfig
from bot.slack.ratelimit import ChannelPacer, MethodGate
from bot.store.outbox import Emit, Outbox
from tests.redis_server import RedisServer

CHANNELS = 50
PER_CHANNEL = 4
GATE = "bench"


async def watch(url: str, seen: dict[str, float], started: asyncio.Event, done: asyncio.Event) -> None:
    """Every command Redis receives that writes a delivered marker: Slack's ts -> Redis's timestamp."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        async with client.monitor() as monitor:
            started.set()
            async for command in monitor.listen():
                text = str(command.get("command", ""))
                if ":delivered:" in text:
                    for word in text.split():
                        if word.count(".") == 1 and word.replace(".", "").isdigit():  # a Slack ts
                            seen.setdefault(word, float(command["time"]))
                            if len(seen) == CHANNELS * PER_CHANNEL:
                                done.set()
    finally:
        await client.aclose()


async def measure(url: str) -> list[float]:
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    seen: dict[str, float] = {}
    started, done = asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(watch(url, seen, started, done))
    await started.wait()
    async with SlackStandIn(clock=time.time) as standin, aiohttp.ClientSession() as session:
        client = RateLimitedClient(
            token=DEFAULT_BOT_TOKEN, base_url=standin.api_url, session=session, gate=MethodGate()
        )
        outbox = Outbox(redis)
        deliverer = Deliverer(
            outbox=outbox,
            client=client,
            pacer=ChannelPacer(redis),
            gates=lambda: [GATE],
            config=DeliveryConfig(consumer="bench"),
        )
        now = datetime.now(UTC)
        notices = [
            Notice(
                kind="channel_message",
                gate_id=GATE,
                target=Target.to_channel(f"C{c:04d}"),
                payload={"text": f"notice {c}-{n}"},
                key=notice_key("bench", str(c), str(n)),
                created_at=now,
            )
            for n in range(PER_CHANNEL)
            for c in range(CHANNELS)
        ]
        await outbox.append(Emit(GATE, notices=notices))
        running = asyncio.create_task(deliverer.run())
        with contextlib.suppress(TimeoutError):  # reported below as notices without a marker
            await asyncio.wait_for(done.wait(), 120)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        answered = {str(c.response["ts"]): c.at for c in standin.calls("chat.postMessage") if c.ok}
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    await redis.aclose()
    missing = set(answered) - set(seen)
    if missing or len(answered) != len(notices):
        raise SystemExit(f"{len(answered)} posted, {len(missing)} without a marker seen")
    return sorted(seen[ts] - at for ts, at in answered.items())


def report(windows: list[float]) -> dict[str, Any]:
    ms = [w * 1000 for w in windows]
    return {
        "notices": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 2),
        "max_ms": round(ms[-1], 2),
    }


async def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            result = report(await measure(server.url))
        finally:
            server.stop()
    print(
        f"repost window (Slack's answer -> delivered marker in Redis), {result['notices']} notices: "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
