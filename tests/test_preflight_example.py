"""examples/preflight-risk.yml run for real by `gonogo check`: its systems played by stand-ins
(a preflight script printing the report's JSON, a staging service and a Prometheus answering on
127.0.0.1, programs on PATH that pass), it reports risk 35 and exits 0, as the report's GO."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "preflight-risk.yml"

# What scripts/preflight.py --dry-run printed in the report (002: "D1: Preflight Script").
PREFLIGHT_OUTPUT = {
    "mode": "B",
    "weights": {"readiness": 0.5, "mvp": 0.5, "security": 0.2},
    "scores": {"readiness": 7.0, "mvp": 7.0, "security_gate": "PASS"},
    "complexity": "medium",
    "penalty": 5,
    "risk_score": 30.0,
    "thresholds": {"go": 50, "canary": 65},
    "decision": "GO",
    "blocking_issues": [],
    "artifacts_missing": ["docs/DOD_CHECKLIST.md"],
}


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def query(request: web.Request) -> web.Response:
    # Every canary metric at 0: p95 0 s, ratio 0, 5xx rate 0, circuit breaker closed.
    assert request.headers.get("Authorization") == "Bearer prom-token"
    vector = {"resultType": "vector", "result": [{"metric": {}, "value": [1700000000, "0"]}]}
    return web.json_response({"status": "success", "data": vector})


@pytest.fixture
async def systems() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def stand_ins(tmp_path: Path) -> tuple[Path, Path]:
    """A work tree with the preflight script and the canary script; programs on PATH."""
    work = tmp_path / "pms"
    (work / "scripts").mkdir(parents=True)
    (work / "scripts" / "preflight.py").write_text(f"import json\nprint(json.dumps({PREFLIGHT_OUTPUT!r}, indent=2))\n")
    (work / "scripts" / "canary-analysis.sh").write_text("#!/bin/sh\ncanary_diff_report baseline canary\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    programs = {
        "poetry": '#!/bin/sh\n[ "$1" = run ] && shift\nexec "$@"\n',  # `poetry run X` runs X
        **{name: "#!/bin/sh\nexit 0\n" for name in ("pytest", "ruff", "trivy", "gitleaks")},
    }
    for name, script in programs.items():
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    return work, bin_dir


async def test_the_preflight_example_reports_35_and_exits_0(
    systems: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work, bin_dir = stand_ins(tmp_path)
    # Only the hosts change: every check, score, weight and threshold is the example's own.
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("https://pms-staging.internal", systems).replace("https://prometheus.internal:9090", systems)
    gate = tmp_path / "preflight-risk.yml"
    gate.write_text(text, encoding="utf-8")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PROMETHEUS_TOKEN", "prom-token")
    monkeypatch.setenv("GIT_SHA", "abc1234")

    argv = ["check", str(gate), "--workdir", str(work), "--ignore-signoffs", "--json"]
    code = await asyncio.to_thread(main, argv)
    document = json.loads(capsys.readouterr().out)
    assert code == 0, [r["text"] for r in document["reasons"]]
    assert document["verdict"] == "GO"
    assert document["score"]["score"] == 35
    assert [(t["key"], t["value"], t["weight"]) for t in document["score"]["terms"]] == [
        ("readiness", 0.7, 0.5),
        ("mvp", 0.7, 0.5),
    ]
    statuses = {c["id"]: c["status"] for c in document["checks"]}
    assert statuses.pop("dod-checklist") == "fail"  # "artifacts_missing": advisory, only warns
    assert set(statuses.values()) == {"pass"}, statuses
    assert {c["id"]: c["score"] for c in document["checks"] if c["score"] is not None} == {"readiness": 0.7, "mvp": 0.7}
