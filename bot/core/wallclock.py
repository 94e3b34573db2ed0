"""Wall-clock rules as gate files spell them: days ("mon-thu", "weekdays"), hours ("09:00-18:00"),
windows ("mon-thu 09:00-16:00") and zones.

Parsing only: gate validation needs these, and loading a gate should not pay for the time logic
that turns them into instants (bot/core/timeplan.py, which the bot and `gonogo windows` use).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {"daily": range(7), "weekdays": range(5), "weekends": range(5, 7)}
ALL_DAYS = frozenset(range(7))
# When a prelaunch checklist is posted before a target time, unless the gate says otherwise.
DEFAULT_PRELAUNCH = (timedelta(hours=24), timedelta(hours=1))

_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_DAY_RANGE = re.compile(r"^([a-z]{3})(?:-([a-z]{3}))?$")


@dataclass(frozen=True)
class DailySpan:
    """A span of wall-clock time repeated on some weekdays. `end` may pass midnight (22:00-02:00
    has end 26*60): the span belongs to the day it starts on."""

    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int  # minutes after the start day's midnight, > start
    text: str = ""

    @property
    def whole_days(self) -> bool:
        return self.start == 0 and self.end == 24 * 60


def parse_hours(text: str) -> tuple[int, int]:
    """ "09:00-18:00" -> (540, 1080). "22:00-02:00" passes midnight; "24:00" ends a day."""
    match = _HOURS.match(text.strip())
    if not match:
        raise ValueError(f"expected HH:MM-HH:MM, e.g. 09:00-18:00, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        raise ValueError(f"no such time of day in {text!r}")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end or (start == 0 and end == 0):
        raise ValueError(f"{text!r} is empty: start and end are the same time")
    if end <= start:
        end += 24 * 60  # over midnight
    return start, end


def parse_days(text: str) -> frozenset[int]:
    """ "mon-thu", "mon,wed,fri", "fri-mon" (wraps), "daily", "weekdays", "weekends"."""
    days: set[int] = set()
    for part in text.strip().lower().split(","):
        part = part.strip()
        if part in _DAY_ALIASES:
            days.update(_DAY_ALIASES[part])
            continue
        match = _DAY_RANGE.match(part)
        if not match or match.group(1) not in DAYS or (match.group(2) and match.group(2) not in DAYS):
            raise ValueError(f"unknown day {part!r}: use mon..sun, a range like mon-thu, daily or weekdays")
        first = DAYS.index(match.group(1))
        last = DAYS.index(match.group(2)) if match.group(2) else first
        days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return frozenset(days)


def parse_window(text: str) -> DailySpan:
    """ "mon-thu 09:00-16:00", "fri 09:00-12:00", "weekdays" (whole days) or "10:00-11:00" (daily)."""
    words = text.split()
    if len(words) == 2:
        days, (start, end) = parse_days(words[0]), parse_hours(words[1])
    elif len(words) == 1 and any(c.isdigit() for c in words[0]):
        days, (start, end) = ALL_DAYS, parse_hours(words[0])
    elif len(words) == 1:
        days, start, end = parse_days(words[0]), 0, 24 * 60
    else:
        raise ValueError(f"expected DAYS HH:MM-HH:MM, e.g. mon-thu 09:00-16:00, got {text!r}")
    return DailySpan(days=days, start=start, end=end, text=" ".join(words))


def zone_of(name: str) -> ZoneInfo:
    """The zone, or ValueError naming it (gate validation turns that into a field error)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}") from None
