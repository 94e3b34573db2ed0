"""`/gonogo promote` through Slack: allowed, refused with its open conditions, out of order, by a
non-member, through a break-glass override; one decision record per promotion, exported by the CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from bot.cli import main
from bot.core.release import Release
from bot.playground.standin import SlackStandIn
from bot.slack.blocks import ACTION_APPROVE, ACTION_OVERRIDE_APPROVE
from bot.store import keys
from tests.bot_harness import CHANNEL, RunningBot, bot_settings, reply_to, write_gate
from tests.delivery_kit import until

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
stages:
  - {{id: dark, name: Dark launch}}
  - {{id: canary, name: "Canary 5%"}}
  - {{id: full, name: Full production}}
checks:
  - id: unit-tests
    kind: command
    run: ["python3", "-c", "print('ok')"]
    severity: blocker
  - id: alerting
    name: Alerting rules
    kind: command
    run: ["python3", "-c", "import pathlib, sys; sys.exit(int(pathlib.Path('{flag}').read_text()))"]
    before: canary
  - id: soak
    name: One-week soak
    kind: command
    run: ["python3", "-c", "raise SystemExit(1)"]
    before: full
signoffs:
  - {{role: tech-lead, label: Tech Lead, users: [U01TECH, U01LEAD2]}}
override:
  approvers: {{tech-lead: 1}}
"""
RID = "payments@1.4.0"


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.fixture
def flag(tmp_path: Path) -> Path:
    path = tmp_path / "flag"
    path.write_text("1")  # alerting fails until the test says otherwise
    return path


@pytest.fixture
async def bot(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, flag: Path, tmp_path: Path
) -> AsyncIterator[RunningBot]:
    gates = write_gate(tmp_path / "gates", GATE.format(flag=flag), "payments.yml").parent
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates, data_dir=tmp_path / "d")
    running = await RunningBot(settings).start()
    try:
        await running.command("open payments 1.4.0 abc1234", response_url=standin.new_response_url())
        await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL)
        yield running
    finally:
        await running.stop()


async def say(bot: RunningBot, standin: SlackStandIn, text: str, user: str = "U01TECH") -> str:
    url = standin.new_response_url()
    await bot.command(text, response_url=url, user=user)
    return str((await reply_to(standin, url, timeout=10))["text"])


async def run_checks(bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis, alerting: str) -> None:
    await redis_client.delete(keys.results(RID))
    assert "Running 3 check(s)" in await say(bot, standin, f"run {RID}")

    async def done() -> bool:
        raw = await redis_client.hget(keys.results(RID), "alerting")
        return (
            raw is not None
            and json.loads(raw)["status"] == alerting
            and await redis_client.hlen(keys.results(RID)) == 3
            and await redis_client.get(keys.run_lock(RID)) is None
        )

    await until(done, 20, f"alerting {alerting}")


async def sign(bot: RunningBot, standin: SlackStandIn) -> None:
    url = standin.new_response_url()
    await bot.click(ACTION_APPROVE, f"{RID}|tech-lead|abc1234", response_url=url, user="U01TECH")
    assert "You approved" in (await reply_to(standin, url))["text"]


async def release(redis_client: aioredis.Redis) -> Release:
    return Release.model_validate_json(await redis_client.get(keys.release(RID)) or "{}")


async def audit(redis_client: aioredis.Redis) -> list[dict[str, str]]:
    entries = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.audit(RID)))
    return [fields for _, fields in entries]


