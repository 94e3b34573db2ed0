"""The pure time logic of reminders, deploy windows and scheduled runs, as tables.

Europe/Madrid springs forward on Sun 29 Mar 2026 (02:00 CET -> 03:00 CEST, 01:00 UTC) and falls
back on Sun 25 Oct 2026 (03:00 CEST -> 02:00 CET, 01:00 UTC). Asia/Tokyo has no DST (UTC+9).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.core.timeplan import (
    FreezePeriod,
    ReminderRules,
    WindowRules,
    WorkingTime,
    calendar,
    format_instant,
    freeze_edges,
    next_escalation,
    next_reminder,
    next_working_instant,
    next_working_morning,
    open_periods,
    outlook,
    postdeploy_series,
    prelaunch_due,
    prelaunch_posts,
    recheck_series,
    snooze_until,
    window_status,
)
from bot.core.wallclock import DailySpan, parse_days, parse_hours, parse_window

MADRID = ZoneInfo("Europe/Madrid")
TOKYO = ZoneInfo("Asia/Tokyo")
H = timedelta(hours=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(text: str, zone: ZoneInfo = MADRID) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone).astimezone(UTC)


WEEKDAYS = frozenset({5, 6})  # sat, sun quiet
OFFICE = WorkingTime(zone=MADRID, hours=(9 * 60, 18 * 60), quiet_days=WEEKDAYS)
OFFICE_EVERY_DAY = WorkingTime(zone=MADRID, hours=(9 * 60, 18 * 60))
TOKYO_OFFICE = WorkingTime(zone=TOKYO, hours=(9 * 60, 18 * 60), quiet_days=WEEKDAYS)


# --- parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon", {0}),
        ("mon-thu", {0, 1, 2, 3}),
        ("fri-mon", {4, 5, 6, 0}),  # wraps over the weekend
        ("mon,wed,fri", {0, 2, 4}),
        ("mon-tue,sat", {0, 1, 5}),
        ("weekdays", {0, 1, 2, 3, 4}),
        ("weekends", {5, 6}),
        ("daily", set(range(7))),
        ("MON-Fri", {0, 1, 2, 3, 4}),
    ],
)
def test_parse_days(text: str, days: set[int]) -> None:
    assert parse_days(text) == frozenset(days)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("09:00-18:00", (540, 1080)),
        ("00:00-24:00", (0, 1440)),
        ("22:00-02:00", (1320, 1560)),  # over midnight
        ("23:30-00:00", (1410, 1440)),
    ],
)
def test_parse_hours(text: str, minutes: tuple[int, int]) -> None:
    assert parse_hours(text) == minutes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9-18", "expected HH:MM-HH:MM"),
        ("09:00-09:00", "is empty"),
        ("25:00-26:00", "no such time"),
        ("09:00-24:30", "no such time"),
        ("funday 09:00-10:00", "unknown day 'funday'"),
        ("mon-thu 09:00-16:00 extra", "expected DAYS HH:MM-HH:MM"),
        ("mon-xyz 09:00-10:00", "unknown day"),
    ],
)
def test_parse_window_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window(text)


def test_parse_window_forms() -> None:
    assert parse_window("mon-thu 09:00-16:00") == DailySpan(frozenset({0, 1, 2, 3}), 540, 960, "mon-thu 09:00-16:00")
    assert parse_window("weekdays").whole_days
    assert parse_window("10:00-11:00").days == frozenset(range(7))


def test_format_instant_is_english_and_names_the_zone() -> None:
    at = local("2027-01-04T09:00")
    assert format_instant(at, MADRID) == "Mon 4 Jan 09:00 CET"
    assert format_instant(local("2026-07-01T09:00"), MADRID) == "Wed 1 Jul 09:00 CEST"
    assert format_instant(at, MADRID, reference=at - timedelta(days=200)) == "Mon 4 Jan 2027 09:00 CET"
    assert format_instant(at, TOKYO) == "Mon 4 Jan 17:00 JST"


# --- working time ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "working", "at", "expected"),
    [
        ("inside hours", OFFICE, local("2026-03-25T10:00"), local("2026-03-25T10:00")),
        ("at the start", OFFICE, local("2026-03-25T09:00"), local("2026-03-25T09:00")),
        ("at the end (exclusive)", OFFICE, local("2026-03-25T18:00"), local("2026-03-26T09:00")),
        ("evening -> next morning", OFFICE, local("2026-03-25T20:00"), local("2026-03-26T09:00")),
        ("early morning -> same morning", OFFICE, local("2026-03-25T06:00"), local("2026-03-25T09:00")),
        ("friday night -> monday", OFFICE, local("2026-03-20T19:00"), local("2026-03-23T09:00")),
        ("saturday -> monday", OFFICE, local("2026-03-21T12:00"), local("2026-03-23T09:00")),
        # Spring forward: Friday 19:00 CET (18:00 UTC) waits for Monday 09:00 CEST (07:00 UTC).
        ("weekend over spring DST", OFFICE, utc("2026-03-27T18:00"), utc("2026-03-30T07:00")),
        ("DST day itself (spring)", OFFICE_EVERY_DAY, utc("2026-03-28T18:00"), utc("2026-03-29T07:00")),
        # Fall back: Saturday 19:00 CEST (17:00 UTC) waits for Sunday 09:00 CET (08:00 UTC).
        ("DST day itself (fall)", OFFICE_EVERY_DAY, utc("2026-10-24T17:00"), utc("2026-10-25T08:00")),
        ("weekend over fall DST", OFFICE, utc("2026-10-23T17:00"), utc("2026-10-26T08:00")),
        # The same instant for a signer in Tokyo: 16:00 JST is working time, 19:00 JST is not.
        ("tokyo afternoon", TOKYO_OFFICE, utc("2026-03-30T07:00"), utc("2026-03-30T07:00")),
        ("tokyo evening", TOKYO_OFFICE, utc("2026-03-30T10:00"), utc("2026-03-31T00:00")),
        ("tokyo friday evening", TOKYO_OFFICE, utc("2026-10-23T10:00"), utc("2026-10-26T00:00")),
        ("no hours: any time", WorkingTime(zone=MADRID), utc("2026-03-29T01:30"), utc("2026-03-29T01:30")),
        (
            "no hours, quiet weekend",
            WorkingTime(zone=MADRID, quiet_days=WEEKDAYS),
            local("2026-03-21T12:00"),
            local("2026-03-23T00:00"),
        ),
        (
            "night shift, inside",
            WorkingTime(zone=MADRID, hours=(22 * 60, 30 * 60)),
            local("2026-03-25T03:00"),
            local("2026-03-25T03:00"),
        ),
        (
            "night shift, noon",
            WorkingTime(zone=MADRID, hours=(22 * 60, 30 * 60)),
            local("2026-03-25T12:00"),
            local("2026-03-25T22:00"),
        ),
        # 02:30 does not exist on 29 Mar in Madrid: the shift starts when the clock shows 03:30.
        (
            "start inside the spring gap",
            WorkingTime(zone=MADRID, hours=(150, 300)),
            utc("2026-03-29T00:00"),
            utc("2026-03-29T01:30"),
        ),
    ],
)
def test_next_working_instant(label: str, working: WorkingTime, at: datetime, expected: datetime) -> None:
    assert next_working_instant(working, at) == expected, label


@pytest.mark.parametrize(
    ("working", "at", "expected"),
    [
        (OFFICE, local("2026-03-25T07:00"), local("2026-03-25T09:00")),
        (OFFICE, local("2026-03-25T10:00"), local("2026-03-26T09:00")),  # already working: tomorrow's
        (OFFICE, local("2026-03-27T10:00"), utc("2026-03-30T07:00")),  # Friday -> Monday, after spring DST
        (TOKYO_OFFICE, utc("2026-03-27T10:00"), utc("2026-03-30T00:00")),
        (WorkingTime(zone=MADRID), local("2026-03-25T10:00"), local("2026-03-26T09:00")),  # default 09:00
    ],
)
def test_next_working_morning(working: WorkingTime, at: datetime, expected: datetime) -> None:
    assert next_working_morning(working, at) == expected


def test_snooze_choices() -> None:
    now = local("2026-03-27T10:00")  # a Friday
    assert snooze_until("1h", OFFICE, now) == now + H
    assert snooze_until("4h", OFFICE, now) == now + 4 * H
    assert snooze_until("morning", OFFICE, now) == local("2026-03-30T09:00")


# --- reminders and escalation ---------------------------------------------------------------------------

EVERY_2H = ReminderRules(every=2 * H, max=3)
OPENED = local("2026-03-25T10:00")  # a Wednesday


@pytest.mark.parametrize(
    ("label", "rules", "working", "facts", "expected"),
    [
        ("first at once", EVERY_2H, OFFICE, {"sent": 0}, (1, OPENED)),
        (
            "first_after delays the first",
            ReminderRules(every=2 * H, first_after=30 * timedelta(minutes=1)),
            OFFICE,
            {"sent": 0},
            (1, OPENED + timedelta(minutes=30)),
        ),
        ("every after the last", EVERY_2H, OFFICE, {"sent": 1, "last_sent_at": OPENED}, (2, OPENED + 2 * H)),
        (
            "due at night waits for the morning",
            EVERY_2H,
            OFFICE,
            {"sent": 2, "last_sent_at": local("2026-03-25T17:00")},
            (3, local("2026-03-26T09:00")),
        ),
        ("max reached", EVERY_2H, OFFICE, {"sent": 3, "last_sent_at": OPENED}, None),
        (
            "snoozed later than due",
            EVERY_2H,
            OFFICE,
            {"sent": 1, "last_sent_at": OPENED, "snoozed_until": OPENED + 5 * H},
            (2, OPENED + 5 * H),
        ),
        (
            "snoozed earlier than due",
            EVERY_2H,
            OFFICE,
            {"sent": 1, "last_sent_at": OPENED, "snoozed_until": OPENED + H},
            (2, OPENED + 2 * H),
        ),
        (
            "snooze ending at night",
            EVERY_2H,
            OFFICE,
            {"sent": 1, "last_sent_at": OPENED, "snoozed_until": local("2026-03-25T23:00")},
            (2, local("2026-03-26T09:00")),
        ),
        # One set of facts, two signers: Madrid 11:00 CEST is fine, Tokyo 18:00 JST is after hours.
        (
            "madrid signer before the fall DST weekend",
            EVERY_2H,
            OFFICE,
            {"sent": 1, "last_sent_at": utc("2026-10-23T07:00")},
            (2, utc("2026-10-23T09:00")),
        ),
        (
            "tokyo signer, same facts",
            EVERY_2H,
            TOKYO_OFFICE,
            {"sent": 1, "last_sent_at": utc("2026-10-23T07:00")},
            (2, utc("2026-10-26T00:00")),
        ),
        (
            "madrid friday evening -> monday 09:00 CET (after fall back)",
            EVERY_2H,
            OFFICE,
            {"sent": 1, "last_sent_at": utc("2026-10-23T15:30")},
            (2, utc("2026-10-26T08:00")),
        ),
        (
            "madrid friday evening -> monday 09:00 CEST (after spring forward)",
            EVERY_2H,
            OFFICE,
            {"sent": 1, "last_sent_at": utc("2026-03-27T16:30")},
            (2, utc("2026-03-30T07:00")),
        ),
        (
            "tokyo across madrid's spring DST: unaffected",
            EVERY_2H,
            TOKYO_OFFICE,
            {"sent": 1, "last_sent_at": utc("2026-03-29T23:00")},
            (2, utc("2026-03-30T01:00")),
        ),
    ],
)
def test_next_reminder(
    label: str,
    rules: ReminderRules,
    working: WorkingTime,
    facts: dict[str, object],
    expected: tuple[int, datetime] | None,
) -> None:
    due = next_reminder(rules, working, waiting_since=OPENED, **facts)  # type: ignore[arg-type]
    assert (None if due is None else (due.number, due.at)) == expected, label


def test_reminders_over_many_slots_never_repeat_and_stop_at_max() -> None:
    """Driving the function as a scheduler would: send when due, record, ask again."""
    rules = ReminderRules(every=3 * H, max=10)
    sent, last, times = 0, None, []
    now = OPENED
    while (due := next_reminder(rules, OFFICE, waiting_since=OPENED, sent=sent, last_sent_at=last)) is not None:
        assert due.at >= now and due.number == sent + 1
        now, sent, last = due.at, due.number, due.at
        times.append(now.astimezone(MADRID))
    assert len(times) == 10
    assert all(t.weekday() < 5 and 9 <= t.hour < 18 for t in times)
    assert len(set(times)) == 10


@pytest.mark.parametrize(
    ("label", "kwargs", "expected"),
    [
        ("not configured", {"escalate_after": None, "unanswered": 9}, None),
        ("not yet", {"escalate_after": 3, "unanswered": 2}, None),
        ("first, at the threshold", {"escalate_after": 3, "unanswered": 3}, (1, OPENED)),
        (
            "again a day later",
            {"escalate_after": 3, "unanswered": 4, "sent": 1, "last_sent_at": OPENED + H},
            (2, OPENED + 25 * H),
        ),
        (
            "a day later is a saturday: monday morning",
            {
                "escalate_after": 3,
                "unanswered": 5,
                "sent": 1,
                "last_sent_at": local("2026-03-27T10:00"),
                "working": OFFICE,
            },
            (2, utc("2026-03-30T07:00")),
        ),
    ],
)
def test_next_escalation(label: str, kwargs: dict[str, object], expected: tuple[int, datetime] | None) -> None:
    kwargs.setdefault("sent", 0)
    escalate_after = kwargs.pop("escalate_after")
    due = next_escalation(escalate_after, threshold_reached_at=OPENED, **kwargs)  # type: ignore[arg-type]
    assert (None if due is None else (due.number, due.at)) == expected, label


# --- deploy windows --------------------------------------------------------------------------------------

HOLIDAY = FreezePeriod(start=date(2026, 12, 20), end=date(2027, 1, 4), reason="holiday freeze")
RULES = WindowRules(zone=MADRID, allow=(parse_window("mon-thu 09:00-16:00"),), freezes=(HOLIDAY,))


@pytest.mark.parametrize(
    ("label", "at", "state", "text"),
    [
        ("inside a window", "2026-12-10T10:00", "open", "deploy window open until Thu 10 Dec 16:00 CET"),
        ("window end is exclusive", "2026-12-10T16:00", "outside", "until Mon 14 Dec 09:00 CET"),
        (
            "friday",
            "2026-12-11T10:00",
            "outside",
            "outside the deploy windows (mon-thu 09:00-16:00) until Mon 14 Dec 09:00 CET",
        ),
        ("freeze starts at midnight", "2026-12-20T00:00", "frozen", "holiday freeze until Mon 4 Jan 09:00 CET"),
        ("inside the freeze", "2026-12-21T10:00", "frozen", "holiday freeze until Mon 4 Jan 09:00 CET"),
        ("new year's eve", "2026-12-31T23:30", "frozen", "holiday freeze until Mon 4 Jan 09:00 CET"),
        ("new year's day", "2027-01-01T10:00", "frozen", "holiday freeze until Mon 4 Jan 09:00 CET"),
        ("freeze over, window not yet open", "2027-01-04T00:00", "outside", "until Mon 4 Jan 09:00 CET"),
        ("first window after the freeze", "2027-01-04T09:00", "open", "until Mon 4 Jan 16:00 CET"),
        ("spring DST monday", "2026-03-30T09:00", "open", "until Mon 30 Mar 16:00 CEST"),
        ("before fall DST", "2026-10-23T10:00", "outside", "until Mon 26 Oct 09:00 CET"),
    ],
)
def test_window_status(label: str, at: str, state: str, text: str) -> None:
    status = window_status(RULES, local(at))
    assert status.state == state, label
    assert text in status.describe(), (label, status.describe())
    assert status.open is (state == "open")


def test_window_reopening_instants_are_exact() -> None:
    frozen = window_status(RULES, local("2026-12-24T12:00"))
    assert frozen.opens_at == utc("2027-01-04T08:00") and frozen.freeze_reason == "holiday freeze"
    opened = window_status(RULES, local("2026-03-30T09:30"))
    assert opened.closes_at == utc("2026-03-30T14:00")  # 16:00 CEST


def test_windows_without_allow_are_open_except_freezes() -> None:
    rules = WindowRules(zone=MADRID, freezes=(HOLIDAY,))
    status = window_status(rules, local("2026-12-01T03:00"))
    assert status.open and status.closes_at == local("2026-12-20T00:00")
    assert window_status(rules, local("2026-12-25T03:00")).describe() == "holiday freeze until Mon 4 Jan 00:00 CET"
    assert window_status(WindowRules(zone=MADRID), local("2026-12-25T03:00")).describe() == "deploy window open"


def test_a_freeze_longer_than_the_horizon_says_so() -> None:
    rules = WindowRules(zone=MADRID, freezes=(FreezePeriod(date(2026, 1, 1), date(2030, 1, 1), "migration"),))
    status = window_status(rules, local("2026-06-01T10:00"))
    assert status.state == "frozen" and status.opens_at is None
    assert status.describe() == "migration: no deploy window in the next 400 days"


def test_freeze_with_local_times_and_overnight_windows() -> None:
    rules = WindowRules(
        zone=MADRID,
        allow=(parse_window("fri 22:00-02:00"),),
        freezes=(FreezePeriod(datetime(2026, 11, 27, 23, 0), datetime(2026, 11, 28, 1, 0), "black friday"),),
    )
    assert window_status(rules, local("2026-11-20T23:00")).describe() == "deploy window open until Sat 21 Nov 02:00 CET"
    status = window_status(rules, local("2026-11-28T00:30"))
    assert status.describe() == "black friday until Sat 28 Nov 01:00 CET"  # the rest of the window is open


@pytest.mark.parametrize(
    ("day", "hours"),
    [
        (date(2026, 3, 29), 1),  # 02:00-04:00 on the spring-forward night is one hour long
        (date(2026, 10, 25), 3),  # and three on the fall-back night
        (date(2026, 6, 7), 2),
    ],
)
def test_windows_over_dst_nights(day: date, hours: int) -> None:
    rules = WindowRules(zone=MADRID, allow=(parse_window("sun 02:00-04:00"),))
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC) - timedelta(hours=3)
    (period,) = open_periods(rules, start, start + timedelta(days=1))
    assert period.end - period.start == timedelta(hours=hours)


def test_calendar_across_the_new_year() -> None:
    start = local("2026-12-17T12:00")  # a Thursday
    periods = calendar(RULES, start, start + timedelta(days=21))
    summary = [(p.kind, p.start.astimezone(MADRID).strftime("%a %d %b %H:%M"), p.reason) for p in periods]
    assert summary == [
        ("open", "Thu 17 Dec 12:00", None),
        ("frozen", "Sun 20 Dec 00:00", "holiday freeze"),
        ("open", "Mon 04 Jan 09:00", None),
        ("open", "Tue 05 Jan 09:00", None),
        ("open", "Wed 06 Jan 09:00", None),
        ("open", "Thu 07 Jan 09:00", None),  # cut at the range's end, 12:00
    ]
    assert periods[1].end == local("2027-01-04T00:00")
    assert periods[-1].end == local("2027-01-07T12:00")
    assert all(p.end <= start + timedelta(days=21) for p in periods)


def test_whole_day_windows_merge_into_one_period() -> None:
    rules = WindowRules(zone=MADRID, allow=(parse_window("mon-fri"),))
    (period,) = open_periods(rules, local("2026-03-23T00:00"), local("2026-03-28T12:00"))
    assert (period.start, period.end) == (local("2026-03-23T00:00"), local("2026-03-28T00:00"))


def test_outlook_has_the_status_and_the_periods() -> None:
    view = outlook(RULES, local("2026-12-21T10:00"), timedelta(days=30))
    assert view.now.state == "frozen" and view.end - view.start == timedelta(days=30)
    assert [p.kind for p in view.periods][:2] == ["frozen", "open"]


def test_freeze_edges_are_announced_once_each() -> None:
    inner = FreezePeriod(date(2026, 12, 24), date(2026, 12, 27), "christmas")
    follow_up = FreezePeriod(date(2027, 1, 4), date(2027, 1, 6), "inventory")
    rules = WindowRules(zone=MADRID, freezes=(HOLIDAY, inner, follow_up))
    edges = freeze_edges(rules, after=local("2026-12-01T00:00"), until=local("2027-02-01T00:00"))
    assert [(e.kind, e.freeze.reason, e.at) for e in edges] == [
        ("start", "holiday freeze", local("2026-12-20T00:00")),
        # christmas starts and ends inside the holiday freeze: nothing changes for deployers
        # the holiday freeze ends where inventory begins: one announcement, inventory's start
        ("start", "inventory", local("2027-01-04T00:00")),
        ("end", "inventory", local("2027-01-06T00:00")),
    ]
    assert len({e.key for e in edges}) == 3
    # (after, until]: a scheduler tick that already covered an edge does not see it again.
    assert freeze_edges(rules, after=local("2026-12-20T00:00"), until=local("2027-01-05T00:00"))[0].kind == "start"
    assert freeze_edges(rules, after=local("2027-01-04T00:00"), until=local("2027-01-05T00:00")) == []


# --- pre-launch posts, re-checks, post-deploy runs ---------------------------------------------------------

TARGET = utc("2026-12-01T10:00")


def test_prelaunch_posts_default_to_24h_and_1h_before() -> None:
    assert [p.at for p in prelaunch_posts(TARGET)] == [TARGET - 24 * H, TARGET - H]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (TARGET - 30 * H, None),
        (TARGET - 24 * H, 24 * H),
        (TARGET - 5 * H, 24 * H),
        (TARGET - H, H),
        (TARGET - timedelta(minutes=10), H),  # opened (or restarted) late: one post, the latest
        (TARGET, None),
        (TARGET + H, None),
    ],
)
def test_prelaunch_due(now: datetime, expected: timedelta | None) -> None:
    due = prelaunch_due(TARGET, now)
    assert (due.before if due else None) == expected


def test_recheck_slots_are_the_same_on_every_replica() -> None:
    opened = utc("2026-12-01T10:00")
    series = recheck_series(opened, timedelta(minutes=15))
    assert series.current(opened + timedelta(minutes=14)) is None
    first = series.current(opened + timedelta(minutes=15))
    assert first is not None and (first.number, first.at) == (1, opened + timedelta(minutes=15))
    late = series.current(opened + timedelta(minutes=47))
    assert late is not None and late.number == 3  # missed slots are skipped, not replayed
    following = series.following(opened + timedelta(minutes=47))
    assert following is not None and (following.number, following.at) == (4, opened + H)


def test_postdeploy_series_has_48_runs_in_4h() -> None:
    start = utc("2026-12-01T10:00")
    series = postdeploy_series(start, timedelta(minutes=5), 4 * H)
    assert series.total == 48
    last = series.current(start + 5 * H)
    assert last is not None and (last.number, last.at) == (48, start + 4 * H)
    assert series.following(start + 4 * H) is None
    nxt = series.following(start)
    assert nxt is not None and nxt.number == 1
