"""POST /api/events on the running bot: signatures checked before parsing, 400s with the
validation errors, idempotent ids, each event type's effect in Redis, masking, and `gonogo notify`
as a separate process against the bot."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.core.decision import Verdict, decide
from bot.core.masking import MASK
from bot.core.release import State
from bot.core.signature import sign, signed_headers
from bot.playground.standin import SlackStandIn
from bot.services.drills import DrillService
from bot.services.people import load_people
from bot.store import keys
from bot.store.gatestore import GateStore
from bot.store.store import Store
from tests.bot_harness import Reply, RunningBot, bot_settings, reply_to, write_gate

SECRET = "whsec-test-0123456789abcdef"
TOKEN = "xoxb-9876543210-zyxwvutsrq"
RID = "payments@1.4.0"
SHA = "abc1234def"

GATE = """
id: payments
name: Payments API
channel: C0DEPLOYS
checks:
  - id: unit-tests
    kind: command
    run: ["python3", "-c", "print('ok')"]
  - id: e2e
    name: End-to-end suite
    kind: external
    severity: blocker
    max_age: 1h
signoffs:
  - {role: tech-lead, label: Tech Lead, users: [U01TECH]}
drills:
  - {id: redis-down, name: Redis down, run: ["true"]}
rollback:
  allowed_roles: [tech-lead]
