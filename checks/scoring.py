"""Graded scores: a check may say how good, not only whether it passed.

`score:` on a command check reads a number from its output (the last match of a regex), on a
prometheus check takes the value itself, on an http check reads a JSON path. The number is divided
by `max` and clamped to [0, 1]. A check that is configured to score and cannot find its number is
an `error`: a score nobody could read must never count as a silent 0 (or 1).

`pass_score` (any scored check) turns a passing result below that score into a failure; it is
applied by the runner, in one place, for every kind.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.core.results import CheckResult, Status


class _Score(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)

    max: float = Field(gt=0, description="The value that scores 1.0 (e.g. 10 for a x/10 grade)")


class ValueScore(_Score):
    """prometheus: the query's value itself (the worst series when there are several)."""


class RegexScore(_Score):
    """command: the last match of `regex` in the output; its first group if it has one."""

    regex: str = Field(description='e.g. "readiness=([0-9.]+)"; the last match counts')

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from None
        return value


class JsonScore(_Score):
    """http: a number at a dotted JSON path of the body."""

    json_: str = Field(alias="json", min_length=1, description='Dotted path, e.g. "data.score"')


class NoScore(Exception):
    """The configured score could not be read: the check becomes an `error`."""


def number(raw: Any, what: str) -> float:
    """A finite number from JSON or text; NoScore otherwise (booleans are not numbers)."""
    if isinstance(raw, bool) or raw is None:
        raise NoScore(f"{what} is {raw!r}, not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise NoScore(f"{what} is {str(raw)[:60]!r}, not a number") from None
    if not math.isfinite(value):
        raise NoScore(f"{what} is {value}, not a finite number")
    return value


def scaled(value: float, spec: _Score) -> float:
    """value / max, clamped to [0, 1]."""
    return min(max(value / spec.max, 0.0), 1.0)


def from_output(spec: RegexScore, output: str) -> tuple[float, float]:
    """(raw value, score) from the last match of the regex in a command's output."""
    matches = list(re.finditer(spec.regex, output))
    if not matches:
        raise NoScore(f"no score: /{spec.regex}/ does not match the output")
    last = matches[-1]
    raw = number(last.group(1) if last.re.groups else last.group(0), f"score /{spec.regex}/")
    return raw, scaled(raw, spec)


def describe(raw: float, spec: _Score, score: float) -> str:
    """ "score 7/10 (0.70)" for summaries."""
    return f"score {raw:g}/{spec.max:g} ({score:.2f})"


def with_score(result: CheckResult, raw: float, spec: _Score, score: float) -> CheckResult:
    return result.model_copy(update={"score": score, "summary": f"{result.summary}, {describe(raw, spec, score)}"})


def unreadable(result: CheckResult, why: str) -> CheckResult:
    """A scored check whose score cannot be read is an error, whatever its status said."""
    return result.model_copy(update={"status": Status.ERROR, "score": None, "summary": f"{why} ({result.summary})"})


def apply_pass_score(result: CheckResult, pass_score: float | None) -> CheckResult:
    """A passing result below `pass_score` fails; the summary says why."""
    if pass_score is None or result.score is None or not result.status.passing or result.score >= pass_score:
        return result
    return result.model_copy(
        update={"status": Status.FAIL, "summary": f"{result.summary}: below pass_score {pass_score:g}"}
    )
