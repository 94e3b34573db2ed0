"""Ack-latency bench: how fast the bot acks `/gonogo status`, against a Bolt app that only acks.

Starts, each in its own process so the load generator cannot steal their event loop:
  * the bot (`python -m bot.cli serve`, HTTP mode) on a real Redis (db 15 of 127.0.0.1:6379,
    flushed first; a private redis-server if that is unreachable) and the Slack stand-in,
  * bench/ack_only_app.py: a minimal Bolt AsyncApp whose `/gonogo` handler only calls ack().
Then fires N freshly signed form-encoded `/gonogo status` slash commands (each with its own
response_url) at concurrency C at each, in alternating rounds, and measures the time to the HTTP
response (the ack). The bot's work after the ack (reading Redis, answering on the response_url)
is part of the load; between rounds the bench waits for those answers so they do not leak into
the other target's round.

Goal: at concurrency 20, p99(bot) / p99(ack-only) <= 1.5 and p99(bot) < 250 ms.
Exit 0 (it is a measurement, goal met or not) unless a request failed or the bot answered a
`status` wrongly (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/ack_latency.py` puts bench/, not the repo, on sys.path
    sys.path.insert(0, str(ROOT))

from bot.playground.standin import SlackStandIn  # noqa: E402
from tests.bot_harness import (  # noqa: E402
    BOT_TOKEN,
    CHANNEL,
    SIGNING_SECRET,
    form,
    signature_headers,
    slash_command,
    write_gate,
)
from tests.redis_server import RedisServer, free_port  # noqa: E402

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
GOAL_RATIO = 1.5
GOAL_P99_MS = 250.0
GATE = f"""
id: bench
name: Ack bench
channel: {CHANNEL}
checks:
  - id: smoke
    kind: command
    run: ["python3", "-c", "print('ok')"]
  - id: lint
    kind: command
    run: ["python3", "-c", "print('clean')"]
    severity: advisory
"""


@dataclass
class Target:
    name: str
    url: str
    process: asyncio.subprocess.Process
    log: Path
    samples_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sent: dict[str, float] = field(default_factory=dict)  # response_url id -> time.time() the request went out

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(target: Target) -> dict[str, Any]:
    values = sorted(target.samples_ms)
    return {
        "target": target.name,
        "n": len(values),
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "max_ms": values[-1] if values else math.nan,
        "mean_ms": sum(values) / len(values) if values else math.nan,
        "errors": len(target.errors),
    }


# --- processes ------------------------------------------------------------------------------


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def redis_url_for_bench(requested: str | None, tmp: Path) -> Iterator[str]:
    """The URL to use: the one asked for, db 15 of the machine's Redis, or a private redis-server."""
    if requested:
        yield requested
        return
    if _reachable("127.0.0.1", 6379):
        yield DEFAULT_REDIS_URL
        return
    if shutil.which("redis-server") is None:
        raise SystemExit("no Redis on 127.0.0.1:6379 and no redis-server to start")
    server = RedisServer(tmp / "redis").start()
    try:
        yield server.url
    finally:
        server.stop()


async def spawn(name: str, argv: list[str], env: dict[str, str], port: int, tmp: Path) -> Target:
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=tmp, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    return Target(name=name, url=f"http://127.0.0.1:{port}", process=process, log=log)


