"""Structured logs: one JSON object per line in production, `key=value` lines on a terminal.

Fields passed through `extra={...}` become keys. Every rendered line goes through the masker,
so a token in an exception message or a check's output cannot reach the log.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from bot.core.masking import Masker

_STANDARD = set(logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def __init__(self, masker: Masker) -> None:
        super().__init__()
        self.masker = masker

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return self.masker.mask(json.dumps(doc, default=str, ensure_ascii=False))


class ConsoleFormatter(logging.Formatter):
    def __init__(self, masker: Masker) -> None:
        super().__init__()
        self.masker = masker

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname.lower():<7} {record.getMessage()}" + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.masker.mask(line)


def configure(level: str | None = None, *, json_lines: bool | None = None) -> None:
    """Install one handler on the root logger (idempotent). GONOGO_LOG_LEVEL / GONOGO_LOG_FORMAT override."""
    level = (level or os.environ.get("GONOGO_LOG_LEVEL") or "INFO").upper()
    fmt = os.environ.get("GONOGO_LOG_FORMAT")
    if json_lines is None:
        json_lines = fmt == "json" if fmt else not sys.stderr.isatty()
    masker = Masker.from_env(os.environ)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(masker) if json_lines else ConsoleFormatter(masker))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_gonogo", False):
            root.removeHandler(old)
    handler._gonogo = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter stays at WARNING unless asked for.
    for noisy in ("aiohttp.access", "slack_bolt", "slack_sdk", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
