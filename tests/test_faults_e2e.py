"""Faults, end to end: Redis killed, hung or losing answers, a lost lease, SIGTERM mid-run.

Whatever happens, a run ends with a final card (⚠️ for what did not finish), is recorded once
Redis answers again, and releases its lock; every click and command is answered within Slack's
3 s, and "nothing was changed" is said only when it is true.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bot.core.gateset import GateSet
from bot.core.release import RunLease
from bot.playground.standin import Call, SlackStandIn
from bot.services.releases import ReleaseService
from bot.slack.blocks import ACTION_APPROVE, ACTION_REFRESH, ACTION_RUN, ACTION_WITHDRAW
from bot.store import keys
from bot.store.store import Store
from tests.bot_harness import CHANNEL, RunningBot, bot_settings, reply_to, write_gate
from tests.delivery_kit import release_road, until
from tests.fault_proxy import FaultProxy
from tests.redis_server import RedisServer

RID = "payments@1.4.0"
SLACK_ANSWER_S = 3.0

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - id: quick
    kind: command
    run: ["python3", "-c", "print('ok')"]
  - id: mid
    kind: command
    run: ["python3", "-c", "import time; time.sleep(1.5)"]
  - id: nap
    name: Long nap
    kind: command
    run: ["python3", "-c", "import time; time.sleep(60)", "{marker}"]
    severity: blocker
signoffs:
  - {{role: tech-lead, label: Tech Lead, users: [U01TECH, U01LEAD2]}}
"""


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.fixture
def marker() -> str:
    """Names the long check's process, to see it killed when its run stops."""
    return f"gonogo-nap-{secrets.token_hex(6)}"


@pytest.fixture
def gates_dir(tmp_path: Path, marker: str) -> Path:
    directory = tmp_path / "gates"
    write_gate(directory, GATE.format(marker=marker), "payments.yml")
    return directory


@contextlib.asynccontextmanager
async def running(standin: SlackStandIn, redis_url: str, gates_dir: Path, tmp_path: Path, **extra: Any) -> Any:
    settings = bot_settings(
        api_url=standin.api_url, redis_url=redis_url, gates=gates_dir, data_dir=tmp_path / "d", **extra
    )
    bot = await RunningBot(settings).start()
    try:
        yield bot
    finally:
        await bot.stop()


def header_of(message: dict[str, Any]) -> str:
    blocks = message.get("blocks") or []
    return str(blocks[0]["text"]["text"]) if blocks else ""


def card_updates(standin: SlackStandIn, ts: str) -> list[Call]:
    return [c for c in standin.calls("chat.update") if c.args.get("ts") == ts]


def final(call: Call) -> bool:
    """A card that is done: no ⏳ anywhere, no RUNNING header."""
    text = json.dumps(call.args.get("blocks"), ensure_ascii=False)
    return "⏳" not in text and "RUNNING" not in header_of(call.args)


def nap_line(call: Call) -> str:
    for block in call.args.get("blocks") or []:
        text = (block.get("text") or {}).get("text", "")
        for line in text.splitlines():
            if "*Long nap*" in line:
                return str(line)
    raise AssertionError("the card has no line for the long check")


def processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
    return found


async def open_card(bot: RunningBot, standin: SlackStandIn) -> str:
    await bot.command("open payments 1.4.0 abc1234", response_url=standin.new_response_url(), user="U09OPEN")
    posted = await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL and c.ok)
    return str(posted.response["ts"])


# --- runs always finish -------------------------------------------------------------------


