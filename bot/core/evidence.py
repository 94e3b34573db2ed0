"""The decision record of a release ("evidence bundle"), frozen by `/gonogo decide`.

`build_bundle` gathers every fact behind a verdict into one JSON-serialisable dict. The Markdown
file and the Slack record are rendered from that dict ONLY, never from live objects: whatever an
auditor reads in the Markdown or in Slack is exactly what the JSON says, and a bundle loaded back
from storage years later renders the same way.

Pure functions: no I/O, no clock (the decision time is a parameter).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import PurePath
from types import MappingProxyType
from typing import Any

from slack_sdk.models.blocks import Block, ContextBlock, HeaderBlock, MarkdownTextObject, PlainTextObject

from bot.core.decision import MENTION, Decision, Verdict
from bot.core.durations import format_duration
from bot.core.facts import DrillResult, RiskAcceptance, Signature
from bot.core.gate import Gate
from bot.core.loader import LoadedGate
from bot.core.release import Release, RunRecord
from bot.core.results import CheckResult, Status
from bot.slack.card import (
    HEADER_LIMIT,
    SECTION_LIMIT,
    Message,
    chunk_lines,
    cut,
    escape,
    message,
    one_line,
    section,
    user_ref,
)
from bot.terminal import format_duration_short, plain
from checks.base import SpecBase

BUNDLE_VERSION = 1  # keys are only ever added; renaming one means bumping this
NOT_RUN = "not_run"
PASSING = frozenset({Status.PASS.value, Status.WARN.value})  # as in Status.passing

NEXT_GO = "proceed to canary"
NEXT_RISK = "proceed to canary with the accepted risks monitored"

_NO_DRILLS: Mapping[str, DrillResult] = MappingProxyType({})
_STATUS_MARK = {
    **{s.value: s.emoji for s in Status},
    NOT_RUN: "⬜",
}
_LEVEL_MARK = {"blocking": "🔴", "risk": "🟡", "warning": "🔸", "info": "ℹ️"}
_MAX_FAILING_SHOWN = 15  # on the Slack record; the bundle lists them all


# --- the bundle -----------------------------------------------------------------------------


def utc_iso(value: datetime) -> str:
    """ISO 8601 in UTC. A naive datetime is taken as UTC: the service's clock always is."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


def _opt_iso(value: datetime | None) -> str | None:
    return utc_iso(value) if value is not None else None