async def wait_ready(session: aiohttp.ClientSession, target: Target, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if target.process.returncode is not None:
            break
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{target.url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    code = target.process.returncode
    raise RuntimeError(f"{target.name} did not become ready (exit code {code}):\n{log_tail(target)}")


def log_tail(target: Target, size: int = 3000) -> str:
    return target.log.read_text(errors="replace")[-size:]


async def stop(target: Target) -> None:
    process = target.process
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=15)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


# --- load -----------------------------------------------------------------------------------


async def fire(
    session: aiohttp.ClientSession,
    standin: SlackStandIn,
    target: Target,
    count: int,
    concurrency: int,
    *,
    text: str = "status",
    record: bool = True,
) -> list[str]:
    """`count` signed slash commands at `concurrency`, closed loop: C workers, one request each at a time.

    Returns the ids of the response_urls handed out."""
    remaining = iter(range(count))
    url_ids: list[str] = []

    async def worker() -> None:
        for _ in remaining:
            response_url = standin.new_response_url(channel=CHANNEL)
            url_ids.append(response_url.rsplit("/", 1)[1])
            body = form(slash_command(text, response_url=response_url))
            headers = {"Content-Type": "application/x-www-form-urlencoded", **signature_headers(body)}
            sent_at, started = time.time(), time.perf_counter()
            try:
                async with session.post(target.events_url, data=body, headers=headers) as response:
                    await response.read()
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                if record:
                    target.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if not record:
                continue
            if status != 200:
                target.errors.append(f"HTTP {status}")
                continue
            target.samples_ms.append(elapsed_ms)
            target.sent[response_url.rsplit("/", 1)[1]] = sent_at

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return url_ids


async def settle(standin: SlackStandIn, url_ids: Sequence[str], within: float = 30.0) -> int:
    """Wait until every response_url in `url_ids` got its answer; how many are still missing."""
    wanted = set(url_ids)
    deadline = time.monotonic() + within
    while True:
        missing = wanted - {r.url_id for r in standin.responses}
        if not missing or time.monotonic() > deadline:
            return len(missing)
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def client_session(concurrency: int) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, metavar="N", help="measured requests per target")
    parser.add_argument("--concurrency", type=int, default=20, metavar="C", help="requests in flight per target")
    parser.add_argument("--warmup", type=int, default=20, metavar="N", help="unmeasured requests per target first")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds the requests are split into")
    parser.add_argument("--redis-url", default=None, help=f"default {DEFAULT_REDIS_URL} (flushed), else a private one")
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="after each bot round, wait up to S seconds for its response_url answers",
    )
    parser.add_argument(
        "--bot-command",
        default=None,
        metavar="CMD",
        help="how to start the bot, to A/B a variant or profile it (default: python -m bot.cli serve)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON document instead of the table")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--requests, --concurrency and --rounds must be >= 1, --warmup >= 0")
    return args


