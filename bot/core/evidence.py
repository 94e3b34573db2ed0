"""The decision record of a release ("evidence bundle"), frozen by `/gonogo decide`.

`build_bundle` gathers every fact behind a verdict into one JSON-serialisable dict. The Markdown
file and the Slack record are rendered from that dict ONLY, never from live objects: whatever an
auditor reads in the Markdown or in Slack is exactly what the JSON says, and a bundle loaded back
from storage years later renders the same way.

Pure functions: no I/O, no clock (the decision time is a parameter).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from bot.core.decision import Decision, Verdict
from bot.core.durations import format_duration
from bot.core.facts import DrillResult, RiskAcceptance, Signature
from bot.core.gate import Gate
from bot.core.loader import LoadedGate
from bot.core.mentions import MENTION
from bot.core.release import Release, RunRecord
from bot.core.results import CheckResult, Status
from bot.core.stages import Ladder, ladder_json
from bot.core.text import format_duration_short, plain
from checks.base import SpecBase

BUNDLE_VERSION = 1  # keys are only ever added; renaming one means bumping this
NOT_RUN = "not_run"
PASSING = frozenset({Status.PASS.value, Status.WARN.value})  # as in Status.passing

NEXT_GO = "proceed to canary"
NEXT_RISK = "proceed to canary with the accepted risks monitored"

_NO_DRILLS: Mapping[str, DrillResult] = MappingProxyType({})
STATUS_MARK = {
    **{s.value: s.emoji for s in Status},
    NOT_RUN: "⬜",
}
LEVEL_MARK = {"blocking": "🔴", "risk": "🟡", "warning": "🔸", "info": "ℹ️"}


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
    stages: Mapping[str, Any] | None = None,
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
        # Gates with rollout stages: which stage this record decides, and every stage's verdict.
        "stages": dict(stages) if stages is not None else None,
    }


def stages_section(
    ladder: Ladder, stage_id: str, *, action: str, previous: str | None = None, override: bool = False
) -> dict[str, Any]:
    """The `stages` section of a bundle: the stage decided (by `decide`, or a promotion to it), where
    the release came from, whether a break-glass override passed it, and every stage's verdict."""
    stage = ladder.get(stage_id)
    assert stage is not None
    return {
        "stage": stage.id,
        "name": stage.name,
        "action": action,  # "decide" or "promote"
        "from": previous,
        "override": override,
        "ladder": ladder_json(ladder),
        "overdue": [c.as_json() for c in ladder.overdue],
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
        "score": found.score if found else None,
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


def check_title(check: Mapping[str, Any]) -> str:
    return check["name"] if check["name"] == check["id"] else f"{check['name']} ({check['id']})"


def duration_text(seconds: float | None) -> str:
    return format_duration_short(seconds) if seconds is not None else "—"


def counts_text(counts: Mapping[str, int]) -> str:
    order = [s.value for s in Status]
    keys = sorted(counts, key=lambda k: (order.index(k) if k in order else len(order), k))
    return ", ".join(f"{counts[k]} {k}" for k in keys) or "none"
