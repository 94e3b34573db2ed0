"""Delivery bench: two deliverer processes, 1,000 notices across 50 channels, the Slack stand-in.

Phase 1: the stand-in answers 429 (Retry-After: 1) to one request in ten, every method.
Phase 2: no injected faults.
Each phase appends 1,000 notices (20 for each of 50 channels, one gate per channel) while 50 release
cards change four times a second in all, and prints:

- delivered, duplicates (must be 0: no process dies here), missing (must be 0);
- wall time from the append to the last post, against the ideal Slack's one message per second per
  channel allows (20 messages per channel: the last can go 19 s after the first). Goal <= 1.2x;
- card refresh lag: from a state change written to the first chat.update showing it. Goal p99 <= 1.5 s
  without 429s.

`--kill-at S` SIGKILLs one worker S seconds into phase 1 and restarts it: duplicates are then
counted apart when the first copy was posted in the second before the kill (the crash window,
docs/delivery.md).

Usage: python bench/delivery.py [--kill-at 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.core.notices import Notice, Target, notice_key
from bot.metrics import Metrics
from bot.playground.standin import DEFAULT_BOT_TOKEN, SlackStandIn
from bot.slack.blocks import Message
from bot.slack.client import RateLimitedClient
from bot.slack.deliverer import Deliverer, DeliveryConfig
from bot.slack.ratelimit import ChannelPacer, MethodGate
from bot.slack.refresher import CardContent, CardRefresher
from bot.store.outbox import Emit, Outbox, emit
from tests.redis_server import RedisServer

CHANNELS = 50
PER_CHANNEL = 20
CARD_CHANGES_PER_S = 4.0
IDEAL_S = (PER_CHANNEL - 1) * 1.0  # one message per second per channel, the first at 0 s


def gate_of(i: int) -> str:
    return f"bench{i:02d}"


def channel_of(i: int) -> str:
    return f"C0BENCH{i:02d}"


def card_channel_of(i: int) -> str:
    return f"C0CARD{i:02d}"


def release_of(i: int) -> str:
    return f"{gate_of(i)}@1.0.0"


def state_key(release_id: str) -> str:
    gate = release_id.partition("@")[0]
    return f"gonogo:{{g:{gate}}}:bench:state:{release_id}"


# --- the worker process: one replica's deliverer and card refresher ----------------------------


async def worker(redis_url: str, api_url: str, consumer: str) -> None:
    logging.basicConfig(level=logging.ERROR)  # 429 warnings by the hundred are the point here
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with aiohttp.ClientSession() as session:
        client = RateLimitedClient(
            token=DEFAULT_BOT_TOKEN, base_url=api_url, session=session, gate=MethodGate(), metrics=Metrics()
        )
        outbox = Outbox(redis)
        pacer = ChannelPacer(redis)

        async def source(release_id: str) -> CardContent | None:
            state = str(await redis.get(state_key(release_id)))
            i = int(release_id[5:7])
            text = f"{release_id} state {state}"
            block = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
            return CardContent(channel=card_channel_of(i), message=Message(text=text, blocks=[block]))

        config = DeliveryConfig(consumer=consumer, claim_idle_s=3.0, maintenance_every_s=0.5, backoff_cap_s=2.0)
        deliverer = Deliverer(outbox=outbox, client=client, pacer=pacer, config=config)
        refresher = CardRefresher(outbox=outbox, client=client, source=source, pacer=pacer)
        tasks = [asyncio.create_task(deliverer.run()), asyncio.create_task(refresher.run())]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await redis.aclose()


# --- the parent: Redis, the stand-in, the workers, the load, the numbers --------------------------


@dataclass
class Phase:
    name: str
    fail_every: int
    kill_at: float | None = None
    changes: list[tuple[str, int, float]] = field(default_factory=list)  # release, state, written at


async def start_worker(redis_url: str, api_url: str, name: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--worker", redis_url, api_url, name, env={**os.environ, "PYTHONHASHSEED": "0"}
    )


async def change_cards(redis: aioredis.Redis, phase: Phase, until: asyncio.Event) -> None:
    rng = random.Random(7)
    while not until.is_set():
        i = rng.randrange(CHANNELS)
        rid = release_of(i)
        async with redis.pipeline(transaction=True) as tx:  # the state change and its dirty mark, atomically
            tx.incr(state_key(rid))
            emit(tx, Emit(gate_of(i), card_of=rid, at=datetime.now(UTC)))
            state, *_ = await tx.execute()
        phase.changes.append((rid, int(state), time.time()))
        await asyncio.sleep(1 / CARD_CHANGES_PER_S)


def card_lags(standin: SlackStandIn, phase: Phase, since: float) -> list[float]:
    shown: dict[str, list[tuple[float, int]]] = {}
    for call in standin.history:
        if call.method in ("chat.update", "chat.postMessage") and call.ok and call.time >= since:
            text = str(call.args.get("text", ""))
            if " state " in text and text.startswith("bench"):
                rid, _, shown_state = text.partition(" state ")
                shown.setdefault(rid, []).append((call.time, int(shown_state)))
    lags = []
    for rid, state, written in phase.changes:
        first = next((t for t, s in shown.get(rid, []) if s >= state and t >= written), None)
        if first is not None:
            lags.append(first - written)
    return lags


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run_phase(
    phase: Phase,
    redis: aioredis.Redis,
    standin: SlackStandIn,
    workers: list[asyncio.subprocess.Process],
    urls: tuple[str, str],
) -> dict[str, float]:
    outbox = Outbox(redis)
    standin.fail_every(phase.fail_every, status=429, retry_after=1)
    since = time.time()
    started_calls = len(standin.history)
    changing = asyncio.Event()
    changer = asyncio.create_task(change_cards(redis, phase, changing))
    await asyncio.sleep(1.0)  # cards are changing before the burst of notices arrives
    created = datetime.now(UTC)
    expected: set[str] = set()
    t0 = time.time()
    for i in range(CHANNELS):
        notices = []
        for n in range(PER_CHANNEL):
            text = f"{phase.name} {channel_of(i)} #{n}"
            expected.add(text)
            notices.append(
                Notice(
                    kind="channel_message",
                    gate_id=gate_of(i),
                    target=Target.to_channel(channel_of(i)),
                    payload={"text": text},
                    key=notice_key(phase.name, channel_of(i), str(n)),
                    created_at=created,
                )
            )
        await outbox.append(Emit(gate_of(i), notices))
    killed_at: float | None = None
    deadline = t0 + 180
    while True:
        posted = [c for c in standin.history[started_calls:] if c.method == "chat.postMessage" and c.ok]
        texts = Counter(str(c.args.get("text")) for c in posted)
        if expected <= set(texts) or time.time() > deadline:
            break
        if phase.kill_at is not None and killed_at is None and time.time() - t0 >= phase.kill_at:
            workers[0].send_signal(signal.SIGKILL)
            await workers[0].wait()
            killed_at = time.time()
            workers[0] = await start_worker(*urls, "worker-a-restarted")
        await asyncio.sleep(0.05)
    ours = [c for c in posted if str(c.args.get("text")) in expected]
    wall = max(c.time for c in ours) - t0 if ours else float("nan")
    await asyncio.sleep(2.0)  # late duplicates would show up here
    changing.set()
    await changer
    await converge(redis, standin)
    posted = [c for c in standin.history[started_calls:] if c.method == "chat.postMessage" and c.ok]
    texts = Counter(str(c.args.get("text")) for c in posted if str(c.args.get("text")) in expected)
    duplicates = sum(n - 1 for n in texts.values() if n > 1)
    in_window = 0
    if killed_at is not None:
        for text, n in texts.items():
            if n > 1:
                first = min(c.time for c in posted if c.args.get("text") == text)
                in_window += n - 1 if killed_at - 1.0 <= first <= killed_at else 0
    lags = card_lags(standin, phase, since)
    limited = sum(1 for c in standin.history[started_calls:] if c.status == 429)
    return {
        "delivered": len(set(texts)),
        "duplicates": duplicates,
        "duplicates_in_crash_window": in_window,
        "missing": len(expected - set(texts)),
        "wall_s": wall,
        "ratio": wall / IDEAL_S,
        "lag_p50": percentile(lags, 50),
        "lag_p99": percentile(lags, 99),
        "lags": len(lags),
        "429s": limited,
    }


async def converge(redis: aioredis.Redis, standin: SlackStandIn, within_s: float = 60) -> None:
    """Every card ends showing its release's final state."""
    deadline = time.time() + within_s
    while time.time() < deadline:
        behind = 0
        for i in range(CHANNELS):
            rid = release_of(i)
            state = str(await redis.get(state_key(rid)) or "")
            if not state:
                continue
            cards = [m for m in standin.messages(card_channel_of(i)) if str(m["text"]).startswith(rid)]
            if len(cards) != 1 or cards[0]["text"] != f"{rid} state {state}":
                behind += 1
        if not behind:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"cards did not converge within {within_s}s ({behind} behind)")


