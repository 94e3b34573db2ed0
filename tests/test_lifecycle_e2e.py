"""decide / evidence / close / reopen / history through Slack, and the CLI reading the same Redis
(`gonogo export`, `gonogo check --release`)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from bot.cli import main
from bot.playground.standin import SlackStandIn
from bot.slack.blocks import ACTION_APPROVE
from bot.store import keys
from tests.bot_harness import CHANNEL, RunningBot, bot_settings, reply_to, write_gate
from tests.delivery_kit import until

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - id: unit-tests
    kind: command
    run: ["python3", "-c", "print('ok')"]
    severity: blocker
  - id: lint
    kind: command
    run: ["python3", "-c", "raise SystemExit(1)"]
    severity: advisory
signoffs:
  - {role: tech-lead, label: Tech Lead, users: [U01TECH]}
"""
RID = "payments@1.4.0"


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.fixture
def gate_file(tmp_path: Path) -> Path:
    return write_gate(tmp_path / "gates", GATE, "payments.yml")


@pytest.fixture
async def bot(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, gate_file: Path, tmp_path: Path
) -> AsyncIterator[RunningBot]:
    settings = bot_settings(
        api_url=standin.api_url, redis_url=redis_url, gates=gate_file.parent, data_dir=tmp_path / "d"
    )
    running = await RunningBot(settings).start()
    try:
        await running.command("open payments 1.4.0 abc1234", response_url=standin.new_response_url())
        await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL)
        yield running
    finally:
        await running.stop()


async def cli(argv: list[str]) -> int:
    """`gonogo ...` runs its own event loop: give it a thread, as a separate process would have."""
    return await asyncio.to_thread(main, argv)


def dump(blocks: Any) -> str:
    return json.dumps(blocks, ensure_ascii=False)


async def say(bot: RunningBot, standin: SlackStandIn, text: str, user: str = "U01TECH") -> dict[str, Any]:
    url = standin.new_response_url()
    await bot.command(text, response_url=url, user=user)
    return await reply_to(standin, url, timeout=10)


async def wait_run_finished(redis_client: aioredis.Redis, release_id: str, timeout: float = 15.0) -> None:
    """The card shows results before the run is over: wait until its record is written and the lock
    is free, or a command that refuses to act during a run (decide) races the run's end."""

    async def finished() -> bool:
        return bool(await redis_client.llen(keys.runs(release_id))) and not await redis_client.exists(
            keys.run_lock(release_id)
        )

    await until(finished, timeout, f"the run of {release_id} to finish")


async def run_and_sign(bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis) -> None:
    await say(bot, standin, f"run {RID}")
    # The footer names the last run once it is recorded and its lock released.
    await standin.wait_for(
        "chat.update",
        lambda c: "✅ *unit-tests*" in dump(c.args["blocks"]) and "last run by" in dump(c.args["blocks"]),
    )
    await wait_run_finished(redis_client, RID)
    card_ts = str(standin.calls("chat.postMessage")[0].response["ts"])
    url = standin.new_response_url()
    await bot.click(ACTION_APPROVE, f"{RID}|tech-lead|abc1234", response_url=url, user="U01TECH", message_ts=card_ts)
    assert "You approved" in (await reply_to(standin, url))["text"]