def build_bundle(
    *,
    loaded: LoadedGate,
    release: Release,
    decision: Decision,
    results: Mapping[str, CheckResult],
    decided_by: str,
    decided_at: datetime,
    drills: Mapping[str, DrillResult] = _NO_DRILLS,
    runs: Sequence[RunRecord] = (),
) -> dict[str, Any]:
    """Everything behind one verdict, as plain JSON types (version 1)."""
    gate = loaded.gate
    checks = [_check(spec, results.get(spec.id)) for spec in gate.checks]
    blocking = [plain(r.text) for r in decision.blocking]
    return {
        "version": BUNDLE_VERSION,
        "release": {
            "id": release.id,
            "gate": release.gate_id,
            "version": release.version,
            "sha": release.sha,
            "opened_by": release.opened_by,
            "opened_at": utc_iso(release.opened_at),
            "state": release.state.value,
        },
        "gate": {"id": gate.id, "name": gate.name, "file": str(loaded.path), "sha256": loaded.sha256},
        "policy": gate.policy.model_dump(mode="json"),
        "verdict": decision.verdict.value,
        "exit_code": decision.verdict.exit_code,
        "decided_at": utc_iso(decided_at),
        "decided_by": decided_by,
        "blocker_digest": decision.blocker_digest,
        "checks_passed": decision.checks_passed,
        "checks_total": decision.checks_total,
        "checks": checks,
        "failing_checks": [c["id"] for c in checks if c["status"] not in PASSING],
        "reasons": [
            {
                "level": r.level.value,
                "code": r.code,
                "text": plain(r.text),
                "subject": r.subject,
                # Who the text names: lets Slack turn exactly these @U… back into real mentions.
                "users": MENTION.findall(r.text),
            }
            for r in decision.reasons
        ],
        "signoffs": [
            {
                "role": role.role,
                "label": role.label,
                "required": role.required,
                "min_approvals": role.min_approvals,
                "met": role.met,
                "approvals": [_signature(s) for s in role.approvals],
                "rejections": [_signature(s) for s in role.rejections],
                "stale": [{**_signature(s.signature), "reason": s.reason} for s in role.stale],
            }
            for role in decision.roles
        ],
        "accepted_risks": [_acceptance(gate, a) for a in decision.accepted_risks],
        "override": _override(decision, blocking),
        "drills": [
            {
                "id": drill.id,
                "title": drill.title,
                "required": drill.required,
                "max_age": format_duration(drill.max_age) if drill.max_age is not None else None,
                "passed": found.passed if found else None,
                "summary": found.summary if found else "never run",
                "finished_at": utc_iso(found.finished_at) if found else None,
                "by": found.by if found else None,
            }
            for drill in gate.drills
            for found in [drills.get(drill.id)]
        ],
        "score": decision.score.model_dump(mode="json") if decision.score else None,
        "runs": [
            {
                "run_id": run.run_id,
                "actor": run.actor,
                "started_at": utc_iso(run.started_at),
                "finished_at": utc_iso(run.finished_at),
                "duration_s": round(run.duration_s, 3),
                "check_ids": list(run.check_ids),
                "verdict": run.verdict.value,
                "counts": dict(run.counts),
            }
            for run in runs
        ],
        "next_step": _next_step(decision, blocking),
    }


def _check(spec: SpecBase, found: CheckResult | None) -> dict[str, Any]:
    return {
        "id": spec.id,
        "name": spec.title,
        "kind": getattr(spec, "kind", None),
        "severity": spec.severity.value,
        "group": spec.group,
        "status": found.status.value if found else NOT_RUN,
        "summary": found.summary if found else "not run",
        "details": found.details if found else "",
        "value": found.value if found else None,
        "started_at": utc_iso(found.started_at) if found else None,
        "finished_at": utc_iso(found.finished_at) if found else None,
        "duration_s": round(found.duration_s, 3) if found else None,
    }


def _signature(sig: Signature) -> dict[str, Any]:
    return {"user": sig.user, "vote": sig.vote.value, "at": utc_iso(sig.at), "comment": sig.comment, "sha": sig.sha}


def _acceptance(gate: Gate, acceptance: RiskAcceptance) -> dict[str, Any]:
    # The gate's wording of the risk is copied in: the record must not depend on a later gate file.
    risk = next((r for r in gate.risks if r.id == acceptance.risk_id), None)
    return {
        "risk_id": acceptance.risk_id,
        "description": risk.description if risk else None,
        "impact": risk.impact.value if risk else None,
        "mitigation": risk.mitigation if risk else None,
        "user": acceptance.user,
        "role": acceptance.role,
        "at": utc_iso(acceptance.at),
        "reason": acceptance.reason,
        "expires_at": _opt_iso(acceptance.expires_at),
    }


def _override(decision: Decision, blocking: list[str]) -> dict[str, Any] | None:
    status = decision.override
    if status is None:
        return None
    request = status.request
    return {
        "id": request.id,
        "requested_by": request.requested_by,
        "reason": request.reason,
        "at": utc_iso(request.at),
        "sha": request.sha,
        "approvals": [{"role": a.role, "user": a.user, "at": utc_iso(a.at)} for a in request.approvals],
        "active": status.active,
        "expires_at": utc_iso(status.expires_at),
        "missing": dict(status.missing),
        "invalid_reason": status.invalid_reason,
        "failing": list(blocking),  # what the override lets through
    }


