"""The CLI's outputs: the stable JSON document and the terminal table. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from bot.core.decision import Decision, Level
from bot.core.gate import Gate
from bot.core.results import CheckResult, Status
from bot.core.stages import Ladder, ladder_json
from bot.core.text import format_duration_short, plain

JSON_VERSION = 1

_STATUS_STYLE = {
    Status.PASS: "green",
    Status.WARN: "yellow",
    Status.FAIL: "red",
    Status.ERROR: "red",
    Status.PENDING: "cyan",
    Status.SKIPPED: "dim",
}
_VERDICT_STYLE = {
    "GO": "bold green",
    "GO WITH RISK": "bold yellow",
    "NO-GO": "bold red",
    "GO (OVERRIDE)": "bold yellow",
}
_LEVEL_MARK = {Level.BLOCKING: "✗", Level.RISK: "!", Level.WARNING: "~", Level.INFO: "·"}


def json_document(
    gate: Gate,
    decision: Decision,
    results: Mapping[str, CheckResult],
    *,
    gate_file: str,
    gate_sha256: str,
    release: str | None = None,
    ladder: Ladder | None = None,
    stage: str | None = None,
) -> dict[str, Any]:
    """The `--json` contract. Keys are only ever added, never renamed (bump JSON_VERSION otherwise)."""
    checks = []
    for spec in gate.checks:
        found = results.get(spec.id)
        checks.append(
            {
                "id": spec.id,
                "name": spec.title,
                "kind": spec.kind,
                "severity": spec.severity.value,
                "group": spec.group,
                "status": found.status.value if found else "not_run",
                "summary": plain(found.summary) if found else "not run",
                "details": found.details if found else "",
                "value": found.value if found else None,
                "score": found.score if found else None,
                "duration_s": round(found.duration_s, 3) if found else None,
                "started_at": found.started_at.isoformat() if found else None,
                "finished_at": found.finished_at.isoformat() if found else None,
            }
        )
    return {
        "version": JSON_VERSION,
        "gate": {"id": gate.id, "name": gate.name, "file": gate_file, "sha256": gate_sha256},
        "release": release,
        "verdict": decision.verdict.value,
        "exit_code": decision.verdict.exit_code,
        "decided_at": decision.decided_at.isoformat(),
        "policy": gate.policy.kind,
        "checks_passed": decision.checks_passed,
        "checks_total": decision.checks_total,
        "score": decision.score.model_dump(mode="json") if decision.score else None,
        "reasons": [
            {"level": r.level.value, "code": r.code, "text": plain(r.text), "subject": r.subject}
            for r in decision.reasons
        ],
        "checks": checks,
        "signoffs": [
            {
                "role": role.role,
                "label": role.label,
                "required": role.required,
                "min_approvals": role.min_approvals,
                "approved_by": [s.user for s in role.approvals],
                "rejected_by": [s.user for s in role.rejections],
                "stale": [{"user": s.signature.user, "reason": s.reason} for s in role.stale],
                "met": role.met,
            }
            for role in decision.roles
        ],
        # Gates with rollout stages: the verdict above is `stage`'s; every stage is listed.
        "stage": stage,
        "current_stage": ladder.current if ladder else None,
        "stages": ladder_json(ladder) if ladder else [],
        "overdue": [c.as_json() for c in ladder.overdue] if ladder else [],
    }


def results_table(gate: Gate, results: Mapping[str, CheckResult], running: set[str] | None = None) -> Table:
    table = Table(show_header=True, header_style="bold", expand=False, pad_edge=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("summary", overflow="fold")
    table.add_column("time", justify="right", no_wrap=True)
    for spec in gate.checks:
        found = results.get(spec.id)
        name = spec.title + ("" if spec.severity.value == "required" else f" ({spec.severity.value})")
        if found is None:
            label = "running" if running and spec.id in running else "not run"
            table.add_row(Text(label, style="dim"), name, "", "")
            continue
        table.add_row(
            Text(found.status.value.upper(), style=_STATUS_STYLE[found.status]),
            name,
            plain(found.summary),
            format_duration_short(found.duration_s),
        )
    return table


def ladder_text(ladder: Ladder, chosen: str) -> Text:
    """One line per stage: its verdict and what still blocks it; the chosen stage marked."""
    out = Text()
    for index, stage in enumerate(ladder.stages):
        if index:
            out.append("\n")
        mark = ">" if stage.id == chosen else " "
        current = " (current)" if stage.id == ladder.current else ""
        out.append(f"{mark} {stage.name}{current}: ")
        out.append(stage.verdict.value, style=_VERDICT_STYLE[stage.verdict.value])
        if stage.conditions:
            out.append(f"  {len(stage.conditions)} open")
        for condition in stage.own():
            owner = f" [{condition.owner}]" if condition.owner else ""
            due = f" due {condition.due}" if condition.due else ""
            late = " OVERDUE" if condition.overdue else ""
            out.append(f"\n    - {plain(condition.text)}{owner}{due}{late}")
    return out


def verdict_text(decision: Decision) -> Text:
    out = Text()
    out.append(f"{decision.verdict.value}", style=_VERDICT_STYLE[decision.verdict.value])
    out.append(f"  {decision.checks_passed}/{decision.checks_total} checks pass")
    if decision.score is not None:
        s = decision.score
        out.append(f"  risk score {s.score:g} = 100 - {s.weighted_pass_pct:g}% + penalty {s.penalty:g}")
        for term in s.terms:
            items = ", ".join(f"{i.check} {i.score:.2f}" + ("" if i.graded else " (pass/fail)") for i in term.checks)
            out.append(f"\n    {term.key}: {term.value:.2f} x {term.weight:g} ({items})")
    for reason in decision.reasons:
        out.append(f"\n  {_LEVEL_MARK[reason.level]} {plain(reason.text)}")
    return out
