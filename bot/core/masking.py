"""Secret masking and Slack-safe truncation for anything a check prints.

Every summary and detail passes through `Masker.mask` before it leaves the runner, so a token a
test suite echoes never reaches Slack, the terminal, Redis or the logs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping

MASK = "[masked]"

# A variable is secret because of its name, not its prefix: GONOGO_HOST is not, DB_PASSWORD is.
# Names are split into words (SNAKE_CASE, kebab-case, dotted and camelCase alike).
_SECRET_WORDS = frozenset(
    {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS", "APIKEY", "PRIVATEKEY"}
    | {"ACCESSKEY", "SECRETKEY", "AUTHTOKEN", "PASSWORDS", "SECRETS"}
)
_SECRET_PAIRS = frozenset({("API", "KEY"), ("PRIVATE", "KEY"), ("ACCESS", "KEY"), ("SIGNING", "KEY")})

# The bot's own configuration: never passed to a check's child, never named by a gate.
BOT_ENV_PREFIXES = ("SLACK_", "GONOGO_")
BOT_ENV_NAMES = frozenset({"REDIS_URL", "REDIS_URL_FILE"})


def name_words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.upper()) if w]


def is_secret_name(name: str) -> bool:
    """Whether a variable or key named so holds a secret: `access_token`, `client_secret`,
    `DB_PASSWORD`, `apiKey`, `PROXY_AUTH`; not `PWD`, `SSH_AUTH_SOCK`, `GIT_AUTHOR_NAME`, `XAUTHORITY`."""
    words = name_words(name)
    if not words:
        return False
    if any(w in _SECRET_WORDS for w in words) or any(p in _SECRET_PAIRS for p in itertools.pairwise(words)):
        return True
    # `AUTH` and `PWD` alone are too common (SSH_AUTH_SOCK, the working directory `PWD`): they
    # count as the last word of a longer name (BASIC_AUTH, DB_PWD).
    return len(words) > 1 and words[-1] in ("AUTH", "PWD")


def is_bots_own(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(BOT_ENV_PREFIXES) or upper in BOT_ENV_NAMES


def is_bots_secret(name: str) -> bool:
    """The bot's own credentials (SLACK_BOT_TOKEN, REDIS_URL, ...): masked wherever they appear."""
    return is_bots_own(name) and (is_secret_name(name) or name.upper() == "REDIS_URL")


# Shapes of well-known secrets, masked wherever they appear. Group "keep" (when present) is
# shown so a reader still sees *what* was masked ("password=[masked]").
_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL),
    re.compile(r"xox[abposr]-[A-Za-z0-9-]{6,}"),  # Slack bot/user/app/refresh tokens
    re.compile(r"xapp-[A-Za-z0-9-]{6,}"),  # Slack app-level tokens
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub classic tokens
    re.compile(r"github_pat_[A-Za-z0-9_]{20,}"),  # GitHub fine-grained tokens
    re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),  # AWS access key ids
    re.compile(r"(?P<keep>\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
    re.compile(r"(?P<keep>\bBasic\s+)[A-Za-z0-9+/=]{8,}"),
    re.compile(r"(?P<keep>://[^/\s:@]+:)[^@\s/]+(?=@)"),  # credentials inside URLs
]

# `key=value`, `key: value`, `"key": "value"`, `--key value`-less: the value is masked when the
# key's name is secret (`is_secret_name`), whatever its prefix (access_token=, db_password:).
_ASSIGNMENT = re.compile(
    r"(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>[\"']?\s*[=:]\s*[\"']?)(?P<value>[^\s\"'&,;]+)",
)

# Values shorter than this are too likely to be common words ("true", "1") to mask blindly.
_MIN_SECRET_LEN = 6


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of environment variables whose names say they are secret (the bot's own included)."""
    values = []
    for name, value in env.items():
        if (is_secret_name(name) or is_bots_secret(name)) and len(value) >= _MIN_SECRET_LEN:
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
        return _ASSIGNMENT.sub(_assignment, text)


def _assignment(match: re.Match[str]) -> str:
    if not is_secret_name(match["key"]) or match["value"] == MASK:
        return match[0]
    return f"{match['key']}{match['sep']}{MASK}"


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
