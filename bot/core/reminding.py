"""Who a release is waiting on, and why (pure): the input of the reminder tick.

A person is waited on for a role when the role is required and its quorum is unmet and they are a
member with no current vote for it ("missing"), or when their sign-off for it went stale ("stale",
whatever the quorum: a stale vote no longer counts and they should know).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from bot.core.decision import Decision
from bot.core.gate import Gate
from bot.core.stages import Condition

Why = Literal["missing", "stale", "overdue"]


@dataclass(frozen=True)
class Asked:
    role: str
    label: str
    user: str
    why: Why
    stale_reason: str = ""
    subject: str = ""  # "overdue": the manual item's id
    condition: str = ""  # "overdue": its title
    due: str = ""  # "overdue": its due date as written

    @property
    def field(self) -> str:
        """`<role>|<user>`: the name of this person's reminder facts for this role; for an overdue
        condition `due:<item>|<user>` (its own reminders, counted against the same `max`)."""
        if self.why == "overdue":
            return f"{OVERDUE_PREFIX}{self.subject}|{self.user}"
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


OVERDUE_PREFIX = "due:"


def overdue_owners(gate: Gate, overdue: Sequence[Condition], members: Mapping[str, frozenset[str]]) -> list[Asked]:
    """The members of the owner role of every overdue manual condition (bot/core/stages.py
    overdue()), reminded like missing signers. An owner that is no sign-off role has no members."""
    out: list[Asked] = []
    for item in overdue:
        check = gate.check(item.subject or "")
        owner = getattr(check, "owner", None)
        role = gate.role(owner) if owner else None
        if check is None or role is None:
            continue
        for user in sorted(members.get(role.role, frozenset())):
            out.append(
                Asked(
                    role.role, role.title, user, "overdue", subject=check.id, condition=check.title, due=item.due or ""
                )
            )
    return out


def permalink(channel: str | None, ts: str | None) -> str | None:
    """A link to a message from its channel and ts (what chat.getPermalink answers, without a call)."""
    if not channel or not ts:
        return None
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"
