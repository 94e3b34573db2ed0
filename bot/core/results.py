"""What a check run produces. Shared by the checks, the runner, the decision engine and the card."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, computed_field


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"  # passed, with something worth a look (e.g. no data and on_no_data: warn)
    ERROR = "error"  # the check could not reach a verdict: crash, timeout, bad config at run time
    SKIPPED = "skipped"
    PENDING = "pending"  # waits for a person (manual checks)

    @property
    def passing(self) -> bool:
        """Only pass and warn count towards GO; everything else is "not passing"."""
        return self in (Status.PASS, Status.WARN)

    @property
    def emoji(self) -> str:
        return _EMOJI[self]


_EMOJI = {
    Status.PASS: "✅",
    Status.FAIL: "❌",
    Status.WARN: "🔸",
    Status.ERROR: "⚠️",
    Status.SKIPPED: "⏭️",
    Status.PENDING: "⏳",
}


class CheckResult(BaseModel):
    """One check's outcome. `summary` is one line a human understands; `details` is an output tail."""

    # extra="ignore": documents we wrote ourselves carry the computed duration_s back in.
    # defer_build: every gate load imports this module, but only running checks or reading stored
    # results needs the validator; building it at import cost `gonogo validate` ~10 ms.
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    check_id: str
    status: Status
    summary: str
    details: str = ""
    value: float | None = None
    score: float | None = Field(default=None, ge=0, le=1, description="A graded check's score, clamped to [0, 1]")
    started_at: datetime
    finished_at: datetime
    # Stamped when a run of a release saves it: evidence belongs to a commit, and to one run.
    sha: str | None = None
    run_id: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


def split_by_commit(
    results: Mapping[str, CheckResult], sha: str | None
) -> tuple[dict[str, CheckResult], dict[str, CheckResult]]:
    """(results of commit `sha`, results of another commit). Only the first count: after the release
    moves to another commit, the old evidence is shown as such and decided on as "not run"."""
    current = {k: r for k, r in results.items() if r.sha == sha}
    outdated = {k: r for k, r in results.items() if r.sha != sha}
    return current, outdated
