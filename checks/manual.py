"""`manual`: a person marks it done with evidence (from Slack). Never passes by itself."""

from __future__ import annotations

from datetime import date, timedelta
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from bot.core.due import Due, parse_due
from bot.core.results import CheckResult, Status
from checks.base import CheckContext, SpecBase, result


class Spec(SpecBase):
    kind: Literal["manual"] = "manual"
    owner: str = Field(description="Role id whose members may mark it done")
    instructions: str | None = Field(default=None, description="What evidence is expected")
    due: date | str | None = Field(
        default=None, description="A date (2026-12-01) or a duration after a stage is reached (7d after dark)"
    )

    @field_validator("due")
    @classmethod
    def _valid_due(cls, value: date | str | None) -> date | str | None:
        if value is not None:
            parse_due(value)
        return value

    @property
    def due_rule(self) -> Due | None:
        return parse_due(self.due) if self.due is not None else None

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
