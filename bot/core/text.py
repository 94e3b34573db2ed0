"""Plain-text helpers shared by every renderer (Slack, Markdown, terminal): pure, no Slack types."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from bot.core.durations import format_duration
from bot.core.mentions import MENTION

SECTION_LIMIT = 3000  # Slack's section text limit; the default chunk size


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(text: str) -> str:
    return " ".join(text.split())


def chunk_lines(lines: Iterable[str], limit: int = SECTION_LIMIT) -> list[str]:
    """Join lines into texts of at most `limit` characters, never splitting a line."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        line = cut(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            chunks.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        chunks.append(current)
    return chunks


def plain(text: str) -> str:
    """Reason text for terminals, JSON and Markdown: user references as @U123."""
    return MENTION.sub(r"@\1", text)


def format_duration_short(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(timedelta(seconds=round(seconds)))
