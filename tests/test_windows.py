"""Deploy windows and the scheduling keys of a gate: validation, the decision, the card, the CLI,
and `/gonogo decide` on the real bot inside a freeze."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

from bot.cli import main
from bot.core.decision import DecisionInput, Level, Verdict, decide
from bot.core.errors import ConfigError
from bot.core.facts import OverrideApproval, OverrideRequest, Signature, Vote
from bot.core.gate import Gate
from bot.core.loader import load_gate, load_gates
from bot.core.release import Release
from bot.core.results import CheckResult, Status
from bot.core.timeplan import format_instant
from bot.playground.standin import SlackStandIn
from bot.slack.blocks import ACTION_APPROVE
from bot.slack.card import CardView, card_text, render_card
from bot.store import keys
from tests.blockkit import all_text, assert_valid
from tests.bot_harness import CHANNEL, RunningBot, bot_settings, reply_to, write_gate

CONTRACT = Path(__file__).parent / "data" / "contract.yml"
MADRID_WINDOWS = {
    "allow": ["mon-thu 09:00-16:00"],
    "freeze": [{"from": "2026-12-20", "to": "2027-01-04", "reason": "holiday freeze"}],
    "timezone": "Europe/Madrid",
}
IN_WINDOW = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)  # Thu 10:00 CET
FRIDAY = datetime(2026, 12, 11, 9, 0, tzinfo=UTC)
IN_FREEZE = datetime(2026, 12, 21, 9, 0, tzinfo=UTC)


def make_gate(**extra: Any) -> Gate:
    doc: dict[str, Any] = {
        "id": "payments",
        "name": "Payments",
        "channel": "C1",
        "checks": [{"id": "tests", "kind": "command", "run": ["pytest"], "severity": "blocker"}],
        "signoffs": [{"role": "cto", "users": ["UCTO", "UCTO2"]}, {"role": "sre", "users": ["U3", "U4"]}],
    }
    doc.update(extra)
    return Gate.model_validate(doc)


def green(at: datetime) -> dict[str, CheckResult]:
    return {"tests": CheckResult(check_id="tests", status=Status.PASS, summary="ok", started_at=at, finished_at=at)}


def signed(at: datetime) -> tuple[Signature, ...]:
    return (
        Signature(role="cto", user="UCTO", vote=Vote.APPROVE, at=at),
        Signature(role="sre", user="U3", vote=Vote.APPROVE, at=at),
    )


# --- gate keys ---------------------------------------------------------------------------------------


def test_the_contract_has_the_scheduling_keys() -> None:
    gate = load_gate(CONTRACT).gate
    assert gate.reminders is not None
    assert gate.reminders.first_after == timedelta(minutes=30) and gate.reminders.max == 10
    assert gate.reminders.quiet_days == ["sat", "sun"]
    working = gate.reminders.working_time()
    assert working.zone.key == "Europe/Madrid" and working.hours == (540, 1080) and working.quiet_days == {5, 6}
    assert gate.windows is not None
    rules = gate.windows.rules()
    assert [s.text for s in rules.allow] == ["mon-thu 09:00-16:00", "fri 09:00-12:00"]
    assert rules.freezes[0].start == date(2026, 12, 20) and rules.freezes[0].reason == "holiday freeze"
    assert gate.recheck is not None and gate.recheck.every == timedelta(minutes=15) and gate.recheck.until == "decided"
    assert gate.postdeploy is not None and gate.postdeploy.duration == timedelta(hours=4)
    assert gate.postdeploy.checks == ["health", "p95-latency"]
    assert gate.prelaunch_offsets == [timedelta(hours=24), timedelta(hours=1)]
    dumped = gate.model_dump(mode="json", by_alias=True)
    assert dumped["windows"]["freeze"][0] == {"from": "2026-12-20", "to": "2027-01-04", "reason": "holiday freeze"}
    assert dumped["postdeploy"]["for"] == "4h"


def test_scheduling_defaults() -> None:
    gate = make_gate(reminders={})
    assert gate.reminders is not None
    rules = gate.reminders.rules()
    assert (rules.every, rules.first_after, rules.max, rules.escalate_after) == (
        timedelta(hours=2),
        timedelta(0),
        10,
        None,
    )
    assert gate.windows is None and gate.recheck is None and gate.postdeploy is None
    assert gate.prelaunch_offsets == [timedelta(hours=24), timedelta(hours=1)]  # no prelaunch block: the default
    assert make_gate(prelaunch={"before": ["30m", "2d"]}).prelaunch_offsets == [
        timedelta(days=2),
        timedelta(minutes=30),
    ]
    assert make_gate(prelaunch={"before": []}).prelaunch_offsets == []
    assert make_gate(windows={}).window_at(IN_FREEZE) is not None  # windows: {} allows any time
    assert make_gate().window_at(IN_FREEZE) is None


def test_a_person_works_in_their_own_zone_or_the_gates() -> None:
    reminders = make_gate(reminders={"timezone": "Europe/Madrid", "working_hours": "09:00-18:00"}).reminders
    assert reminders is not None
    assert reminders.working_time("Asia/Tokyo").zone.key == "Asia/Tokyo"
    assert reminders.working_time("Mars/Olympus").zone.key == "Europe/Madrid"  # Slack said something odd
    assert reminders.working_time(None).zone.key == "Europe/Madrid"


HEAD = """\
id: payments
name: Payments
channel: C1
checks:
  - {id: health, kind: tcp, host: h, port: 1}
