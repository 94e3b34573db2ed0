"""Secret masking and Slack-safe truncation for anything a check prints.

Every summary and detail passes through `Masker.mask` before it leaves the runner, so a token a
test suite echoes never reaches Slack, the terminal, Redis or the logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MASK = "[masked]"

SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE_?KEY|API_?KEY|ACCESS_?KEY|AUTH",
    re.IGNORECASE,
)

# Shapes of well-known secrets, masked wherever they appear. Group "keep" (when present) is
# shown so a reader still sees *what* was masked ("password=[masked]").
_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL),
    re.compile(r"xox[abposr]-[A-Za-z0-9-]{6,}"),  # Slack bot/user/app/refresh tokens
    re.compile(r"xapp-[A-Za-z0-9-]{6,}"),  # Slack app-level tokens
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub classic tokens
    re.compile(r"github_pat_[A-Za-z0-9_]{20,}"),  # GitHub fine-grained tokens
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),  # AWS access key ids
    re.compile(r"(?P<keep>aws_secret_access_key\s*[=:]\s*)[A-Za-z0-9/+=]{20,}", re.IGNORECASE),
    re.compile(r"(?P<keep>\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
    re.compile(r"(?P<keep>\bBasic\s+)[A-Za-z0-9+/=]{8,}"),
    re.compile(
        r"(?P<keep>\b(?:password|passwd|pwd|secret|token|api[_-]?key)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,;]+",
        re.IGNORECASE,
    ),
    re.compile(r"(?P<keep>://[^/\s:@]+:)[^@\s/]+(?=@)"),  # credentials inside URLs
]

# Values shorter than this are too likely to be common words ("true", "1") to mask blindly.
_MIN_SECRET_LEN = 6


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of environment variables whose names look secret (plus the bot's own settings)."""
    values = []
    for name, value in env.items():
        own = name.startswith(("SLACK_", "GONOGO_")) or name == "REDIS_URL"
        if (own or SECRET_NAME.search(name)) and len(value) >= _MIN_SECRET_LEN:
            values.append(value)
    return values


class Masker:
    """Masks known secret values (longest first) and secret-shaped strings."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        unique = sorted({v for v in values if len(v) >= _MIN_SECRET_LEN}, key=len, reverse=True)
        self._values = re.compile("|".join(re.escape(v) for v in unique)) if unique else None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Masker:
        return cls(secret_values(env))

    def mask(self, text: str) -> str:
        if not text:
            return text
        if self._values is not None:
            text = self._values.sub(MASK, text)
        for pattern in _PATTERNS:
            text = pattern.sub(_replacement, text)
        return text


def _replacement(match: re.Match[str]) -> str:
    keep = match.groupdict().get("keep")
    return f"{keep}{MASK}" if keep else MASK


def truncate_tail(text: str, limit: int) -> str:
    """Keep the last `limit` characters (failures print their cause last) and say what was cut."""
    if len(text) <= limit:
        return text
    marker = "… [{} earlier characters cut]\n"
    keep = max(0, limit - len(marker.format(len(text))))
    cut = len(text) - keep
    return marker.format(cut) + text[len(text) - keep :]


def truncate_line(text: str, limit: int) -> str:
    """One line, at most `limit` characters, with an ellipsis when cut."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: max(0, limit - 1)] + "…"
