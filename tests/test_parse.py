from __future__ import annotations

import pytest

from bot.core.errors import UsageError
from commands.parse import Command, parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Command("help", ())),
        ("   ", Command("help", ())),
        ("help", Command("help", ())),
        ("help me", Command("help", ())),
        ("frobnicate now", Command("help", ("frobnicate",))),
        ("open payments 1.4.0", Command("open", ("payments", "1.4.0"))),
        ("OPEN payments 1.4.0 abc1234", Command("open", ("payments", "1.4.0", "abc1234"))),
        ("status", Command("status", ())),
        ("status payments@1.4.0", Command("status", ("payments@1.4.0",))),
        ("run payments@1.4.0", Command("run", ("payments@1.4.0",))),
        ("run payments@1.4.0 lint health", Command("run", ("payments@1.4.0", "lint", "health"))),
        ("list", Command("list", ())),
    ],
)
def test_parse(text: str, expected: Command) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("open payments", "missing arguments. Usage: `/gonogo open <gate> <version> [sha] [--at 2026-12-01T10:00Z]`"),
        ("open payments 1.4.0 abc1234 extra", "unexpected extra words: 'extra'"),
        ("status a b", "unexpected extra words: 'b'. Usage: `/gonogo status [<release> | <gate>]`"),
        ("run", "missing arguments. Usage: `/gonogo run <release> [check-id ...]`"),
        ("list everything", "unexpected extra words"),
    ],
)
def test_bad_input_names_the_problem_and_the_usage(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse(text)


def test_open_takes_a_target_time() -> None:
    from datetime import UTC, datetime

    parsed = parse("open payments 1.4.0 abc1234 --at 2026-12-01T10:00Z")
    assert parsed.args == ("payments", "1.4.0", "abc1234")
    assert parsed.at == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert parse("open payments 1.4.0 --at 2026-12-01T11:00+01:00").at == datetime(2026, 12, 1, 10, tzinfo=UTC)
    for bad, message in (
        ("open payments 1.4.0 --at", "--at needs a time"),
        ("open payments 1.4.0 --at tomorrow", "is not a time"),
        ("open payments 1.4.0 --at 2026-12-01T10:00", "has no time zone"),
    ):
        with pytest.raises(UsageError, match=message):
            parse(bad)
