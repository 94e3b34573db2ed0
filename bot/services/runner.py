"""Runs a gate's checks concurrently and reports each result the moment it is known.

The runner is the only place that deals with timeouts, cancellation and crashes: a check
module returns results for expected failures and may raise for anything else; here that becomes
an `error` result, so one bad check never takes down the run. Every summary and detail is masked
and truncated here, before it can reach a terminal, Redis, Slack or a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from bot.core.durations import format_duration
from bot.core.masking import Masker, truncate_line, truncate_tail
from bot.core.mentions import literal
from bot.core.results import CheckResult, Status
from checks import run_check
from checks.base import CheckContext, SpecBase
from checks.scoring import apply_pass_score

log = logging.getLogger("gonogo.runner")

DEFAULT_CONCURRENCY = 16
SUMMARY_LIMIT = 300
# Slack sections hold 3000 characters; leave room for the code fence and a heading.
DETAILS_LIMIT = 2800
# Checks that can tell a clean "no answer within 2s" themselves (tcp, http) get to do so before
# the runner's hard deadline turns the run into an error.
TIMEOUT_GRACE = timedelta(milliseconds=500)

OnResult = Callable[[CheckResult], Awaitable[None]]


def effective_timeout(spec: SpecBase) -> timedelta:
    default: timedelta = getattr(type(spec), "default_timeout", timedelta(seconds=60))
    return spec.timeout or default


def sanitize(result: CheckResult, masker: Masker) -> CheckResult:
    """Mask secrets, then cut to sizes Slack accepts (masking first: cutting could split a secret).
    A `{@U…}` a check prints stays text (`literal`): only the bot's own tokens become mentions."""
    return result.model_copy(
        update={
            "summary": truncate_line(literal(masker.mask(result.summary)), SUMMARY_LIMIT),
            "details": truncate_tail(masker.mask(result.details), DETAILS_LIMIT),
        }
    )


async def run_one(spec: SpecBase, ctx: CheckContext, masker: Masker) -> CheckResult:
    """One check, bounded by its timeout; any crash becomes an `error` result."""
    started = ctx.clock()
    timeout = effective_timeout(spec)
    deadline = asyncio.timeout((timeout + TIMEOUT_GRACE).total_seconds())
    try:
        async with deadline:
            outcome = await run_check(spec, ctx)
        outcome = apply_pass_score(outcome.model_copy(update={"check_id": spec.id}), spec.pass_score)
    except TimeoutError:
        # A TimeoutError the check raised itself is a crash, not our deadline.
        why = f"timed out after {format_duration(timeout)}" if deadline.expired() else "crashed: TimeoutError"
        outcome = _error(spec, started, ctx, why)
    except Exception as exc:  # a crashing check must not take the run down with it
        log.warning(
            "check crashed",
            extra={"check": spec.id, "error": masker.mask(f"{type(exc).__name__}: {exc}")},
        )
        outcome = _error(spec, started, ctx, f"crashed: {type(exc).__name__}: {exc}")
    return sanitize(outcome, masker)


def _error(spec: SpecBase, started: datetime, ctx: CheckContext, summary: str) -> CheckResult:
    return CheckResult(
        check_id=spec.id, status=Status.ERROR, summary=summary, started_at=started, finished_at=ctx.clock()
    )


async def run_checks(
    specs: Sequence[SpecBase],
    ctx: CheckContext,
    *,
    masker: Masker | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_result: OnResult | None = None,
) -> list[CheckResult]:
    """Run `specs` with at most `concurrency` at once; call `on_result` as each one finishes.

    Returns the results in the order of `specs`. Cancelling the caller cancels every check
    (command checks kill their process groups on the way out).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    masker = masker or Masker.from_env(ctx.env)
    slots = asyncio.Semaphore(concurrency)
    results: dict[str, CheckResult] = {}

    async def one(spec: SpecBase) -> None:
        async with slots:
            outcome = await run_one(spec, ctx, masker)
        results[spec.id] = outcome
        if on_result is not None:
            try:
                await on_result(outcome)
            except Exception:  # a failing listener (e.g. Slack down) must not lose the result
                log.exception("result listener failed", extra={"check": spec.id})

    async with asyncio.TaskGroup() as group:
        for spec in specs:
            group.create_task(one(spec))
    return [results[spec.id] for spec in specs]