signoffs:
  - {role: sre, users: [U1]}
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("windows:\n  allow: ['mon-thu 9-16']\n", "payments.yml:9: windows.allow[0]: expected HH:MM-HH:MM"),
        ("windows:\n  allow: ['mon-thu 09:00-16:00', 'funday 09:00-10:00']\n", "windows.allow[1]: unknown day"),
        ("windows:\n  timezone: Mars/Olympus\n", "windows.timezone: unknown timezone 'Mars/Olympus'"),
        (
            "windows:\n  freeze:\n    - {from: 2027-01-04, to: 2026-12-20}\n",
            "windows.freeze[0]: to (2026-12-20) must be after from (2027-01-04)",
        ),
        ("windows:\n  freeze:\n    - {from: 2026-12-20}\n", "windows.freeze[0].to: required"),
        (
            "windows:\n  freeze:\n    - {from: 2026-12-20T10:00:00Z, to: 2027-01-04}\n",
            "windows.freeze[0].from: give a local",
        ),
        ("windows:\n  freeze:\n    - {start: 2026-12-20, to: 2027-01-04}\n", "windows.freeze[0].start: unknown key"),
        ("windows:\n  allow: mon-thu\n", "windows.allow: Input should be a valid list"),
        ("reminders: {quiet_days: [saturday]}\n", "reminders.quiet_days[0]: Input should be 'mon'"),
        (
            "reminders: {quiet_days: [mon, tue, wed, thu, fri, sat, sun]}\n",
            "reminders: quiet_days covers the whole week",
        ),
        ("reminders: {max: 0}\n", "reminders.max: Input should be greater than or equal to 1"),
        ("reminders: {every: 10s}\n", "reminders.every: reminders every less than 1m"),
        ("reminders: {escalate_after: 3}\n", "escalate_after and escalate_to go together"),
        ("reminders: {working_hours: '09:00'}\n", "reminders.working_hours: working_hours must look like 09:00-18:00"),
        ("recheck: {every: 10s}\n", "recheck.every: recheck every less than 1m"),
        ("recheck: {until: forever}\n", "recheck.until: Input should be 'decided' or 'closed'"),
        ("postdeploy: {every: 5m, for: 1m, checks: [health]}\n", "postdeploy: for (0:01:00) is shorter than every"),
        ("postdeploy: {checks: []}\n", "postdeploy.checks: List should have at least 1 item"),
        ("prelaunch: {before: [1h, 1h]}\n", "prelaunch.before: offsets must be distinct"),
    ],
)
def test_field_errors_name_the_path(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "payments.yml"
    path.write_text(HEAD + body)
    with pytest.raises(ConfigError) as caught:
        load_gates(path)
    assert any(expected in p for p in caught.value.problems), caught.value.problems


def test_reference_errors(tmp_path: Path) -> None:
    path = tmp_path / "payments.yml"
    path.write_text(
        HEAD
        + "reminders: {escalate_after: 2, escalate_to: directors}\n"
        + "postdeploy: {checks: [health, p95-latency]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_gates(path)
    assert caught.value.problems == [
        "payments.yml: reminders.escalate_to: 'directors' is neither a channel or user id (C…, G…, U…)"
        " nor a role (signoffs define: sre)",
        "payments.yml: postdeploy.checks[1]: unknown check 'p95-latency'",
    ]


@pytest.mark.parametrize("target", ["C0DEPLOYS", "G0PRIVATE", "U05DIRECTOR", "sre"])
def test_escalate_to_a_channel_a_user_or_a_role(target: str) -> None:
    gate = make_gate(reminders={"escalate_after": 2, "escalate_to": target})
    assert gate.reminders is not None and gate.reminders.escalate_to == target


# --- the decision ---------------------------------------------------------------------------------------


def decision_at(gate: Gate, at: datetime, **extra: Any) -> Any:
    return decide(
        DecisionInput(gate=gate, now=at, results=green(at), signatures=signed(at), window=gate.window_at(at), **extra)
    )


@pytest.mark.parametrize(
    ("label", "at", "verdict", "code", "level", "text"),
    [
        (
            "inside a window",
            IN_WINDOW,
            Verdict.GO,
            "window_open",
            Level.INFO,
            "deploy window open until Thu 10 Dec 16:00 CET",
        ),
        (
            "outside every window",
            FRIDAY,
            Verdict.NO_GO,
            "window_closed",
            Level.BLOCKING,
            "outside the deploy windows (mon-thu 09:00-16:00) until Mon 14 Dec 09:00 CET",
        ),
        (
            "inside a freeze",
            IN_FREEZE,
            Verdict.NO_GO,
            "window_frozen",
            Level.BLOCKING,
            "holiday freeze until Mon 4 Jan 09:00 CET",
        ),
    ],
)
def test_windows_decide(label: str, at: datetime, verdict: Verdict, code: str, level: Level, text: str) -> None:
    decision = decision_at(make_gate(windows=MADRID_WINDOWS), at)
    assert decision.verdict is verdict, label
    (reason,) = [r for r in decision.reasons if r.subject == "windows"]
    assert (reason.code, reason.level, reason.text) == (code, level, text)


def test_without_windows_the_decision_is_unchanged() -> None:
    gate = make_gate()
    plain = decide(DecisionInput(gate=gate, now=IN_FREEZE, results=green(IN_FREEZE), signatures=signed(IN_FREEZE)))
    assert decision_at(gate, IN_FREEZE) == plain
    assert plain.verdict is Verdict.GO and not any(r.subject == "windows" for r in plain.reasons)


def test_a_closed_window_caps_every_other_verdict() -> None:
    gate = make_gate(windows=MADRID_WINDOWS)
    at = IN_FREEZE
    failing = {
        "tests": CheckResult(check_id="tests", status=Status.FAIL, summary="1 failed", started_at=at, finished_at=at)
    }
    decision = decide(DecisionInput(gate=gate, now=at, results=failing, window=gate.window_at(at)))
    assert decision.verdict is Verdict.NO_GO
    assert {r.code for r in decision.blocking} == {"blocker_not_passing", "signoff_missing", "window_frozen"}


def test_the_override_passes_a_freeze_and_says_so() -> None:
    gate = make_gate(windows=MADRID_WINDOWS, override={"approvers": {"cto": 1}})
    request = OverrideRequest(
        requested_by="U3",
        reason="payments outage hotfix",
        at=IN_FREEZE,
        approvals=(OverrideApproval(role="cto", user="UCTO", at=IN_FREEZE),),
    )
    decision = decision_at(gate, IN_FREEZE, override=request)
    assert decision.verdict is Verdict.OVERRIDE
    (frozen,) = [r for r in decision.blocking if r.code == "window_frozen"]
    assert frozen.text == "holiday freeze until Mon 4 Jan 09:00 CET (the break-glass override passes this freeze)"
    # Without the override's quorum the freeze holds, and the text does not pretend otherwise.
    pending = request.model_copy(update={"approvals": ()})
    blocked = decision_at(gate, IN_FREEZE, override=pending)
    assert blocked.verdict is Verdict.NO_GO
    assert [r.text for r in blocked.blocking] == ["holiday freeze until Mon 4 Jan 09:00 CET"]


def test_the_card_shows_the_window() -> None:
    gate = make_gate(windows=MADRID_WINDOWS)
    release = Release(
        id="payments@1.4.0",
        gate_id="payments",
        version="1.4.0",
        opened_by="UCTO",
        opened_at=IN_FREEZE - timedelta(hours=1),
    )
    for at, line in (
        (IN_FREEZE, "🔴 holiday freeze until Mon 4 Jan 09:00 CET"),
        (IN_WINDOW, "ℹ️ deploy window open until Thu 10 Dec 16:00 CET"),
    ):
        view = CardView(gate=gate, release=release, decision=decision_at(gate, at), results=green(at), now=at)
        message = render_card(view)
        assert_valid(message)
        assert line in all_text(message)
    frozen = CardView(
        gate=gate, release=release, decision=decision_at(gate, IN_FREEZE), results=green(IN_FREEZE), now=IN_FREEZE
    )
    assert card_text(frozen).startswith("NO-GO: Payments 1.4.0") and "holiday freeze" in card_text(frozen)


# --- the CLI ---------------------------------------------------------------------------------------------

GATE_FILE = """\
id: cli
name: CLI gate
channel: C1
checks:
  - {id: a, kind: command, run: ["python3", "-c", "print('ok')"]}
windows:
  allow: ["mon-thu 09:00-16:00"]
  freeze:
    - {from: 2026-12-20, to: 2027-01-04, reason: holiday freeze}
  timezone: Europe/Madrid
"""


@pytest.fixture
def gate_path(tmp_path: Path) -> Path:
    path = tmp_path / "gate.yml"
    path.write_text(GATE_FILE)
    return path


@pytest.mark.parametrize(
    ("at", "code", "reason"),
    [
        ("2026-12-10T10:00", 0, "deploy window open until Thu 10 Dec 16:00 CET"),  # no offset: Madrid time
        ("2026-12-10T09:00Z", 0, "deploy window open until Thu 10 Dec 16:00 CET"),
        ("2026-12-10T08:30", 1, "outside the deploy windows (mon-thu 09:00-16:00) until Thu 10 Dec 09:00 CET"),
        ("2026-12-11T10:00+01:00", 1, "outside the deploy windows (mon-thu 09:00-16:00) until Mon 14 Dec 09:00 CET"),
        ("2026-12-31T12:00", 1, "holiday freeze until Mon 4 Jan 09:00 CET"),
    ],
)
def test_check_applies_windows_at_a_given_time(
    gate_path: Path, capsys: pytest.CaptureFixture[str], at: str, code: int, reason: str
) -> None:
    capsys.readouterr()
    assert main(["check", str(gate_path), "--json", "--at", at]) == code
    doc = json.loads(capsys.readouterr().out)
    assert [r["text"] for r in doc["reasons"] if r["subject"] == "windows"] == [reason]
    assert doc["decided_at"].startswith(at[:10])  # --at is the decision's clock too


def test_check_rejects_a_bad_at(gate_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(gate_path), "--at", "next tuesday"]) == 2
    assert "--at: expected an ISO time" in capsys.readouterr().err


def test_windows_prints_open_and_frozen_periods(gate_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["windows", str(gate_path), "--next", "30d", "--at", "2026-12-14T12:00"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "cli: deploy windows (mon-thu 09:00-16:00, Europe/Madrid) for 30d from Mon 14 Dec 2026 12:00 CET"
    assert lines[1] == "now: deploy window open until Mon 14 Dec 16:00 CET"
    assert lines[2:] == [
        "open    Mon 14 Dec 12:00 CET – 16:00 CET  (4h)",
        "open    Tue 15 Dec 09:00 CET – 16:00 CET  (7h)",
        "open    Wed 16 Dec 09:00 CET – 16:00 CET  (7h)",
        "open    Thu 17 Dec 09:00 CET – 16:00 CET  (7h)",
        "frozen  Sun 20 Dec 00:00 CET – Mon 4 Jan 00:00 CET  (15d)  holiday freeze",
        "open    Mon 4 Jan 09:00 CET – 16:00 CET  (7h)",
        "open    Tue 5 Jan 09:00 CET – 16:00 CET  (7h)",
        "open    Wed 6 Jan 09:00 CET – 16:00 CET  (7h)",
        "open    Thu 7 Jan 09:00 CET – 16:00 CET  (7h)",
        "open    Mon 11 Jan 09:00 CET – 16:00 CET  (7h)",
        "open    Tue 12 Jan 09:00 CET – 16:00 CET  (7h)",
        "open    Wed 13 Jan 09:00 CET – 12:00 CET  (3h)",  # the 30 days end at 12:00
    ]


def test_windows_json(gate_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["windows", str(gate_path), "--next", "2d", "--at", "2026-12-21T10:00", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gate"] == "cli" and doc["timezone"] == "Europe/Madrid"
    assert doc["now"] == {
        "state": "frozen",
        "open": False,
        "reason": "holiday freeze until Mon 4 Jan 09:00 CET",
        "opens_at": "2027-01-04T09:00:00+01:00",
        "closes_at": None,
    }
    assert doc["periods"] == [
        {
            "kind": "frozen",
            "start": "2026-12-21T10:00:00+01:00",
            "end": "2026-12-23T10:00:00+01:00",
            "reason": "holiday freeze",
        }
    ]


def test_windows_on_a_terminal_is_a_table(
    gate_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich: behave as on a terminal
    monkeypatch.setenv("COLUMNS", "160")
    capsys.readouterr()
    assert main(["windows", str(gate_path), "--next", "7d", "--at", "2026-12-14T12:00"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" in out and "─" in out  # styled and boxed
    assert "Tue 15 Dec 09:00 CET" in out and "now: deploy window open until Mon 14 Dec 16:00 CET" in out


def test_windows_usage_errors_and_gates_without_windows(
    tmp_path: Path, gate_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["windows", str(gate_path), "--next", "2y"]) == 2
    assert main(["windows", str(gate_path), "--next", "400d"]) == 2
    assert "at most 366d" in capsys.readouterr().err
    bare = tmp_path / "bare.yml"
    bare.write_text("id: bare\nname: Bare\nchannel: C1\n")
    assert main(["windows", str(bare)]) == 0
    assert "no windows in bare.yml: deploys are allowed at any time" in capsys.readouterr().out


# --- the bot: the card and /gonogo decide inside a freeze ----------------------------------------------------

RID = "payments@1.4.0"


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


async def test_decide_inside_a_freeze_is_no_go_on_the_card_and_in_the_record(
    standin: SlackStandIn, redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    today = datetime.now(UTC).date()
    gates = tmp_path / "gates"
    write_gate(
        gates,
        textwrap.dedent(
            f"""\
            id: payments
            name: Payments API
            channel: {CHANNEL}
            checks:
              - {{id: unit-tests, kind: command, run: ["python3", "-c", "print('ok')"], severity: blocker}}
            signoffs:
              - {{role: tech-lead, label: Tech Lead, users: [U01TECH]}}
            windows:
              freeze:
                - {{from: {today - timedelta(days=1)}, to: {today + timedelta(days=3)}, reason: "test freeze"}}
            """
        ),
        "payments.yml",
    )
    reopening = f"test freeze until {_day(today + timedelta(days=3))} 00:00 UTC"
    settings = bot_settings(api_url=standin.api_url, redis_url=redis_url, gates=gates, data_dir=tmp_path / "d")
    bot = await RunningBot(settings).start()
    try:
        await bot.command("open payments 1.4.0 abc1234", response_url=standin.new_response_url())
        card = await standin.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL)
        assert reopening in json.dumps(card.args["blocks"], ensure_ascii=False)

        await _say(bot, standin, f"run {RID}")
        # The final card update comes after the run is recorded and its lock released.
        await standin.wait_for("chat.update", lambda c: "last run by" in json.dumps(c.args["blocks"]))
        url = standin.new_response_url()
        await bot.click(ACTION_APPROVE, f"{RID}|tech-lead|abc1234", response_url=url, user="U01TECH")
        assert "You approved" in (await reply_to(standin, url))["text"]

        answer = await _say(bot, standin, f"decide {RID}")
        assert f"{RID} decided: NO-GO" in answer["text"]
        bundle = json.loads(await redis_client.get(keys.bundle(RID)) or "{}")
        assert bundle["verdict"] == "NO-GO"
        assert reopening in json.dumps(bundle, ensure_ascii=False)
    finally:
        await bot.stop()


def _day(day: date) -> str:
    return format_instant(datetime.combine(day, datetime.min.time(), tzinfo=UTC), ZoneInfo("UTC"))[:-10]


async def _say(bot: RunningBot, standin: SlackStandIn, text: str) -> dict[str, Any]:
    url = standin.new_response_url()
    await bot.command(text, response_url=url)
    return await reply_to(standin, url, timeout=10)