async def test_promotions_through_the_ladder(
    bot: RunningBot,
    standin: SlackStandIn,
    redis_client: aioredis.Redis,
    flag: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await run_checks(bot, standin, redis_client, alerting="fail")
    await sign(bot, standin)

    # A non-member is refused, and the attempt is audited.
    refused = await say(bot, standin, f"promote {RID} dark", user="U0NOBODY")
    assert "only members of Tech Lead can promote payments@1.4.0" in refused
    # Stages go in order.
    assert "stages go in order: payments@1.4.0 is at no stage yet, promote it to Dark launch first" in await say(
        bot, standin, f"promote {RID} canary"
    )
    assert "no stage 'prod' (stages: dark, canary, full)" in await say(bot, standin, f"promote {RID} prod")

    # Everything before the dark launch holds: promoted, announced, stored and audited.
    assert "payments@1.4.0 promoted to Dark launch." in await say(bot, standin, f"promote {RID} dark")
    announced = await standin.wait_for("chat.postMessage", lambda c: "🚀" in c.args.get("text", ""))
    assert announced.args["channel"] == CHANNEL
    assert announced.args["text"] == "🚀 payments@1.4.0 promoted to Dark launch by @U01TECH"
    assert "🚀 *payments@1.4.0* promoted to *Dark launch* by <@U01TECH>" in json.dumps(
        announced.args["blocks"], ensure_ascii=False
    )
    stored = await release(redis_client)
    assert stored.current_stage == "dark" and "dark" in stored.stages_reached
    await standin.wait_for(
        "chat.update", lambda c: "📍 Current stage: *Dark launch*" in json.dumps(c.args["blocks"], ensure_ascii=False)
    )

    # The canary is NO-GO: refused, with its open conditions.
    refusal = await say(bot, standin, f"promote {RID} canary")
    assert "payments@1.4.0 cannot be promoted to Canary 5%: it is NO-GO, 1 condition open:" in refusal
    assert "• Alerting rules failed: exit 1" in refusal
    assert (await release(redis_client)).current_stage == "dark"

    # Fixed: alerting passes, the canary is GO.
    flag.write_text("0")
    await run_checks(bot, standin, redis_client, alerting="pass")
    assert "promoted to Canary 5%." in await say(bot, standin, f"promote {RID} canary")
    assert "is already at Canary 5%: Dark launch is not ahead of it" in await say(bot, standin, f"promote {RID} dark")

    # Full production is NO-GO (the soak fails) until a break-glass override passes it, and says so.
    assert "cannot be promoted to Full production" in await say(bot, standin, f"promote {RID} full")
    assert "Override requested" in await say(bot, standin, f"override {RID} soak is flaky, INC-7")
    request = await standin.wait_for(
        "chat.postMessage", lambda c: "Override requested" in c.args.get("text", "") and "thread_ts" not in c.args
    )
    value = next(
        e["value"]
        for b in request.args["blocks"]
        for e in b.get("elements", [])
        if e.get("action_id") == ACTION_OVERRIDE_APPROVE
    )
    url = standin.new_response_url()
    await bot.click(ACTION_OVERRIDE_APPROVE, value, response_url=url, user="U01LEAD2")
    assert "You approved the override" in (await reply_to(standin, url))["text"]
    answer = await say(bot, standin, f"promote {RID} full")
    assert "promoted to Full production under a break-glass override." in answer
    loud = await standin.wait_for("chat.postMessage", lambda c: "Full production" in c.args.get("text", ""))
    assert loud.args["text"].endswith("under a break-glass override")
    assert "a break-glass override passed it" in json.dumps(loud.args["blocks"])

    stored = await release(redis_client)
    assert stored.current_stage == "full" and set(stored.stages_reached) == {"dark", "canary", "full"}
    entries = await audit(redis_client)
    promoted = [json.loads(e["data"]) for e in entries if e["type"] == "promoted"]
    assert [(p["from"], p["to"], p["override"]) for p in promoted] == [
        (None, "dark", False),
        ("dark", "canary", False),
        ("canary", "full", True),
    ]
    refusals = [json.loads(e["data"]) for e in entries if e["type"] == "promote_refused"]
    assert [r["stage"] for r in refusals] == ["dark", "canary", "full"]  # non-member, canary NO-GO, full NO-GO

    # One frozen record per promotion, each with its stages section; all exportable.
    bundles = [json.loads(b) for b in await redis_client.lrange(keys.promotions(RID), 0, -1)]
    assert [(b["stages"]["stage"], b["stages"]["from"], b["verdict"]) for b in bundles] == [
        ("dark", None, "GO"),
        ("canary", "dark", "GO"),
        ("full", "canary", "GO (OVERRIDE)"),
    ]
    assert bundles[2]["stages"]["override"] is True and bundles[2]["override"]["active"] is True
    assert [s["verdict"] for s in bundles[0]["stages"]["ladder"]] == ["GO", "NO-GO", "NO-GO"]
    monkeypatch.setenv("REDIS_URL", redis_url)
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["export", RID, "--all"]) == 0
    assert json.loads(capsys.readouterr().out) == bundles
    assert await asyncio.to_thread(main, ["export", RID, "--stage", "canary"]) == 0
    assert json.loads(capsys.readouterr().out) == bundles[1]
    assert await asyncio.to_thread(main, ["export", RID, "--stage", "full", "--format", "md"]) == 0
    markdown = capsys.readouterr().out
    assert "## Stages" in markdown and "**Promoted to Full production** (`full`), from Canary 5%" in markdown
    assert "a break-glass override passed it" in markdown
    assert await asyncio.to_thread(main, ["export", RID]) == 0  # no decision: the latest promotion
    assert json.loads(capsys.readouterr().out) == bundles[2]