async def test_redis_killed_mid_run_the_card_ends_final_and_the_run_is_recorded_when_it_is_back(
    standin: SlackStandIn, gates_dir: Path, tmp_path: Path, marker: str
) -> None:
    server = RedisServer(tmp_path / "redis", persist=True).start()
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        async with running(standin, server.url, gates_dir, tmp_path) as bot:
            card_ts = await open_card(bot, standin)
            await bot.command(f"run {RID}", response_url=standin.new_response_url())

            async def quick_stored() -> bool:
                return bool(await client.hexists(keys.results(RID), "quick"))

            await until(quick_stored, 10, "the first result")
            assert processes_with(marker), "the long check should be running"
            assert server.process is not None
            server.process.kill()  # SIGKILL: Redis is gone mid-run
            server.process.wait()
            server.process = None

            # The run stops (the store stayed away), its long check is killed, the card ends.
            last = await standin.wait_for(
                "chat.update", lambda c: c.args.get("ts") == card_ts and final(c) and "⚠️" in str(c.args), timeout=20
            )
            assert "not finished: the state store stopped answering" in nap_line(last)
            assert nap_line(last).startswith("⚠️")
            assert header_of(last.args).startswith("🔴 NO-GO"), header_of(last.args)
            assert "not recorded yet" in json.dumps(last.args["blocks"])
            await until(lambda: not processes_with(marker), 10, "the long check to be killed")
            assert final(card_updates(standin, card_ts)[-1])

            # Redis is back (with what it had on disk): the run is recorded, marked interrupted.
            server.start()

            async def recorded() -> bool:
                with contextlib.suppress(aioredis.ConnectionError):
                    return bool(await client.llen(keys.runs(RID)))
                return False

            await until(recorded, 30, "the run's record")
            run = json.loads((await client.lrange(keys.runs(RID), 0, 0))[0])
            assert run["interrupted"] == "the state store stopped answering"
            assert run["counts"] == {"pass": 2, "error": 1}
            assert not await client.exists(keys.run_lock(RID))
            nap = json.loads(await client.hget(keys.results(RID), "nap") or "{}")
            assert nap["status"] == "error" and nap["summary"].startswith("not finished")
            assert await client.hexists(keys.results(RID), "mid")  # a result the store missed
            redrawn = await standin.wait_for(
                "chat.update", lambda c: c.args.get("ts") == card_ts and "interrupted" in str(c.args), timeout=10
            )
            assert final(redrawn) and nap_line(redrawn).startswith("⚠️")
            assert final(card_updates(standin, card_ts)[-1])
    finally:
        await client.aclose()
        server.stop()


@pytest.fixture
async def service(
    standin: SlackStandIn, redis_client: aioredis.Redis, gates_dir: Path
) -> AsyncIterator[ReleaseService]:
    """The release service on its own, with a lease renewed every 0.2 s (the bot: every 10 s)."""
    async with aiohttp.ClientSession() as session:
        releases = ReleaseService(
            store=Store(redis_client),
            gates=GateSet(gates_dir),
            session=session,
            env=dict(os.environ),
            lease_ttl_ms=3_000,
            lease_renew_s=0.2,
        )
        try:
            async with release_road(releases, standin, session, redis_client):
                yield releases
        finally:
            await releases.drain(5)


@pytest.mark.parametrize("how", ["expired", "taken over"])
async def test_a_run_that_loses_its_lease_stops(
    service: ReleaseService, standin: SlackStandIn, redis_client: aioredis.Redis, marker: str, how: str
) -> None:
    release, _ = await service.open("payments", "1.4.0", "abc1234", "U09OPEN")
    await service.start_run(release, "U01TECH")
    await until(lambda: bool(processes_with(marker)), 10, "the long check to start")
    other = RunLease(token="f" * 32, actor="U0OTHER", started_at=datetime.now(UTC), check_ids=["nap"])
    if how == "expired":
        await redis_client.delete(keys.run_lock(RID))
    else:
        await redis_client.set(keys.run_lock(RID), other.model_dump_json(), px=30_000)

    started = time.monotonic()
    await until(lambda: service.in_flight == 0, 10, "the run to stop")
    assert time.monotonic() - started < 5  # the long check (60 s) did not run on
    assert not processes_with(marker)
    run = json.loads((await redis_client.lrange(keys.runs(RID), 0, 0))[0])
    assert run["interrupted"].startswith("the run lost its lease")
    nap = await redis_client.hget(keys.results(RID), "nap")
    if how == "expired":
        assert nap is not None and "not finished: the run lost its lease" in nap
        assert not await redis_client.exists(keys.run_lock(RID))

        # The refresher converges on the final card (render from the current state, after the run).
        async def final_card() -> bool:
            stored = await service.store.get_release(RID)
            updates = card_updates(standin, str(stored.card_ts)) if stored else []
            return bool(updates) and final(updates[-1])

        await until(final_card, 10, "the final card")
    else:  # the run that took over owns the release now: nothing of ours is written over it
        assert nap is None
        assert await redis_client.get(keys.run_lock(RID)) == other.model_dump_json()