async def main(kill_at: float | None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        redis = aioredis.Redis.from_url(server.url, decode_responses=True)
        await Outbox(redis).register(gate_of(i) for i in range(CHANNELS))
        ok = True
        try:
            async with SlackStandIn() as standin:
                urls = (server.url, standin.api_url)
                workers = [await start_worker(*urls, "worker-a"), await start_worker(*urls, "worker-b")]
                try:
                    print(f"delivery bench: 2 processes, {CHANNELS * PER_CHANNEL} notices across {CHANNELS} channels")
                    print(f"ideal: {IDEAL_S:.0f} s ({PER_CHANNEL} per channel at 1 message/s, the first at 0 s)")
                    for phase in (Phase("with-429s", 10, kill_at), Phase("no-faults", 0)):
                        r = await run_phase(phase, redis, standin, workers, urls)
                        print(
                            f"[{phase.name}] delivered {r['delivered']:.0f}  duplicates {r['duplicates']:.0f}"
                            + (f" ({r['duplicates_in_crash_window']:.0f} in the crash window)" if phase.kill_at else "")
                            + f"  missing {r['missing']:.0f}  429s answered {r['429s']:.0f}"
                        )
                        print(
                            f"[{phase.name}] wall {r['wall_s']:.1f} s = {r['ratio']:.2f}x ideal (goal <= 1.2x)  "
                            f"card refresh lag p50 {r['lag_p50']:.2f} s  p99 {r['lag_p99']:.2f} s "
                            f"over {r['lags']:.0f} changes" + ("  (goal p99 <= 1.5 s)" if phase.fail_every == 0 else "")
                        )
                        allowed = r["duplicates_in_crash_window"]
                        ok &= r["missing"] == 0 and r["duplicates"] <= allowed
                finally:
                    for proc in workers:
                        with contextlib.suppress(ProcessLookupError):
                            proc.terminate()
                    await asyncio.gather(*(p.wait() for p in workers))
        finally:
            await redis.aclose()
            server.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        asyncio.run(worker(sys.argv[2], sys.argv[3], sys.argv[4]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kill-at", type=float, default=None, help="SIGKILL one worker this many seconds in")
    sys.exit(asyncio.run(main(parser.parse_args().kill_at)))
