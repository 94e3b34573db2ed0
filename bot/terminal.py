"""The CLI's outputs: the stable JSON document and the terminal table. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rich.table import Table
from rich.text import Text

from bot.core.decision import Decision, Level
from bot.core.durations import format_duration
from bot.core.gate import Gate
from bot.core.results import CheckResult, Status
from bot.core.stages import Ladder, ladder_json
from bot.core.text import format_duration_short, plain
from bot.core.timeplan import Outlook, Period, format_instant

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


# --- `gonogo windows` ----------------------------------------------------------------------------


def _period_span(period: Period, zone: ZoneInfo, reference: datetime) -> tuple[str, str]:
    start = format_instant(period.start, zone, reference=reference)
    end_local, start_local = period.end.astimezone(zone), period.start.astimezone(zone)
    if end_local.date() == start_local.date():
        return start, f"{end_local:%H:%M} {end_local.tzname()}"
    if end_local.time() == time(0) and end_local.date() - start_local.date() == timedelta(days=1):
        return start, f"24:00 {start_local.tzname()}"
    return start, format_instant(period.end, zone, reference=reference)


def _window_heading(gate: Gate, view: Outlook) -> str:
    zone = view.rules.zone
    allow = view.rules.describe_allow() or "any time"
    start = format_instant(view.start, zone, reference=view.start + timedelta(days=365))  # with the year
    return f"{gate.id}: deploy windows ({allow}, {zone.key}) for {format_duration(view.end - view.start)} from {start}"


def windows_lines(gate: Gate, view: Outlook) -> list[str]:
    """Plain lines for pipes and CI logs: a heading, the status now, then one line per period."""
    zone = view.rules.zone
    lines = [_window_heading(gate, view), f"now: {plain(view.now.describe())}"]
    if not view.periods:
        lines.append("no open or frozen periods in this range")
    for period in view.periods:
        start, end = _period_span(period, zone, view.start)
        reason = f"  {plain(period.reason)}" if period.reason else ""
        lines.append(f"{period.kind:<6}  {start} – {end}  ({format_duration(period.end - period.start)}){reason}")
    return lines


def windows_table(gate: Gate, view: Outlook) -> Table:
    zone = view.rules.zone
    table = Table(
        title=_window_heading(gate, view),
        caption=f"now: {plain(view.now.describe())}",
        show_header=True,
        header_style="bold",
        pad_edge=False,
    )
    for column in ("", "from", "to", "length", "reason"):
        table.add_column(column, no_wrap=column != "reason")
    for period in view.periods:
        start, end = _period_span(period, zone, view.start)
        style = "green" if period.kind == "open" else "bold blue"
        table.add_row(
            Text(period.kind, style=style),
            start,
            end,
            format_duration(period.end - period.start),
            plain(period.reason or ""),
        )
    return table


def windows_document(gate: Gate, view: Outlook) -> dict[str, Any]:
    """`gonogo windows --json`: instants in the windows' zone with their offset."""
    zone = view.rules.zone

    def iso(at: datetime | None) -> str | None:
        return at.astimezone(zone).isoformat() if at is not None else None

    return {
        "version": JSON_VERSION,
        "gate": gate.id,
        "timezone": zone.key,
        "allow": [s.text for s in view.rules.allow],
        "from": iso(view.start),
        "to": iso(view.end),
        "now": {
            "state": view.now.state,
            "open": view.now.open,
            "reason": view.now.describe(),
            "opens_at": iso(view.now.opens_at),
            "closes_at": iso(view.now.closes_at),
        },
        "periods": [
            {"kind": p.kind, "start": iso(p.start), "end": iso(p.end), "reason": p.reason} for p in view.periods
        ],
    }
