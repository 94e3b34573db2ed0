"""One road to Slack, end to end through the real bot (issue 8): Slack rate-limiting, failing, a
bot killed with notices queued, two bots over one Redis, and a channel the bot is not in.

At the issue's own numbers: six 429s with `Retry-After: 10`, a 60 s outage of chat.postMessage, and
a `gonogo serve` process killed with SIGKILL. The first two take a minute or two each (marked slow)."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client.parser import text_string_to_metric_families

from bot.core.notices import Notice, Target, notice_key
from bot.playground.standin import Call, SlackStandIn
from bot.slack.deliverer import DeliveryConfig
from bot.store import keys
from bot.store.outbox import GROUP, Emit, Outbox
from tests.bot_harness import CHANNEL, RunningBot, ServeProcess, bot_settings, reply_to, serve_env, write_gate
from tests.delivery_kit import now, until

RETRY_AFTER = 10  # seconds, the 429
OUTAGE = 60.0  # seconds of chat.postMessage answering 500, the outage

RID = "payments@1.4.0"
GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - id: unit-tests
    kind: command
    run: ["python3", "-c", "import time; time.sleep(0.5)"]
    severity: blocker
  - id: lint
    kind: command
    run: ["python3", "-c", "import time; time.sleep(1.5); print('E501'); raise SystemExit(1)"]
    severity: advisory
  - id: build
    kind: command
    run: ["python3", "-c", "import time; time.sleep(2.5)"]
  - id: cache
    kind: command
    run: ["python3", "-c", "import time; time.sleep(3.5)"]
signoffs: []
"""


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.fixture
def gates_dir(tmp_path: Path) -> Path:
    write_gate(tmp_path / "gates", GATE, "payments.yml")
    return tmp_path / "gates"


def settings_for(standin: SlackStandIn, redis_url: str, gates_dir: Path, data: Path, **extra: Any) -> Any:
    return bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates_dir, data_dir=data, **extra)


def header(args: dict[str, Any]) -> str:
    blocks = args.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return str(blocks[0]["text"]["text"]) if blocks else ""


async def command(bot: RunningBot, standin: SlackStandIn, text: str, user: str = "U01TECH") -> str:
    url = standin.new_response_url()
    reply = await bot.command(text, response_url=url, user=user)
    assert reply.status == 200
    return str((await reply_to(standin, url, timeout=10))["text"])


async def card_ts(standin: SlackStandIn) -> str:
    posted = await standin.wait_for(
        "chat.postMessage", lambda c: c.ok and c.args.get("channel") == CHANNEL and "thread_ts" not in c.args
    )
    return str(posted.response["ts"])


def card_on_slack(standin: SlackStandIn, ts: str) -> dict[str, Any]:
    found = standin.message(CHANNEL, ts)
    assert found is not None
    return dict(found)


def queued(gate: str, n: int, channel: str = CHANNEL) -> Notice:
    return Notice(
        kind="channel_message",
        gate_id=gate,
        target=Target.to_channel(channel),
        payload={"text": f"queued notice {n}"},
        key=notice_key("e2e", gate, str(n)),
        created_at=now(),
    )


def posted_once(standin: SlackStandIn, texts: list[str]) -> dict[str, int]:
    """How often each text was posted (successfully) to the channel."""
    counts = dict.fromkeys(texts, 0)
    for call in standin.calls("chat.postMessage"):
        if call.ok and call.args.get("text") in counts:
            counts[str(call.args["text"])] += 1
    return counts


