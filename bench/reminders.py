"""Reminder bench: 1,000 missing signers, 3 scheduler replicas, Slack answering 429 to one call in ten.

Three replicas (each a Scheduler ticking and a Deliverer posting, with its own Slack client and
method gate) share one private redis-server and the Slack stand-in, which answers every 10th call
with 429 and Retry-After: 1. All three tick the same release at the same instant, so every unit is
contended by three claimers.

Prints DMs sent, duplicates (must be 0), missing (must be 0), and the wall time from the first tick
to the last DM against the ideal the pacing allows. Each DM goes to its own conversation, so the
per-channel pacing never holds one back; what the 429s force is waiting out Retry-After before the
refused post is tried again (a retry can be refused too: the stand-in refuses every 10th call
whoever makes it), and while a replica waits, Slack's Retry-After forbids it *every* post of that
method. So the ideal is the same work against a Slack that never says 429 (measured first, on the
same machine) plus the longest chain of Retry-After waits one DM had to sit through. Goal: wall <=
1.2 x ideal. Also printed: the ratio to the looser bound max(no-429 run, chain x Retry-After),
which assumes the waits could hide entirely behind other work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/reminders.py` puts bench/, not the repo, on sys.path
    sys.path.insert(0, str(ROOT))

from bot.core.gateset import GateSet  # noqa: E402
from bot.core.release import Release  # noqa: E402
from bot.playground.standin import DEFAULT_BOT_TOKEN, SlackStandIn  # noqa: E402
from bot.services.membership import Membership  # noqa: E402
from bot.services.releases import ReleaseService  # noqa: E402
from bot.services.scheduler import Scheduler  # noqa: E402
from bot.slack import reminders  # noqa: E402
from bot.slack.client import RateLimitedClient  # noqa: E402
from bot.slack.deliverer import Deliverer, DeliveryConfig  # noqa: E402
from bot.slack.ratelimit import ChannelPacer, MethodGate  # noqa: E402
from bot.slack.renderers import RENDERERS  # noqa: E402
from bot.store.connection import connect  # noqa: E402
from bot.store.outbox import Outbox  # noqa: E402
from bot.store.schedule import ScheduleStore  # noqa: E402
from bot.store.store import AuditEvent, Store  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

SIGNERS = int(os.environ.get("BENCH_SIGNERS", "1000"))
REPLICAS = 3
FAIL_EVERY = 10
RETRY_AFTER_S = 1
GOAL = 1.2


def gate_yaml() -> str:
    users = ", ".join(f"U{i:05d}" for i in range(SIGNERS))
    return f"""
id: bench
name: Reminder bench
channel: C0BENCH
signoffs:
  - {{role: approvers, label: Approvers, users: [{users}]}}
