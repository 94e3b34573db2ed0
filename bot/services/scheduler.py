"""The scheduler's work: decide what is due from facts in Redis, and claim it (docs/scheduling.md).

Every replica calls the same tick functions (bot/scheduling.py wires them to APScheduler); each
tick reads release state, sign-offs and the schedule facts, computes due units with the pure
functions of bot/core/timeplan.py, and claims each one in Redis together with its notice
(bot/store/schedule.py). Nothing is kept in memory between ticks, and nothing here talks to Slack:
the deliverer posts the notices. The clock is a parameter.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.core.decision import Decision, Verdict
from bot.core.errors import Conflict
from bot.core.gate import Gate, Signoff
from bot.core.notices import Notice, Target, notice_key
from bot.core.release import Release, State
from bot.core.reminding import OVERDUE_PREFIX, Asked, overdue_owners, permalink, waited_on
from bot.core.results import CheckResult, Status
from bot.core.stages import overdue
from bot.core.timeplan import (
    Series,
    SnoozeChoice,
    WorkingTime,
    format_instant,
    freeze_edges,
    next_escalation,
    next_reminder,
    postdeploy_series,
    prelaunch_due,
    recheck_series,
    snooze_until,
    window_status,
)
from bot.core.wallclock import DEFAULT_PRELAUNCH, zone_of
from bot.services.events import FULLY_DEPLOYED
from bot.services.releases import ReleaseService
from bot.services.runner import run_checks
from bot.store import keys
from bot.store.outbox import Emit
from bot.store.schedule import Claim, ScheduleStore, Write
from bot.store.store import AuditEvent
from checks.base import CheckContext

log = logging.getLogger("gonogo.scheduler")

# Notice kinds (renderers in bot/slack/reminders.py)
REMINDER = "reminder"
REMINDER_ANSWERED = "reminder_answered"
ESCALATION = "escalation"
FREEZE_EDGE = "freeze_edge"
PRELAUNCH = "prelaunch"
RECHECK_CHANGED = "recheck_changed"
POSTDEPLOY_FAILED = "postdeploy_failed"
POSTDEPLOY_SUMMARY = "postdeploy_summary"
SCHEDULED_ACTOR = "gonogo"

RECHECK_PENDING = "rc|"  # rc|<n>: slot n claimed, its run not settled yet ({before, at})
RECHECK_FROZEN = "rc-frozen"  # the verdict re-checks of a decided release last told the thread
RECHECK_GRACE = timedelta(minutes=1)  # a claimer alive takes the run lock at once; one tick later it died
RECHECK_RUNS_LOOKED_AT = 20
POSTDEPLOY_TRIES = 3  # a slot whose replica died is taken over this often, then counted as missed
POSTDEPLOY_MIN_LEASE = timedelta(minutes=2)  # a slot's lease: twice `every`, at least this
LOST = "lost"  # pd|<n> of a slot given up
CLAIM_ATTEMPTS = 3  # reads and claims of one tick when the release keeps moving under it
RECENT_RELEASES = 5  # closed releases whose reminder DMs may still need "answered" updates
FREEZE_LOOKBACK = timedelta(days=1)

Members = Callable[[Signoff], Awaitable[frozenset[str]]]
Zones = Callable[[str], Awaitable[str | None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


async def no_zone(user: str) -> str | None:
    return None


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _when(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


@dataclass
class Tick:
    """What one tick claimed (and what it found done by someone else), for tests and logs."""

    claimed: list[str] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)  # refused: the release changed after it was read

    def add(self, unit: str, outcome: str) -> None:
        {"claimed": self.claimed, "moved": self.moved}.get(outcome, self.taken).append(unit)


TickBody = Callable[[str], Awaitable[Tick]]


async def retried(body: TickBody, gate_id: str) -> Tick:
    """Run a tick again at once, from a fresh read, while a claim was refused because the release
    moved between the tick's read and its claim (e.g. the card refresher stored the card's
    location): the work is due now, not at the next tick. Bounded: a release that keeps moving
    is left to the next tick. Units claimed by an earlier attempt are not due in a later one."""
    total = Tick()
    for _ in range(CLAIM_ATTEMPTS):
        tick = await body(gate_id)
        total.claimed += tick.claimed
        total.taken += tick.taken
        total.moved = tick.moved
        if not tick.moved:
            break
    return total


class Scheduler:
    def __init__(
        self,
        *,
        releases: ReleaseService,
        store: ScheduleStore,
        members: Members,
        zones: Zones = no_zone,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.releases = releases
        self.store = store
        self.members = members
        self.zones = zones
        self.clock = clock

    # --- reading --------------------------------------------------------------------------------

    async def _recent(self, gate_id: str) -> list[Release]:
        ids = await self.store.redis.zrevrange(keys.release_index(gate_id), 0, RECENT_RELEASES - 1)
        found = [await self.releases.store.get_release(str(i)) for i in ids]
        return [r for r in found if r is not None]

    async def working_time(self, gate: Gate, user: str) -> WorkingTime:
        assert gate.reminders is not None
        return gate.reminders.working_time(await self.zones(user))

    # --- reminders and escalation -----------------------------------------------------------------

    async def reminders_tick(self, gate_id: str) -> Tick:
        return await retried(self._reminders_once, gate_id)

    async def _reminders_once(self, gate_id: str) -> Tick:
        tick = Tick()
        gate = self.releases.gates.get(gate_id).gate
        if gate.reminders is None:
            return tick
        for release in await self._recent(gate_id):
            await self._remind_release(gate, release, tick)
        return tick

    async def _remind_release(self, gate: Gate, release: Release, tick: Tick) -> None:
        facts = await self.store.facts(release.id)
        if release.state is not State.OPEN and not any(k.startswith("sent|") for k in facts):
            return
        now = self.clock()
        state = await self.releases.state(release)
        asked: list[Asked] = []
        if release.state is State.OPEN:
            members = {s.role: await self.members(s) for s in gate.signoffs}
            asked = waited_on(gate, state.decision, members)
            if state.ladder is not None:
                late = state.ladder.overdue
            else:  # a gate without stages: manual items may still have a `due` date (`on:` only)
                inp = state.people.decision_input(gate, now, state.results, release.sha)
                late = overdue(gate, inp, release.stages_reached)
            asked += overdue_owners(gate, late, members)
        claimed = await self.store.claimed(release.id)
        waited = {a.field for a in asked}
        # 1. DMs whose question was answered elsewhere: say so, once (no dead buttons left behind).
        for name, raw in facts.items():
            if not name.startswith("sent|"):
                continue
            who = name.removeprefix("sent|")
            sent = json.loads(raw)
            unit = f"answered|{who}|{sent['n']}"
            if who in waited or unit in claimed:
                continue
            tick.add(unit, await self._answered(gate, release, state.decision, who, sent, unit, now))
        if release.state is not State.OPEN:
            return
        # 2. Reminders that are due.
        new_since = {f"since|{a.field}": _iso(now) for a in asked if f"since|{a.field}" not in facts}
        await self.store.waiting_since(release.id, new_since)
        facts = {**new_since, **facts}
        for person in asked:
            await self._remind(gate, release, state.decision, person, facts, now, tick)
        # 3. Escalations of roles whose reminders went unanswered.
        await self._escalate(gate, release, asked, await self.store.facts(release.id), now, tick)

    async def _remind(
        self,
        gate: Gate,
        release: Release,
        decision: Decision,
        person: Asked,
        facts: dict[str, str],
        now: datetime,
        tick: Tick,
    ) -> None:
        assert gate.reminders is not None
        rules = gate.reminders.rules()
        sent = json.loads(facts.get(f"sent|{person.field}", '{"n": 0}'))
        since = _when(facts.get(f"since|{person.field}")) or now
        working = await self.working_time(gate, person.user)
        due = next_reminder(
            rules,
            working,
            waiting_since=since,
            sent=int(sent["n"]),
            last_sent_at=_when(sent.get("at")),
            snoozed_until=_when(facts.get(f"snooze|{person.user}")),
        )
        if due is None or due.at > now or int(facts.get(f"count|{person.user}", 0)) >= rules.max:
            return
        # `ask`: reminders since this person was last asked anew (the role unmet again, the sign-off
        # stale again): what escalation counts, while `n` keeps naming units uniquely.
        last_at = _when(sent.get("at"))
        ask = int(sent.get("ask", sent["n"])) + 1 if last_at is not None and last_at >= since else 1
        unit = f"remind|{person.field}|{due.number}"
        key = notice_key(REMINDER, release.id, person.field, str(due.number))
        notice = Notice(
            kind=REMINDER,
            gate_id=gate.id,
            release_id=release.id,
            target=Target.to_user(person.user),
            payload={
                **_about(gate, release, decision),
                "role": person.role,
                "label": person.label,
                "user": person.user,
                "why": person.why,
                "stale_reason": person.stale_reason,
                **({"condition": person.condition, "due": person.due} if person.why == "overdue" else {}),
                "number": due.number,
                "max": rules.max,
            },
            key=key,
            created_at=now,
        )
        sent_now = {"n": due.number, "at": _iso(now), "key": key, "ask": ask}
        writes = [Write("set", f"sent|{person.field}", json.dumps(sent_now))]
        esc = gate.reminders.escalate_after
        if esc is not None and ask >= esc and person.why != "overdue":
            writes.append(Write("setnx", f"esc-at|{person.role}", _iso(now)))
        audit = AuditEvent(
            type="reminded",
            actor="gonogo",
            at=now,
            data={"role": person.role, "user": person.user, "number": due.number, "why": person.why},
        )
        # `max` is per person per release (their other roles count too): a counter checked in the claim.
        cap = (f"count|{person.user}", rules.max)
        claim = Claim(unit=unit, change=Emit(gate.id, [notice]), writes=writes, audit=audit, cap=cap)
        tick.add(unit, await self.store.claim(claim, release))

    async def _answered(
        self, gate: Gate, release: Release, decision: Decision, who: str, sent: dict[str, Any], unit: str, now: datetime
    ) -> str:
        role, _, user = who.partition("|")
        if role.startswith(OVERDUE_PREFIX):
            return await self._overdue_answered(gate, release, decision, who, sent, unit, now)
        spec = next((s for s in gate.signoffs if s.role == role), None)
        label = spec.title if spec else role
        status = next((r for r in decision.roles if r.role == role), None)
        if release.state is State.DECIDED:
            verdict = release.decided_verdict or release.last_verdict
            why = f"{release.id} was decided {verdict.value if verdict else ''}".rstrip()
        elif release.state is not State.OPEN:
            why = f"{release.id} is {release.state.value}"
        elif status is not None and any(s.user == user for s in (*status.approvals, *status.rejections)):
            why = f"your sign-off as {label} is recorded"
        elif status is not None and status.met:
            why = f"the {label} sign-off is complete"
        else:
            why = f"you are no longer asked to sign as {label}"
        notice = Notice(
            kind=REMINDER_ANSWERED,
            gate_id=gate.id,
            release_id=release.id,
            target=Target.to_user(user),
            payload={**_about(gate, release, decision), "role": role, "label": label, "why": why},
            key=notice_key(REMINDER_ANSWERED, release.id, who, str(sent["n"])),
            created_at=now,
            updates=str(sent["key"]),
        )
        claim = Claim(unit=unit, change=Emit(gate.id, [notice]), writes=[Write("del", f"since|{who}")])
        # Not bound to the release's rev: a decided or closed release is exactly when this is due.
        return await self.store.claim(claim, release, unless_moved=False)

    async def _overdue_answered(
        self, gate: Gate, release: Release, decision: Decision, who: str, sent: dict[str, Any], unit: str, now: datetime
    ) -> str:
        """An overdue condition's owner was reminded and it is no longer overdue (done, or the
        release decided or closed): their DM says so."""
        item, _, user = who.removeprefix(OVERDUE_PREFIX).partition("|")
        check = gate.check(item)
        title = check.title if check is not None else item
        if release.state is not State.OPEN:
            why = f"{release.id} is {release.state.value}"
        else:
            why = f"{title} is no longer overdue"
        notice = Notice(
            kind=REMINDER_ANSWERED,
            gate_id=gate.id,
            release_id=release.id,
            target=Target.to_user(user),
            payload={**_about(gate, release, decision), "role": item, "label": title, "why": why},
            key=notice_key(REMINDER_ANSWERED, release.id, who, str(sent["n"])),
            created_at=now,
            updates=str(sent["key"]),
        )
        claim = Claim(unit=unit, change=Emit(gate.id, [notice]), writes=[Write("del", f"since|{who}")])
        return await self.store.claim(claim, release, unless_moved=False)

    async def _escalate(
        self, gate: Gate, release: Release, asked: Sequence[Asked], facts: dict[str, str], now: datetime, tick: Tick
    ) -> None:
        reminders = gate.reminders
        assert reminders is not None
        if reminders.escalate_after is None or reminders.escalate_to is None:
            return
        working = reminders.working_time(None)
        for spec in gate.signoffs:
            # Escalation is about sign-offs: an overdue condition's reminders (same role) do not count.
            people = [a for a in asked if a.role == spec.role and a.why != "overdue"]
            esc = json.loads(facts.get(f"esc|{spec.role}", '{"n": 0}'))
            if not people:
                await self._escalation_over(gate, release, spec.role, facts, tick)
                continue
            numbers = [_unanswered(facts, a.field) for a in people]
            in_ask = int(esc.get("ask", esc["n"]))
            due = next_escalation(
                reminders.escalate_after,
                unanswered=max(numbers),
                threshold_reached_at=_when(facts.get(f"esc-at|{spec.role}")),
                sent=in_ask,
                last_sent_at=_when(esc.get("at")) if in_ask else None,
                working=working,
            )
            if due is None or due.at > now:
                continue
            number = int(esc["n"]) + 1  # escalations of every ask, so each unit has its own name
            unit = f"escalate|{spec.role}|{number}"
            to = reminders.escalate_to
            role_to = next((s for s in gate.signoffs if s.role == to), None)
            targets = sorted(await self.members(role_to)) if role_to is not None else [to]
            payload = {
                **_about(gate, release, None),
                "role": spec.role,
                "label": spec.title,
                "asked": sorted(a.user for a in people),
                "reminders": max(numbers),
                "number": number,
            }
            notices = [
                Notice(
                    kind=ESCALATION,
                    gate_id=gate.id,
                    release_id=release.id,
                    target=Target.to_channel(t),
                    payload=payload,
                    key=notice_key(ESCALATION, release.id, spec.role, str(number), t),
                    created_at=now,
                )
                for t in targets
            ]
            writes = [Write("set", f"esc|{spec.role}", json.dumps({"n": number, "at": _iso(now), "ask": due.number}))]
            audit = AuditEvent(type="escalated", actor="gonogo", at=now, data={"role": spec.role, "to": to})
            claim = Claim(unit=unit, change=Emit(gate.id, notices), writes=writes, audit=audit)
            tick.add(unit, await self.store.claim(claim, release))

    async def _escalation_over(
        self, gate: Gate, release: Release, role: str, facts: dict[str, str], tick: Tick
    ) -> None:
        """Nobody of `role` is waited on any more (its quorum met): the ask is over. If it reached the
        threshold, counting restarts for the next ask (the role unmet again, a sign-off gone stale)."""
        reached = facts.get(f"esc-at|{role}")
        if reached is None:
            return
        esc = json.loads(facts.get(f"esc|{role}", '{"n": 0}'))
        writes = [Write("del", f"esc-at|{role}"), Write("set", f"esc|{role}", json.dumps({"n": esc["n"], "ask": 0}))]
        writes += [Write("del", k) for k in facts if k.startswith(f"since|{role}|")]
        unit = f"esc-reset|{role}|{reached}"
        tick.add(unit, await self.store.claim(Claim(unit, Emit(gate.id), writes), release))

    # --- snooze -------------------------------------------------------------------------------------

    async def snooze(self, release_id: str, user: str, choice: SnoozeChoice) -> datetime:
        """No reminders of this release to `user` until the chosen time (their own working morning)."""
        release = await self.releases.resolve(release_id)
        gate = self.releases.gates.get(release.gate_id).gate
        working = await self.working_time(gate, user) if gate.reminders else WorkingTime(zone=zone_of("UTC"))
        until = snooze_until(choice, working, self.clock())
        await self.store.snooze(release.id, user, _iso(until))
        return until

    async def describe_for(self, gate_id: str, user: str, at: datetime) -> str:
        gate = self.releases.gates.get(gate_id).gate
        zone = (await self.working_time(gate, user)).zone if gate.reminders else zone_of("UTC")
        return format_instant(at, zone)

    # --- freeze announcements, pre-launch posts -----------------------------------------------------

    async def orphan_runs_tick(self, gate_id: str) -> Tick:
        """Runs whose process died mid-run: recorded as interrupted (once, whichever replica sees it
        first), their cards redrawn without ⏳ (ReleaseService.sweep_orphan_runs)."""
        tick = Tick()
        for run_id in await self.releases.sweep_orphan_runs(gate_id):
            tick.add(f"run:{run_id}", "claimed")
        return tick

    async def windows_tick(self, gate_id: str) -> Tick:
        tick = Tick()
        gate = self.releases.gates.get(gate_id).gate
        if gate.windows is None or not gate.windows.freeze:
            return tick
        rules = gate.windows.rules()
        now = self.clock()
        for edge in freeze_edges(rules, after=now - FREEZE_LOOKBACK, until=now):
            status = window_status(rules, max(edge.at, now))
            notice = Notice(
                kind=FREEZE_EDGE,
                gate_id=gate.id,
                target=Target.to_channel(gate.channel),
                payload={
                    "gate": gate.name,
                    "starts": edge.kind == "start",
                    "reason": edge.freeze.reason,
                    "at": format_instant(edge.at, rules.zone),
                    "status": status.describe(),
                },
                key=notice_key(FREEZE_EDGE, gate.id, edge.key),
                created_at=now,
            )
            claim = Claim(unit=edge.key, change=Emit(gate.id, [notice]))
            tick.add(edge.key, await self.store.claim(claim))
        return tick

    async def prelaunch_tick(self, gate_id: str) -> Tick:
        return await retried(self._prelaunch_once, gate_id)

    async def _prelaunch_once(self, gate_id: str) -> Tick:
        tick = Tick()
        gate = self.releases.gates.get(gate_id).gate
        offsets = gate.prelaunch.before if gate.prelaunch is not None else list(DEFAULT_PRELAUNCH)
        open_id = await self.releases.store.open_release_id(gate_id)
        release = await self.releases.store.get_release(open_id) if open_id else None
        if release is None or release.state is not State.OPEN or release.target_at is None or not offsets:
            return tick
        now = self.clock()
        post = prelaunch_due(release.target_at, now, offsets)
        if post is None:
            return tick
        offset = _offset(post.before)
        unit = f"prelaunch|{offset}"
        claimed = await self.store.claimed(release.id)
        if unit in claimed:
            # Posted already, for this target time or an earlier one (a posted offset without `pl|`
            # was posted by an older version, for this target). A target moved since gets the
            # offset again only when its new moment is more than half the offset after that post
            # (postponed by a day: "ships in 24h" again; by 30 minutes: not repeated).
            raw = (await self.store.facts(release.id)).get(f"pl|{offset}")
            last = json.loads(raw) if raw else {"target": _iso(release.target_at), "at": _iso(post.at)}
            stale = post.at > datetime.fromisoformat(last["at"]) + post.before / 2
            if last["target"] == _iso(release.target_at) or not stale:
                return tick
            unit = f"prelaunch|{offset}|{_iso(release.target_at)}"
            if unit in claimed:
                return tick
        state = await self.releases.state(release)
        zone = gate.reminders.working_time(None).zone if gate.reminders else zone_of("UTC")
        notice = Notice(
            kind=PRELAUNCH,
            gate_id=gate.id,
            release_id=release.id,
            target=Target.to_channel(release.card_channel or gate.channel),
            payload={
                **_about(gate, release, state.decision),
                "before": _offset(post.before),
                "target": format_instant(release.target_at, zone),
                "checklist": list(gate.prelaunch.checklist) if gate.prelaunch else [],
            },
            key=notice_key(PRELAUNCH, release.id, *unit.split("|")[1:]),
            created_at=now,
        )
        audit = AuditEvent(type="prelaunch_posted", actor="gonogo", at=now, data={"before": offset})
        writes = [Write("set", f"pl|{offset}", json.dumps({"target": _iso(release.target_at), "at": _iso(now)}))]
        claim = Claim(unit=unit, change=Emit(gate.id, [notice]), writes=writes, audit=audit)
        tick.add(unit, await self.store.claim(claim, release))
        return tick

    # --- re-checks and post-deploy verification ---------------------------------------------------

    async def _open_release(self, gate_id: str) -> Release | None:
        open_id = await self.releases.store.open_release_id(gate_id)
        return await self.releases.store.get_release(open_id) if open_id else None

    async def recheck_tick(self, gate_id: str) -> Tick:
        return await retried(self._recheck_once, gate_id)

    async def _recheck_once(self, gate_id: str) -> Tick:
        """The current slot of `recheck.every` since the release opened: claimed once, then the
        checks run through the release's run lock (a run under way: the slot counts as done). Posts
        in the card's thread only when the verdict changed.

        The slot's claim also writes `rc|<n>` (the verdict before it): a pending fact that stays
        until the slot is settled, by whichever replica sees its run recorded first (the post, if
        the verdict changed, and the fact's removal are one claim). A replica that dies after the
        run and before the post leaves the post to the next tick; one that dies before its run
        leaves the run to it (docs/scheduling.md)."""
        tick = Tick()
        gate = self.releases.gates.get(gate_id).gate
        release = await self._open_release(gate_id)
        if gate.recheck is None or release is None:
            return tick
        if release.state is State.DECIDED and gate.recheck.until == "closed":
            return await self._recheck_decided(gate, release, tick)
        if release.state is not State.OPEN:
            return tick
        series = recheck_series(release.opened_at, gate.recheck.every)
        facts = await self.store.facts(release.id)
        for name in sorted((k for k in facts if k.startswith(RECHECK_PENDING)), key=lambda k: int(k.split("|")[1])):
            pending = json.loads(facts[name])
            await self._settle_recheck(gate, release, series, int(name.split("|")[1]), pending, tick)
        now = self.clock()
        due = series.current(now)
        if due is None or f"recheck|{due.number}" in await self.store.claimed(release.id):
            return tick
        before = (await self.releases.state(release)).decision.verdict
        unit = f"recheck|{due.number}"
        audit = AuditEvent(type="recheck", actor=SCHEDULED_ACTOR, at=now, data={"slot": due.number})
        pending = {"before": before.value, "at": _iso(now)}
        writes = [Write("set", f"{RECHECK_PENDING}{due.number}", json.dumps(pending))]
        outcome = await self.store.claim(Claim(unit=unit, change=Emit(gate.id), writes=writes, audit=audit), release)
        tick.add(unit, outcome)
        if outcome == "claimed":
            await self._run_recheck(gate, release, series, due.number, pending, tick)
        return tick

    async def _run_recheck(
        self, gate: Gate, release: Release, series: Series, number: int, pending: dict[str, str], tick: Tick
    ) -> None:
        try:
            await self.releases.run_and_wait(release, SCHEDULED_ACTOR)
        except Conflict as exc:  # a run is under way (or the release moved on): it stands for this slot
            log.info("re-check skipped: a run is under way", extra={"release": release.id, "why": str(exc)})
            await self._recheck_settled(gate, release, number, None, None, tick)
            return
        await self._settle_recheck(gate, release, series, number, pending, tick, rerun=False)

    async def _settle_recheck(
        self,
        gate: Gate,
        release: Release,
        series: Series,
        number: int,
        pending: dict[str, str],
        tick: Tick,
        *,
        rerun: bool = True,
    ) -> None:
        """Settle slot `number` from the first scheduled run that started inside it after its claim:
        post if its verdict differs from the one before. Without such a run: wait while a run
        holds the lock or the claimer may still be starting it; re-run it when its claimer died
        (RECHECK_GRACE after the claim, lock free); give up once the next slot is due (it runs
        anyway)."""
        claimed_at = datetime.fromisoformat(pending["at"])
        end = series.at(number + 1)
        runs = await self.releases.store.runs(release.id, count=RECHECK_RUNS_LOOKED_AT)
        ours = [r for r in runs if r.actor == SCHEDULED_ACTOR and claimed_at <= r.started_at < end]
        if ours:
            record = min(ours, key=lambda r: r.started_at)
            await self._recheck_settled(gate, release, number, Verdict(pending["before"]), record.verdict, tick)
            return
        now = self.clock()
        if not rerun or await self.releases.store.current_run(release.id) is not None:
            return  # the run is under way (or just refused): the next tick settles it
        if now >= end:
            await self._recheck_settled(gate, release, number, None, None, tick)  # the next slot re-checks
        elif now - claimed_at >= RECHECK_GRACE:
            log.info("re-check slot claimed but not run: running it", extra={"release": release.id, "slot": number})
            await self._run_recheck(gate, release, series, number, pending, tick)

    async def _recheck_settled(
        self,
        gate: Gate,
        release: Release,
        number: int,
        before: Verdict | None,
        after: Verdict | None,
        tick: Tick,
        writes: Sequence[Write] = (),
        **extra: Any,
    ) -> None:
        """Settle re-check slot `number` in one claim: its writes, and the thread's post when the
        verdict went from `before` to another `after`."""
        notices = []
        if before is not None and after is not None and before != after:
            payload = {"release": release.id, "before": before.value, "after": after.value, "slot": number, **extra}
            notices.append(
                Notice(
                    kind=RECHECK_CHANGED,
                    gate_id=gate.id,
                    release_id=release.id,
                    target=Target.to_card_thread(),
                    payload=payload,
                    key=notice_key(RECHECK_CHANGED, release.id, str(number)),
                    created_at=self.clock(),
                )
            )
        unit = f"recheck-settled|{number}"
        writes = [*writes, Write("del", f"{RECHECK_PENDING}{number}")]
        claim = Claim(unit=unit, change=Emit(gate.id, notices), writes=writes)
        # The run itself moved the release (its card): this settles that run, whatever came after.
        tick.add(unit, await self.store.claim(claim, release, unless_moved=False))

    async def _recheck_decided(self, gate: Gate, release: Release, tick: Tick) -> Tick:
        """`until: closed` on a decided release: its decision is frozen, so the checks run without
        being stored, and the thread hears only when they would now decide otherwise than the last
        time it was told (at first: than the decision). The decision itself never changes."""
        assert gate.recheck is not None
        decided = release.decided_verdict or release.last_verdict
        now = self.clock()
        due = recheck_series(release.opened_at, gate.recheck.every).current(now)
        if decided is None or due is None or f"recheck|{due.number}" in await self.store.claimed(release.id):
            return tick
        unit = f"recheck|{due.number}"
        audit = AuditEvent(type="recheck", actor=SCHEDULED_ACTOR, at=now, data={"slot": due.number, "frozen": True})
        outcome = await self.store.claim(Claim(unit=unit, change=Emit(gate.id), audit=audit), release)
        tick.add(unit, outcome)
        if outcome != "claimed":
            return tick
        results = await self._run_unrecorded(gate, release, [c.id for c in gate.checks])
        would = (await self.releases.state(release, overlay={r.check_id: r for r in results})).decision
        told = Verdict((await self.store.facts(release.id)).get(RECHECK_FROZEN, decided.value))
        # What the checks would decide now, and the post saying so, in one step. A replica dying
        # before it loses nothing: the next slot compares with the same `told` and posts then.
        blocking = [r.text for r in would.blocking][:8]
        frozen = [Write("set", RECHECK_FROZEN, would.verdict.value)]
        await self._recheck_settled(
            gate, release, due.number, told, would.verdict, tick, frozen, decided=decided.value, blocking=blocking
        )
        return tick

    async def _run_unrecorded(self, gate: Gate, release: Release, check_ids: Sequence[str]) -> list[CheckResult]:
        """Run some of the gate's checks on the release's commit without storing them as its evidence
        (a decided release is frozen): post-deploy runs and re-checks after the decision."""
        specs = [c for c in gate.checks if c.id in set(check_ids)]
        ctx = CheckContext(
            session=self.releases.session, env=self.releases.env, clock=self.releases.clock, sha=release.sha
        )
        results = await run_checks(specs, ctx, masker=self.releases.masker)
        return [r.model_copy(update={"sha": release.sha}) for r in results]

    async def postdeploy_tick(self, gate_id: str) -> Tick:
        return await retried(self._postdeploy_once, gate_id)

    async def _postdeploy_once(self, gate_id: str) -> Tick:
        """After `decide` with GO, or once a deploy reported over the webhook reached 100%: the
        listed checks on `postdeploy.every` for `postdeploy.for`, each slot once. Results are not
        the release's (a decided release is frozen): they are counted in its schedule facts. Posts
        only on failure, and once at the end with the tally.

        Where the window starts: the deploy reaching 100% when one was reported (that is when the
        code is live everywhere), else the GO decision. A deploy after a GO restarts the window
        from the deploy, as its own series (units and tallies tagged `deploy|`), so the slots the
        GO's series already claimed do not swallow it.

        A slot's claim leaves a lease (`pd-run|<n>`); its outcome (and its failure post) is one
        claim that removes it. A slot whose lease expired without an outcome (its replica died) is
        taken over by the next tick, up to POSTDEPLOY_TRIES times, then counted as missed: the
        summary waits until every claimed slot has an outcome, so its tally is true."""
        tick = Tick()
        gate = self.releases.gates.get(gate_id).gate
        release = await self._open_release(gate_id)
        spec = gate.postdeploy
        if spec is None or release is None or release.state not in (State.OPEN, State.DECIDED):
            return tick
        facts = await self.store.facts(release.id)
        deployed = _when(facts.get(FULLY_DEPLOYED))
        decided_go = release.decided_verdict is Verdict.GO and release.state is State.DECIDED
        start = deployed or (release.decided_at if decided_go else None)
        if start is None:
            return tick
        run = _PostdeployRun(
            gate, release, "deploy|" if deployed else "", postdeploy_series(start, spec.every, spec.duration)
        )
        now = self.clock()
        due = run.series.current(now)
        if due is None:
            return tick
        claimed = await self.store.claimed(release.id)
        # 1. Slots claimed by a replica that died: take them over once their lease expired.
        lease = max(2 * spec.every, POSTDEPLOY_MIN_LEASE)
        for name, raw in sorted(facts.items()):
            if not name.startswith(f"pd-run|{run.tag}") or (not run.tag and name.startswith("pd-run|deploy|")):
                continue
            number = int(name.rsplit("|", 1)[1])
            taken = json.loads(raw)
            if f"pd|{run.tag}{number}" in facts or now - datetime.fromisoformat(taken["at"]) < lease:
                continue
            tries = int(taken["try"]) + 1
            if tries > POSTDEPLOY_TRIES:
                unit = f"postdeploy-lost|{run.tag}{number}"
                writes = [Write("set", f"pd|{run.tag}{number}", LOST), Write("del", name)]
                tick.add(unit, await self.store.claim(Claim(unit, Emit(gate.id), writes), release))
                continue
            unit = f"postdeploy|{run.tag}{number}|try{tries}"
            writes = [Write("set", name, json.dumps({"at": _iso(now), "try": tries}))]
            outcome = await self.store.claim(Claim(unit, Emit(gate.id), writes), release)
            tick.add(unit, outcome)
            if outcome == "claimed":
                log.info("post-deploy slot claimed but not run: running it", extra={"release": release.id})
                await self._postdeploy_run(run, number, tick)
        # 2. The current slot.
        unit = f"postdeploy|{run.tag}{due.number}"
        if unit not in claimed:
            writes = [Write("set", f"pd-run|{run.tag}{due.number}", json.dumps({"at": _iso(now), "try": 1}))]
            outcome = await self.store.claim(Claim(unit, Emit(gate.id), writes), release)
            tick.add(unit, outcome)
            if outcome == "claimed":
                await self._postdeploy_run(run, due.number, tick)
        # 3. The summary, once the series is over and no claimed slot is still running.
        if due.number == run.series.total and f"postdeploy|{run.tag}summary" not in claimed:
            await self._postdeploy_summary(run, tick)
        return tick

    async def _postdeploy_run(self, run: _PostdeployRun, number: int, tick: Tick) -> None:
        gate, release, spec = run.gate, run.release, run.gate.postdeploy
        assert spec is not None
        results = await self._run_unrecorded(gate, release, spec.checks)
        failed = sorted(r.check_id for r in results if r.status not in (Status.PASS, Status.WARN))
        notices = []
        if failed:
            summaries = {r.check_id: r.summary for r in results if r.check_id in failed}
            notices.append(
                Notice(
                    kind=POSTDEPLOY_FAILED,
                    gate_id=gate.id,
                    release_id=release.id,
                    target=Target.to_channel(gate.channel),
                    payload={**run.about, "slot": number, "failed": failed, "summaries": summaries},
                    key=notice_key(POSTDEPLOY_FAILED, release.id, f"{run.tag}{number}"),
                    created_at=self.clock(),
                )
            )
        # The outcome, its failure post and the end of the lease in one step: the first run of the
        # slot to finish counts (a takeover racing a slow original cannot count it twice).
        unit = f"postdeploy-done|{run.tag}{number}"
        writes = [
            Write("set", f"pd|{run.tag}{number}", ",".join(failed) or "ok"),
            Write("del", f"pd-run|{run.tag}{number}"),
        ]
        tick.add(unit, await self.store.claim(Claim(unit, Emit(gate.id, notices), writes), release, unless_moved=False))

    async def _postdeploy_summary(self, run: _PostdeployRun, tick: Tick) -> None:
        facts = await self.store.facts(run.release.id)

        def ours(prefix: str) -> list[str]:
            return [
                k
                for k in facts
                if k.startswith(f"{prefix}{run.tag}") and (run.tag or not k.startswith(f"{prefix}deploy|"))
            ]

        if ours("pd-run|"):
            return  # a slot is still running (or its lease has yet to expire): the tally would lie
        outcomes = [facts[k] for k in ours("pd|")]
        runs = [o for o in outcomes if o != LOST]
        notice = Notice(
            kind=POSTDEPLOY_SUMMARY,
            gate_id=run.gate.id,
            release_id=run.release.id,
            target=Target.to_channel(run.gate.channel),
            payload={**run.about, "runs": len(runs), "green": runs.count("ok"), "slots": run.series.total},
            key=notice_key(POSTDEPLOY_SUMMARY, run.release.id, *([run.tag.rstrip("|")] if run.tag else [])),
            created_at=self.clock(),
        )
        unit = f"postdeploy|{run.tag}summary"
        tick.add(unit, await self.store.claim(Claim(unit=unit, change=Emit(run.gate.id, [notice])), run.release))


@dataclass(frozen=True)
class _PostdeployRun:
    """One post-deploy series of a release: `tag` tells a deploy's series from a GO's."""

    gate: Gate
    release: Release
    tag: str
    series: Series

    @property
    def about(self) -> dict[str, Any]:
        spec = self.gate.postdeploy
        assert spec is not None
        return {
            "release": self.release.id,
            "gate": self.gate.name,
            "every": _offset(spec.every),
            "for": _offset(spec.duration),
        }


def _unanswered(facts: dict[str, str], field: str) -> int:
    """Reminders to one person in the current ask: those sent since they were (again) waited on."""
    raw = facts.get(f"sent|{field}")
    since = _when(facts.get(f"since|{field}"))
    if raw is None or since is None:
        return 0
    sent = json.loads(raw)
    at = _when(sent.get("at"))
    return int(sent.get("ask", sent["n"])) if at is not None and at >= since else 0


def _offset(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


def _about(gate: Gate, release: Release, decision: Decision | None) -> dict[str, Any]:
    """What every scheduled notice about a release says: which, where its card is, and why now."""
    about: dict[str, Any] = {
        "release": release.id,
        "gate": gate.name,
        "sha": release.sha or "",
        "card": permalink(release.card_channel, release.card_ts),
    }
    if decision is not None:
        about["verdict"] = decision.verdict.value
        about["blocking"] = [r.text for r in decision.blocking][:8]
    return about
