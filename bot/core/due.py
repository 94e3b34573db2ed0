"""When a condition is due: a date (`due: 2026-12-01`) or a time after a stage is reached
(`due: 7d after dark`). Pure: the stage's arrival time and `now` are parameters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from bot.core.durations import format_duration, parse_duration

_AFTER = re.compile(r"^\s*(\S+)\s+after\s+([a-z0-9][a-z0-9-]*)\s*$")


@dataclass(frozen=True)
class Due:
    on: date | None = None  # due by the end of this day (UTC)
    after: timedelta | None = None  # ... or this long after `stage` is reached
    stage: str | None = None

    def at(self, reached: Mapping[str, datetime]) -> datetime | None:
        """The moment it falls due; None while its stage has not been reached."""
        if self.on is not None:
            return datetime.combine(self.on + timedelta(days=1), time(), tzinfo=UTC)
        assert self.after is not None and self.stage is not None
        arrived = reached.get(self.stage)
        return arrived + self.after if arrived is not None else None

    def text(self, stage_names: Mapping[str, str]) -> str:
        if self.on is not None:
            return self.on.isoformat()
        assert self.after is not None and self.stage is not None
        return f"{format_duration(self.after)} after {stage_names.get(self.stage, self.stage)}"


def parse_due(value: date | str) -> Due:
    """A date, or `<duration> after <stage-id>`; ValueError otherwise."""
    if isinstance(value, datetime):
        return Due(on=value.date())
    if isinstance(value, date):
        return Due(on=value)
    try:
        return Due(on=date.fromisoformat(value.strip()))
    except ValueError:
        pass
    match = _AFTER.match(value)
    if match:
        try:
            return Due(after=parse_duration(match.group(1)), stage=match.group(2))
        except ValueError:
            pass
    raise ValueError(f"due must be a date (2026-12-01) or a duration after a stage (7d after dark), got {value!r}")