def _next_step(decision: Decision, blocking: list[str]) -> dict[str, Any]:
    monitor = [a.risk_id for a in decision.accepted_risks]
    verdict = decision.verdict
    if verdict is Verdict.GO:
        return {"text": NEXT_GO, "fix": [], "monitor": monitor}
    if verdict is Verdict.GO_WITH_RISK:
        return {"text": NEXT_RISK, "fix": [], "monitor": monitor}
    if verdict is Verdict.OVERRIDE:
        return {
            "text": f"proceed under override: fix {'; '.join(blocking)} after release",
            "fix": list(blocking),
            "monitor": monitor,
        }
    return {"text": "fix: " + "; ".join(blocking), "fix": list(blocking), "monitor": []}


# --- shared formatting ------------------------------------------------------------------------


def stamp(iso: str | None, *, seconds: bool = True) -> str:
    """An ISO timestamp from the bundle as `2026-11-22 12:00:00 UTC` (minutes only on Slack)."""
    if not iso:
        return "—"
    moment = datetime.fromisoformat(iso).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def policy_text(policy: Mapping[str, Any]) -> str:
    """`strict`, or the kind followed by its settings as compact JSON (nothing is left out)."""
    rest = {k: v for k, v in policy.items() if k != "kind"}
    kind = str(policy.get("kind", "?"))
    return f"{kind} {json.dumps(rest, sort_keys=True, ensure_ascii=False)}" if rest else kind


def _title(check: Mapping[str, Any]) -> str:
    return check["name"] if check["name"] == check["id"] else f"{check['name']} ({check['id']})"


def _duration(seconds: float | None) -> str:
    return format_duration_short(seconds) if seconds is not None else "—"


def _counts(counts: Mapping[str, int]) -> str:
    order = [s.value for s in Status]
    keys = sorted(counts, key=lambda k: (order.index(k) if k in order else len(order), k))
    return ", ".join(f"{counts[k]} {k}" for k in keys) or "none"


# --- Markdown ---------------------------------------------------------------------------------


def md_cell(value: object) -> str:
    """A Markdown table cell: one line; `|` escaped (and `\\`, or `\\|` would end the cell anyway)."""
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|") if text else " "


def md_fence(text: str) -> str:
    """A fenced block that `text` cannot close: the fence is longer than any backtick run inside.

    Longer fences keep the output byte-for-byte (an auditor may diff it), where a zero-width
    space would alter it.
    """
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text.rstrip(chr(10))}\n{fence}"


def _md_users(users: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"@{u['user']}" for u in users) or "—"


