"""`/gonogo history`: the audit trail, one line an entry, newest last, paged past 40 entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.slack.blocks import Message
from bot.slack.history import PAGE_SIZE, Page, describe, entry_line, paginate, render_history
from bot.store.store import AuditEntry
from tests.blockkit import all_text, assert_valid

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RID = "payments@1.4.0"


def entry(type_: str, data: dict[str, Any] | None = None, actor: str = "U01TECH", at: datetime = NOW) -> AuditEntry:
    return AuditEntry(id=f"{int(at.timestamp() * 1000)}-0", type=type_, actor=actor, at=at, data=data or {})


def trail(count: int) -> list[AuditEntry]:
    """`count` entries a minute apart, oldest first, each numbered #001, #002, ... in its reason."""
    start = NOW - timedelta(minutes=count)
    return [entry("closed", {"reason": f"#{i + 1:03d}"}, at=start + timedelta(minutes=i)) for i in range(count)]


def entry_lines(message: Message) -> list[str]:
    return [line for line in all_text(message).splitlines() if " UTC · " in line]


# --- paging -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "page", "expected"),
    [
        # total, asked, (number, pages, start, stop) -- or None: "there is no such page"
        (0, None, None),
        (0, 1, None),
        (1, None, (1, 1, 0, 1)),
        (1, 1, (1, 1, 0, 1)),
        (40, None, (1, 1, 0, 40)),
        (41, None, (2, 2, 1, 41)),  # the newest 40; page 1 holds the single oldest entry
        (41, 1, (1, 2, 0, 1)),
        (80, None, (2, 2, 40, 80)),
        (80, 1, (1, 2, 0, 40)),
        (95, None, (3, 3, 55, 95)),
        (95, 2, (2, 3, 15, 55)),
        (95, 1, (1, 3, 0, 15)),
        (95, 0, None),
        (95, 4, None),
        (95, -1, None),
    ],
)
def test_paginate(total: int, page: int | None, expected: tuple[int, int, int, int] | None) -> None:
    shown = paginate(total, page)
    if expected is None:
        assert shown is None
        return
    assert shown == Page(*expected, total=total)
    assert shown.stop - shown.start <= PAGE_SIZE


def test_pages_cover_every_entry_once() -> None:
    for total in (1, 39, 40, 41, 79, 80, 81, 95, 400):
        last = paginate(total, None)
        assert last is not None
        covered: list[int] = []
        for number in range(1, last.pages + 1):
            shown = paginate(total, number)
            assert shown is not None
            covered += range(shown.start, shown.stop)
        assert covered == list(range(total))


@pytest.mark.parametrize(
    ("total", "page", "navigation"),
    [
        (1, None, "Showing 1–1 of 1"),
        (40, None, "Showing 1–40 of 40"),
        (80, None, "Showing 41–80 of 80 · page 2 of 2 · older: `/gonogo history payments@1.4.0 --page 1`"),
        (80, 1, "Showing 1–40 of 80 · page 1 of 2 · newer: `/gonogo history payments@1.4.0 --page 2`"),
        (
            95,
            2,
            "Showing 16–55 of 95 · page 2 of 3 · older: `/gonogo history payments@1.4.0 --page 1`"
            " · newer: `/gonogo history payments@1.4.0 --page 3`",
        ),
    ],
)
def test_navigation_line(total: int, page: int | None, navigation: str) -> None:
    message = render_history(RID, trail(total), page=page, now=NOW)
    assert_valid(message, text_limit=3000)
    assert message.blocks[0]["text"]["text"] == f"*History of {RID}* · {navigation}"


