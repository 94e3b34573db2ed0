"""`manual`: a person marks it done with evidence (from Slack). Never passes by itself."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import Field

from bot.core.results import CheckResult, Status
from checks.base import CheckContext, SpecBase, result


class Spec(SpecBase):
    kind: Literal["manual"] = "manual"
    owner: str = Field(description="Role id whose members may mark it done")
    instructions: str | None = Field(default=None, description="What evidence is expected")

    default_timeout: ClassVar[timedelta] = timedelta(seconds=1)


async def run(spec: Spec, ctx: CheckContext) -> CheckResult:
    now = ctx.clock()
    return result(
        spec,
        Status.PENDING,
        f"waiting for {spec.owner} to mark it done with evidence",
        started_at=now,
        finished_at=now,
    )