async def test_run_while_the_lock_is_held_says_when_the_next_run_is_possible(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, gates_dir: Path, tmp_path: Path
) -> None:
    async with running(standin, redis_url, gates_dir, tmp_path) as bot:
        await open_card(bot, standin)
        # A lease left behind by a run whose process died: nobody renews it.
        dead = RunLease(token="d" * 32, actor="U0GONE", started_at=datetime.now(UTC), check_ids=["quick"])
        await redis_client.set(keys.run_lock(RID), dead.model_dump_json(), px=20_000)
        url = standin.new_response_url()
        await bot.command(f"run {RID}", response_url=url)
        text = (await reply_to(standin, url))["text"]
        assert "already running" in text
        assert re.search(r"the next run is possible after \d\d:\d\d:\d\d UTC", text), text


# --- faults: answer fast and truthfully ---------------------------------------------------


async def test_redis_hung_for_10_s_every_click_and_command_is_answered_within_3_s_honestly(
    standin: SlackStandIn, private_redis: RedisServer, gates_dir: Path, tmp_path: Path
) -> None:
    async with running(standin, private_redis.url, gates_dir, tmp_path) as bot:
        await open_card(bot, standin)
        assert private_redis.process is not None
        pid = private_redis.process.pid

        async def answered(send: Callable[[str], Awaitable[Any]]) -> tuple[float, str]:
            url = standin.new_response_url()
            started = time.time()
            reply = await send(url)
            assert reply.status == 200
            found = await standin.wait_for_response(lambda r: r.url_id == url.rsplit("/", 1)[1], timeout=15)
            return found.time - started, str(found.payload.get("text", ""))

        def interactions() -> list[Callable[[str], Awaitable[Any]]]:
            value = f"{RID}|tech-lead"
            return [
                lambda u: bot.click(ACTION_APPROVE, f"{value}|abc1234", response_url=u, user="U01TECH"),
                lambda u: bot.click(ACTION_WITHDRAW, value, response_url=u, user="U01LEAD2"),
                lambda u: bot.click(ACTION_RUN, RID, response_url=u),
                lambda u: bot.click(ACTION_REFRESH, RID, response_url=u),
                lambda u: bot.command(f"run {RID}", response_url=u),
                lambda u: bot.command(f"status {RID}", response_url=u, channel="C0ELSEWHERE"),
                lambda u: bot.command("list", response_url=u),
                lambda u: bot.command("open payments 1.4.0", response_url=u),
            ]

        os.kill(pid, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            first = await asyncio.gather(*(answered(send) for send in interactions()))
            await asyncio.sleep(max(0.0, 5 - (time.monotonic() - stopped)))  # a second wave, mid-outage
            second = await asyncio.gather(*(answered(send) for send in interactions()))
            await asyncio.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
        finally:
            os.kill(pid, signal.SIGCONT)
        answers = first + second
        print("answer times under SIGSTOP (s):", sorted(round(elapsed, 2) for elapsed, _ in answers))
        for elapsed, text in answers:
            assert elapsed < SLACK_ANSWER_S, (elapsed, text)
            assert "Nothing was changed" in text or "Could not confirm" in text, text
        approve_said = [answers[0][1], answers[len(answers) // 2][1]]

        # Honest: when the approver was told nothing was changed, nothing was (Redis now runs the
        # commands it had queued while stopped).
        client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
        try:
            await asyncio.sleep(0.5)
            if all("Nothing was changed" in said for said in approve_said):
                assert not await client.hexists(keys.signatures(RID), "tech-lead|U01TECH")
        finally:
            await client.aclose()

        # And the bot is itself again.
        url = standin.new_response_url()
        await bot.command(f"status {RID}", response_url=url, channel="C0ELSEWHERE")
        assert "payments@1.4.0" in json.dumps(await reply_to(standin, url, timeout=5))


async def test_a_vote_whose_answer_is_lost_is_not_called_unchanged(
    standin: SlackStandIn, private_redis: RedisServer, gates_dir: Path, tmp_path: Path
) -> None:
    async with FaultProxy(private_redis.port) as proxy, running(standin, proxy.url, gates_dir, tmp_path) as bot:
        await open_card(bot, standin)
        value = f"{RID}|tech-lead|abc1234"  # sign-off buttons carry the commit their card was drawn for
        url = standin.new_response_url()
        await bot.click(ACTION_APPROVE, value, response_url=url, user="U01LEAD2")  # loads the scripts
        assert "You approved" in (await reply_to(standin, url))["text"]

        proxy.lose_answer_after(b"tech-lead|U01TECH")
        url = standin.new_response_url()
        started = time.monotonic()
        await bot.click(ACTION_APPROVE, value, response_url=url, user="U01TECH")
        text = (await reply_to(standin, url))["text"]
        assert time.monotonic() - started < SLACK_ANSWER_S
        assert proxy.lost.is_set()
        assert "Nothing was changed" not in text
        assert "Could not confirm that your approval was recorded" in text and "Check the card" in text
        client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
        try:  # it was recorded: "nothing was changed" would have been a lie
            assert await client.hexists(keys.signatures(RID), "tech-lead|U01TECH")
        finally:
            await client.aclose()


# --- SIGTERM ----------------------------------------------------------------------------


async def test_sigterm_during_a_run_finishes_it_or_tells_and_answers_requests_during_the_drain(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, gates_dir: Path, tmp_path: Path, marker: str
) -> None:
    settings = bot_settings(
        api_url=standin.api_url,
        redis_url=redis_url,
        gates=gates_dir,
        data_dir=tmp_path / "d",
        GONOGO_DRAIN_TIMEOUT=1,
    )
    bot = await RunningBot(settings).start()
    stopping: asyncio.Task[None] | None = None
    try:
        card_ts = await open_card(bot, standin)
        run_url = standin.new_response_url()
        # The run is accepted (acked), and SIGTERM comes before its handler got to start it.
        reply = await bot.command(f"run {RID}", response_url=run_url)
        assert reply.status == 200
        stopping = asyncio.create_task(bot.stop())  # what SIGTERM triggers

        async def not_ready() -> bool:
            ready = await bot.get("/readyz")
            return ready.status == 503 and '"stopping": true' in ready.text

        await until(not_ready, 1, "/readyz to turn 503")

        # Requests arriving during the drain are answered, never silence.
        during = await bot.command("list", response_url=standin.new_response_url())
        assert during.status == 200 and "gonogo is restarting, try again in a few seconds" in during.text
        click_url = standin.new_response_url()
        await bot.click(ACTION_REFRESH, RID, response_url=click_url)
        assert "gonogo is restarting" in (await reply_to(standin, click_url))["text"]

        await asyncio.wait_for(stopping, 30)
    finally:
        if stopping is None:
            await bot.stop()
    # The accepted run was started, then stopped at the end of the grace period: its user sees
    # a final card with the reason, the lock is released, the run is recorded.
    assert "Running 3 check(s)" in (await reply_to(standin, run_url))["text"]
    last = card_updates(standin, card_ts)[-1]
    assert final(last), header_of(last.args)
    assert "not finished: gonogo restarted before it finished" in nap_line(last)
    assert not processes_with(marker)
    assert not await redis_client.exists(keys.run_lock(RID))
    run = json.loads((await redis_client.lrange(keys.runs(RID), 0, 0))[0])
    assert run["interrupted"].startswith("gonogo restarted")
