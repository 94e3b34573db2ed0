"""The notices of drills, rollbacks and deploys (pure): which message, where, under which key.

Services build these inside the atomic step that records what happened (bot/store/outbox.py);
their renderers (bot/slack/announcements.py) escape every field that came from outside. Payloads
hold masked facts, never rendered text. Keys make each announcement unique, so a replayed event or
a retried delivery posts nothing twice; updates and thread replies name the key of the message
they belong to, which the deliverer resolves to its Slack ts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bot.core.notices import Notice, Target, notice_key

DRILL_STARTED = "drill_started"
DRILL_RESULT = "drill_result"
DRILL_OUTPUT = "drill_output"
ROLLBACK_STARTED = "rollback_started"
ROLLBACK_STEP = "rollback_step"
ROLLBACK_PEOPLE = "rollback_people"
ROLLBACK_OUTPUT = "rollback_output"
ROLLBACK_VERIFY = "rollback_verify"
DEPLOY_PROGRESS = "deploy_progress"
DEPLOY_FLAGGED = "deploy_flagged"
SIGNOFF_STALE = "signoff_stale"

OUTPUT_TAIL = 2_500  # characters of a command's (masked) output shown in a thread


def tail(text: str, limit: int = OUTPUT_TAIL) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


def drill_key(gate_id: str, run_id: str) -> str:
    return notice_key("drill", gate_id, run_id)


def drill_started(
    gate_id: str, channel: str, run_id: str, *, drill_id: str, title: str, actor: str, at: datetime
) -> Notice:
    return Notice(
        kind=DRILL_STARTED,
        gate_id=gate_id,
        target=Target.to_channel(channel),
        payload={"drill": drill_id, "title": title, "actor": actor},
        key=drill_key(gate_id, run_id),
        created_at=at,
        actor=actor,
    )


def drill_finished(
    gate_id: str,
    channel: str,
    run_id: str,
    *,
    title: str,
    actor: str,
    passed: bool,
    duration_s: float,
    summary: str,
    details: str,
    at: datetime,
) -> list[Notice]:
    """The started message becomes the result; the output tail goes into its thread."""
    started = drill_key(gate_id, run_id)
    out = [
        Notice(
            kind=DRILL_RESULT,
            gate_id=gate_id,
            target=Target.to_channel(channel),
            payload={"title": title, "actor": actor, "passed": passed, "duration_s": duration_s, "summary": summary},
            key=notice_key("drill-result", gate_id, run_id),
            updates=started,
            created_at=at,
        )
    ]
    if details.strip():
        out.append(
            Notice(
                kind=DRILL_OUTPUT,
                gate_id=gate_id,
                target=Target.to_thread_of(channel, started),
                payload={"output": tail(details)},
                key=notice_key("drill-output", gate_id, run_id),
                created_at=at,
            )
        )
    return out


def drill_reported(
    gate_id: str,
    channel: str,
    run_id: str,
    *,
    drill_id: str,
    title: str,
    actor: str,
    passed: bool,
    duration_s: float,
    summary: str,
    details: str,
    at: datetime,
) -> list[Notice]:
    """A drill CI ran: the same two messages as a drill run from Slack, written at once."""
    started = drill_started(gate_id, channel, run_id, drill_id=drill_id, title=title, actor=actor, at=at)
    finished = drill_finished(
        gate_id,
        channel,
        run_id,
        title=title,
        actor=actor,
        passed=passed,
        duration_s=duration_s,
        summary=summary,
        details=details,
        at=at,
    )
    return [started, *finished]


def rollback_key(release_id: str, attempt: str | None = None) -> str:
    """The announcement of a release's rollback. A later attempt (the first one's process died before
    it finished, after its announcement was posted) has its own, or it would be deduplicated away."""
    return notice_key("rollback", release_id, attempt) if attempt else notice_key("rollback", release_id)


def _attempt(parts: tuple[str, ...], attempt: str | None) -> tuple[str, ...]:
    return (*parts, attempt) if attempt else parts


def rollback_started(
    gate_id: str,
    channel: str,
    release_id: str,
    *,
    actor: str,
    reason: str,
    record: dict[str, Any],
    people: Iterable[str],
    at: datetime,
    attempt: str | None = None,
) -> list[Notice]:
    """The announcement, and in its thread the release's signers and opener, each named once.
    `record`: where the decision record is ({"channel", "ts"} of the card, when posted)."""
    key = rollback_key(release_id, attempt)
    named = sorted(set(people))
    out = [
        Notice(
            kind=ROLLBACK_STARTED,
            gate_id=gate_id,
            release_id=release_id,
            target=Target.to_channel(channel),
            payload={"release": release_id, "actor": actor, "reason": reason, "record": record},
            key=key,
            created_at=at,
            actor=actor,
        )
    ]
    if named:
        out.append(
            Notice(
                kind=ROLLBACK_PEOPLE,
                gate_id=gate_id,
                release_id=release_id,
                target=Target.to_thread_of(channel, key),
                payload={"release": release_id, "people": named},
                key=notice_key(*_attempt(("rollback-people", release_id), attempt)),
                created_at=at,
            )
        )
    return out


def rollback_step(
    gate_id: str, channel: str, release_id: str, *, step_id: str, status: str, actor: str, reason: str, at: datetime
) -> Notice:
    """A later report on a rollback under way (succeeded / failed), in the announcement's thread."""
    return Notice(
        kind=ROLLBACK_STEP,
        gate_id=gate_id,
        release_id=release_id,
        target=Target.to_thread_of(channel, rollback_key(release_id)),
        payload={"release": release_id, "status": status, "actor": actor, "reason": reason},
        key=notice_key("rollback-step", release_id, step_id),
        created_at=at,
    )


