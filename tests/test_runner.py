"""The runner: concurrency bound, streaming, timeouts, crashes, cancellation, masking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Literal

import aiohttp
import pytest

import checks
from bot.core.masking import MASK
from bot.core.results import CheckResult, Status
from bot.services.runner import DETAILS_LIMIT, run_checks
from checks.base import CheckContext, SpecBase, result


class Probe(SpecBase):
    """A test-only check kind: sleeps, then passes, fails, crashes or prints what it is told."""

    kind: Literal["probe"] = "probe"
    sleep: float = 0.0
    outcome: Literal["pass", "fail", "crash", "own-timeout"] = "pass"
    summary: str = "ok"
    details: str = ""
    default_timeout: ClassVar[timedelta] = timedelta(seconds=5)


class Tracker:
    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.cancelled: list[str] = []


TRACK = Tracker()


async def run_probe(spec: Probe, ctx: CheckContext) -> CheckResult:
    started = ctx.clock()
    TRACK.active += 1
    TRACK.peak = max(TRACK.peak, TRACK.active)
    try:
        await asyncio.sleep(spec.sleep)
    except asyncio.CancelledError:
        TRACK.cancelled.append(spec.id)
        raise
    finally:
        TRACK.active -= 1
    if spec.outcome == "crash":
        raise RuntimeError("boom with xoxb-123456-secret")
    if spec.outcome == "own-timeout":
        raise TimeoutError
    status = Status.PASS if spec.outcome == "pass" else Status.FAIL
    return result(spec, status, spec.summary, details=spec.details, started_at=started, finished_at=ctx.clock())


@pytest.fixture(autouse=True)
def probe_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    global TRACK
    TRACK = Tracker()
    monkeypatch.setitem(checks.REGISTRY, "probe", checks.CheckKind(Probe, run_probe))


@pytest.fixture
async def ctx() -> AsyncIterator[CheckContext]:
    async with aiohttp.ClientSession() as session:
        yield CheckContext(session=session, env={"DEPLOY_TOKEN": "very-secret-value"})


async def test_results_stream_as_they_finish_and_return_in_spec_order(ctx: CheckContext) -> None:
    specs = [Probe(id="slow", sleep=0.6), Probe(id="fast", sleep=0.0), Probe(id="mid", sleep=0.2)]
    seen: list[tuple[str, float]] = []
    start = time.monotonic()

    async def on_result(r: CheckResult) -> None:
        seen.append((r.check_id, time.monotonic() - start))

    results = await run_checks(specs, ctx, on_result=on_result)
    assert [r.check_id for r in results] == ["slow", "fast", "mid"]
    assert [name for name, _ in seen] == ["fast", "mid", "slow"]
    assert seen[0][1] < 0.3  # the fast result is reported long before the slow check ends


async def test_concurrency_is_bounded(ctx: CheckContext) -> None:
    specs = [Probe(id=f"p{i}", sleep=0.05) for i in range(20)]
    await run_checks(specs, ctx, concurrency=4)
    assert TRACK.peak == 4


async def test_checks_run_concurrently(ctx: CheckContext) -> None:
    specs = [Probe(id=f"p{i}", sleep=0.3) for i in range(30)]
    start = time.monotonic()
    await run_checks(specs, ctx, concurrency=30)
    assert time.monotonic() - start < 2.0  # 9 s if sequential


async def test_timeout_becomes_error_and_spares_the_others(ctx: CheckContext) -> None:
    specs = [Probe(id="stuck", sleep=30, timeout=timedelta(milliseconds=100)), Probe(id="fine")]
    stuck, fine = await run_checks(specs, ctx)
    assert stuck.status is Status.ERROR and stuck.summary == "timed out after 100ms"
    assert "stuck" in TRACK.cancelled
    assert fine.status is Status.PASS


async def test_crash_becomes_error_with_the_reason_masked(ctx: CheckContext) -> None:
    crashed, fine = await run_checks([Probe(id="bad", outcome="crash"), Probe(id="ok")], ctx)
    assert crashed.status is Status.ERROR
    assert crashed.summary.startswith("crashed: RuntimeError: boom with")
    assert "xoxb-123456-secret" not in crashed.summary
    assert fine.status is Status.PASS


async def test_a_checks_own_timeout_error_is_a_crash_not_our_deadline(ctx: CheckContext) -> None:
    (outcome,) = await run_checks([Probe(id="t", outcome="own-timeout")], ctx)
    assert outcome.status is Status.ERROR and outcome.summary == "crashed: TimeoutError"


async def test_summaries_and_details_are_masked_and_truncated(ctx: CheckContext) -> None:
    noisy = "x" * 10_000 + "\nleaked very-secret-value and ghp_abcdefghijklmnopqrstuvwxyz012345\nlast line"
    (outcome,) = await run_checks(
        [Probe(id="n", outcome="fail", summary="line one\nvery-secret-value " + "y" * 500, details=noisy)], ctx
    )
    assert "very-secret-value" not in outcome.summary and "\n" not in outcome.summary
    assert len(outcome.summary) <= 300
    assert "very-secret-value" not in outcome.details and "ghp_" not in outcome.details
    assert MASK in outcome.details and outcome.details.endswith("last line")
    assert len(outcome.details) <= DETAILS_LIMIT


async def test_cancelling_the_run_cancels_every_check(ctx: CheckContext) -> None:
    specs = [Probe(id=f"p{i}", sleep=30) for i in range(5)]
    task = asyncio.create_task(run_checks(specs, ctx))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(TRACK.cancelled) == [f"p{i}" for i in range(5)]
    assert TRACK.active == 0


async def test_a_failing_listener_does_not_lose_results(ctx: CheckContext) -> None:
    async def broken(_: CheckResult) -> None:
        raise ConnectionError("slack is down")

    results = await run_checks([Probe(id="a"), Probe(id="b")], ctx, on_result=broken)
    assert [r.status for r in results] == [Status.PASS, Status.PASS]


async def test_result_timestamps_come_from_the_context_clock(ctx: CheckContext) -> None:
    fixed = datetime(2030, 1, 1, tzinfo=UTC)
    ctx.clock = lambda: fixed
    (outcome,) = await run_checks([Probe(id="a")], ctx)
    assert outcome.started_at == fixed and outcome.duration_s == 0


async def test_bad_concurrency_is_refused(ctx: CheckContext) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await run_checks([Probe(id="a")], ctx, concurrency=0)
