"""APScheduler 3 inside the bot's event loop: fixed job ids from config, one-minute ticks.

The jobs only poll: each tick calls a `Scheduler` method that reads facts from Redis and claims
what is due (bot/services/scheduler.py). The in-memory job store holds nothing but the triggers,
rebuilt from the gates at start and on reload, so a restart loses nothing and repeats nothing.
Every replica runs every job; claims in Redis make each unit of work happen once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.core.gate import Gate
from bot.services.scheduler import Scheduler, Tick

log = logging.getLogger("gonogo.scheduling")

TICK_S = 60.0


@dataclass(frozen=True)
class JobSpec:
    id: str
    gate_id: str
    run: Callable[[str], Awaitable[Tick]]


def job_specs(scheduler: Scheduler, gates: list[Gate]) -> list[JobSpec]:
    """The jobs the gates ask for, with ids that are the same on every replica and every start."""
    specs: list[JobSpec] = []
    for gate in gates:
        specs.append(JobSpec(f"runs:{gate.id}", gate.id, scheduler.orphan_runs_tick))  # every gate runs checks
        if gate.reminders is not None:
            specs.append(JobSpec(f"reminders:{gate.id}", gate.id, scheduler.reminders_tick))
        if gate.windows is not None and gate.windows.freeze:
            specs.append(JobSpec(f"windows:{gate.id}", gate.id, scheduler.windows_tick))
        if gate.recheck is not None:
            specs.append(JobSpec(f"recheck:{gate.id}", gate.id, scheduler.recheck_tick))
        if gate.postdeploy is not None:
            specs.append(JobSpec(f"postdeploy:{gate.id}", gate.id, scheduler.postdeploy_tick))
        if gate.prelaunch is None or gate.prelaunch.before:
            specs.append(JobSpec(f"prelaunch:{gate.id}", gate.id, scheduler.prelaunch_tick))
    return specs


async def run_job(spec: JobSpec) -> None:
    """One tick; a failure is logged and the next tick tries again (nothing was half-done: claims
    are atomic)."""
    try:
        tick = await spec.run(spec.gate_id)
    except Exception:
        log.exception("scheduled job failed", extra={"job": spec.id})
        return
    if tick.claimed:
        log.info("scheduled work claimed", extra={"job": spec.id, "units": tick.claimed})


class Jobs:
    """The bot's AsyncIOScheduler: `start()` in the running loop, `sync()` after a gate reload."""

    def __init__(self, scheduler: Scheduler, *, tick_s: float = TICK_S) -> None:
        self.scheduler = scheduler
        self.tick_s = tick_s
        self.aps = AsyncIOScheduler(timezone="UTC")

    def gates(self) -> list[Gate]:
        gates = self.scheduler.releases.gates
        return [gates.get(g).gate for g in gates.ids]

    def sync(self) -> list[str]:
        """Add the jobs the gates ask for (ids are fixed, so a job is never doubled), remove those of
        gates that went away."""
        specs = job_specs(self.scheduler, self.gates())
        wanted = {s.id for s in specs}
        for job in self.aps.get_jobs():
            if job.id not in wanted:
                job.remove()
        for spec in specs:
            if self.aps.get_job(spec.id) is not None:  # unchanged: keep its timer (a reload must not postpone it)
                continue
            self.aps.add_job(
                run_job,
                "interval",
                seconds=self.tick_s,
                args=[spec],
                id=spec.id,
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,
            )
        return sorted(wanted)

    def start(self) -> None:
        self.sync()
        self.aps.start()
        log.info("scheduler started", extra={"jobs": [j.id for j in self.aps.get_jobs()]})

    def stop(self) -> None:
        if self.aps.running:
            self.aps.shutdown(wait=False)