def _md_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def render_markdown(bundle: Mapping[str, Any]) -> str:
    """The decision record as a Markdown file: every fact of the bundle, nothing else."""
    release, gate = bundle["release"], bundle["gate"]
    verdict = Verdict(bundle["verdict"])
    out: list[str] = [f"# {one_line(release['id'])} — {verdict.emoji} {verdict.value}", ""]
    out += [
        f"- **Decided:** {stamp(bundle['decided_at'])} by @{bundle['decided_by']}",
        f"- **Release:** {release['id']} (gate `{release['gate']}`, version `{release['version']}`),"
        f" opened by @{release['opened_by']} at {stamp(release['opened_at'])}, state {release['state']}",
        f"- **Commit:** `{release['sha']}`" if release["sha"] else "- **Commit:** none recorded",
        f"- **Gate:** {one_line(gate['name'])} (`{gate['id']}`), file `{gate['file']}`, sha256 `{gate['sha256']}`",
        f"- **Policy:** {policy_text(bundle['policy'])}",
        f"- **Checks passed {bundle['checks_passed']}/{bundle['checks_total']}** (advisory checks not counted)",
        f"- **Exit code:** {bundle['exit_code']} · **blocker digest:** `{bundle['blocker_digest']}`",
    ]
    score = bundle.get("score")
    if score:
        terms = "; ".join(f"{t['key']} {t['passed']}/{t['total']} × {t['weight']:g}" for t in score["terms"])
        out.append(
            f"- **Risk score:** {score['score']:g} = 100 − {score['weighted_pass_pct']:g}% weighted pass"
            f" + {score['penalty']:g} penalty (GO below {score['go_below']:g}, caution below"
            f" {score['caution_below']:g}); terms: {terms}"
        )
    out += ["", "## Next step", "", *_md_next_step(bundle["next_step"])]
    out += ["", *_md_checks(bundle)]
    out += ["", "## Reasons", ""]
    reasons = bundle["reasons"]
    out += [
        f"- {_LEVEL_MARK.get(r['level'], '·')} **{r['level']}** `{r['code']}`"
        + (f" ({r['subject']})" if r["subject"] else "")
        + f": {one_line(r['text'])}"
        for r in reasons
    ] or ["- none: every check passes and every required sign-off is in"]
    out += ["", *_md_signoffs(bundle["signoffs"])]
    out += ["", *_md_risks(bundle["accepted_risks"])]
    out += ["", *_md_override(bundle["override"])]
    out += ["", *_md_drills(bundle["drills"])]
    out += ["", *_md_runs(bundle["runs"])]
    return "\n".join(out).rstrip("\n") + "\n"


def _md_next_step(step: Mapping[str, Any]) -> list[str]:
    lines = [f"**{one_line(step['text'])}**"]
    if step["fix"]:
        lines += ["", "Fix:" if not step["text"].startswith("proceed") else "Fix after release:"]
        lines += [f"- {one_line(item)}" for item in step["fix"]]
    if step["monitor"]:
        lines += ["", "Monitor the accepted risks: " + ", ".join(f"`{r}`" for r in step["monitor"])]
    return lines


def _md_checks(bundle: Mapping[str, Any]) -> list[str]:
    checks = bundle["checks"]
    lines = ["## Checks", "", f"Checks passed {bundle['checks_passed']}/{bundle['checks_total']}.", ""]
    if not checks:
        return [*lines, "This gate has no checks."]
    rows = [
        (
            f"{_STATUS_MARK.get(c['status'], '·')} {c['status']}",
            _title(c),
            c["kind"] or "—",
            c["severity"] + (f", group {c['group']}" if c["group"] else ""),
            c["summary"],
            "—" if c["value"] is None else f"{c['value']:g}",
            _duration(c["duration_s"]),
            stamp(c["finished_at"]),
        )
        for c in checks
    ]
    lines += _md_table(["Status", "Check", "Kind", "Severity", "Summary", "Value", "Duration", "Finished"], rows)
    failing = [c for c in checks if c["status"] not in PASSING]
    if failing:
        lines += ["", "### Failing checks"]
        for c in failing:
            lines += ["", f"#### {_STATUS_MARK.get(c['status'], '·')} {_title(c)} — {c['status']}"]
            lines += ["", one_line(c["summary"]), ""]
            lines.append(md_fence(c["details"]) if c["details"].strip() else "_no output_")
    others = [c for c in checks if c["status"] in PASSING and c["details"].strip()]
    if others:
        lines += ["", "### Output of passing checks"]
        for c in others:
            lines += ["", f"#### {_title(c)}", "", md_fence(c["details"])]
    return lines


def _md_signature(label: str, sig: Mapping[str, Any], mark: str) -> str:
    commit = f" on commit `{sig['sha']}`" if sig["sha"] else ""
    comment = f" — “{one_line(sig['comment'])}”" if sig["comment"] else ""
    stale = f" — stale: {one_line(sig['reason'])}" if "reason" in sig else ""
    return (
        f"- {mark} **{one_line(label)}**: @{sig['user']} {sig['vote']}d at {stamp(sig['at'])}{commit}{comment}{stale}"
    )


