"""A release: one run of a gate for one version (`payments@1.4.0`), and what happened to it."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from bot.core.decision import Verdict
from bot.core.errors import CommitMoved, Conflict, UsageError
from bot.core.mentions import mention

VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
SHA = re.compile(r"^[0-9a-f]{7,40}$")
RELEASE_ID = re.compile(r"^(?P<gate>[a-z0-9][a-z0-9-]*)@(?P<version>[0-9A-Za-z][0-9A-Za-z.+_-]{0,63})$")


class State(StrEnum):
    OPEN = "open"
    DECIDED = "decided"  # verdict frozen by /gonogo decide
    CLOSED = "closed"
    ROLLED_BACK = "rolled_back"  # deployed, then rolled back; frees the gate like closed


class Release(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str  # "<gate>@<version>"
    gate_id: str
    version: str
    sha: str | None = None
    opened_by: str
    opened_at: datetime
    state: State = State.OPEN
    rev: int = 1  # bumped on every write: compare-and-set guards concurrent updates
    card_channel: str | None = None
    card_ts: str | None = None  # the live card, updated in place
    thread_ts: str | None = None  # the first card: details and history live in its thread
    last_verdict: Verdict | None = None
    current_stage: str | None = None  # the rollout stage it was last promoted to (gates with stages)
    stages_reached: dict[str, datetime] = {}  # stage id -> when it was promoted to it (for `due: 7d after …`)
    # The decision record, set by /gonogo decide and cleared by reopen: a decided release is frozen.
    decided_verdict: Verdict | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    # A webhook deploy to a stage that was not GO: {"stage": name, "open": n, "at": ISO time}, shown
    # on the card as a warning (the deploy happened: it is accepted, and said out loud).
    deploy_flag: dict[str, Any] | None = None
    target_at: datetime | None = None  # when it is meant to ship (`/gonogo open … --at`): pre-launch posts

    @property
    def short_sha(self) -> str | None:
        return self.sha[:7] if self.sha else None

    def refusal(self) -> Conflict:
        """Why nothing can be added to this release unless it is open."""
        if self.state is State.DECIDED:
            verdict = self.decided_verdict or self.last_verdict
            what = f"decided {verdict.value}" if verdict else "decided"
            if self.decided_at is not None:
                what += f" at {self.decided_at:%H:%M} UTC"
            if self.decided_by:
                what += f" by {mention(self.decided_by)}"
            return Conflict(f"{self.id} was {what}; `/gonogo reopen {self.id}` first")
        return Conflict(f"{self.id} is {self.state.value}: `/gonogo reopen {self.id}` first")

    def moved_since(self) -> CommitMoved:
        """A click on a card drawn for another commit than the release's current one."""
        return CommitMoved(self.id, f"the release moved to {short(self.sha)} since this card was drawn")


class RunRecord(BaseModel):
    """One run of some or all checks of a release."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    run_id: str
    release_id: str
    actor: str  # Slack user id, or "cli" / "ci"
    started_at: datetime
    finished_at: datetime
    check_ids: list[str]
    verdict: Verdict
    counts: dict[str, int]  # status -> how many
    interrupted: str | None = None  # why the run stopped before every check finished

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


class RunLease(BaseModel):
    """Who holds a release's run lock: stored as the lock's value so every replica can say so."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    token: str
    actor: str
    started_at: datetime
    check_ids: list[str]


def short(sha: str | None) -> str:
    """A commit as the card shows it."""
    return sha[:7] if sha else "no commit"


def release_id(gate_id: str, version: str) -> str:
    if not VERSION.match(version):
        raise UsageError(f"bad version {version!r}: use letters, digits and . + _ - (e.g. 1.4.0)")
    return f"{gate_id}@{version}"


def parse_release_id(text: str) -> tuple[str, str]:
    match = RELEASE_ID.match(text)
    if not match:
        raise UsageError(f"bad release {text!r}: expected <gate>@<version>, e.g. payments@1.4.0")
    return match["gate"], match["version"]


def check_sha(sha: str) -> str:
    sha = sha.lower()
    if not SHA.match(sha):
        raise UsageError(f"bad commit {sha!r}: expected 7 to 40 hex characters")
    return sha
