"""Time logic for reminders, deploy windows and scheduled runs. Pure: the clock is always a parameter.

Everything a scheduler needs to know ("is this due, and when is the next one?") is answered here
from facts a caller reads from Redis (when a person was last reminded, how many reminders went
out, a snooze, when a release opened), so a job that runs these functions can be restarted or
run on three replicas at once and still agree. Nothing here sleeps, reads a clock or talks to I/O.

Wall-clock rules ("mon-thu 09:00-16:00", "09:00-18:00", a freeze from 20 Dec) are written in a
zone and turned into UTC instants day by day with zoneinfo, so a DST change shortens or lengthens
that day as a person's watch would. A local time that does not exist (02:30 when clocks spring
forward) means the instant the clock shows it would have, i.e. 03:30; an ambiguous one (02:30
when clocks fall back) means its first occurrence.

Instants in and out are timezone-aware datetimes (any zone; results are UTC).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from bot.core.wallclock import ALL_DAYS, DAYS, DEFAULT_PRELAUNCH, DailySpan

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# How far ahead "when does the next window open?" looks before saying "not within a year".
HORIZON = timedelta(days=400)
ESCALATION_REPEAT = timedelta(days=1)  # "repeat at most daily"
DEFAULT_MORNING = 9 * 60  # snooze "until the next working morning" without working_hours


# --- wall clock -> instants ------------------------------------------------------------------------


def _instant(day: date, minute: int, zone: ZoneInfo) -> datetime:
    extra, minute = divmod(minute, 24 * 60)
    day = day + timedelta(days=extra)
    local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)
    return local.astimezone(UTC)  # fold=0: a gap time lands after the gap, an ambiguous one first


def _local_instant(value: date | datetime, zone: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=zone)
        return aware.astimezone(UTC)
    return _instant(value, 0, zone)


Interval = tuple[datetime, datetime]


def _span_intervals(spans: Iterable[DailySpan], zone: ZoneInfo, start: datetime, end: datetime) -> list[Interval]:
    """The spans' occurrences overlapping [start, end), unclipped, merged when they touch."""
    first = start.astimezone(zone).date() - timedelta(days=2)  # a span over midnight starts the day before
    last = end.astimezone(zone).date()
    found: list[Interval] = []
    day = first
    while day <= last:
        for span in spans:
            if day.weekday() in span.days:
                a, b = _instant(day, span.start, zone), _instant(day, span.end, zone)
                if b > start and a < end and b > a:
                    found.append((a, b))
        day += timedelta(days=1)
    return _merge(found)


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _subtract(intervals: list[Interval], holes: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in intervals:
        pieces = [(a, b)]
        for ha, hb in holes:
            pieces = [p for pa, pb in pieces for p in ((pa, min(pb, ha)), (max(pa, hb), pb)) if p[1] > p[0]]
        out.extend(pieces)
    return out


def _clip(intervals: Iterable[Interval], start: datetime, end: datetime) -> list[Interval]:
    return [(max(a, start), min(b, end)) for a, b in intervals if b > start and a < end]


def format_instant(at: datetime, zone: ZoneInfo, *, reference: datetime | None = None) -> str:
    """ "Mon 4 Jan 09:00 CET": English whatever the locale; the year only when far from `reference`."""
    local = at.astimezone(zone)
    year = f" {local.year}" if reference is not None and abs(at - reference) > timedelta(days=180) else ""
    return (
        f"{DAYS[local.weekday()].capitalize()} {local.day} {_MONTHS[local.month - 1]}{year}"
        f" {local:%H:%M} {local.tzname()}"
    )


# --- deploy windows and freezes ---------------------------------------------------------------------


@dataclass(frozen=True)
class FreezePeriod:
    start: date | datetime  # wall clock in the windows' zone; a date means its midnight
    end: date | datetime  # exclusive: `to: 2027-01-04` lets deploys happen from 4 Jan 00:00 again
    reason: str = "deploy freeze"

    @property
    def key(self) -> str:
        """Stable identity for once-only work (the freeze's announcements)."""
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


@dataclass(frozen=True)
class WindowRules:
    """A gate's `windows`: deploys allowed inside `allow` (always, when empty) and outside every freeze."""

    zone: ZoneInfo
    allow: tuple[DailySpan, ...] = ()
    freezes: tuple[FreezePeriod, ...] = ()

    def freeze_interval(self, freeze: FreezePeriod) -> Interval:
        return _local_instant(freeze.start, self.zone), _local_instant(freeze.end, self.zone)

    def describe_allow(self) -> str:
        return ", ".join(s.text for s in self.allow)


PeriodKind = Literal["open", "frozen"]


@dataclass(frozen=True)
class Period:
    kind: PeriodKind
    start: datetime
    end: datetime
    reason: str | None = None  # a freeze's reason


def open_periods(rules: WindowRules, start: datetime, end: datetime) -> list[Period]:
    """When deploying is allowed within [start, end): inside an allowed window and no freeze."""
    allowed = _span_intervals(rules.allow, rules.zone, start, end) if rules.allow else [(start, end)]
    frozen = _merge(rules.freeze_interval(f) for f in rules.freezes)
    return [Period("open", a, b) for a, b in _clip(_subtract(allowed, frozen), start, end)]


def frozen_periods(rules: WindowRules, start: datetime, end: datetime) -> list[Period]:
    """Each freeze overlapping [start, end), clipped to it, with its reason."""
    out = []
    for freeze in rules.freezes:
        for a, b in _clip([rules.freeze_interval(freeze)], start, end):
            out.append(Period("frozen", a, b, freeze.reason))
    return sorted(out, key=lambda p: (p.start, p.end))


def calendar(rules: WindowRules, start: datetime, end: datetime) -> list[Period]:
    """Open and frozen periods of [start, end), in time order (what `gonogo windows` prints)."""
    return sorted(
        [*open_periods(rules, start, end), *frozen_periods(rules, start, end)], key=lambda p: (p.start, p.kind)
    )


WindowState = Literal["open", "outside", "frozen"]


class WindowStatus(BaseModel):
    """Whether a deploy may happen at `at`, and if not why and until when. Rendered by `describe`."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    timezone: str
    state: WindowState
    allow: str = ""  # the allowed windows as written, for "outside the deploy windows (…)"
    freeze_reason: str | None = None
    opens_at: datetime | None = None  # when closed: the next open instant (None: not within HORIZON)
    closes_at: datetime | None = None  # when open: the end of this open period (None: not within HORIZON)

    @property
    def open(self) -> bool:
        return self.state == "open"

    def describe(self) -> str:
        """ "holiday freeze until Mon 4 Jan 09:00 CET", "deploy window open until Thu 10 Dec 16:00 CET"."""
        zone = ZoneInfo(self.timezone)
        if self.state == "open":
            if self.closes_at is None:
                return "deploy window open"
            return f"deploy window open until {format_instant(self.closes_at, zone, reference=self.at)}"
        cause = self.freeze_reason or "deploy freeze"
        if self.state == "outside":
            cause = f"outside the deploy windows ({self.allow})" if self.allow else "outside the deploy windows"
        if self.opens_at is None:
            return f"{cause}: no deploy window in the next {HORIZON.days} days"
        return f"{cause} until {format_instant(self.opens_at, zone, reference=self.at)}"


def _first_open(rules: WindowRules, at: datetime) -> Period | None:
    """The first open period ending after `at` (its start clipped to `at`), looking ahead in growing steps
    so the common case (a window this week) stays cheap."""
    for ahead in (timedelta(days=8), timedelta(days=45), HORIZON):
        periods = open_periods(rules, at, at + ahead)
        if periods and (periods[0].end < at + ahead or ahead == HORIZON):
            return periods[0]
    return None


def window_status(rules: WindowRules, at: datetime) -> WindowStatus:
    at = at.astimezone(UTC)
    base = {"at": at, "timezone": rules.zone.key, "allow": rules.describe_allow()}
    freeze = next((f for f in rules.freezes if _inside(rules.freeze_interval(f), at)), None)
    first = _first_open(rules, at)
    if first is not None and first.start == at:
        closes = first.end if first.end < at + HORIZON else None
        return WindowStatus(state="open", closes_at=closes, **base)
    opens = first.start if first is not None else None
    if freeze is not None:
        return WindowStatus(state="frozen", freeze_reason=freeze.reason, opens_at=opens, **base)
    return WindowStatus(state="outside", opens_at=opens, **base)


def _inside(interval: Interval, at: datetime) -> bool:
    return interval[0] <= at < interval[1]


@dataclass(frozen=True)
class FreezeEdge:
    """A freeze starting or ending: announced in the gate's channel once (claim `key`)."""

    kind: Literal["start", "end"]
    at: datetime
    freeze: FreezePeriod

    @property
    def key(self) -> str:
        return f"freeze-{self.kind}|{self.freeze.key}"


def freeze_edges(rules: WindowRules, *, after: datetime, until: datetime) -> list[FreezeEdge]:
    """Freeze starts and ends in (after, until], oldest first. A start while another freeze already holds,
    or an end while another still holds, changes nothing for deployers and is left out."""
    intervals = [(f, rules.freeze_interval(f)) for f in rules.freezes]
    edges = []
    for freeze, (start, end) in intervals:
        others = [iv for f, iv in intervals if f is not freeze]
        if after < start <= until and not any(_inside(iv, start) and iv[0] < start for iv in others):
            edges.append(FreezeEdge("start", start, freeze))
        if after < end <= until and not any(_inside(iv, end) for iv in others):
            edges.append(FreezeEdge("end", end, freeze))
    return sorted(edges, key=lambda e: (e.at, e.kind))


# --- working time: whose morning is it? --------------------------------------------------------------


@dataclass(frozen=True)
class WorkingTime:
    """When a person may be pinged: daily `hours` (any time when None) except on quiet days, in `zone`."""

    zone: ZoneInfo
    hours: tuple[int, int] | None = None  # minutes, see parse_hours
    quiet_days: frozenset[int] = frozenset()

    @property
    def spans(self) -> tuple[DailySpan, ...]:
        start, end = self.hours or (0, 24 * 60)
        return (DailySpan(days=ALL_DAYS - self.quiet_days, start=start, end=end),)

    @property
    def always(self) -> bool:
        return self.hours is None and not self.quiet_days


def next_working_instant(working: WorkingTime, at: datetime) -> datetime:
    """`at` itself inside working time, else the start of the next working span (their morning)."""
    at = at.astimezone(UTC)
    if working.always:
        return at
    for a, b in _span_intervals(working.spans, working.zone, at, at + timedelta(days=8)):
        if b > at:
            return max(a, at)
    raise ValueError("no working time in the next week: every day is a quiet day")


def next_working_morning(working: WorkingTime, at: datetime) -> datetime:
    """The next start of a working day strictly after `at` (snooze "until my next working morning").
    Without working hours a morning is 09:00."""
    start = working.hours[0] if working.hours else DEFAULT_MORNING
    local_day = at.astimezone(working.zone).date() - timedelta(days=1)
    for offset in range(9):
        day = local_day + timedelta(days=offset)
        candidate = _instant(day, start, working.zone)
        if day.weekday() not in working.quiet_days and candidate > at:
            return candidate
    raise ValueError("no working day in the next week: every day is a quiet day")


SnoozeChoice = Literal["1h", "4h", "morning"]


def snooze_until(choice: SnoozeChoice, working: WorkingTime, now: datetime) -> datetime:
    """The Snooze button's three choices."""
    if choice == "1h":
        return now + timedelta(hours=1)
    if choice == "4h":
        return now + timedelta(hours=4)
    return next_working_morning(working, now)


# --- reminders and escalation -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReminderRules:
    every: timedelta
    first_after: timedelta = timedelta(0)
    max: int = 10  # per person per release
    escalate_after: int | None = None


@dataclass(frozen=True)
class Due:
    """The `number`-th unit of a series (1-based) falls due at `at`. (series, number) is what a replica
    claims in Redis, so every replica computing the same facts names the same unit of work."""

    number: int
    at: datetime


def next_reminder(
    rules: ReminderRules,
    working: WorkingTime,
    *,
    waiting_since: datetime,
    sent: int,
    last_sent_at: datetime | None = None,
    snoozed_until: datetime | None = None,
) -> Due | None:
    """When a person waited on since `waiting_since` (release opened, role needed them, sign-off went
    stale) gets reminder number `sent + 1`; None once `max` went out. A time at night, on a quiet day or
    inside a snooze moves to the next working instant after it."""
    if sent >= rules.max:
        return None
    base = last_sent_at + rules.every if sent and last_sent_at is not None else waiting_since + rules.first_after
    if snoozed_until is not None:
        base = max(base, snoozed_until)
    return Due(number=sent + 1, at=next_working_instant(working, base))


def next_escalation(
    escalate_after: int | None,
    *,
    unanswered: int,
    threshold_reached_at: datetime | None,
    sent: int,
    last_sent_at: datetime | None = None,
    working: WorkingTime | None = None,
) -> Due | None:
    """Escalation number `sent + 1` for a role: due once `unanswered` reminders reached `escalate_after`
    (at `threshold_reached_at`, when the last of them went out), then again at most daily, inside the
    gate's working time when given (the channel's readers are people too)."""
    if escalate_after is None or unanswered < escalate_after or threshold_reached_at is None:
        return None
    base = threshold_reached_at if sent == 0 or last_sent_at is None else last_sent_at + ESCALATION_REPEAT
    at = next_working_instant(working, base) if working is not None else base
    return Due(number=sent + 1, at=at)


# --- pre-launch posts, re-checks and post-deploy runs ----------------------------------------------------


@dataclass(frozen=True)
class PrelaunchPost:
    before: timedelta  # offset before the target time: also its identity
    at: datetime


def prelaunch_posts(target: datetime, offsets: Sequence[timedelta] = DEFAULT_PRELAUNCH) -> list[PrelaunchPost]:
    """Every pre-launch post of a release with a target time, in time order."""
    return sorted((PrelaunchPost(before=o, at=target - o) for o in set(offsets)), key=lambda p: p.at)


def prelaunch_due(
    target: datetime, now: datetime, offsets: Sequence[timedelta] = DEFAULT_PRELAUNCH
) -> PrelaunchPost | None:
    """The post that should have gone out by `now`: the latest one passed, and none after the target.
    Opened (or restarted) late, a release gets one post, not a burst of stale ones."""
    if now >= target:
        return None
    passed = [p for p in prelaunch_posts(target, offsets) if p.at <= now]
    return passed[-1] if passed else None


@dataclass(frozen=True)
class Series:
    """Runs every `every` from `start` (the first at start + every), `total` of them or unbounded."""

    start: datetime
    every: timedelta
    total: int | None = None

    def at(self, number: int) -> datetime:
        return self.start + number * self.every

    def current(self, now: datetime) -> Due | None:
        """The latest run due by `now` (earlier missed runs are skipped, not replayed)."""
        number = int((now - self.start) / self.every) if now >= self.start else 0
        if self.total is not None:
            number = min(number, self.total)
        return Due(number=number, at=self.at(number)) if number >= 1 else None

    def following(self, now: datetime) -> Due | None:
        """The next run after `now`, or None when the series is over."""
        latest = self.current(now)
        number = (latest.number if latest else 0) + 1
        if self.total is not None and number > self.total:
            return None
        return Due(number=number, at=self.at(number))


def recheck_series(opened_at: datetime, every: timedelta) -> Series:
    """`recheck: {every: 15m}`: slots counted from the release's opening, the same on every replica."""
    return Series(start=opened_at, every=every)


def postdeploy_series(started_at: datetime, every: timedelta, duration: timedelta) -> Series:
    """`postdeploy: {every: 5m, for: 4h}`: 48 runs, the last at the end, which also posts the summary."""
    return Series(start=started_at, every=every, total=max(1, int(duration / every)))


@dataclass(frozen=True)
class Outlook:
    """A gate's open and frozen periods over a range, with the status at its start (`gonogo windows`)."""

    rules: WindowRules
    start: datetime
    end: datetime
    now: WindowStatus
    periods: list[Period] = field(default_factory=list)


def outlook(rules: WindowRules, start: datetime, ahead: timedelta) -> Outlook:
    start = start.astimezone(UTC)
    end = start + ahead
    return Outlook(
        rules=rules, start=start, end=end, now=window_status(rules, start), periods=calendar(rules, start, end)
    )
