"""What every check kind shares: the common spec fields, the run context and result helpers.

A check module exports `Spec` (a pydantic model with `kind: Literal[...]`) and
`async def run(spec, ctx) -> CheckResult`. Expected failures (HTTP 503, exit 1, no data)
are results; only the runner turns timeouts, cancellation and crashes into `error`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from bot.core.durations import Duration
from bot.core.results import CheckResult, Status

if TYPE_CHECKING:
    import aiohttp

CHECK_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"


class Severity(StrEnum):
    BLOCKER = "blocker"  # failing -> NO-GO whatever the policy says
    REQUIRED = "required"  # counts towards the policy
    ADVISORY = "advisory"  # failing only warns


class SpecBase(BaseModel):
    """Fields every check has, whatever its kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=CHECK_ID_PATTERN, description="Unique within the gate: [a-z0-9_.-]")
    name: str | None = Field(default=None, description="Shown on the card; defaults to the id")
    description: str | None = None
    severity: Severity = Severity.REQUIRED
    group: str | None = Field(default=None, description="Groups checks for risk_score weights")
    timeout: Duration | None = Field(default=None, description="Per-check timeout (runner default: 60s)")

    @property
    def title(self) -> str:
        return self.name or self.id


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class CheckContext:
    """Everything a check may touch besides its spec. Built once per run by the caller."""

    session: aiohttp.ClientSession
    base_dir: Path = field(default_factory=Path.cwd)  # relative paths in the gate resolve here
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    clock: Callable[[], datetime] = _utcnow

    def resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


def result(
    spec: SpecBase,
    status: Status,
    summary: str,
    *,
    started_at: datetime,
    finished_at: datetime,
    details: str = "",
    value: float | None = None,
) -> CheckResult:
    return CheckResult(
        check_id=spec.id,
        status=status,
        summary=summary,
        details=details,
        value=value,
        started_at=started_at,
        finished_at=finished_at,
    )


def seconds(delta: timedelta) -> str:
    """ "2.3 s" style for summaries."""
    total = delta.total_seconds()
    return f"{total:.1f} s" if total < 100 else f"{total:.0f} s"
