"""Who a release is waiting on, and why (pure): the input of the reminder tick.

A person is waited on for a role when the role is required and its quorum is unmet and they are a
member with no current vote for it ("missing"), or when their sign-off for it went stale ("stale",
whatever the quorum: a stale vote no longer counts and they should know).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from bot.core.decision import Decision
from bot.core.gate import Gate

Why = Literal["missing", "stale"]


@dataclass(frozen=True)
class Asked:
    role: str
    label: str
    user: str
    why: Why
    stale_reason: str = ""

    @property
    def field(self) -> str:
        """`<role>|<user>`: the name of this person's reminder facts for this role."""
        return f"{self.role}|{self.user}"


def waited_on(gate: Gate, decision: Decision, members: Mapping[str, frozenset[str]]) -> list[Asked]:
    """Everyone the release waits on, per role, in the gate's role order then by user id."""
    by_role = {r.role: r for r in decision.roles}
    out: list[Asked] = []
    for spec in gate.signoffs:
        status = by_role.get(spec.role)
        if status is None:
            continue
        asked: dict[str, Asked] = {}
        for stale in status.stale:
            user = stale.signature.user
            asked[user] = Asked(spec.role, spec.title, user, "stale", stale.reason)
        if spec.required and not status.met:
            voted = {s.user for s in (*status.approvals, *status.rejections)}
            for user in members.get(spec.role, frozenset()):
                if user not in voted and user not in asked:
                    asked[user] = Asked(spec.role, spec.title, user, "missing")
        out += [asked[u] for u in sorted(asked)]
    return out


def permalink(channel: str | None, ts: str | None) -> str | None:
    """A link to a message from its channel and ts (what chat.getPermalink answers, without a call)."""
    if not channel or not ts:
        return None
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"