def _md_signoffs(roles: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## Sign-offs", ""]
    if not roles:
        return [*lines, "This gate asks for no sign-offs."]
    rows = [
        (
            f"{r['label']} ({r['role']})",
            "yes" if r["required"] else "no (optional)",
            f"{len(r['approvals'])}/{r['min_approvals']}",
            "✅ met" if r["met"] else ("❌ rejected" if r["rejections"] else "⬜ not met"),
            _md_users(r["approvals"]),
            _md_users(r["rejections"]),
        )
        for r in roles
    ]
    lines += _md_table(["Role", "Required", "Approvals", "Status", "Approved by", "Rejected by"], rows)
    signatures = [
        _md_signature(r["label"], sig, mark)
        for r in roles
        for mark, group in (("✅", r["approvals"]), ("❌", r["rejections"]), ("🕰️", r["stale"]))
        for sig in group
    ]
    if signatures:
        lines += ["", *signatures]
    return lines


def _sentence(text: str) -> str:
    text = one_line(text)
    return text if not text or text.endswith((".", "!", "?")) else text + "."


def _md_risks(risks: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## Accepted risks", ""]
    if not risks:
        return [*lines, "None."]
    for a in risks:
        expires = f", expires {stamp(a['expires_at'])}" if a["expires_at"] else ", no expiry"
        mitigation = f" Mitigation: {one_line(a['mitigation'])}." if a["mitigation"] else ""
        lines.append(
            f"- 🟡 **{a['risk_id']}** ({a['impact'] or 'impact unknown'}) — {_sentence(a['description'] or '')}"
            f"{mitigation} Accepted by @{a['user']} as {a['role']} at {stamp(a['at'])}{expires}:"
            f" “{one_line(a['reason'])}”"
        )
    return lines


def _md_override(override: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Override", ""]
    if override is None:
        return [*lines, "None requested."]
    state = "active" if override["active"] else "not active"
    if override["invalid_reason"]:
        state += f" ({one_line(override['invalid_reason'])})"
    lines += [
        f"- **Requested by** @{override['requested_by']} at {stamp(override['at'])}"
        + (f" (request `{override['id']}`)" if override.get("id") else "")
        + (f" on commit `{override['sha']}`" if override["sha"] else "")
        + f": “{one_line(override['reason'])}”",
        f"- **State:** {state}, expires {stamp(override['expires_at'])}",
    ]
    approvals = "; ".join(f"@{a['user']} as {a['role']} at {stamp(a['at'])}" for a in override["approvals"])
    lines.append(f"- **Approved by:** {approvals or 'nobody yet'}")
    if override["missing"]:
        lines.append("- **Still needed:** " + ", ".join(f"{n} × {role}" for role, n in override["missing"].items()))
    lines.append("- **Failing when overridden:**" if override["failing"] else "- **Failing when overridden:** nothing")
    lines += [f"  - {one_line(text)}" for text in override["failing"]]
    return lines


def _md_drills(drills: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## Fire drills", ""]
    if not drills:
        return [*lines, "This gate has no drills."]
    rows = [
        (
            "⬜ never run" if d["passed"] is None else ("✅ passed" if d["passed"] else "❌ failed"),
            f"{d['title']} ({d['id']})" if d["title"] != d["id"] else d["id"],
            ("required" if d["required"] else "optional") + (f", max age {d['max_age']}" if d["max_age"] else ""),
            d["summary"],
            stamp(d["finished_at"]),
            f"@{d['by']}" if d["by"] else "—",
        )
        for d in drills
    ]
    return lines + _md_table(["Result", "Drill", "Rule", "Summary", "Finished", "By"], rows)


def _md_runs(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["## Runs", ""]
    if not runs:
        return [*lines, "No runs recorded."]
    rows = [
        (
            r["run_id"],
            f"@{r['actor']}",
            stamp(r["started_at"]),
            stamp(r["finished_at"]),
            _duration(r["duration_s"]),
            ", ".join(r["check_ids"]),
            r["verdict"],
            _counts(r["counts"]),
        )
        for r in runs
    ]
    return lines + _md_table(["Run", "By", "Started", "Finished", "Duration", "Checks", "Verdict", "Counts"], rows)


# --- the Slack record -------------------------------------------------------------------------


def _first_chunk(lines: Sequence[str], what: str) -> str:
    """The lines that fit one section; the rest is named, not dropped silently."""
    chunks = chunk_lines(lines, SECTION_LIMIT - 80)
    if len(chunks) <= 1:
        return chunks[0] if chunks else ""
    shown = chunks[0].count("\n") + 1
    return f"{chunks[0]}\n…and {len(lines) - shown} more {what} in the evidence bundle"


def _slack_text(text: str, users: Sequence[str]) -> str:
    """Bundle text (mentions as @U…) escaped, with the users it is known to name as real mentions."""
    escaped = escape(one_line(text))
    if not users:
        return escaped
    known = "|".join(re.escape(u) for u in sorted(set(users), key=len, reverse=True))
    return re.sub(rf"@({known})(?![A-Za-z0-9])", lambda m: user_ref(m.group(1)), escaped)


def render_record(bundle: Mapping[str, Any]) -> Message:
    """The decision as posted to the gate's channel: verdict, who and when, and what comes next."""
    release, gate = bundle["release"], bundle["gate"]
    verdict = Verdict(bundle["verdict"])
    mentioned = [u for r in bundle["reasons"] for u in r["users"]]
    header = f"{verdict.emoji} {verdict.value} · {release['id']}"
    facts = [
        f"*{escape(release['id'])}* ({escape(one_line(gate['name']))})"
        + (f" · commit `{escape(release['sha'][:12])}`" if release["sha"] else " · no commit"),
        f"Decided {stamp(bundle['decided_at'], seconds=False)} by {user_ref(bundle['decided_by'])}",
        f"Gate file `{escape(PurePath(gate['file']).name)}` · sha256 `{escape(gate['sha256'][:12])}…`"
        f" · {escape(bundle['policy'].get('kind', '?'))} policy",
    ]
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=cut(header, HEADER_LIMIT), emoji=True)),
        section("\n".join(facts)),
        section(_record_checks(bundle)),
    ]
    if bundle["signoffs"]:
        blocks.append(section(_record_signoffs(bundle["signoffs"])))
    if bundle["accepted_risks"]:
        blocks.append(section(_record_risks(bundle["accepted_risks"])))
    if bundle["override"] is not None:
        blocks.append(section(_record_override(bundle["override"], mentioned)))
    blocks.append(section(_record_next_step(bundle["next_step"], mentioned)))
    blocks.append(
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text=f"Decision record v{bundle['version']} · exit code {bundle['exit_code']}"
                    f" · blocker digest `{escape(bundle['blocker_digest'])}`"
                )
            ]
        )
    )
    failing = f", failing: {', '.join(bundle['failing_checks'])}" if bundle["failing_checks"] else ""
    text = (
        f"{verdict.value}: {release['id']} decided by @{bundle['decided_by']}"
        f" — {bundle['checks_passed']}/{bundle['checks_total']} checks pass{failing}"
    )
    return message(escape(one_line(text)), blocks)


