"""`external`: a result only CI or deploy tooling reports, over the signed webhook.

The bot cannot run it: a run from Slack or `gonogo check` says "waiting for CI" (pending, so it
never counts as passing by itself). CI reports it with `gonogo notify check_result ...`; the
result is stored for the release's commit, and it counts only while the release is still at
that commit and (with `max_age`) while it is fresh. `effective` applies those rules (pure).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar, Literal

from pydantic import Field

from bot.core.durations import Duration, format_duration
from bot.core.results import CheckResult, Status
from checks.base import CheckContext, SpecBase, result

WAITING = "waiting for CI to report it (gonogo notify check_result)"


class Spec(SpecBase):
    kind: Literal["external"] = "external"
    max_age: Duration | None = Field(default=None, description="A reported result older than this no longer counts")

    default_timeout: ClassVar[timedelta] = timedelta(seconds=1)


class ExternalResult(CheckResult):
    """A result reported over the webhook, bound to the commit it was reported for."""

    sha: str | None = None
    event_id: str
    reported_by: str = "ci"


async def run(spec: Spec, ctx: CheckContext) -> CheckResult:
    now = ctx.clock()
    return result(spec, Status.PENDING, WAITING, started_at=now, finished_at=now)


def effective(spec: Spec, reported: ExternalResult | None, *, sha: str | None, now: datetime) -> CheckResult:
    """What the decision sees for an external check: the reported result while it still applies,
    else pending with the reason it does not count."""
    if reported is None:
        return CheckResult(check_id=spec.id, status=Status.PENDING, summary=WAITING, started_at=now, finished_at=now)
    problem = None
    if reported.sha != sha:
        problem = f"reported for {(reported.sha or 'no commit')[:12]}, release is at {(sha or 'no commit')[:12]}"
    elif spec.max_age is not None and now - reported.finished_at > spec.max_age:
        problem = f"reported result is older than {format_duration(spec.max_age)}"
    if problem is None:
        return CheckResult.model_validate(reported.model_dump(exclude={"sha", "event_id", "reported_by"}))
    return CheckResult(
        check_id=spec.id,
        status=Status.PENDING,
        summary=f"{problem}; {WAITING}",
        started_at=reported.started_at,
        finished_at=reported.finished_at,
    )