async def run(args: argparse.Namespace, tmp: Path, redis_url: str) -> dict[str, Any]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()

    gates = tmp / "gates"
    write_gate(gates, GATE, "bench.yml")
    async with SlackStandIn(bot_token=BOT_TOKEN) as standin:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GONOGO_", "REDIS_"))}
        base_env.update(
            {
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": standin.api_url,
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
            }
        )
        bot_port, ack_port = free_port(), free_port()
        bot_env = {
            **base_env,
            "REDIS_URL": redis_url,
            "GONOGO_GATES": str(gates),
            "GONOGO_PORT": str(bot_port),
            "GONOGO_HOST": "127.0.0.1",
            "GONOGO_DATA_DIR": str(tmp / "data"),
            "GONOGO_LOG_LEVEL": "WARNING",
        }
        targets: list[Target] = []
        try:
            bot_argv = shlex.split(args.bot_command) if args.bot_command else [sys.executable, "-m", "bot.cli", "serve"]
            targets.append(await spawn("bot", bot_argv, bot_env, bot_port, tmp))
            ack_argv = [sys.executable, str(ROOT / "bench" / "ack_only_app.py"), "--port", str(ack_port)]
            targets.append(await spawn("ack-only", ack_argv, base_env, ack_port, tmp))
            bot = targets[0]
            async with client_session(args.concurrency) as session:
                for target in targets:
                    await wait_ready(session, target)
                # Something for `status` to list.
                opened = standin.new_response_url(channel=CHANNEL)
                body = form(slash_command("open bench 1.0.0", response_url=opened))
                headers = {"Content-Type": "application/x-www-form-urlencoded", **signature_headers(body)}
                async with session.post(bot.events_url, data=body, headers=headers) as response:
                    if response.status != 200:
                        raise RuntimeError(f"/gonogo open answered HTTP {response.status}")
                answer = await standin.wait_for_response(lambda r: r.url_id == opened.rsplit("/", 1)[1], timeout=10)
                if "Opened" not in str(answer.payload.get("text", "")):
                    raise RuntimeError(f"/gonogo open failed: {answer.payload.get('text')}\n{log_tail(bot)}")

                for target in targets:  # warm-up: connections, auth.test cache, imports, Redis pool
                    warm = await fire(session, standin, target, args.warmup, args.concurrency, record=False)
                    if target is bot:
                        await settle(standin, warm, within=args.settle_timeout)
                await asyncio.sleep(0.5)

                quotient, remainder = divmod(args.requests, args.rounds)
                per_round = [quotient + (i < remainder) for i in range(args.rounds)]
                for i, count in enumerate(per_round):
                    order = targets if i % 2 == 0 else targets[::-1]
                    for target in order:
                        await fire(session, standin, target, count, args.concurrency)
                        if target is bot:
                            await settle(standin, list(bot.sent), within=args.settle_timeout)
                        await asyncio.sleep(0.2)
            unanswered = await settle(standin, list(bot.sent), within=min(10.0, args.settle_timeout))
            answers = {r.url_id: r for r in standin.responses if r.url_id in bot.sent}
            bad_answers = sum(1 for a in answers.values() if not a.ok or "bench" not in json.dumps(a.payload))
            answer_ms = sorted((a.time - bot.sent[u]) * 1000 for u, a in answers.items())
        finally:
            for target in targets:
                await stop(target)

    rows = [summary(t) for t in targets]
    bot_p99, ack_p99 = rows[0]["p99_ms"], rows[1]["p99_ms"]
    ratio = bot_p99 / ack_p99 if ack_p99 else math.nan
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "targets": rows,
        "p99_ratio": ratio,
        "p99_ratio_goal": GOAL_RATIO,
        "bot_p99_goal_ms": GOAL_P99_MS,
        "goal_met": ratio <= GOAL_RATIO and bot_p99 < GOAL_P99_MS,
        "bot_answer_p50_ms": percentile(answer_ms, 50),
        "bot_answer_p99_ms": percentile(answer_ms, 99),
        "bot_answers_missing": unanswered,
        "bot_answers_bad": bad_answers,
        "error_samples": {t.name: t.errors[:5] for t in targets if t.errors},
    }


def print_table(doc: dict[str, Any]) -> None:
    print(
        f"/gonogo status, {doc['requests']} requests per target at concurrency {doc['concurrency']}, "
        f"{doc['rounds']} alternating rounds, {doc['cpus']} CPUs"
    )
    header = f"{'target':<10} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}"
    print(header)
    print("-" * len(header))
    for row in doc["targets"]:
        print(
            f"{row['target']:<10} {row['n']:>5} {row['p50_ms']:>8.1f} {row['p90_ms']:>8.1f} "
            f"{row['p99_ms']:>8.1f} {row['max_ms']:>8.1f} {row['errors']:>7}"
        )
    bot_p99 = doc["targets"][0]["p99_ms"]
    print(f"p99 ratio bot/ack-only = {doc['p99_ratio']:.2f} (goal <= {GOAL_RATIO:g})")
    print(f"bot p99 = {bot_p99:.1f} ms (goal < {GOAL_P99_MS:g} ms)")
    print(
        f"bot answer on response_url (request sent -> reply posted): "
        f"p50 {doc['bot_answer_p50_ms']:.1f} ms, p99 {doc['bot_answer_p99_ms']:.1f} ms"
    )
    if doc["bot_answers_missing"] or doc["bot_answers_bad"]:
        print(f"bot answers on response_url: {doc['bot_answers_missing']} missing, {doc['bot_answers_bad']} wrong")
    for name, errors in doc["error_samples"].items():
        print(f"{name} errors, first ones: {errors}")


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gonogo-ack-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with redis_url_for_bench(args.redis_url, tmp) as redis_url:
            doc = await run(args, tmp, redis_url)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)
    failed = any(row["errors"] for row in doc["targets"]) or doc["bot_answers_bad"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
