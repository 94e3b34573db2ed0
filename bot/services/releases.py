"""The release service: what `/gonogo` and the buttons do, independent of how Slack calls it.

Handlers stay thin: they ack, call one method here, and render the answer. This layer loads
state from the store, asks the pure decision engine, renders the card (pure) and talks to
Slack's Web API to post or update it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.decision import Decision, decide
from bot.core.errors import Conflict, NotFound, StoreUnavailable, UsageError
from bot.core.facts import ManualMark, blocker_digest
from bot.core.gateset import GateSet
from bot.core.loader import LoadedGate
from bot.core.masking import Masker
from bot.core.release import Release, RunLease, RunRecord, State, check_sha, parse_release_id, release_id
from bot.core.results import CheckResult, Status
from bot.metrics import Metrics
from bot.services.people import People, load_people, with_manual_marks
from bot.services.runner import run_checks
from bot.slack.card import FOLD_AT, CardView, Message, render_card, render_check_details, render_results_listing
from bot.store.store import AuditEvent, Fact, Store
from checks.base import CheckContext

log = logging.getLogger("gonogo.service")

LOCK_TTL_MS = 30_000
LOCK_RENEW_S = 10.0
# Handler work after the ack, at most this many at once: acks (Slack's 3 s deadline) stay fast while
# replies queue. bench/ack_latency.py: 16 slots gave a p99 ack ratio of 1.35-1.65 vs a bare Bolt
# app, 4 slots 0.93-1.43, with the reply itself 225-305 ms at p50.
WORK_SLOTS = 4
CARD_UPDATE_INTERVAL_S = 1.0  # Slack's chat.update tier allows ~1/s per message; we coalesce to that


def utcnow() -> datetime:
    return datetime.now(UTC)


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

    def card(self, now: datetime) -> Message:
        return render_card(
            CardView(
                gate=self.loaded.gate,
                release=self.release,
                decision=self.decision,
                results=self.results,
                now=now,
                running=frozenset(self.running.check_ids) if self.running else frozenset(),
                run_by=self.running.actor if self.running else None,
                run_started=self.running.started_at if self.running else None,
                last_run=self.last_run,
                drills=self.people.drills,
                marks=self.people.marks,
            )
        )


class ReleaseService:
    def __init__(
        self,
        *,
        store: Store,
        gates: GateSet,
        slack: AsyncWebClient,
        session: aiohttp.ClientSession,
        env: dict[str, str],
        concurrency: int = 16,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.gates = gates
        self.slack = slack
        self.session = session
        self.env = env
        self.masker = Masker.from_env(env)
        self.concurrency = concurrency
        self.clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()
        self.work = asyncio.Semaphore(WORK_SLOTS)  # handler work after the ack, see commands/replies.py

    # --- background work that SIGTERM drains ----------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self, grace_s: float) -> None:
        """Let in-flight runs finish; cancel what is left after `grace_s` (children get killed)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)

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

    async def open(self, gate_id: str, version: str, sha: str | None, actor: str) -> tuple[Release, bool]:
        """Open a release and post its card. Re-opening the open one with a new SHA moves it.

        Returns the release and whether anything changed.
        """
        loaded = self.gates.get(gate_id)
        rid = release_id(gate_id, version)
        sha = check_sha(sha) if sha else None
        now = self.clock()
        fresh = Release(id=rid, gate_id=gate_id, version=version, sha=sha, opened_by=actor, opened_at=now)
        event = AuditEvent(type="opened", actor=actor, at=now, data={"sha": sha, "gate_sha256": loaded.sha256})
        outcome, found = await self.store.open_release(fresh, event)
        if outcome == "conflict":
            raise Conflict(f"{found} is still open: close it first with `/gonogo close {found}`")
        assert isinstance(found, Release)
        if outcome == "closed":
            raise Conflict(f"{rid} was closed; reopen it with `/gonogo reopen {rid}`")
        if outcome == "exists":
            if sha is None or sha == found.sha:
                return found, False
            moved = await self.update_release(
                found,
                lambda r: r.model_copy(update={"sha": sha}),
                AuditEvent(type="sha_moved", actor=actor, at=now, data={"from": found.sha, "to": sha}),
            )
            moved = await self.publish_card(moved)
            await self.ask_stale_signers(moved)
            return moved, True
        return await self.publish_card(found), True

    async def update_release(
        self, release: Release, change: Callable[[Release], Release], event: AuditEvent | None
    ) -> Release:
        """Compare-and-set with a few retries: concurrent writers (replicas) never lose updates."""
        current = release
        for _ in range(5):
            stored = await self.store.update_release(current, change(current), event)
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

    async def blocker_digest(self, release: Release) -> str:
        """What a signature is bound to: the blockers' statuses now. Two reads instead of the full
        state a card needs, since every sign-off click computes it."""
        gate = self.gates.get(release.gate_id).gate
        results = await self.store.results(release.id)
        marks = await self.store.facts(Fact.MANUAL, release.id)
        merged = with_manual_marks(gate, results, {k: ManualMark.model_validate_json(v) for k, v in marks.items()})
        return blocker_digest(gate, merged)

    async def state(self, release: Release) -> ReleaseState:
        loaded = self.gates.get(release.gate_id)
        results = await self.store.results(release.id)
        running = await self.store.current_run(release.id)
        runs = await self.store.runs(release.id, count=1)
        people = await self.people(release.id)
        merged = with_manual_marks(loaded.gate, results, people.marks)
        decision = decide(people.decision_input(loaded.gate, self.clock(), merged, release.sha))
        return ReleaseState(
            loaded=loaded,
            release=release,
            results=merged,
            decision=decision,
            running=running,
            last_run=runs[0] if runs else None,
            people=people,
        )

    async def publish_card(self, release: Release, *, repost: bool = False) -> Release:
        """Post the card (first time, or `repost` at the bottom of the channel) or update it in place."""
        state = await self.state(release)
        message = state.card(self.clock())
        channel = release.card_channel or state.loaded.gate.channel
        if release.card_ts and not repost:
            try:
                await self.slack.chat_update(
                    channel=channel, ts=release.card_ts, text=message.text, blocks=message.blocks
                )
                return release
            except SlackApiError as exc:
                if exc.response.get("error") != "message_not_found":
                    raise
                log.warning("card vanished, posting a new one", extra={"release": release.id})
        posted = await self.slack.chat_postMessage(channel=channel, text=message.text, blocks=message.blocks)
        old_channel, old_ts = release.card_channel, release.card_ts
        new_ts = str(posted["ts"])
        updated = await self.update_release(
            release,
            lambda r: r.model_copy(
                update={"card_channel": str(posted["channel"]), "card_ts": new_ts, "thread_ts": r.thread_ts or new_ts}
            ),
            None,
        )
        if repost and old_ts and old_channel:
            # The old card becomes a pointer so nobody acts on a stale copy; its thread stays.
            with contextlib.suppress(SlackApiError):
                await self.slack.chat_update(
                    channel=old_channel,
                    ts=old_ts,
                    text=f"The card of {release.id} moved to the bottom of the channel.",
                    blocks=[],
                )
        return updated

    async def list_open(self) -> list[tuple[Release, Decision | None]]:
        rows: list[tuple[Release, Decision | None]] = []
        for gate_id in self.gates.ids:
            open_id = await self.store.open_release_id(gate_id)
            release = await self.store.get_release(open_id) if open_id else None
            if release is not None:
                rows.append((release, (await self.state(release)).decision))
        return rows

    # --- running checks -------------------------------------------------------------------

    async def start_run(self, release: Release, actor: str, check_ids: Sequence[str] = ()) -> RunLease:
        """Take the release's run lock and run in the background. Conflict if a run is under way."""
        if release.state is State.CLOSED:
            raise Conflict(f"{release.id} is closed: `/gonogo reopen {release.id}` first")
        loaded = self.gates.get(release.gate_id)
        known = [c.id for c in loaded.gate.checks]
        unknown = [c for c in check_ids if c not in known]
        if unknown:
            raise UsageError(
                f"unknown check {', '.join(unknown)} in gate {loaded.gate.id} (checks: {', '.join(known)})"
            )
        chosen = list(dict.fromkeys(check_ids)) or known
        lease = RunLease(token=secrets.token_hex(16), actor=actor, started_at=self.clock(), check_ids=chosen)
        holder = await self.store.acquire_run_lock(release.id, lease, LOCK_TTL_MS)
        if holder is not None:
            raise Conflict(
                f"checks of {release.id} are already running (started by <@{holder.actor}>); "
                "the card updates when they finish"
            )
        self.spawn(self._run(release, lease), name=f"run:{release.id}")
        return lease

    async def _run(self, release: Release, lease: RunLease) -> RunRecord | None:
        loaded = self.gates.get(release.gate_id)
        specs = [c for c in loaded.gate.checks if c.id in set(lease.check_ids)]
        updater = CardUpdater(self, release)
        keeper = asyncio.create_task(self._keep_lease(release.id, lease))
        try:
            await updater.flush()  # ⏳ on the card at once

            kinds = {spec.id: spec.kind for spec in specs}

            async def on_result(result: CheckResult) -> None:
                if self.metrics is not None:
                    kind = kinds.get(result.check_id, "unknown")
                    self.metrics.check_results.labels(kind=kind, status=result.status.value).inc()
                await self.store.save_result(release.id, result)
                updater.mark_dirty()

            ctx = CheckContext(session=self.session, env=self.env, clock=self.clock)
            results = await run_checks(
                specs, ctx, masker=self.masker, concurrency=self.concurrency, on_result=on_result
            )
            await self.store.release_run_lock(release.id, lease.token)
            state = await self.state(await self.store.get_release(release.id) or release)
            finished = self.clock()
            record = RunRecord(
                run_id=lease.token[:12],
                release_id=release.id,
                actor=lease.actor,
                started_at=lease.started_at,
                finished_at=finished,
                check_ids=lease.check_ids,
                verdict=state.decision.verdict,
                counts=dict(Counter(r.status.value for r in results)),
            )
            if self.metrics is not None:
                self.metrics.runs.labels(verdict=record.verdict.value).inc()
                self.metrics.run_seconds.observe(record.duration_s)
            await self.store.record_run(
                record,
                AuditEvent(
                    type="run",
                    actor=lease.actor,
                    at=finished,
                    data={
                        "run_id": record.run_id,
                        "checks": record.check_ids,
                        "verdict": record.verdict.value,
                        "counts": record.counts,
                        "duration_s": round(record.duration_s, 3),
                    },
                ),
            )
            current = await self.update_release(
                state.release, lambda r: r.model_copy(update={"last_verdict": record.verdict}), None
            )
            updater.release = current
            await updater.close()
            await self._post_failures(current, loaded, results)
            await self.ask_stale_signers(current)
            return record
        except StoreUnavailable:
            log.error("state store unavailable during a run", extra={"release": release.id})
            updater.abandon()
            return None
        finally:
            keeper.cancel()
            with contextlib.suppress(StoreUnavailable):
                await self.store.release_run_lock(release.id, lease.token)

    async def ask_stale_signers(self, release: Release) -> None:
        """Sign-offs that went stale (new commit, blocker changed, too old): ask their signers again,
        once per signature, in the card's thread (DMs come with the reminders)."""
        if not release.card_channel or not release.thread_ts:
            return
        state = await self.state(release)
        lines = []
        for role in state.decision.roles:
            for stale in role.stale:
                sig = stale.signature
                if await self.store.first_notice(release.id, f"{sig.role}|{sig.user}|{sig.at.isoformat()}"):
                    lines.append(f"<@{sig.user}>: your {sig.vote.value} as {role.label} is stale ({stale.reason})")
                    await self.store.append_audit(
                        release.id,
                        AuditEvent(
                            type="signoff_stale",
                            actor="gonogo",
                            at=self.clock(),
                            data={"role": sig.role, "label": role.label, "user": sig.user, "reason": stale.reason},
                        ),
                    )
        if not lines:
            return
        text = "Please review and sign again:\n" + "\n".join(lines)
        try:
            await self.slack.chat_postMessage(channel=release.card_channel, thread_ts=release.thread_ts, text=text)
        except SlackApiError as exc:
            log.warning("could not ask stale signers", extra={"release": release.id, "error": str(exc)})

    async def _keep_lease(self, rid: str, lease: RunLease) -> None:
        while True:
            await asyncio.sleep(LOCK_RENEW_S)
            try:
                if not await self.store.renew_run_lock(rid, lease.token, LOCK_TTL_MS):
                    log.warning("run lease lost", extra={"release": rid})
                    return
            except StoreUnavailable:
                log.warning("cannot renew run lease", extra={"release": rid})

    async def _post_failures(self, release: Release, loaded: LoadedGate, results: list[CheckResult]) -> None:
        """Per-check details (output tails) go to the card's thread, never into the card. A big gate's
        card folds its passing checks, so the thread also gets the full list."""
        if not release.thread_ts or not release.card_channel:
            return
        if len(loaded.gate.checks) > FOLD_AT:
            stored = await self.store.results(release.id)
            for page in render_results_listing(loaded.gate, stored, self.clock()):
                try:
                    await self.slack.chat_postMessage(
                        channel=release.card_channel, thread_ts=release.thread_ts, text=page.text, blocks=page.blocks
                    )
                except SlackApiError as exc:
                    log.warning("could not post the check list", extra={"release": release.id, "error": str(exc)})
        for result in results:
            if result.status.passing or result.status is Status.PENDING:
                continue
            message = render_check_details(loaded.gate, result)
            try:
                await self.slack.chat_postMessage(
                    channel=release.card_channel, thread_ts=release.thread_ts, text=message.text, blocks=message.blocks
                )
            except SlackApiError as exc:
                log.warning("could not post check details", extra={"check": result.check_id, "error": str(exc)})


class CardUpdater:
    """Coalesces card updates: at most one chat.update per interval, and always a final one."""

    def __init__(self, service: ReleaseService, release: Release, interval: float = CARD_UPDATE_INTERVAL_S) -> None:
        self.service = service
        self.release = release
        self.interval = interval
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.updates = 0

    def mark_dirty(self) -> None:
        self._dirty.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while self._dirty.is_set():
            self._dirty.clear()
            await self.flush()
            await asyncio.sleep(self.interval)

    async def flush(self) -> None:
        try:
            self.release = await self.service.publish_card(self.release)
            self.updates += 1
        except SlackApiError as exc:
            log.warning("card update failed", extra={"release": self.release.id, "error": str(exc)})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._dirty.clear()
        await self.flush()

    def abandon(self) -> None:
        if self._task is not None:
            self._task.cancel()
