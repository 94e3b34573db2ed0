"""The release service: what `/gonogo` and the buttons do, independent of how Slack calls it.

Handlers stay thin: they ack, call one method here, and render the answer. This layer loads
state from the store and asks the pure decision engine; it does not talk to Slack. What a change
wants said goes to the gate's outbox as notices, and the card is marked dirty: the deliverer and
the card refresher (bot/slack/) post them (docs/delivery.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import aiohttp

from bot.core.decision import Decision, Level, Reason, Verdict, decide
from bot.core.drills import OperationLease
from bot.core.errors import Conflict, NotFound, Restarting, StoreUnavailable, UsageError
from bot.core.facts import ManualMark, passing_blockers
from bot.core.gateset import GateSet
from bot.core.loader import LoadedGate
from bot.core.masking import Masker
from bot.core.mentions import mention
from bot.core.notices import Notice, Target, notice_key
from bot.core.release import Release, RunLease, RunRecord, State, check_sha, parse_release_id, release_id
from bot.core.results import CheckResult, Status, split_by_commit
from bot.core.stages import Ladder, decide_stages
from bot.core.thread_notices import FOLD_AT, conditions_listing, run_details, stale_signers, stale_token
from bot.metrics import Metrics
from bot.services.people import People, load_people, with_external_results, with_manual_marks
from bot.services.runner import run_checks
from bot.store.gatestore import GateStore
from bot.store.outbox import Emit
from bot.store.store import AuditEvent, Fact, StaleAsk, Store
from checks.base import CheckContext

log = logging.getLogger("gonogo.service")

LOCK_TTL_MS = 30_000
LOCK_RENEW_S = 10.0
# A run rides out a state store that stops answering for this long (probing it every STORE_PROBE_S),
# then stops: its results could not be recorded, and its lease could not be kept.
STORE_GRACE_S = 3.0
STORE_PROBE_S = 0.5
# A run that ended while the store was away is recorded in the background, retried this often.
RECORD_RETRY_S = (0.5, 10.0)  # first delay, longest delay (doubling in between)
# Handler work after the ack, at most this many at once: acks (Slack's 3 s deadline) stay fast while
# replies queue. bench/ack_latency.py: 16 slots gave a p99 ack ratio of 1.35-1.65 vs a bare Bolt
# app, 4 slots 0.93-1.43, with the reply itself 225-305 ms at p50.
WORK_SLOTS = 4
HANDLER_DRAIN_S = 5.0  # handlers answer within ~2 s (commands/replies.py); SIGTERM waits this long
RUN_STOP_S = 5.0  # a run asked to stop posts its final card and record within this

CARD_WAIT_S = 1.0  # an answer waits this long at most for the card to show the change it answers
CARD_POLL_S = 0.05
# The last resort of a run whose store went away: show its final card directly (channel, ts, the
# state to draw), since no dirty mark can be written. Injected by the server (bot/slack/release_cards.py);
# it renders and talks to Slack, this module does not.
OfflineCard = Callable[[str, str, "ReleaseState"], Coroutine[Any, Any, None]]


class Rendered(Protocol):
    """A message a pure renderer built (bot/slack/blocks.py Message), for the generic kinds."""

    @property
    def text(self) -> str: ...

    @property
    def blocks(self) -> list[dict[str, Any]]: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


class HandlerWork:
    """Handler work after the ack: at most `slots` at once (acks, due within Slack's 3 s, stay fast
    while replies queue), and counted, so SIGTERM can let it finish before closing Redis."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._slots = asyncio.Semaphore(slots)
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def tracked(self) -> AsyncIterator[None]:
        self.active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.active -= 1
            if not self.active:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def slot(self, deadline: float | None = None) -> AsyncIterator[bool]:
        """A work slot, waiting until the loop time `deadline` at most: yields whether it got one."""
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            yield False
            return
        try:
            yield True
        finally:
            self._slots.release()

    @property
    def busy(self) -> bool:
        """Handlers are queued for a slot: answer now rather than wait for the card (it converges)."""
        return self.active > self.slots

    async def wait_idle(self, within: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True


@dataclass
class RunControl:
    """One run in flight: why it stopped early (if it did), and the store trouble it rides out."""

    reason: str | None = None
    checks: asyncio.Task[list[CheckResult]] | None = None
    fault_since: float | None = None  # monotonic time the store stopped answering
    fault: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self.checks is not None:
            self.checks.cancel()  # command checks kill their process groups on the way out

    def store_failed(self) -> None:
        if self.fault_since is None:
            self.fault_since = time.monotonic()
        self.fault.set()

    def store_answered(self) -> None:
        self.fault_since = None
        self.fault.clear()


@dataclass
class FinishedRun:
    """What a run leaves to record: kept in memory until the store has it all."""

    release: Release
    lease: RunLease
    results: dict[str, CheckResult]  # this run's results, the unfinished checks' ⚠️ included
    unsaved: dict[str, CheckResult]  # those the store does not have yet
    reason: str | None  # why the run stopped early; None when every check finished
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def _log_failure(task: asyncio.Task[Any]) -> None:
    """Background work nobody awaits any more (e.g. a card update its handler gave up on)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task failed", extra={"task": task.get_name(), "error": repr(task.exception())})


PROCESS_DIED = "gonogo stopped before it finished (its process died): run the checks again"


def unfinished_result(
    check_id: str, reason: str, started: datetime, now: datetime, *, sha: str | None = None, run_id: str | None = None
) -> CheckResult:
    """A check the run could not finish: ⚠️ error on the run's commit (it counts as not passing)."""
    return CheckResult(
        check_id=check_id,
        status=Status.ERROR,
        summary=f"not finished: {reason}",
        started_at=started,
        finished_at=now,
        sha=sha,
        run_id=run_id,
    )


@dataclass(frozen=True)
class ReleaseState:
    """Everything known about a release at one instant, and the verdict it implies."""

    loaded: LoadedGate
    release: Release
    results: dict[str, CheckResult]
    decision: Decision
    running: RunLease | None
    last_run: RunRecord | None
    people: People
    ladder: Ladder | None = None  # gates with rollout stages; `decision` is then the next stage's
    outdated: dict[str, CheckResult] = field(default_factory=dict)  # results of another commit


class ReleaseService:
    def __init__(
        self,
        *,
        store: Store,
        gates: GateSet,
        session: aiohttp.ClientSession,
        env: dict[str, str],
        concurrency: int = 16,
        clock: Callable[[], datetime] = utcnow,
        lease_ttl_ms: int = LOCK_TTL_MS,
        lease_renew_s: float = LOCK_RENEW_S,
        metrics: Metrics | None = None,
        offline_card: OfflineCard | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.gates = gates
        self.offline_card = offline_card
        self.session = session
        self.env = env
        self.masker = Masker.from_env(env)
        self.concurrency = concurrency
        self.clock = clock
        self.lease_ttl_ms = lease_ttl_ms
        self.lease_renew_s = lease_renew_s
        self._tasks: set[asyncio.Task[Any]] = set()
        self.work = HandlerWork(WORK_SLOTS)  # handler work after the ack, see commands/replies.py
        self._runs: dict[str, RunControl] = {}  # lease token -> the run in flight
        self._unrecorded: dict[str, FinishedRun] = {}  # lease token -> a run the store has not got yet
        self.accepting_runs = True

    # --- background work that SIGTERM drains ----------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self, grace_s: float) -> None:
        """SIGTERM: let handlers answer, let runs finish for `grace_s`, then stop the rest, each
        with its final card (⚠️ for what did not finish), record and lock released."""
        if not await self.work.wait_idle(HANDLER_DRAIN_S):
            log.warning("handlers still busy at shutdown", extra={"handlers": self.work.active})
        self.accepting_runs = False  # a handler that got in before the drain may have started one
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for control in list(self._runs.values()):
            control.stop("gonogo restarted before it finished: run the checks again")
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=RUN_STOP_S)
            for task in pending:  # the last resort: a run that could not even stop
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        for left in self._unrecorded.values():
            log.error(
                "run not recorded: the state store never came back",
                extra={"release": left.release.id, "run_id": left.lease.token[:12]},
            )

    # --- resolving what the user typed ----------------------------------------------------

    async def resolve(self, text: str) -> Release:
        """A release id (`payments@1.4.0`) or a gate id (its open release)."""
        if "@" in text:
            gate_id, _ = parse_release_id(text)
            self.gates.get(gate_id)
            found = await self.store.get_release(text)
            if found is None:
                raise NotFound(f"no release {text!r}: open it with `/gonogo open {gate_id} <version>`")
            return found
        self.gates.get(text)
        open_id = await self.store.open_release_id(text)
        if open_id is None:
            raise NotFound(f"gate {text!r} has no open release: `/gonogo open {text} <version>`")
        found = await self.store.get_release(open_id)
        if found is None:
            raise NotFound(f"release {open_id!r} is missing from the store")
        return found

    # --- opening --------------------------------------------------------------------------

    async def open(
        self, gate_id: str, version: str, sha: str | None, actor: str, *, target_at: datetime | None = None
    ) -> tuple[Release, bool]:
        """Open a release and post its card. Returns the release and whether it was opened now;
        an existing open release is returned as it is (moving it is `move_commit`, authorised by
        the caller)."""
        loaded = self.gates.get(gate_id)
        rid = release_id(gate_id, version)
        sha = check_sha(sha) if sha else None
        now = self.clock()
        fresh = Release(
            id=rid, gate_id=gate_id, version=version, sha=sha, opened_by=actor, opened_at=now, target_at=target_at
        )
        data = {"sha": sha, "gate_sha256": loaded.sha256, **({"target_at": target_at.isoformat()} if target_at else {})}
        event = AuditEvent(type="opened", actor=actor, at=now, data=data)
        outcome, found = await self.store.open_release(fresh, event, says=self.card_change(fresh, actor))
        if outcome == "conflict":
            raise Conflict(f"{found} is still open: close it first with `/gonogo close {found}`")
        assert isinstance(found, Release)
        if outcome == "closed":
            raise Conflict(f"{rid} was closed; reopen it with `/gonogo reopen {rid}`")
        if outcome == "exists":
            return found, False
        return await self.shown(found), True

    async def move_commit(self, release: Release, sha: str, actor: str) -> Release:
        """Move an open release to another commit (the caller has authorised `actor`): audited with
        the old and new SHA; results and sign-offs of the old commit stop counting."""
        sha = check_sha(sha)
        current = release
        for _ in range(5):
            if current.sha == sha:
                return current
            event = AuditEvent(type="sha_moved", actor=actor, at=self.clock(), data={"from": current.sha, "to": sha})
            moved = current.model_copy(update={"sha": sha})
            # The sign-offs the move makes stale are asked about in the move's own step.
            asks = self._stale_asks(await self.state(moved))
            card = self.card_change(current, actor)

            def says(asked: Sequence[StaleAsk], moved: Release = moved, card: Emit = card) -> Emit:
                notices = [self._stale_notice(moved, asked)] if asked else []
                return Emit(card.gate_id, notices=notices, card_of=card.card_of, at=card.at, actor=card.actor)

            stored = await self.store.move_release(current, moved, event, asks, says)
            if stored is not None:
                return await self.shown(stored)
            latest = await self.store.get_release(current.id)
            if latest is None:
                raise NotFound(f"release {current.id} disappeared")
            current = latest
        raise Conflict(f"{release.id} is being changed by someone else, try again")

    async def update_release(
        self,
        release: Release,
        change: Callable[[Release], Release],
        event: AuditEvent | None,
        *,
        expect: Collection[State] = (),
        card_by: str | None = None,
    ) -> Release:
        """Compare-and-set with a few retries: concurrent writers (replicas) never lose updates.
        Each attempt re-checks, in the write itself, that the state is one of `expect`. With
        `card_by` (who made the change), the card is marked dirty in the same step."""
        current = release
        for _ in range(5):
            says = self.card_change(current, card_by) if card_by else None
            stored = await self.store.update_release(current, change(current), event, expect=expect, says=says)
            if stored is not None:
                return stored
            latest = await self.store.get_release(current.id)
            if latest is None:
                raise NotFound(f"release {current.id} disappeared")
            current = latest
        raise Conflict(f"{release.id} is being changed by someone else, try again")

    # --- state, decision, card ------------------------------------------------------------

    async def people(self, release_id: str) -> People:
        return await load_people(self.store, release_id)

    async def passing_blockers(self, release: Release) -> tuple[str, ...]:
        """What a signature is bound to: the blockers passing now on the release's commit. Two
        reads instead of the full state a card needs, since every sign-off click computes it."""
        gate = self.gates.get(release.gate_id).gate
        results, _ = split_by_commit(await self.store.results(release.id), release.sha)
        marks = await self.store.facts(Fact.MANUAL, release.id)
        merged = with_manual_marks(gate, results, {k: ManualMark.model_validate_json(v) for k, v in marks.items()})
        reported = await GateStore(self.store.redis).external_results(release.id)
        return passing_blockers(gate, with_external_results(gate, merged, reported, release.sha, self.clock()))

    async def state(self, release: Release, *, overlay: Mapping[str, CheckResult] | None = None) -> ReleaseState:
        """`overlay`: results decided on as if stored (a scheduled re-check of a decided release asks
        what the frozen decision would be with them, without storing them)."""
        loaded = self.gates.get(release.gate_id)
        # Only results of the release's commit count; the others are shown as such.
        stored = await self.store.results(release.id)
        results, outdated = split_by_commit({**stored, **(overlay or {})}, release.sha)
        running = await self.store.current_run(release.id)
        runs = await self.store.runs(release.id, count=1)
        people = await self.people(release.id)
        # A decided release is frozen: its facts cannot change, so deciding as of the decision
        # reproduces the recorded verdict (sign-offs and acceptances do not expire on the card).
        frozen_at = release.decided_at if release.state is State.DECIDED else None
        at = frozen_at or self.clock()
        merged = people.results_for(loaded.gate, results, release.sha, at)
        inp = people.decision_input(loaded.gate, at, merged, release.sha)
        ladder = None
        if loaded.gate.stages:
            ladder = decide_stages(inp, current=release.current_stage, reached=release.stages_reached)
            decision = ladder.target.decision
        else:
            decision = decide(inp)
        return ReleaseState(
            loaded=loaded,
            release=release,
            results=merged,
            decision=decision,
            running=running,
            last_run=runs[0] if runs else None,
            people=people,
            ladder=ladder,
            outdated={k: r for k, r in outdated.items() if k not in merged},
        )

    async def publish_card(self, release: Release, *, repost: bool = False, actor: str | None = None) -> Release:
        """Show the card again, with no change to join (a refresh button, `status` here): mark it
        dirty, and the card refresher posts it (the first time) or updates it in place, rendering
        the state as it is then. `repost`: a new card at the bottom of the channel; the old one
        becomes a pointer to it (bot/slack/release_cards.py). A state change marks its card in its
        own write instead (`card_change`), then waits with `shown`."""
        if repost and release.card_ts:
            channel = release.card_channel or self.gates.get(release.gate_id).gate.channel
            await self.store.repost_card(release.id, channel, release.card_ts)
        await self.mark_card(release, actor)
        return await self.shown(release)

    def card_change(self, release: Release, actor: str | None) -> Emit:
        """The dirty mark a change of `release` writes in its own atomic step (docs/delivery.md); the
        actor is told to invite the bot if the card cannot be posted (bot/slack/refresher.py)."""
        return Emit(release.gate_id, card_of=release.id, at=self.clock(), actor=actor)

    async def shown(self, release: Release) -> Release:
        """After a change that marked its card: wait (briefly) for the card to show it, and return
        the release as stored then (the refresher records where a first card went)."""
        await self.card_caught_up(release)
        try:
            return await self.store.get_release(release.id) or release
        except StoreUnavailable:
            return release

    async def card_caught_up(self, release: Release, within: float = CARD_WAIT_S) -> bool:
        """Wait (briefly) for the card on Slack to show what is written now, so the person who acted
        is answered after the card shows it. False when it did not within `within` (it will).

        Never raises: the change is written, and a store that stops answering now (or a handler
        out of time) must not turn a done change into an error for the person who made it."""
        try:
            wanted, shown = await self.store.card_revisions(release.id)
            deadline = time.monotonic() + within
            while shown < wanted:
                if time.monotonic() >= deadline or self.work.busy:
                    return False
                await asyncio.sleep(CARD_POLL_S)
                _, shown = await self.store.card_revisions(release.id)
        except StoreUnavailable:
            return False
        return True

    async def mark_card(self, release: Release, actor: str | None = None) -> None:
        """The card is behind: the refresher renders it again from the current state."""
        await self.store.emit(self.card_change(release, actor))

    def card_thread(self, release: Release) -> Target:
        """The card's thread: known once the card was posted, else resolved when delivered."""
        if release.card_channel and release.thread_ts:
            return Target.to_thread(release.card_channel, release.thread_ts)
        return Target.to_card_thread()

    def notice(
        self,
        release: Release,
        kind: str,
        key: Sequence[str],
        payload: dict[str, Any],
        target: Target,
        actor: str | None = None,
    ) -> Notice:
        return Notice(
            kind=kind,
            gate_id=release.gate_id,
            release_id=release.id,
            target=target,
            payload=payload,
            key=notice_key(kind, release.id, *key),
            created_at=self.clock(),
            actor=actor,
        )

    async def say(self, release: Release, notices: Sequence[Notice], *, wait: bool = False) -> None:
        """Queue notices whose facts are written already (their keys make a repeat harmless). With
        `wait`, the person who acted is answered once they are posted, or after CARD_WAIT_S."""
        if notices:
            await self.store.emit(Emit(release.gate_id, notices=notices))
            if wait:
                await self.posted(release.gate_id, notices)

    async def posted(self, gate_id: str, notices: Sequence[Notice], within: float = CARD_WAIT_S) -> bool:
        """Wait (briefly) until the deliverer posted these notices; False if not yet (they will be).
        Never raises, like `card_caught_up`."""
        pending = [n.key for n in notices]
        deadline = time.monotonic() + within
        try:
            while pending := await self.store.undelivered(gate_id, pending):
                if time.monotonic() >= deadline or self.work.busy:
                    return False
                await asyncio.sleep(CARD_POLL_S)
        except StoreUnavailable:
            return False
        return True

    async def list_open(self) -> list[tuple[Release, Decision | None]]:
        return [(state.release, state.decision) for state in await self.list_open_states()]

    async def list_open_states(self) -> list[ReleaseState]:
        states: list[ReleaseState] = []
        for gate_id in self.gates.ids:
            open_id = await self.store.open_release_id(gate_id)
            release = await self.store.get_release(open_id) if open_id else None
            if release is not None:
                states.append(await self.state(release))
        return states

    # --- running checks -------------------------------------------------------------------

    async def start_run(self, release: Release, actor: str, check_ids: Sequence[str] = ()) -> RunLease:
        """Take the release's run lock and run in the background. Conflict if a run is under way, or
        the release is not open (checked again when the lock is taken: a decided release is frozen)."""
        lease = await self._take_run_lock(release, actor, check_ids)
        self.spawn(self._run(release, lease), name=f"run:{release.id}")
        return lease

    async def run_and_wait(self, release: Release, actor: str) -> RunRecord | None:
        """A scheduled re-check: the same lock as a manual run (Conflict if one is under way), awaited
        so the scheduler can compare verdicts. Drained on SIGTERM like any run."""
        lease = await self._take_run_lock(release, actor, ())
        record: RunRecord | None = await self.spawn(self._run(release, lease), name=f"recheck:{release.id}")
        return record

    async def _take_run_lock(self, release: Release, actor: str, check_ids: Sequence[str]) -> RunLease:
        if not self.accepting_runs:
            raise Restarting()
        if release.state is not State.OPEN:
            raise release.refusal()
        loaded = self.gates.get(release.gate_id)
        known = [c.id for c in loaded.gate.checks]
        unknown = [c for c in check_ids if c not in known]
        if unknown:
            raise UsageError(
                f"unknown check {', '.join(unknown)} in gate {loaded.gate.id} (checks: {', '.join(known)})"
            )
        chosen = list(dict.fromkeys(check_ids)) or known
        lease = RunLease(token=secrets.token_hex(16), actor=actor, started_at=self.clock(), check_ids=chosen)
        says = self.card_change(release, actor)
        held = await self.store.acquire_run_lock(release.id, lease, self.lease_ttl_ms, says=says)
        if held is not None:
            holder, ttl_ms = held
            free_at = f"{self.clock() + timedelta(milliseconds=max(ttl_ms, 0)):%H:%M:%S} UTC"
            if isinstance(holder, OperationLease):  # the gate's fire drill or rollback
                raise Conflict(f"{holder.busy(release.gate_id)} (its lease expires at {free_at} at the latest)")
            ended = self._unrecorded.get(holder.token)
            if ended is not None:  # ours, ended while the store was away: record it now
                ended.wake.set()
                raise Conflict(
                    f"the last run of {release.id} was interrupted ({ended.reason or 'the state store was away'})"
                    f" and is being recorded: run again in a few seconds, at the latest after {free_at}"
                )
            raise Conflict(
                f"checks of {release.id} are already running (started by {mention(holder.actor)}); "
                f"the card updates when they finish. If that run was interrupted, the next run is possible"
                f" after {free_at}, when its lease expires"
            )
        return lease

    async def _run(self, release: Release, lease: RunLease) -> RunRecord | None:
        """Run the checks, then always end with a final card: a run that stops early (lost lease,
        store gone, SIGTERM, a bug) shows ⚠️ for what did not finish, and is recorded once the
        store answers again."""
        loaded = self.gates.get(release.gate_id)
        specs = [c for c in loaded.gate.checks if c.id in set(lease.check_ids)]
        updater = CardUpdater(self, release)
        control = RunControl()
        self._runs[lease.token] = control
        results: dict[str, CheckResult] = {}
        unsaved: dict[str, CheckResult] = {}
        keeper = asyncio.create_task(self._keep_lease(release.id, lease, control, unsaved))

        kinds = {spec.id: spec.kind for spec in specs}

        async def on_result(result: CheckResult) -> None:
            if self.metrics is not None:
                kind = kinds.get(result.check_id, "unknown")
                self.metrics.check_results.labels(kind=kind, status=result.status.value).inc()
            # Evidence belongs to the commit the run was started for, and to this run.
            result = result.model_copy(update={"sha": release.sha, "run_id": lease.token[:12]})
            results[result.check_id] = result
            unsaved[result.check_id] = result
            if control.reason is None:
                try:
                    await self.store.save_result(release.id, result, at=self.clock())
                except StoreUnavailable:
                    control.store_failed()
                else:
                    unsaved.pop(result.check_id, None)

        try:
            await updater.flush()  # ⏳ on the card at once
            ctx = CheckContext(session=self.session, env=self.env, clock=self.clock, sha=release.sha)
            control.checks = asyncio.create_task(
                run_checks(specs, ctx, masker=self.masker, concurrency=self.concurrency, on_result=on_result)
            )
            await asyncio.wait({control.checks})
            crash = None if control.checks.cancelled() else control.checks.exception()
            if crash is not None:
                raise crash
        except asyncio.CancelledError:  # SIGTERM's last resort: still leave a final card
            control.stop("gonogo stopped before it finished: run the checks again")
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("run failed", extra={"release": release.id, "ref": ref})
            control.stop(f"the run failed on our side (ref {ref})")
        finally:
            keeper.cancel()
            if control.checks is not None and not control.checks.done():
                await asyncio.wait({control.checks}, timeout=RUN_STOP_S)
            self._runs.pop(lease.token, None)

        now = self.clock()
        if control.reason is not None:
            for spec in specs:
                if spec.id not in results:
                    results[spec.id] = unsaved[spec.id] = unfinished_result(
                        spec.id, control.reason, lease.started_at, now, sha=release.sha, run_id=lease.token[:12]
                    )
        finished = FinishedRun(release, lease, results, unsaved, control.reason)
        try:
            return await self._record_run(finished, updater)
        except StoreUnavailable:
            log.error("state store unavailable at the end of a run", extra={"release": release.id})
            await self._final_card_offline(finished, updater, "the state store stopped answering")
            self._unrecorded[lease.token] = finished
            self.spawn(self._record_later(finished, updater.release), name=f"record:{release.id}")
            return None
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("could not finish a run", extra={"release": release.id, "ref": ref})
            await self._final_card_offline(finished, updater, f"the run failed on our side (ref {ref})")
            with contextlib.suppress(StoreUnavailable):
                await self.store.release_run_lock(release.id, lease.token)
            return None

    async def _record_run(self, finished: FinishedRun, updater: CardUpdater) -> RunRecord:
        """Store what the run left (idempotent: the background recorder repeats it until it
        succeeds), release the lock, record the run, and draw the final card."""
        release, lease = finished.release, finished.lease
        loaded = self.gates.get(release.gate_id)
        holder = await self.store.current_run(release.id)
        if holder is None or holder.token == lease.token:
            for check_id, result in list(finished.unsaved.items()):
                await self.store.save_result(release.id, result)
                finished.unsaved.pop(check_id, None)
        else:
            # Another run took over the release: its results are the ones that count.
            finished.unsaved.clear()
        await self.store.release_run_lock(release.id, lease.token)
        state = await self.state(await self.store.get_release(release.id) or release)
        end = self.clock()
        record = RunRecord(
            run_id=lease.token[:12],
            release_id=release.id,
            actor=lease.actor,
            started_at=lease.started_at,
            finished_at=end,
            check_ids=lease.check_ids,
            verdict=state.decision.verdict,
            counts=dict(Counter(r.status.value for r in finished.results.values())),
            interrupted=finished.reason,
        )
        data: dict[str, Any] = {
            "run_id": record.run_id,
            "checks": record.check_ids,
            "verdict": record.verdict.value,
            "counts": record.counts,
            "duration_s": round(record.duration_s, 3),
        }
        if finished.reason:
            data["interrupted"] = finished.reason
        # What the run's end says goes with its record, in one step (written once, with the record):
        # the details of what did not pass, the listings of what the card folds, and the re-asks of
        # sign-offs the run made stale. The card is marked dirty with it.
        current, target = state.release, self.card_thread(state.release)
        said = [
            *run_details(
                loaded.gate,
                release.id,
                target,
                record.run_id,
                list(finished.results.values()),
                await self.store.results(release.id) if len(loaded.gate.checks) > FOLD_AT else {},
                end,
            ),
            *conditions_listing(loaded.gate, release.id, target, state.ladder, f"run-{record.run_id}", end),
        ]

        def says(asked: Sequence[StaleAsk]) -> Emit:
            notices = [*said, *([self._stale_notice(current, asked)] if asked else [])]
            return Emit(release.gate_id, notices=notices, card_of=release.id, at=end, actor=lease.actor)

        event = AuditEvent(type="run", actor=lease.actor, at=end, data=data)
        first = await self.store.record_run(record, event, says=says, stale=self._stale_asks(state))
        if first and self.metrics is not None:  # once per run, not per retry of the background recorder
            self.metrics.runs.labels(verdict=record.verdict.value).inc()
            self.metrics.run_seconds.observe(record.duration_s)
        current = await self.update_release(
            current, lambda r: r.model_copy(update={"last_verdict": record.verdict}), None, card_by=lease.actor
        )
        updater.release = current
        self._unrecorded.pop(lease.token, None)
        return record

    async def _record_later(self, finished: FinishedRun, release: Release) -> None:
        """The store was away when the run ended: keep retrying, with backoff, until it has it all."""
        delay, longest = RECORD_RETRY_S
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wake.wait(), delay)
            finished.wake.clear()
            try:
                await self._record_run(finished, CardUpdater(self, release))
            except StoreUnavailable:
                delay = min(delay * 2, longest)
                continue
            except Exception:
                log.exception("could not record a run", extra={"release": release.id})
                self._unrecorded.pop(finished.lease.token, None)
                return
            log.info("run recorded after the state store came back", extra={"release": release.id})
            return

    async def _final_card_offline(self, finished: FinishedRun, updater: CardUpdater, why: str) -> None:
        """The final card without the store: the last state the run saw, this run's results on
        top, running no more, and never GO (this run is not recorded, so nothing is known)."""
        await updater.stop()
        last, release = updater.last_state, updater.release
        if last is None or not release.card_ts:
            log.warning("no card to finish", extra={"release": release.id})
            return
        now = self.clock()
        gate = last.loaded.gate
        merged = with_manual_marks(gate, {**last.results, **finished.results}, last.people.marks)
        try:
            decision = decide(last.people.decision_input(gate, now, merged, release.sha))
        except Exception:
            log.exception("could not decide on the final card", extra={"release": release.id})
            decision = last.decision
        unknown = Reason(
            level=Level.BLOCKING,
            code="run_not_recorded",
            text=f"{why}: this run is not recorded yet, so it does not count; run the checks again once it is",
        )
        decision = decision.model_copy(update={"verdict": Verdict.NO_GO, "reasons": [unknown, *decision.reasons]})
        state = dataclasses.replace(last, release=release, results=merged, decision=decision, running=None)
        if self.offline_card is None:
            log.warning("no way to show the final card", extra={"release": release.id})
            return
        try:
            await self.offline_card(release.card_channel or gate.channel, release.card_ts, state)
        except Exception as exc:  # the client's errors: this module does not know Slack's
            log.warning("could not post the final card", extra={"release": release.id, "error": str(exc)})

    async def ask_stale_signers(self, release: Release) -> None:
        """Sign-offs that went stale (new commit, blocker changed, too old): ask their signers again,
        once per signature, in the card's thread (DMs come with the reminders). The note that a
        signature was asked about, its audit entry and the ask are one atomic step."""
        state = await self.state(release)
        asks = self._stale_asks(state)
        if asks:
            await self.store.ask_stale(
                release.id, asks, lambda asked: Emit(release.gate_id, notices=[self._stale_notice(release, asked)])
            )

    def _stale_asks(self, state: ReleaseState) -> list[StaleAsk]:
        now = self.clock()
        asks = []
        for role in state.decision.roles:
            for stale in role.stale:
                sig = stale.signature
                signer = {"user": sig.user, "vote": sig.vote.value, "label": role.label, "reason": stale.reason}
                data = {"role": sig.role, "label": role.label, "user": sig.user, "reason": stale.reason}
                event = AuditEvent(type="signoff_stale", actor="gonogo", at=now, data=data)
                asks.append(StaleAsk(stale_token(sig.role, sig.user, sig.at), signer, event))
        return asks

    def _stale_notice(self, release: Release, asked: Sequence[StaleAsk]) -> Notice:
        """Keyed by the signatures it asks about: the same ask is never posted twice."""
        signers = [ask.signer for ask in asked]
        return stale_signers(release.id, self.card_thread(release), signers, [a.token for a in asked], self.clock())

    async def _keep_lease(
        self, rid: str, lease: RunLease, control: RunControl, unsaved: dict[str, CheckResult]
    ) -> None:
        """Renew the run's lease; stop the run when it is lost, or when the store stays away past
        STORE_GRACE_S (the lease cannot be kept, the results cannot be recorded)."""
        while control.reason is None:
            if control.fault_since is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(control.fault.wait(), self.lease_renew_s)
            else:
                await asyncio.sleep(STORE_PROBE_S)
            try:
                held = await self.store.renew_run_lock(rid, lease.token, self.lease_ttl_ms)
            except StoreUnavailable:
                control.store_failed()
                assert control.fault_since is not None
                if time.monotonic() - control.fault_since >= STORE_GRACE_S:
                    log.warning("state store gone during a run: stopping it", extra={"release": rid})
                    control.stop("the state store stopped answering")
                continue
            if not held:
                log.warning("run lease lost: stopping the run", extra={"release": rid})
                control.stop("the run lost its lease (it expired, or another run took over)")
                return
            control.store_answered()
            for check_id, result in list(unsaved.items()):  # what the store missed while away
                try:
                    await self.store.save_result(rid, result, at=self.clock())
                except StoreUnavailable:
                    control.store_failed()
                    break
                unsaved.pop(check_id, None)

    # --- runs whose process died ------------------------------------------------------------

    async def sweep_orphan_runs(self, gate_id: str) -> list[str]:
        """Record, once across replicas, the runs of this gate whose process died mid-run (SIGKILL,
        OOM, a lost machine): their lock expired without a record. Each becomes an interrupted run
        in the history and audit, and the card is redrawn (no ⏳ left behind). The run ids recorded."""
        recorded: list[str] = []
        for rid, lease in await self.store.orphan_runs(gate_id):
            release = await self.store.get_release(rid)
            if release is None:
                continue
            state = await self.state(release)
            run_id = lease.token[:12]
            finished = [r for r in state.results.values() if r.run_id == run_id]
            now = self.clock()
            record = RunRecord(
                run_id=run_id,
                release_id=rid,
                actor=lease.actor,
                started_at=lease.started_at,
                finished_at=max([now, *(r.finished_at for r in finished)]),
                check_ids=lease.check_ids,
                verdict=state.decision.verdict,
                counts=dict(Counter(r.status.value for r in finished)),
                interrupted=PROCESS_DIED,
            )
            data: dict[str, Any] = {
                "run_id": run_id,
                "checks": record.check_ids,
                "verdict": record.verdict.value,
                "counts": record.counts,
                "duration_s": round(record.duration_s, 3),
                "interrupted": PROCESS_DIED,
            }
            event = AuditEvent(type="run", actor=lease.actor, at=now, data=data)
            if await self.store.record_orphan_run(record, event, lease.token, now):
                log.warning("recorded a run whose process died", extra={"release": rid, "run_id": run_id})
                recorded.append(run_id)
        return recorded


class CardUpdater:
    """A run's card: marked dirty with the run lock, as results arrive and with the run's record
    (the card refresher shows the current state, at most one chat.update per card per second, and
    converges). It keeps the state seen when the run started, for a final card drawn without the store."""

    def __init__(self, service: ReleaseService, release: Release) -> None:
        self.service = service
        self.release = release
        self.last_state: ReleaseState | None = None

    async def flush(self) -> None:
        """The state as the run starts (the lock marked the card: ⏳ on it at once); never raises."""
        try:
            self.release = await self.service.store.get_release(self.release.id) or self.release
            self.last_state = await self.service.state(self.release)
        except StoreUnavailable as exc:
            log.warning("card update failed", extra={"release": self.release.id, "error": str(exc)})
        except Exception:
            log.exception("card update failed", extra={"release": self.release.id})

    async def stop(self) -> None:
        """Nothing to stop: the refresher owns the card."""
