"""Parsing the text after `/gonogo` into a subcommand and its arguments. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.core.errors import UsageError

USAGE = {
    "help": "/gonogo help",
    "open": "/gonogo open <gate> <version> [sha] [--at 2026-12-01T10:00Z]",
    "status": "/gonogo status [<release> | <gate>]",
    "run": "/gonogo run <release> [check-id ...]",
    "list": "/gonogo list",
    "override": "/gonogo override <release> <reason> | /gonogo override cancel <release>",
    "decide": "/gonogo decide <release>",
    "promote": "/gonogo promote <release> <stage>",
    "evidence": "/gonogo evidence <release>",
    "close": "/gonogo close <release>",
    "reopen": "/gonogo reopen <release>",
    "history": "/gonogo history <release> [--page N]",
    "drill": "/gonogo drill <drill-id> [<gate>]",
    "rollback": "/gonogo rollback <release> <reason>",
}

# subcommand -> (min args, max args or None for any)
_ARITY: dict[str, tuple[int, int | None]] = {
    "help": (0, 0),
    "open": (2, 3),
    "status": (0, 1),
    "run": (1, None),
    "list": (0, 0),
    "override": (2, None),  # the reason is the rest of the text
    "decide": (1, 1),
    "promote": (2, 2),
    "evidence": (1, 1),
    "close": (1, 1),
    "reopen": (1, 1),
    "history": (1, 3),
    "drill": (1, 2),
    "rollback": (2, None),  # the reason is the rest of the text
}


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]
    at: datetime | None = None  # `open … --at <time>`: the release's target time


def target_time(text: str) -> datetime:
    """An ISO time with its zone (`2026-12-01T10:00Z`, `2026-12-01T11:00+01:00`)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at {text!r} is not a time: give one like 2026-12-01T10:00Z") from None
    if at.tzinfo is None:
        raise UsageError(f"--at {text!r} has no time zone: add Z for UTC, e.g. 2026-12-01T10:00Z")
    return at


def _take_at(name: str, args: tuple[str, ...]) -> tuple[tuple[str, ...], datetime | None]:
    if name != "open" or "--at" not in args:
        return args, None
    i = args.index("--at")
    if i + 1 >= len(args):
        raise UsageError(f"--at needs a time. Usage: `{USAGE['open']}`")
    return args[:i] + args[i + 2 :], target_time(args[i + 1])


def parse(text: str) -> Command:
    """Empty or unknown text means help; wrong arity raises UsageError with the right usage."""
    words = text.split()
    if not words:
        return Command("help", ())
    name, args = words[0].lower(), tuple(words[1:])
    if name == "help":
        return Command("help", ())
    if name not in _ARITY:
        return Command("help", (name,))
    args, at = _take_at(name, args)
    low, high = _ARITY[name]
    if len(args) < low or (high is not None and len(args) > high):
        if high is not None and len(args) > high:
            extra = " ".join(args[high:])
            problem = f"unexpected extra words: {extra!r}"
        elif name == "override":
            problem = "an override needs a reason"
        elif name == "rollback" and args:
            problem = "a rollback needs a reason"
        else:
            problem = "missing arguments"
        raise UsageError(f"{problem}. Usage: `{USAGE[name]}`")
    return Command(name, args, at)