@pytest.mark.parametrize("total", [0, 1, 40, 41, 80, 95])
def test_default_page_shows_the_newest_entries_newest_last(total: int) -> None:
    message = render_history(RID, trail(total), now=NOW)
    assert_valid(message, text_limit=3000)
    lines = entry_lines(message)
    numbers = [int(line.rsplit("#", 1)[1].rstrip("”")) for line in lines]
    assert numbers == list(range(max(1, total - PAGE_SIZE + 1), total + 1))  # the newest, newest last
    if total:
        assert lines[-1].startswith((NOW - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M UTC · closed by"))


@pytest.mark.parametrize(("page", "first", "last"), [(1, 1, 15), (2, 16, 55), (3, 56, 95)])
def test_an_older_page_shows_its_slice(page: int, first: int, last: int) -> None:
    lines = entry_lines(render_history(RID, trail(95), page=page, now=NOW))
    assert [int(line.rsplit("#", 1)[1].rstrip("”")) for line in lines] == list(range(first, last + 1))


def test_no_history_yet() -> None:
    message = render_history(RID, [], now=NOW)
    assert_valid(message, text_limit=3000)
    assert "Nothing recorded yet." in all_text(message)
    assert message.text == f"No history for {RID} yet"


@pytest.mark.parametrize(("page", "valid"), [(4, "pages 1–3"), (0, "pages 1–3"), (-2, "pages 1–3")])
def test_a_page_out_of_range_says_which_pages_exist(page: int, valid: str) -> None:
    message = render_history(RID, trail(95), page=page, now=NOW)
    assert_valid(message, text_limit=3000)
    text = all_text(message)
    assert f"There is no page {page}: 95 entries make {valid}" in text
    assert "Try `/gonogo history payments@1.4.0 --page 3`" in text
    assert entry_lines(message) == []


def test_a_page_out_of_range_of_a_single_page() -> None:
    text = all_text(render_history(RID, trail(3), page=2, now=NOW))
    assert "There is no page 2: 3 entries make page 1" in text


def test_a_full_page_of_long_entries_fits_slack() -> None:
    long = "x" * 2000
    entries = [entry("signed", {"role": "sre", "vote": "approve", "comment": long}) for _ in range(95)]
    entries += [entry("mystery", {"blob": long * 3}) for _ in range(5)]
    message = render_history(RID, entries, now=NOW)
    assert_valid(message, text_limit=3000)
    assert len(entry_lines(message)) == PAGE_SIZE


# --- one entry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "data", "described"),
    [
        ("opened", {"sha": "abc1234def", "gate_sha256": "f" * 64}, "opened by <@U01TECH> (sha `abc1234`)"),
        ("opened", {"sha": None}, "opened by <@U01TECH> (no commit)"),
        (
            "sha_moved",
            {"from": "abc1234def", "to": "def5678abc"},
            "commit moved from `abc1234` to `def5678` by <@U01TECH>",
        ),
        (
            "run",
            {
                "run_id": "r1",
                "checks": ["a", "b", "c"],
                "verdict": "NO-GO",
                "counts": {"fail": 1, "pass": 2},
                "duration_s": 12.34,
            },
            "run by <@U01TECH>: 3 check(s) in 12.3 s → 🔴 NO-GO (2 pass, 1 fail)",
        ),
        (
            "signed",
            {"role": "sre", "label": "SRE Lead", "vote": "approve", "comment": "lgtm"},
            "<@U01TECH> ✅ approved as *SRE Lead*: “lgtm”",
        ),
        ("signed", {"role": "security", "vote": "reject"}, "<@U01TECH> ❌ rejected as `security`"),
        ("withdrawn", {"role": "sre"}, "<@U01TECH> withdrew their `sre` sign-off"),
        (
            "signoff_refused",
            {"role": "sre", "action": "approve the override as SRE Lead"},
            "🚫 refused <@U01TECH>: approve the override as SRE Lead (role `sre`)",
        ),
        (
            "refused",
            {"role": "tech-lead", "action": "self-approval", "reason": "the gate forbids it"},
            "🚫 refused <@U01TECH>: self-approval (role `tech-lead`): the gate forbids it",
        ),
        (
            "signoff_stale",
            {"role": "sre", "user": "U02SRE", "reason": "blocker results changed since signing"},
            "🕰️ <@U02SRE>'s `sre` sign-off went stale: blocker results changed since signing",
        ),
        (
            "manual_done",
            {"check": "pen-test", "evidence": "https://jira.example.com/SEC-12"},
            "<@U01TECH> marked manual check `pen-test` done with evidence https://jira.example.com/SEC-12",
        ),
        (
            "manual_reopened",
            {"check": "pen-test", "evidence": "https://x/1", "reason": "wrong ticket"},
            "<@U01TECH> reopened manual check `pen-test` (evidence was https://x/1): “wrong ticket”",
        ),
        (
            "risk_accepted",
            {"risk": "async-latency", "reason": "canary first", "expires_at": None},
            "🟡 <@U01TECH> accepted risk `async-latency`: “canary first”",
        ),
        (
            "risk_accepted",
            {
                "risk_id": "async-latency",
                "role": "tech-lead",
                "reason": "canary first",
                "expires_at": "2026-11-29T12:00:00+00:00",
            },
            "🟡 <@U01TECH> accepted risk `async-latency` as `tech-lead` until 2026-11-29 12:00 UTC: “canary first”",
        ),
        (
            "override_requested",
            {"reason": "hotfix", "sha": "abc1234def"},
            "🟠 <@U01TECH> requested an override for `abc1234`: “hotfix”",
        ),
        ("override_approved", {"role": "sre"}, "<@U01TECH> approved the override as `sre`"),
        (
            "override_active",
            {"expires_at": "2026-11-23T11:00:00+00:00"},
            "🟠 override active until 2026-11-23 11:00 UTC",
        ),
        (
            "override_active",
            {"id": "o1", "approvers": ["U01TECH", "U02SRE"], "failing": ["Security rejected by {@U03SEC}: <!here>"]},
            "🟠 override active, approved by <@U01TECH>, <@U02SRE> · overriding: Security rejected by <@U03SEC>:"
            " &lt;!here&gt;",
        ),
        ("override_expired", {}, "override expired"),
        (
            "decided",
            {"verdict": "GO WITH RISK", "checks_passed": 7, "checks_total": 7},
            "decided by <@U01TECH>: 🟡 GO WITH RISK (7/7 checks pass)",
        ),
        ("closed", {"reason": "shipped"}, "closed by <@U01TECH>: “shipped”"),
        ("closed", {}, "closed by <@U01TECH>"),
        ("reopened", {}, "reopened by <@U01TECH>"),
        (
            "evidence_uploaded",
            {"file": "payments@1.4.0-evidence.md", "verdict": "NO-GO"},
            "📎 `payments@1.4.0-evidence.md` (🔴 NO-GO) uploaded by <@U01TECH>",
        ),
        ("brand_new_thing", {"b": 2, "a": "x"}, '`brand_new_thing` by <@U01TECH>: {"a": "x", "b": 2}'),
        ("brand_new_thing", {}, "`brand_new_thing` by <@U01TECH>"),
    ],
)
def test_describe(type_: str, data: dict[str, Any], described: str) -> None:
    assert describe(entry(type_, data)) == described


def test_describe_names_cli_and_ci_actors_without_a_mention() -> None:
    assert describe(entry("opened", {"sha": "abc1234"}, actor="ci")) == "opened by ci (sha `abc1234`)"


def test_malformed_data_falls_back_to_the_generic_line() -> None:
    assert describe(entry("run", {"checks": 3, "duration_s": "soon", "counts": [1]})).startswith("run by <@U01TECH>")
    assert describe(entry("signoff_stale", {"user": None})).startswith("🕰️ a `?` sign-off went stale")


def test_entry_line_has_the_utc_time_first() -> None:
    paris_noon = datetime.fromisoformat("2026-11-22T13:00:00+01:00")
    line = entry_line(entry("opened", {"sha": "abc1234def"}, actor="U01", at=paris_noon))
    assert line == "2026-11-22 12:00 UTC · opened by <@U01> (sha `abc1234`)"


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("signed", {"role": "sre", "vote": "approve", "comment": "<!channel> ship it & go"}),
        ("closed", {"reason": "<!channel> ship it & go"}),
        ("manual_done", {"check": "pen-test", "evidence": "<!channel> ship it & go"}),
        ("risk_accepted", {"risk_id": "r", "role": "sre", "reason": "<!channel> ship it & go"}),
        ("override_requested", {"reason": "<!channel> ship it & go"}),
        ("signoff_refused", {"role": "sre", "reason": "<!channel> ship it & go"}),
        ("refused", {"role": "sre", "action": "<!channel> ship it & go"}),
        ("override_active", {"failing": ["<!channel> ship it & go"]}),
        ("whatever", {"note": "<!channel> ship it & go"}),
    ],
)
def test_user_text_is_escaped(type_: str, data: dict[str, Any]) -> None:
    message = render_history(RID, [entry(type_, data)], now=NOW)
    assert_valid(message, text_limit=3000)
    text = all_text(message)
    assert "<!channel>" not in text
    assert "&lt;!channel&gt; ship it &amp; go" in text


def test_every_known_type_renders_in_one_valid_message() -> None:
    types = [
        "opened",
        "sha_moved",
        "run",
        "signed",
        "withdrawn",
        "signoff_refused",
        "refused",
        "signoff_stale",
        "manual_done",
        "manual_reopened",
        "risk_accepted",
        "override_requested",
        "override_approved",
        "override_active",
        "override_expired",
        "decided",
        "closed",
        "reopened",
        "evidence_uploaded",
    ]
    entries = [entry(t, {}, at=NOW + timedelta(minutes=i)) for i, t in enumerate(types)]
    message = render_history(RID, entries, now=NOW)
    assert_valid(message, text_limit=3000)
    assert len(entry_lines(message)) == len(types)
    assert message.text == f"History of {RID}: entries 1–{len(types)} of {len(types)}"