async def test_decide_posts_the_record_and_stores_the_bundle(
    bot: RunningBot,
    standin: SlackStandIn,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await run_and_sign(bot, standin, redis_client)
    refused = await say(bot, standin, f"decide {RID}", user="U0NOBODY")
    assert "only members of a required role (Tech Lead) can decide" in refused["text"]

    answer = await say(bot, standin, f"decide {RID}")
    assert "payments@1.4.0 decided: GO" in answer["text"]
    record = await standin.wait_for("chat.postMessage", lambda c: "proceed to canary" in json.dumps(c.args))
    text = json.dumps(record.args["blocks"])
    assert "<@U01TECH>" in text and "1/1" in text
    await standin.wait_for("chat.update", lambda c: "(decided)" in c.args["blocks"][0]["text"]["text"])

    stored = json.loads(await redis_client.get(keys.bundle(RID)) or "{}")
    assert stored["verdict"] == "GO" and stored["decided_by"] == "U01TECH"

    # Frozen: no more sign-offs until reopened.
    url = standin.new_response_url()
    await bot.click(ACTION_APPROVE, f"{RID}|tech-lead|abc1234", response_url=url, user="U01TECH")
    frozen = (await reply_to(standin, url))["text"]
    assert (
        "payments@1.4.0 was decided GO at" in frozen
        and "by <@U01TECH>; `/gonogo reopen payments@1.4.0` first" in frozen
    )

    # The CLI exports exactly what was stored, as JSON and as Markdown.
    monkeypatch.setenv("REDIS_URL", redis_url)
    capsys.readouterr()
    assert await cli(["export", RID, "--format", "json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported == stored
    assert await cli(["export", RID, "--format", "md"]) == 0
    markdown = capsys.readouterr().out
    for check in exported["checks"]:
        assert check["id"] in markdown and check["summary"] in markdown
    assert exported["gate"]["sha256"] in markdown and "proceed to canary" in markdown


async def test_evidence_is_uploaded_to_the_thread(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await run_and_sign(bot, standin, redis_client)
    await say(bot, standin, f"decide {RID}")
    answer = await say(bot, standin, f"evidence {RID}")
    # Answered once uploaded, or after a second while the deliverer is still at it (channel pacing).
    assert re.search(r"Upload(ed|ing) `payments-1\.4\.0-evidence\.md` to the card's thread", answer["text"])
    completed = await standin.wait_for("files.completeUploadExternal")
    assert completed.args.get("thread_ts") == standin.calls("chat.postMessage")[0].response["ts"]
    (uploaded,) = standin.files.values()
    assert uploaded.content is not None and b"# payments@1.4.0" in uploaded.content


async def test_evidence_goes_through_the_deliverer_and_a_slack_failure_uploads_it_once(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    """The upload is a notice: queued with its audit entry in one step, uploaded by the deliverer,
    which retries a 5xx (the failed attempt never completed, so nothing shows twice)."""
    await run_and_sign(bot, standin, redis_client)
    standin.fail_next("files.completeUploadExternal", status=500)
    await say(bot, standin, f"evidence {RID}")
    await until(lambda: [f for f in standin.files.values() if f.completed], timeout=15)
    statuses = [c.status for c in standin.calls("files.completeUploadExternal")]
    assert statuses == [500, 200]  # the failure, then once
    (uploaded,) = [f for f in standin.files.values() if f.completed]
    assert uploaded.thread_ts == standin.calls("chat.postMessage")[0].response["ts"]
    assert uploaded.content is not None and b"Snapshot: payments@1.4.0 is not decided yet" in uploaded.content
    entries = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.audit(RID)))
    assert [f["type"] for _, f in entries].count("evidence_uploaded") == 1
    # Delivered: the marker holds the file's id, the outbox is empty.
    markers = [k async for k in redis_client.scan_iter(match=keys.delivered("payments", "file_upload*"))]
    assert [await redis_client.get(m) for m in markers] == [uploaded.id]

    async def outbox_empty() -> bool:
        return int(await redis_client.xlen(keys.outbox("payments"))) == 0

    empty: Any = outbox_empty  # until's type wants a value it can return; a bool is what we poll for
    await until(empty, timeout=5)


async def test_close_and_reopen_are_audited(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    assert "payments@1.4.0 is closed." in (await say(bot, standin, f"close {RID}"))["text"]
    assert await redis_client.get(keys.open_release("payments")) is None
    assert "already closed" in (await say(bot, standin, f"close {RID}"))["text"]
    assert "is open again" in (await say(bot, standin, f"reopen {RID}"))["text"]
    entries = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.audit(RID)))
    types = [f["type"] for _, f in entries]
    assert types[-2:] == ["closed", "reopened"]


async def test_history_is_paginated_newest_last(bot: RunningBot, standin: SlackStandIn) -> None:
    for _ in range(23):  # 46 audit entries after "opened"
        await say(bot, standin, f"close {RID}")
        await say(bot, standin, f"reopen {RID}")
    latest = await say(bot, standin, f"history {RID}")
    text = json.dumps(latest["blocks"])
    assert "Showing 8\\u201347 of 47" in text or "Showing 8–47 of 47" in json.dumps(
        latest["blocks"], ensure_ascii=False
    )
    older = await say(bot, standin, f"history {RID} --page 1")
    assert "opened by <@U01TECH>" in json.dumps(older["blocks"])
    bad = await say(bot, standin, f"history {RID} --page 9")
    assert "no page 9" in json.dumps(bad, ensure_ascii=False).lower()


async def test_cli_check_with_release_uses_the_stored_signoffs(
    bot: RunningBot,
    standin: SlackStandIn,
    redis_client: aioredis.Redis,
    gate_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    capsys.readouterr()
    assert await cli(["check", str(gate_file), "--json", "--release", RID]) == 1
    before = json.loads(capsys.readouterr().out)
    assert any(r["code"] == "signoff_missing" for r in before["reasons"])

    await run_and_sign(bot, standin, redis_client)
    assert await cli(["check", str(gate_file), "--json", "--release", RID]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["verdict"] == "GO" and after["release"] == RID
    assert after["signoffs"][0]["approved_by"] == ["U01TECH"]


def test_cli_export_and_release_need_redis(monkeypatch: pytest.MonkeyPatch, gate_file: Path) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["export", RID]) == 2
    assert main(["check", str(gate_file), "--release", RID]) == 2
    assert main(["export", "not a release"]) == 2
