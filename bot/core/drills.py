"""Fire-drill records and the gate's operation lease (pure data).

A drill tests the service, not one release: its runs belong to the gate and every release of that
gate decides on the latest one. The operation lease is how a gate's runs, drills and rollbacks
exclude each other across replicas (see docs/redis.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from bot.core.facts import DrillResult

Source = Literal["slack", "cli", "webhook"]
OperationKind = Literal["run", "drill", "rollback"]


class DrillRun(DrillResult):
    """One run of a drill: what the decision reads (`DrillResult`) plus what a notice shows."""

    gate_id: str
    run_id: str
    started_at: datetime
    duration_s: float
    details: str = ""  # the output's tail, masked and cut to Slack size
    source: Source = "slack"
    event_id: str | None = None  # the webhook event that reported it

    @property
    def verb(self) -> str:
        return "passed" if self.passed else "failed"


class OperationLease(BaseModel):
    """Who holds a gate's operation lease: one run, drill or rollback at a time per gate."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    token: str
    kind: OperationKind
    subject: str  # release id (run, rollback) or drill id
    actor: str
    started_at: datetime

    def busy(self, gate_id: str) -> str:
        """A user-facing "why not now" naming what is in the way."""
        what = {
            "run": f"checks of {self.subject} are running",
            "drill": f"fire drill {self.subject} of gate {gate_id} is running",
            "rollback": f"a rollback of {self.subject} is in progress",
        }[self.kind]
        return f"{what} (started by {_who(self.actor)}); try again when it finishes"


def _who(actor: str) -> str:
    # A mention token: the reply renderer turns it into <@U…> (raw <@U…> would be escaped as text).
    return f"{{@{actor}}}" if actor[:1] in ("U", "W") and actor.isalnum() and actor.isupper() else actor