def _record_checks(bundle: Mapping[str, Any]) -> str:
    lines = [f"*Checks passed {bundle['checks_passed']}/{bundle['checks_total']}*"]
    failing = [c for c in bundle["checks"] if c["status"] not in PASSING]
    for c in failing[:_MAX_FAILING_SHOWN]:
        tag = "" if c["severity"] == "required" else f" _({c['severity']})_"
        summary = escape(cut(one_line(c["summary"]), 160))
        lines.append(f"{_STATUS_MARK.get(c['status'], '·')} *{escape(c['name'])}*{tag} — {summary}")
    if len(failing) > _MAX_FAILING_SHOWN:
        lines.append(f"…and {len(failing) - _MAX_FAILING_SHOWN} more failing checks in the evidence bundle")
    if not failing:
        lines.append("Every check passes.")
    return _first_chunk(lines, "lines")


def _record_signature(sig: Mapping[str, Any]) -> str:
    comment = f": “{escape(cut(one_line(sig['comment']), 200))}”" if sig["comment"] else ""
    return f"{user_ref(sig['user'])} {stamp(sig['at'], seconds=False)}{comment}"


def _record_signoffs(roles: Sequence[Mapping[str, Any]]) -> str:
    lines = ["*Sign-offs*"]
    for r in roles:
        optional = "" if r["required"] else " _(optional)_"
        count = f"({len(r['approvals'])}/{r['min_approvals']})"
        if r["rejections"]:
            mark, body = "❌", "rejected by " + "; ".join(_record_signature(s) for s in r["rejections"])
        elif r["met"]:
            mark, body = "✅", "approved by " + "; ".join(_record_signature(s) for s in r["approvals"])
        else:
            approved = "; ".join(_record_signature(s) for s in r["approvals"])
            mark, body = "⬜", (f"approved by {approved}; " if approved else "") + "not met"
        lines.append(f"{mark} *{escape(r['label'])}* {count}{optional} — {body}")
        lines += [
            f"      ~{user_ref(s['user'])} {s['vote']}d {stamp(s['at'], seconds=False)}~ _stale: {escape(s['reason'])}_"
            for s in r["stale"]
        ]
    return _first_chunk(lines, "sign-off lines")