def rollback_output(
    gate_id: str,
    channel: str,
    release_id: str,
    *,
    passed: bool,
    summary: str,
    details: str,
    at: datetime,
    attempt: str | None = None,
) -> Notice:
    return Notice(
        kind=ROLLBACK_OUTPUT,
        gate_id=gate_id,
        release_id=release_id,
        target=Target.to_thread_of(channel, rollback_key(release_id, attempt)),
        payload={"passed": passed, "summary": summary, "output": tail(details)},
        key=notice_key(*_attempt(("rollback-output", release_id), attempt)),
        created_at=at,
    )


def rollback_verified(
    gate_id: str,
    channel: str,
    release_id: str,
    *,
    check: str,
    passed: bool,
    summary: str,
    after_s: float,
    at: datetime,
    attempt: str | None = None,
) -> Notice:
    return Notice(
        kind=ROLLBACK_VERIFY,
        gate_id=gate_id,
        release_id=release_id,
        target=Target.to_thread_of(channel, rollback_key(release_id, attempt)),
        payload={"check": check, "passed": passed, "summary": summary, "after_s": after_s},
        key=notice_key(*_attempt(("rollback-verify", release_id), attempt)),
        created_at=at,
    )


def deploy_key(release_id: str) -> str:
    return notice_key("deploy", release_id)


def deploy_progress(
    gate_id: str,
    channel: str,
    release_id: str,
    *,
    event_id: str,
    stages: list[dict[str, str]],
    sha: str | None,
    first: bool,
    at: datetime,
) -> Notice:
    """ONE message per release: the first deploy event posts it, every later one updates it with
    every stage so far (`stages`: [{"stage", "status"}], oldest first)."""
    return Notice(
        kind=DEPLOY_PROGRESS,
        gate_id=gate_id,
        release_id=release_id,
        target=Target.to_channel(channel),
        payload={"release": release_id, "stages": stages, "sha": sha},
        key=deploy_key(release_id) if first else notice_key("deploy", release_id, event_id),
        updates=None if first else deploy_key(release_id),
        created_at=at,
    )


def deploy_flagged(
    gate_id: str, channel: str, release_id: str, *, event_id: str, stage: str, conditions: list[str], at: datetime
) -> Notice:
    """A deploy to a stage that is not GO: accepted (the deploy happened), said out loud."""
    return Notice(
        kind=DEPLOY_FLAGGED,
        gate_id=gate_id,
        release_id=release_id,
        target=Target.to_channel(channel),
        payload={"release": release_id, "stage": stage, "conditions": conditions},
        key=notice_key("deploy-flagged", release_id, event_id),
        created_at=at,
    )


def signoff_stale(
    gate_id: str, release_id: str, *, sha: str | None, signers: list[dict[str, str]], at: datetime
) -> Notice:
    """The signers whose sign-offs went stale when the release moved to `sha`, asked to sign again
    in the card's thread (`signers`: [{"user", "vote", "label", "reason"}]). Once per commit."""
    return Notice(
        kind=SIGNOFF_STALE,
        gate_id=gate_id,
        release_id=release_id,
        target=Target.to_card_thread(),
        payload={"release": release_id, "sha": sha, "signers": signers},
        key=notice_key("signoff-stale", release_id, sha or ""),
        created_at=at,
    )