@pytest.mark.slow
async def test_429_on_chat_update_during_a_run_waits_retry_after_and_the_card_converges(
    standin: SlackStandIn, redis_url: str, redis_client: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    """The issue's numbers: six 429s in a row with `Retry-After: 10` (a minute of them) while the run
    changes the card."""
    bot = await RunningBot(settings_for(standin, redis_url, gates_dir, tmp_path / "d")).start()
    try:
        assert "Opened" in await command(bot, standin, "open payments 1.4.0")
        ts = await card_ts(standin)
        standin.fail_next("chat.update", status=429, retry_after=RETRY_AFTER, times=6)
        assert "Running" in await command(bot, standin, f"run {RID}")

        def final() -> bool:
            return header(card_on_slack(standin, ts)).startswith("🟢 GO")

        await until(final, timeout=6 * RETRY_AFTER + 40, what="the card to show the run's final verdict")
        updates = standin.calls("chat.update")
        limited = [c for c in updates if c.status == 429]
        assert len(limited) == 6
        for refused in limited:
            later = [c for c in updates if c.at > refused.at]
            assert later, "a chat.update after the 429 (the card converged through it)"
            waited = min(c.at for c in later) - refused.at
            assert waited >= RETRY_AFTER, f"a chat.update went out {waited:.3f}s after a 429 asking for {RETRY_AFTER}s"
        assert "⏳" not in json.dumps(card_on_slack(standin, ts)["blocks"], ensure_ascii=False)
    finally:
        await bot.stop()


def attempts_within(seconds: float, config: DeliveryConfig) -> tuple[int, int]:
    """How many attempts a notice gets during an outage of `seconds` with the deliverer's backoff (half
    fixed, half jitter, doubling from the base to the cap): (surely, at most). A hot loop makes thousands."""

    def fits(share: float) -> int:
        attempts, spent = 1, 0.0
        while True:
            spent += share * min(config.backoff_cap_s, config.backoff_base_s * 2.0 ** (attempts - 1))
            if spent >= seconds:
                return attempts
            attempts += 1

    return fits(1.0), fits(0.5)


@pytest.mark.slow
async def test_decision_record_is_posted_exactly_once_after_a_60_s_slack_outage(
    standin: SlackStandIn, redis_url: str, redis_client: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    """The issue's numbers: chat.postMessage answers 500 for 60 s while the decision record is due."""
    bot = await RunningBot(settings_for(standin, redis_url, gates_dir, tmp_path / "d")).start()
    try:
        await command(bot, standin, "open payments 1.4.0")
        ts = await card_ts(standin)
        outage = standin.fail_for(OUTAGE, status=500, methods=["chat.postMessage"])
        answer = await command(bot, standin, f"decide {RID}")
        assert "decided" in answer.lower() or "NO-GO" in answer

        def record_attempts() -> list[Call]:
            return [
                c
                for c in standin.calls("chat.postMessage")
                if c.at >= outage.starts and c.args.get("channel") == CHANNEL and "thread_ts" not in c.args
            ]

        def records() -> list[Call]:
            return [c for c in record_attempts() if c.ok]

        config = DeliveryConfig()  # what `gonogo serve` runs with
        [record] = await until(records, timeout=OUTAGE + config.backoff_cap_s + 30, what="the decision record")
        await until(_outbox_drained(redis_client), what="the outbox to drain")
        assert len(records()) == 1
        assert record.response["ts"] != ts
        assert RID in str(record.args.get("text"))
        assert record.at >= outage.ends  # after recovery
        failed = [c for c in record_attempts() if c.status == 500]
        assert failed == record_attempts()[:-1]  # every attempt before it was refused by the outage
        surely, at_most = attempts_within(OUTAGE, config)
        assert surely <= len(failed) <= at_most, f"{len(failed)} attempts during the outage: backoff, not a hot loop"
        assert outage.failed == len(failed)
    finally:
        await bot.stop()


def _outbox_drained(redis_client: aioredis.Redis, gate: str = "payments") -> Callable[[], Awaitable[bool]]:
    async def drained() -> bool:
        try:
            pending = await redis_client.xpending(keys.outbox(gate), GROUP)
        except redis.exceptions.ResponseError:  # no group yet
            return False
        return int(pending["pending"]) == 0 and await redis_client.xlen(keys.outbox(gate)) == 0

    return drained


@pytest.mark.parametrize(
    "restarted_as",
    [
        pytest.param("a", id="same-replica-name"),  # a container restarted: pid 1 again, same name, takes its own back
        pytest.param("b", id="another-replica"),  # another process: claims them after the idle bound
    ],
)
async def test_notices_queued_when_the_bot_is_sigkilled_are_delivered_once_after_a_restart(
    standin: SlackStandIn,
    redis_url: str,
    redis_client: aioredis.Redis,
    gates_dir: Path,
    tmp_path: Path,
    restarted_as: str,
) -> None:
    """Real processes: `gonogo serve` holds the notices (Slack failing its posts), is SIGKILLed, and
    a new `gonogo serve` delivers each of them once."""

    def serve(replica: str) -> ServeProcess:
        env = serve_env(
            api_url=standin.api_url,
            redis_url=redis_url,
            gates=gates_dir,
            data_dir=tmp_path / replica,
            GONOGO_REPLICA=replica,
            GONOGO_NOTICE_CLAIM_IDLE="1",
        )
        return ServeProcess(env, cwd=tmp_path, log=tmp_path / f"serve-{replica}-{len(started)}.log")

    started: list[ServeProcess] = []
    try:
        standin.fail_every(1, status=500, methods=["chat.postMessage"])  # nothing gets through yet
        started.append(first := serve("a"))
        await first.ready()
        # Eight lanes (channels), so the bot holds them all: of a burst to one channel it would read
        # only `lane_hold`, leaving the rest in the stream for whichever replica frees a place first.
        notices = [queued("payments", n, channel=f"{CHANNEL}{n}") for n in range(8)]
        await Outbox(redis_client).append(Emit("payments", notices=notices))

        async def held_by_the_first() -> bool:
            try:
                pending = await redis_client.xpending(keys.outbox("payments"), GROUP)
            except redis.exceptions.ResponseError:  # the group is made by the deliverer's first read
                return False
            return int(pending["pending"]) == len(notices) and pending["consumers"] == [
                {"name": "a", "pending": len(notices)}
            ]

        await until(held_by_the_first, timeout=30, what="the first bot to hold every notice")
        await until(lambda: standin.calls("chat.postMessage"), what="the first bot's (refused) attempts")
        first.kill()
        assert first.process.returncode == -signal.SIGKILL
        assert first.gone()
        assert await redis_client.xlen(keys.outbox("payments")) == len(notices)  # nothing acknowledged
        await standin.quiet()  # a call the kill cut short got its 500 (not posted behind the dead bot's back)
        standin.fail_every(0)
        started.append(second := serve(restarted_as))
        await second.ready()
        texts = [f"queued notice {n}" for n in range(8)]
        # Killed during a call, the first bot leaves that notice's send lease (Slack may have taken it):
        # the restarted one waits it out before sending that notice.
        within = DeliveryConfig().send_lease_s + 30
        await until(lambda: all(posted_once(standin, texts).values()), timeout=within, what="every notice posted")
        await until(_outbox_drained(redis_client), what="the outbox to drain")
        assert posted_once(standin, texts) == dict.fromkeys(texts, 1)
        assert second.stop() == 0
    finally:
        for process in started:
            if process.process.poll() is None:
                process.kill()
    assert all(process.gone() for process in started), "a gonogo serve process was left running"


async def test_two_bots_over_one_redis_with_slack_failing_one_call_in_five(
    standin: SlackStandIn, redis_url: str, redis_client: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    one = await RunningBot(settings_for(standin, redis_url, gates_dir, tmp_path / "1", GONOGO_REPLICA="one")).start()
    two = await RunningBot(settings_for(standin, redis_url, gates_dir, tmp_path / "2", GONOGO_REPLICA="two")).start()
    try:
        standin.fail_every(5, status=500, methods=["chat.postMessage", "chat.update"])
        await command(one, standin, "open payments 1.4.0")
        ts = await card_ts(standin)
        notices = [queued("payments", n) for n in range(20)]
        await Outbox(redis_client).append(Emit("payments", notices=notices))
        await command(two, standin, f"run {RID}")

        async def ran_to_the_end() -> bool:
            return bool(await redis_client.llen("gonogo:{g:payments}:r:1.4.0:runs"))

        await until(ran_to_the_end, timeout=30)
        await command(one, standin, f"decide {RID}")
        texts = [f"queued notice {n}" for n in range(20)]
        await until(lambda: all(posted_once(standin, texts).values()), timeout=40)
        assert posted_once(standin, texts) == dict.fromkeys(texts, 1)

        async def converged() -> bool:
            wanted, shown = await redis_client.hmget("gonogo:{g:payments}:r:1.4.0:card", ["wanted", "shown"])
            return int(wanted or 0) == int(shown or 0) and "DECIDED" in header(card_on_slack(standin, ts)).upper()

        await until(converged, timeout=30)

        # One card, one decision record, each lint detail once.
        def top_level() -> list[dict[str, Any]]:
            return [m for m in standin.messages(CHANNEL) if not m.get("thread_ts") or m["thread_ts"] == m["ts"]]

        def decision_records() -> list[dict[str, Any]]:
            return [m for m in top_level() if m["ts"] != ts and "queued notice" not in str(m.get("text"))]

        await until(decision_records, timeout=30)  # behind the 20 notices: one message a second there
        assert len([m for m in top_level() if m["ts"] == ts]) == 1
        records = decision_records()
        assert len(records) == 1, [(m.get("text"), m.get("thread_ts")) for m in standin.messages(CHANNEL)]

        def details() -> list[dict[str, Any]]:
            return [m for m in standin.replies(CHANNEL, ts) if "lint" in str(m.get("text"))]

        await until(details, timeout=30)
        assert len(details()) == 1
    finally:
        standin.fail_every(0)
        await two.stop()
        await one.stop()


async def test_not_in_channel_tells_the_actor_to_invite_the_bot(
    standin: SlackStandIn, redis_url: str, redis_client: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    bot = await RunningBot(settings_for(standin, redis_url, gates_dir, tmp_path / "d")).start()
    try:
        await command(bot, standin, "open payments 1.4.0")
        await card_ts(standin)
        standin.channels_without_bot.add(CHANNEL)  # someone removed the bot from the channel
        await command(bot, standin, f"decide {RID}", user="U0DECIDER")
        told = await standin.wait_for(
            "chat.postMessage", lambda c: c.ok and "/invite @gonogo" in str(c.args.get("text")), timeout=15
        )
        assert told.args["channel"] in ("U0DECIDER", standin.dm_channel("U0DECIDER"))
        assert f"<#{CHANNEL}>" in str(told.args["text"])
    finally:
        await bot.stop()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The /metrics page as {(sample name, labels): value}."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


async def metric(bot: RunningBot, name: str, **labels: str) -> float:
    """One sample of the bot's /metrics page, 0 if it is not there (yet)."""
    page = await bot.get("/metrics")
    assert page.status == 200
    return samples(page.text).get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_what_they_name_after_real_traffic(
    standin: SlackStandIn, redis_url: str, redis_client: aioredis.Redis, gates_dir: Path, tmp_path: Path
) -> None:
    """Issue 8's "Metrics that count", each after the traffic that should move it: check results by
    kind and status, runs and their duration, notices queued / delivered / failed / dead-lettered by
    kind, outbox depth and the age of the oldest undelivered notice, card refresh lag, and Slack API
    calls by method and status with the 429s visible."""
    bot = await RunningBot(settings_for(standin, redis_url, gates_dir, tmp_path / "d")).start()
    try:
        await command(bot, standin, "open payments 1.4.0")
        ts = await card_ts(standin)
        standin.fail_next("chat.update", status=429, retry_after=1)
        standin.fail_next("chat.postMessage", status=500)  # the first post of the run: lint's details
        await command(bot, standin, f"run {RID}")
        await until(lambda: header(card_on_slack(standin, ts)).startswith("🟢 GO"), timeout=30, what="the final card")
        await until(lambda: standin.replies(CHANNEL, ts), timeout=30, what="lint's details in the card's thread")
        assert await metric(bot, "gonogo_check_results_total", kind="command", status="pass") == 3
        assert await metric(bot, "gonogo_check_results_total", kind="command", status="fail") == 1
        assert await metric(bot, "gonogo_runs_total", verdict="GO") == 1
        assert await metric(bot, "gonogo_run_seconds_count") == 1
        assert await metric(bot, "gonogo_run_seconds_sum") >= 3.5  # the slowest check sleeps 3.5 s
        assert await metric(bot, "gonogo_notices_queued_total", kind="check_details") == 1
        assert await metric(bot, "gonogo_notices_failed_total", kind="check_details", error="5xx") == 1
        assert await metric(bot, "gonogo_notices_delivered_total", kind="check_details") == 1
        assert await metric(bot, "gonogo_slack_api_calls_total", method="chat.update", status="429") == 1
        assert await metric(bot, "gonogo_slack_api_calls_total", method="chat.update", status="ok") >= 1
        assert await metric(bot, "gonogo_slack_api_calls_total", method="chat.postMessage", status="5xx") == 1
        assert await metric(bot, "gonogo_slack_api_calls_total", method="chat.postMessage", status="ok") == 2
        updates_shown = await metric(bot, "gonogo_card_refresh_lag_seconds_count")
        assert updates_shown >= 2  # the run's changes reached the card
        # The update held back by the 429 waited its Retry-After (1 s): the lag shows it.
        assert await metric(bot, "gonogo_card_refresh_lag_seconds_bucket", le="0.5") < updates_shown

        # Slack down for posts while the decision record is due: the backlog is visible, then drains.
        standin.fail_every(1, status=500, methods=["chat.postMessage"])
        await command(bot, standin, f"decide {RID}")

        async def backlog_seen() -> bool:
            return (
                await metric(bot, "gonogo_outbox_depth") == 1
                and await metric(bot, "gonogo_outbox_oldest_age_seconds") > 0
            )

        await until(backlog_seen, timeout=20, what="the outbox depth and age on /metrics")  # gauges: every 5 s
        assert await metric(bot, "gonogo_notices_failed_total", kind="decision_record", error="5xx") >= 1
        standin.fail_every(0)

        async def drained() -> bool:
            return await metric(bot, "gonogo_notices_delivered_total", kind="decision_record") == 1 and (
                await metric(bot, "gonogo_outbox_depth") == 0
            )

        await until(drained, timeout=90, what="the record delivered and the depth back to 0")  # behind backoff
        assert await metric(bot, "gonogo_notices_queued_total", kind="decision_record") == 1
        assert await metric(bot, "gonogo_outbox_oldest_age_seconds") == 0

        # A channel the bot was removed from: the next release's record is dead-lettered.
        await command(bot, standin, f"close {RID}")
        assert "Opened" in await command(bot, standin, "open payments 1.5.0")
        await standin.wait_for("chat.postMessage", lambda c: c.ok and "1.5.0" in str(c.args.get("text")), timeout=15)
        standin.channels_without_bot.add(CHANNEL)
        await command(bot, standin, "decide payments@1.5.0")

        async def dead_lettered() -> float:
            return await metric(
                bot, "gonogo_notices_dead_lettered_total", kind="decision_record", reason="not_in_channel"
            )

        assert await until(dead_lettered, timeout=20, what="the record dead-lettered on /metrics") == 1
        refused = await metric(bot, "gonogo_slack_api_calls_total", method="chat.postMessage", status="not_in_channel")
        assert refused == 1
    finally:
        await bot.stop()