def _record_risks(risks: Sequence[Mapping[str, Any]]) -> str:
    lines = ["*Accepted risks*"]
    for a in risks:
        until = f" until {stamp(a['expires_at'], seconds=False)}" if a["expires_at"] else ""
        reason = escape(cut(one_line(a["reason"]), 300))
        lines.append(
            f"🟡 *{escape(a['risk_id'])}* ({escape(a['impact'] or '?')}) — accepted by {user_ref(a['user'])}"
            f" as {escape(a['role'])} {stamp(a['at'], seconds=False)}{until}: “{reason}”"
        )
    return _first_chunk(lines, "risks")


def _record_override(override: Mapping[str, Any], mentioned: Sequence[str]) -> str:
    state = (
        "active" if override["active"] else f"not active ({escape(override['invalid_reason'] or 'approvals missing')})"
    )
    approvals = "; ".join(
        f"{user_ref(a['user'])} as {escape(a['role'])} {stamp(a['at'], seconds=False)}" for a in override["approvals"]
    )
    lines = [
        f"*Override* {state}, requested by {user_ref(override['requested_by'])}"
        f" {stamp(override['at'], seconds=False)}: “{escape(cut(one_line(override['reason']), 500))}”",
        f"Approved by {approvals or 'nobody yet'} · expires {stamp(override['expires_at'], seconds=False)}",
    ]
    if override["failing"]:
        lines.append("Failing when overridden:")
        lines += [f"• {_slack_text(text, mentioned)}" for text in override["failing"]]
    return _first_chunk(lines, "failing items")


def _record_next_step(step: Mapping[str, Any], mentioned: Sequence[str]) -> str:
    if not step["fix"]:
        monitor = ", ".join(f"`{escape(r)}`" for r in step["monitor"])
        return f"*Next step:* {escape(step['text'])}" + (f" ({monitor})" if monitor else "")
    if step["text"].startswith("proceed"):
        # Under an override the items to fix are exactly the override's "failing" list, shown above.
        return "*Next step:* proceed under override; fix what was failing (above) after release"
    lines = ["*Next step:* fix:"]
    lines += [f"• {_slack_text(item, mentioned)}" for item in step["fix"]]
    return _first_chunk(lines, "items")