"""


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.fixture
async def bot(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> AsyncIterator[RunningBot]:
    gates = write_gate(tmp_path / "gates", GATE, "payments.yml").parent
    settings = bot_settings(
        api_url=standin.api_url,
        redis_url=redis_url,
        gates=gates,
        data_dir=tmp_path / "d",
        GONOGO_WEBHOOK_SECRET=SECRET,
    )
    running = await RunningBot(settings).start()
    try:
        yield running
    finally:
        await running.stop()


async def post(bot: RunningBot, body: bytes, headers: dict[str, str]) -> Reply:
    assert bot.session is not None
    async with bot.session.post(
        f"{bot.url}/api/events", data=body, headers={"Content-Type": "application/json", **headers}
    ) as response:
        return Reply(response.status, await response.text(), 0.0)


async def send(bot: RunningBot, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = json.dumps(event).encode()
    reply = await post(bot, body, signed_headers(SECRET, body, time.time()))
    return reply.status, json.loads(reply.text)


async def open_release(bot: RunningBot, sha: str | None = SHA, event_id: str = "open-1") -> None:
    status, answer = await send(
        bot, {"type": "open", "id": event_id, "gate": "payments", "version": "1.4.0", "sha": sha}
    )
    assert (status, answer["id"]) == (202, event_id), answer


async def say(bot: RunningBot, standin: SlackStandIn, text: str, user: str = "U01TECH") -> dict[str, Any]:
    url = standin.new_response_url()
    await bot.command(text, response_url=url, user=user)
    return await reply_to(standin, url, timeout=10)


# --- authenticity before anything else ------------------------------------------------------------


async def test_signatures_are_checked_before_the_body_is_read(bot: RunningBot) -> None:
    good = json.dumps({"type": "open", "id": "sig-1", "gate": "payments", "version": "1.4.0"}).encode()
    # Each case is built just before it is sent: under load, a timestamp taken once at the start
    # drifts toward the window's edge ("future" at +301 s became +299 s and was accepted).
    cases: dict[str, Callable[[int], dict[str, str]]] = {
        "missing": lambda now: {},
        "bad": lambda now: {"X-Gonogo-Request-Timestamp": str(now), "X-Gonogo-Signature": "v0=" + "0" * 64},
        "other secret": lambda now: signed_headers("not-the-secret-at-all", good, now),
        "old": lambda now: {
            "X-Gonogo-Request-Timestamp": str(now - 301),
            "X-Gonogo-Signature": sign(SECRET, now - 301, good),
        },
        "future": lambda now: {
            "X-Gonogo-Request-Timestamp": str(now + 302),
            "X-Gonogo-Signature": sign(SECRET, now + 302, good),
        },
        "not a number": lambda now: {
            "X-Gonogo-Request-Timestamp": "soon",
            "X-Gonogo-Signature": sign(SECRET, now, good),
        },
    }
    for name, headers_at in cases.items():
        reply = await post(bot, good, headers_at(int(time.time())))
        assert reply.status == 401, name
        assert json.loads(reply.text)["ok"] is False
    # Garbage with a bad signature is a 401, not a 400: nothing unauthenticated gets parsed.
    assert (await post(bot, b"{not json", {"X-Gonogo-Signature": "v0=00"})).status == 401
    # The body signed is the body checked: one changed byte fails.
    headers = signed_headers(SECRET, good, int(time.time()))
    assert (await post(bot, good.replace(b"1.4.0", b"1.4.1"), headers)).status == 401
    assert (await post(bot, good, headers)).status == 202


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b"{not json", "(body)"),
        (b"[1, 2]", "(body)"),
        (b'{"id": "x"}', "(body)"),
        (b'{"type": "launch", "id": "x"}', "(body)"),
        (
            b'{"type": "rollback", "id": "x", "release": "payments@1.4.0", "actor": "ci", "status": "started"}',
            "rollback.reason",
        ),
        (
            b'{"type": "deploy", "id": "x", "release": "payments", "stage": "100%", "status": "started"}',
            "deploy.release",
        ),
        (
            b'{"type": "drill", "id": "x", "gate": "payments", "drill": "redis-down", "status": "ok",'
            b' "duration": 1, "actor": "ci"}',
            "drill.status",
        ),
        (b'{"type": "open", "id": "x", "gate": "payments", "version": "1.4.0", "sha": "not-hex"}', "open.sha"),
        (b'{"type": "open", "id": "x", "gate": "payments", "version": "1.4.0", "surprise": 1}', "open.surprise"),
        (b'{"type": "open", "id": "has space", "gate": "payments", "version": "1.4.0"}', "open.id"),
        (b"\xff\xfe", "(body)"),
    ],
)
async def test_malformed_bodies_are_400_with_the_errors(bot: RunningBot, body: bytes, loc: str) -> None:
    reply = await post(bot, body, signed_headers(SECRET, body, time.time()))
    assert reply.status == 400, reply.text
    answer = json.loads(reply.text)
    assert answer["error"] == "invalid event" and loc in [e["loc"] for e in answer["errors"]]
    assert "Traceback" not in reply.text


async def test_references_to_unknown_things_are_4xx_and_store_nothing(
    bot: RunningBot, redis_client: aioredis.Redis
) -> None:
    assert (await send(bot, {"type": "open", "id": "u1", "gate": "nope", "version": "1"}))[0] == 404
    rollback = {"type": "rollback", "id": "u2", "release": RID, "reason": "r", "actor": "ci", "status": "started"}
    assert (await send(bot, rollback))[0] == 404  # no such release
    drill = {
        "type": "drill",
        "id": "u3",
        "gate": "payments",
        "drill": "nope",
        "status": "passed",
        "duration": 1,
        "actor": "ci",
    }
    status, answer = await send(bot, drill)
    assert status == 400 and "no drill 'nope'" in answer["error"]
    assert await redis_client.xlen(keys.events("payments")) == 0
    # A refused id was not consumed: once the release exists, the same id applies.
    await open_release(bot)
    assert (await send(bot, rollback))[0] == 202


# --- idempotency ----------------------------------------------------------------------------------


async def test_a_replayed_id_is_accepted_and_changes_nothing(bot: RunningBot, redis_client: aioredis.Redis) -> None:
    event = {
        "type": "drill",
        "id": "ci-42-drill",
        "gate": "payments",
        "drill": "redis-down",
        "status": "failed",
        "duration": "41s",
        "actor": "ci",
    }
    first = await send(bot, event)
    again = await send(bot, {**event, "status": "passed"})  # same id, different body: still the first one
    assert first == (202, {"ok": True, "id": "ci-42-drill", "duplicate": False})
    assert again == (202, {"ok": True, "id": "ci-42-drill", "duplicate": True})
    gates = GateStore(redis_client)
    assert [r.passed for r in await gates.drill_runs("payments", "redis-down")] == [False]
    assert len(await gates.events("payments")) == 1


async def test_concurrent_deliveries_of_one_id_apply_once(bot: RunningBot, redis_client: aioredis.Redis) -> None:
    event = {
        "type": "drill",
        "id": "burst",
        "gate": "payments",
        "drill": "redis-down",
        "status": "passed",
        "duration": 3,
        "actor": "ci",
    }
    replies = await asyncio.gather(*(send(bot, event) for _ in range(8)))
    assert {status for status, _ in replies} == {202}
    assert sum(1 for _, answer in replies if not answer["duplicate"]) == 1
    assert len(await GateStore(redis_client).drill_runs("payments", "redis-down")) == 1


# --- each type's effect ---------------------------------------------------------------------------


async def test_open_then_deploy_moves_the_commit(bot: RunningBot, redis_client: aioredis.Redis) -> None:
    store = Store(redis_client)
    await open_release(bot, sha=None)
    release = await store.get_release(RID)
    assert release is not None and release.opened_by == "ci" and release.sha is None
    assert await store.open_release_id("payments") == RID

    status, _ = await send(
        bot,
        {"type": "deploy", "id": "d1", "release": RID, "stage": "canary 1%", "status": "started", "sha": "ABCDEF1234"},
    )
    assert status == 202
    release = await store.get_release(RID)
    assert release is not None and release.sha == "abcdef1234"
    audit = [(e.type, e.data.get("to"), e.data.get("stage")) for e in await store.audit(RID)]
    assert audit == [("opened", None, None), ("sha_moved", "abcdef1234", None), ("deploy", None, "canary 1%")]

    assert (await send(bot, {"type": "deploy", "id": "d2", "release": RID, "stage": "100%", "status": "succeeded"}))[
        0
    ] == 202
    assert (await store.get_release(RID)).sha == "abcdef1234"  # type: ignore[union-attr]
    # Opening it again is a no-op; opening another version while it is open is a conflict.
    assert (await send(bot, {"type": "open", "id": "o2", "gate": "payments", "version": "1.4.0"}))[0] == 202
    status, answer = await send(bot, {"type": "open", "id": "o3", "gate": "payments", "version": "1.5.0"})
    assert status == 409 and "payments@1.4.0 is still open" in answer["error"]


async def test_open_with_a_target_time_sets_it_and_sent_again_moves_it(
    bot: RunningBot, redis_client: aioredis.Redis
) -> None:
    """CI names when the release goes out (pre-launch posts follow it, docs/scheduling.md): set at
    open, moved by a later open, with or without a commit move; audited like `/gonogo open … --at`."""
    store = Store(redis_client)
    first = {"type": "open", "id": "t1", "gate": "payments", "version": "1.4.0", "sha": SHA}
    assert (await send(bot, {**first, "target": "2026-12-01T10:00:00+01:00"}))[0] == 202
    release = await store.get_release(RID)
    assert release is not None and release.target_at == datetime(2026, 12, 1, 9, tzinfo=UTC)

    assert (await send(bot, {**first, "id": "t2", "target": "2026-12-02T09:00:00Z"}))[0] == 202
    moved = {**first, "id": "t3", "sha": "abcdef1234", "target": "2026-12-03T09:00:00Z"}
    assert (await send(bot, moved))[0] == 202
    assert (await send(bot, {**first, "id": "t4", "sha": "abcdef1234"}))[0] == 202  # no target: kept
    release = await store.get_release(RID)
    assert release is not None and release.target_at == datetime(2026, 12, 3, 9, tzinfo=UTC)
    assert release.sha == "abcdef1234"
    audit = [(e.type, e.actor, e.data.get("to")) for e in await store.audit(RID)]
    assert audit == [
        ("opened", "ci", None),
        ("target_set", "ci", "2026-12-02T09:00:00+00:00"),
        ("sha_moved", "ci", "abcdef1234"),
        ("target_set", "ci", "2026-12-03T09:00:00+00:00"),
    ]
    status, answer = await send(bot, {**first, "id": "t5", "target": "next tuesday"})
    assert status == 400 and "target" in json.dumps(answer)


async def test_a_decided_release_is_frozen(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    await open_release(bot)
    await say(bot, standin, f"decide {RID}")
    status, answer = await send(
        bot, {"type": "deploy", "id": "d1", "release": RID, "stage": "100%", "status": "started", "sha": "fff1234"}
    )
    assert status == 409 and "decided" in answer["error"]
    assert (await Store(redis_client).get_release(RID)).sha == SHA  # type: ignore[union-attr]
    result = {"type": "check_result", "id": "c1", "release": RID, "check": "e2e", "status": "pass", "summary": "ok"}
    assert (await send(bot, result))[0] == 409
    # The same commit deploying is fine.
    assert (
        await send(
            bot, {"type": "deploy", "id": "d2", "release": RID, "stage": "100%", "status": "started", "sha": SHA}
        )
    )[0] == 202


async def test_check_result_feeds_the_external_check_for_the_commit(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    store = Store(redis_client)
    await open_release(bot)
    gate_loaded = bot_gate(bot)

    async def e2e() -> Any:
        people = await load_people(store, RID)
        release = await store.get_release(RID)
        assert release is not None
        results = people.results_for(gate_loaded, await store.results(RID), release.sha, datetime_now())
        return results["e2e"], decide(people.decision_input(gate_loaded, datetime_now(), results, release.sha))

    result, decision = await e2e()
    assert result.status.value == "pending" and "waiting for CI" in result.summary
    assert any(r.subject == "e2e" for r in decision.blocking)

    status, answer = await send(
        bot,
        {
            "type": "check_result",
            "id": "c1",
            "release": RID,
            "check": "e2e",
            "status": "pass",
            "summary": f"212 passed {TOKEN}",
            "sha": SHA,
        },
    )
    assert status == 202, answer
    stored = (await GateStore(redis_client).external_results(RID))["e2e"]
    assert stored.sha == SHA and stored.event_id == "c1" and TOKEN not in stored.summary and MASK in stored.summary
    result, decision = await e2e()
    assert result.status.value == "pass" and not any(r.subject == "e2e" for r in decision.blocking)

    # A run from Slack cannot overwrite it: the bot only says "waiting for CI" for external checks.
    await say(bot, standin, f"run {RID} e2e")
    await wait_until(lambda: store.current_run(RID), lambda lease: lease is None)
    assert (await e2e())[0].status.value == "pass"

    # Results for another commit are refused; only external checks take results.
    other = {
        "type": "check_result",
        "id": "c2",
        "release": RID,
        "check": "e2e",
        "status": "pass",
        "summary": "ok",
        "sha": "0000000",
    }
    status, answer = await send(bot, other)
    assert status == 409 and "is at abc1234def" in answer["error"]
    status, answer = await send(bot, {**other, "id": "c3", "check": "unit-tests", "sha": SHA})
    assert status == 400 and "only external checks" in answer["error"]

    # A new commit makes the reported result stop counting.
    await send(
        bot, {"type": "deploy", "id": "d1", "release": RID, "stage": "100%", "status": "started", "sha": "1234567"}
    )
    result, decision = await e2e()
    assert result.status.value == "pending" and "reported for abc1234def, release is at 1234567" in result.summary
    assert decision.verdict is Verdict.NO_GO


async def test_drill_event_is_recorded_for_the_gate(bot: RunningBot, redis_client: aioredis.Redis) -> None:
    await open_release(bot)
    store = Store(redis_client)
    before = decide((await load_people(store, RID)).decision_input(bot_gate(bot), datetime_now(), {}, SHA))
    assert any(r.code == "drill_not_passing" for r in before.blocking)
    status, _ = await send(
        bot,
        {
            "type": "drill",
            "id": "dr1",
            "gate": "payments",
            "drill": "redis-down",
            "status": "passed",
            "duration": 12.5,
            "output": f"failover done\nSLACK token {TOKEN}",
            "actor": "github-actions",
        },
    )
    assert status == 202
    [run] = await GateStore(redis_client).drill_runs("payments", "redis-down")
    assert run.passed and run.by == "github-actions" and run.source == "webhook" and run.event_id == "dr1"
    assert run.duration_s == 12.5 and "failover done" in run.details and TOKEN not in run.details
    after = decide((await load_people(store, RID)).decision_input(bot_gate(bot), datetime_now(), {}, SHA))
    assert not any(r.code == "drill_not_passing" for r in after.reasons)


async def test_rollback_event_rolls_the_release_back_with_time_since_decision(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis
) -> None:
    store = Store(redis_client)
    await open_release(bot)
    await say(bot, standin, f"decide {RID}")
    reason = f"<!channel> *bold* errors at 5% after deploy, token {TOKEN}"
    status, _ = await send(
        bot,
        {"type": "rollback", "id": "rb1", "release": RID, "reason": reason, "actor": "U01TECH", "status": "started"},
    )
    assert status == 202
    release = await store.get_release(RID)
    assert release is not None and release.state is State.ROLLED_BACK
    assert await store.open_release_id("payments") is None  # the gate is free for the fix

    status, _ = await send(
        bot, {"type": "rollback", "id": "rb2", "release": RID, "reason": "done", "actor": "ci", "status": "succeeded"}
    )
    assert status == 202
    entries = [e for e in await store.audit(RID) if e.type.startswith("rollback_")]
    assert [(e.type, e.data["from_state"]) for e in entries] == [
        ("rollback_started", "decided"),
        ("rollback_succeeded", "rolled_back"),
    ]
    assert entries[0].data["since_decision_s"] is not None and entries[0].data["since_decision_s"] >= 0
    assert (await store.get_release(RID)).rev == release.rev  # type: ignore[union-attr]  # moved once

    # Stored masked, and literally: escaping is for rendering, where it never pings.
    stored = entries[0].data["reason"]
    assert TOKEN not in stored and MASK in stored and stored.startswith("<!channel> *bold*")
    [first_event] = [e for e in await GateStore(redis_client).events("payments") if e.event_id == "rb1"]
    assert TOKEN not in json.dumps(first_event.body) and first_event.body["reason"] == stored
    history = await say(bot, standin, f"history {RID}")
    rendered = json.dumps(history)
    assert "<!channel>" not in rendered and TOKEN not in rendered


async def test_a_run_is_refused_while_a_drill_of_the_gate_runs(
    bot: RunningBot, standin: SlackStandIn, redis_client: aioredis.Redis, http_session: Any
) -> None:
    await open_release(bot)
    drills = DrillService(store=GateStore(redis_client), session=http_session, env={})
    started = await drills.begin(bot_gate(bot), "redis-down", "U0SRE")
    answer = await say(bot, standin, f"run {RID}")
    assert "fire drill redis-down of gate payments is running" in answer["text"]
    assert (await drills.finish(started)).passed
    answer = await say(bot, standin, f"run {RID}")
    assert "running" in answer["text"].lower() and "fire drill" not in answer["text"]


# --- gonogo notify, a separate process --------------------------------------------------------------


async def notify(bot: RunningBot, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GONOGO_", "REDIS_URL"))}
    env.update({"GONOGO_URL": bot.url, "GONOGO_WEBHOOK_SECRET_FILE": str(secret_file)})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "notify",
        *args,
        "--backoff",
        "0.05",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_notify_round_trip(bot: RunningBot, redis_client: aioredis.Redis, tmp_path: Path) -> None:
    code, out, err = await notify(bot, tmp_path, "open", "--gate", "payments", "--version", "1.4.0", "--sha", SHA)
    assert code == 0 and out.startswith("accepted: open-"), err
    code, out, err = await notify(
        bot,
        tmp_path,
        "drill",
        "--id",
        "gha-7",
        "--gate",
        "payments",
        "--drill",
        "redis-down",
        "--status",
        "passed",
        "--duration",
        "41",
        "--actor",
        "github-actions",
    )
    assert (code, out.strip()) == (0, "accepted: gha-7"), err
    code, out, _ = await notify(
        bot,
        tmp_path,
        "drill",
        "--id",
        "gha-7",
        "--gate",
        "payments",
        "--drill",
        "redis-down",
        "--status",
        "passed",
        "--duration",
        "41",
        "--actor",
        "github-actions",
    )
    assert (code, out.strip()) == (0, "already accepted: gha-7")
    [run] = await GateStore(redis_client).drill_runs("payments", "redis-down")
    assert run.duration_s == 41 and run.by == "github-actions"

    # A 4xx is final: non-zero exit, the server's errors printed.
    code, _, err = await notify(
        bot,
        tmp_path,
        "drill",
        "--gate",
        "payments",
        "--drill",
        "nope",
        "--status",
        "passed",
        "--duration",
        "1",
        "--actor",
        "ci",
    )
    assert code == 1 and "HTTP 400" in err and "no drill 'nope'" in err
    # Invalid fields never leave the machine: exit 2 naming the flag.
    code, _, err = await notify(bot, tmp_path, "rollback", "--release", RID, "--actor", "ci", "--status", "started")
    assert code == 2 and "--reason: Field required" in err


# --- helpers ----------------------------------------------------------------------------------------


def bot_gate(bot: RunningBot) -> Any:
    from bot.core.gateset import GateSet

    return GateSet(bot.settings.gates).get("payments").gate


def datetime_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def wait_until(probe: Any, done: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if done(await probe()):
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