reminders: {{every: 2h}}
"""


async def main() -> int:
    logging.basicConfig(level=logging.ERROR)  # 111 "slack rate limit" warnings are the point, not news
    reminders.register(RENDERERS)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        gates_dir = Path(tmp) / "gates"
        gates_dir.mkdir()
        (gates_dir / "bench.yml").write_text(gate_yaml())
        try:
            clean = await run(server.url, GateSet(gates_dir), fail_every=0)
            await flush(server.url)
            faulty = await run(server.url, GateSet(gates_dir), fail_every=FAIL_EVERY)
        finally:
            server.stop()
    waits = faulty.chain * RETRY_AFTER_S
    ideal = clean.wall + waits
    ratio = faulty.wall / ideal
    overlap = faulty.wall / max(clean.wall, waits)
    fault = f"429 (Retry-After {RETRY_AFTER_S}s) to every {FAIL_EVERY}th post"
    print(f"signers: {SIGNERS}, replicas: {REPLICAS}, stand-in: {fault}")
    print(f"units claimed:  {faulty.claimed} (by {REPLICAS} replicas ticking at once: {REPLICAS * SIGNERS} attempts)")
    print(f"DMs sent:       {faulty.sent}")
    print(f"duplicates:     {faulty.duplicates}  (must be 0)")
    print(f"missing:        {faulty.missing}  (must be 0)")
    print(f"429s answered:  {faulty.limited}")
    print(f"wall time:      {faulty.wall:.2f} s (first tick -> last DM)")
    clean_note = f"{clean.duplicates} duplicates, {clean.missing} missing"
    print(f"without 429s:   {clean.wall:.2f} s (the same run, Slack never limits; {clean_note})")
    print(f"ideal:          {ideal:.2f} s (without 429s + {faulty.chain} Retry-After in a row for one DM)")
    print(f"ratio:          {ratio:.2f}  (goal <= {GOAL})")
    print(f"ratio to max(without 429s, waits): {overlap:.2f}  (as if the waits could hide behind other work)")
    ok = faulty.duplicates == 0 and faulty.missing == 0 and faulty.claimed == SIGNERS and ratio <= GOAL
    return 0 if ok else 1


async def flush(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()


@dataclass
class Outcome:
    claimed: int
    sent: int
    duplicates: int
    missing: int
    limited: int
    chain: int
    wall: float


async def run(redis_url: str, gates: GateSet, *, fail_every: int) -> Outcome:
    now = datetime.now(UTC)
    async with SlackStandIn() as standin, aiohttp.ClientSession() as session:
        redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        store = Store(redis)
        release = Release(id="bench@1.0.0", gate_id="bench", version="1.0.0", opened_by="U0OPEN", opened_at=now)
        await store.open_release(release, AuditEvent(type="opened", actor="U0OPEN", at=now))
        standin.fail_every(fail_every, status=429, retry_after=RETRY_AFTER_S, methods=["chat.postMessage"])

        schedulers, deliverers, handles = [], [], []
        for i in range(REPLICAS):
            handle = connect(redis_url, Path("."))  # each replica its own pool, as `gonogo serve` has
            handles.append(handle)
            replica_redis = handle.client
            slack = RateLimitedClient(
                token=DEFAULT_BOT_TOKEN, base_url=standin.api_url, session=session, gate=MethodGate()
            )
            replica_store = Store(replica_redis)
            releases = ReleaseService(store=replica_store, gates=gates, session=session, env=dict(os.environ))
            members = Membership(replica_store, slack).members
            schedulers.append(Scheduler(releases=releases, store=ScheduleStore(replica_redis), members=members))
            deliverers.append(
                Deliverer(
                    outbox=Outbox(replica_redis),
                    client=slack,
                    pacer=ChannelPacer(replica_redis, per_second=1.0),
                    config=DeliveryConfig(consumer=f"replica-{i}", poll_interval_s=0.02, max_in_flight=SIGNERS),
                )
            )

        started = time.perf_counter()
        tasks = [asyncio.create_task(d.run()) for d in deliverers]
        ticks = await asyncio.gather(*(s.reminders_tick("bench") for s in schedulers))
        claimed = sum(len(t.claimed) for t in ticks)

        def delivered() -> int:
            return sum(1 for c in standin.calls("chat.postMessage") if c.ok)

        deadline = time.monotonic() + 600
        version = standin.version
        while delivered() < SIGNERS and time.monotonic() < deadline:
            version = await standin.changed(version, timeout=1.0)  # every post bumps it
        wall = time.perf_counter() - started
        await asyncio.sleep(0.5)  # anything late would be a duplicate: give it the chance to show
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        posts = [c for c in standin.calls("chat.postMessage") if c.ok]
        refused = [str(c.args.get("channel")) for c in standin.calls("chat.postMessage") if not c.ok]
        limited = len(refused)
        chain = max(Counter(refused).values(), default=0)  # the most 429s one DM got in a row
        per_user = Counter(str(c.args.get("channel")) for c in posts)
        duplicates = sum(n - 1 for n in per_user.values() if n > 1)
        missing = SIGNERS - len(per_user)
        await redis.aclose()
        for handle in handles:
            await handle.close()
    return Outcome(claimed, len(posts), duplicates, missing, limited, chain, wall)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
