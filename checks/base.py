"""What every check kind shares: the common spec fields, the run context and result helpers.

A check module exports `Spec` (a pydantic model with `kind: Literal[...]`) and
`async def run(spec, ctx) -> CheckResult`. Expected failures (HTTP 503, exit 1, no data)
are results; only the runner turns timeouts, cancellation and crashes into `error`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bot.core.durations import Duration
from bot.core.masking import is_bots_own
from bot.core.results import CheckResult, Status

if TYPE_CHECKING:
    import aiohttp

CHECK_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"

# Regexes from gate files run with a time budget, off the event loop and without the GIL, so a
# catastrophic pattern (`^(a+)+$` on a long body) costs one check an error, never the bot its acks.
PATTERN_BUDGET_S = 1.0


class PatternTimeout(Exception):
    def __init__(self, pattern: str, budget_s: float) -> None:
        super().__init__(f"the regex /{pattern}/ took longer than {budget_s:g} s (simplify it)")


def pattern_problem(pattern: str) -> str | None:
    """Why a gate's regex does not compile, or None."""
    import regex  # here, not at import: only gates that have patterns pay for it

    try:
        regex.compile(pattern)
    except (regex.error, ValueError) as exc:
        return f"invalid regex {pattern!r}: {exc}"
    return None


def pattern_search(pattern: str, text: str, budget_s: float = PATTERN_BUDGET_S) -> bool:
    """Whether `pattern` matches somewhere in `text`; PatternTimeout past the budget. Blocking: call
    it in a thread (`asyncio.to_thread`), `concurrent=True` releases the GIL while it matches."""
    import regex

    try:
        return regex.search(pattern, text, timeout=budget_s, concurrent=True) is not None
    except TimeoutError:
        raise PatternTimeout(pattern, budget_s) from None


class Severity(StrEnum):
    BLOCKER = "blocker"  # failing -> NO-GO whatever the policy says
    REQUIRED = "required"  # counts towards the policy
    ADVISORY = "advisory"  # failing only warns


class SpecBase(BaseModel):
    """Fields every check has, whatever its kind."""

    # defer_build: specs are validated as part of `Gate` (one validator, built on first use);
    # a spec validated on its own builds its validator then.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    id: str = Field(pattern=CHECK_ID_PATTERN, description="Unique within the gate: [a-z0-9_.-]")
    name: str | None = Field(default=None, description="Shown on the card; defaults to the id")
    description: str | None = None
    severity: Severity = Severity.REQUIRED
    group: str | None = Field(default=None, description="Groups checks for risk_score weights")
    timeout: Duration | None = Field(default=None, description="Per-check timeout (runner default: 60s)")
    before: str | None = Field(
        default=None, description="Stage id this check must hold before (default: the gate's first stage)"
    )
    pass_score: float | None = Field(
        default=None, ge=0, le=1, description="A scored check passes only at or above this score (0..1)"
    )

    # Whether running it needs the run's HTTP session (`ctx.http`). A run without such checks
    # opens no session, and `gonogo check` does not even import aiohttp for it.
    uses_http: ClassVar[bool] = False

    @property
    def title(self) -> str:
        return self.name or self.id

    @model_validator(mode="after")
    def _not_the_bots_own_env(self) -> SpecBase:
        """A gate cannot hand gonogo's own credentials to a check (bearer_token_env: SLACK_BOT_TOKEN)."""
        own = sorted({f"{path}: {name}" for path, name in env_names(self) if is_bots_own(name)})
        if own:
            raise ValueError(
                f"{'; '.join(own)}: gonogo's own settings (SLACK_*, GONOGO_*, REDIS_URL) cannot be given to a check"
            )
        return self


def env_names(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(field path, variable name) of every `*_env` field, nested models and lists included."""
    for name, value in model:
        path = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from env_names(value, f"{path}.")
        elif name.endswith("_env") and isinstance(value, str):
            yield path, value
        elif name.endswith("_env") and isinstance(value, list | tuple):
            yield from ((path, str(v)) for v in value)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class CheckContext:
    """Everything a check may touch besides its spec. Built once per run by the caller."""

    session: aiohttp.ClientSession | None = None  # what `ctx.http` gives checks whose kind `uses_http`
    base_dir: Path = field(default_factory=Path.cwd)  # relative paths in the gate resolve here
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    clock: Callable[[], datetime] = _utcnow
    sha: str | None = None  # the release's commit: checks judge that commit, not whatever is newest

    @property
    def http(self) -> aiohttp.ClientSession:
        if self.session is None:  # the caller left it out although a check `uses_http`: a bug of ours
            raise RuntimeError("this run has no HTTP session")
        return self.session

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
    score: float | None = None,
) -> CheckResult:
    return CheckResult(
        check_id=spec.id,
        status=status,
        summary=summary,
        details=details,
        value=value,
        score=score,
        started_at=started_at,
        finished_at=finished_at,
    )


def seconds(delta: timedelta) -> str:
    """ "2.3 s" style for summaries."""
    total = delta.total_seconds()
    return f"{total:.1f} s" if total < 100 else f"{total:.0f} s"