async def test_decide_on_a_staged_gate_decides_the_first_stage(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await run_checks(bot, standin, redis_client, alerting="fail")
    await sign(bot, standin)
    assert "payments@1.4.0 decided: GO" in await say(bot, standin, f"decide {RID}")
    bundle = json.loads(await redis_client.get(keys.bundle(RID)) or "{}")
    assert bundle["verdict"] == "GO"
    assert bundle["stages"]["stage"] == "dark" and bundle["stages"]["action"] == "decide"
    # A decided release is frozen: it is not promoted until reopened.
    assert "is decided: a decided or closed release is not promoted" in await say(bot, standin, f"promote {RID} dark")


async def test_the_list_shows_the_stage(bot: RunningBot, standin: SlackStandIn) -> None:
    url = standin.new_response_url()
    await bot.command("list", response_url=url)
    listing = await reply_to(standin, url)
    assert "Open releases: payments@1.4.0 NO-GO" in listing["text"]
    blocks = json.dumps(listing["blocks"], ensure_ascii=False)
    assert "📍 not promoted yet, next Dark launch (NO-GO, 2 open)" in blocks  # unit-tests not run, no sign-off


MANY = (
    """
id: payments
name: Payments API
channel: C0DEPLOYS
stages:
  - {id: dark, name: Dark launch}
  - {id: full, name: Full production}
checks:
  - {id: unit-tests, kind: command, run: ["python3", "-c", "print('ok')"], severity: blocker}
"""
    + "".join(
        f"  - {{id: item-{n}, name: Item {n}, kind: manual, owner: tech-lead, before: full}}\n" for n in range(14)
    )
    + """
signoffs:
  - {role: tech-lead, label: Tech Lead, users: [U01TECH]}
"""
)


async def test_a_promotion_lists_every_open_condition_in_the_thread_with_it(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """More open conditions than the card shows (12): the promotion writes their listing for the
    card's thread in its own step (not in a second write after it), posted once."""
    gates = write_gate(tmp_path / "gates", MANY, "payments.yml").parent
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates, data_dir=tmp_path / "d")
    bot = await RunningBot(settings).start()
    try:
        await bot.command("open payments 1.4.0 abc1234", response_url=standin.new_response_url())
        await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL)
        await redis_client.delete(keys.results(RID))
        assert "Running" in await say(bot, standin, f"run {RID}")
        await until(lambda: _run_over(redis_client), 20, "the run")
        await sign(bot, standin)

        def listings() -> list[Any]:
            return [
                c
                for c in standin.calls("chat.postMessage")
                if c.ok and c.args.get("thread_ts") and "open conditions of Payments API" in c.args.get("text", "")
            ]

        await until(listings, 15, "the run's conditions listing in the thread")  # a run's end lists them
        assert "promoted to Dark launch" in await say(bot, standin, f"promote {RID} dark")
        await until(lambda: len(listings()) == 2, 15, "the promotion's conditions listing")
        promoted = [n for n in await _queued_or_posted(redis_client) if n.startswith("conditions_listing|")]
        assert any("|promotion|" in key for key in promoted)  # keyed by the promotion, written with it
        assert len([e for e in await audit(redis_client) if e["type"] == "promoted"]) == 1
    finally:
        await bot.stop()


async def _run_over(redis_client: aioredis.Redis) -> bool:
    return await redis_client.hlen(keys.results(RID)) >= 1 and await redis_client.get(keys.run_lock(RID)) is None


async def _queued_or_posted(redis_client: aioredis.Redis) -> list[str]:
    """Keys of the gate's notices delivered so far (their delivered markers)."""
    found = [str(k) async for k in redis_client.scan_iter(match=keys.delivered("payments", "*"))]
    return [k.split(":delivered:", 1)[-1] for k in found]
