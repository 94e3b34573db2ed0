"""The evidence bundle as a Markdown file (uploaded to Slack, printed by `gonogo export`).

Rendered from the bundle dict only, never from live objects. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from bot.core.decision import Verdict
from bot.core.evidence import (
    LEVEL_MARK,
    PASSING,
    STATUS_MARK,
    check_title,
    counts_text,
    duration_text,
    policy_text,
    stamp,
)
from bot.core.text import one_line

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
    if score:
        out += ["", *_md_score_terms(score)]
    if bundle.get("stages"):
        out += ["", *_md_stages(bundle["stages"])]
    out += ["", "## Next step", "", *_md_next_step(bundle["next_step"])]
    out += ["", *_md_checks(bundle)]
    out += ["", "## Reasons", ""]
    reasons = bundle["reasons"]
    out += [
        f"- {LEVEL_MARK.get(r['level'], '·')} **{r['level']}** `{r['code']}`"
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


def _md_score_terms(score: Mapping[str, Any]) -> list[str]:
    """Every check's part in the risk score: its score (graded, or pass 1 / fail 0) and weight."""
    rows = [
        (
            t["key"],
            f"{t.get('value', t['passed'] / t['total'] if t['total'] else 0):.2f}",
            f"{t['weight']:g}",
            item["check"],
            f"{item['score']:.2f}" + (" (graded)" if item["graded"] else " (pass/fail)"),
            f"{item['weight']:.4g}",
        )
        for t in score["terms"]
        for item in t.get("checks", [])
    ]
    if not rows:  # a bundle written before graded scores
        return []
    return ["## Risk score terms", "", *_md_table(["Term", "Value", "Weight", "Check", "Score", "Check weight"], rows)]


def _md_stages(stages: Mapping[str, Any]) -> list[str]:
    """The rollout ladder at the moment of the record, and every stage's open conditions."""
    names = {s["id"]: s["name"] for s in stages["ladder"]}
    what = "Promoted to" if stages["action"] == "promote" else "Decided for"
    lines = ["## Stages", "", f"**{what} {one_line(stages['name'])}** (`{stages['stage']}`)"]
    if stages["from"]:
        lines[-1] += f", from {one_line(names.get(stages['from'], stages['from']))}"
    if stages["override"]:
        lines += ["", "⚠️ The stage was not GO: a break-glass override passed it (see Override)."]
    rows = [
        (s["name"], s["verdict"], len(s["open"]) or "—", "yes" if s["id"] == stages["stage"] else "")
        for s in stages["ladder"]
    ]
    lines += ["", *_md_table(["Stage", "Verdict", "Open conditions", "This record"], rows)]
    for s in stages["ladder"]:
        own = [c for c in s["open"] if c["stage"] == s["id"]]
        if own:
            lines += ["", f"### Before {one_line(s['name'])}", ""]
            lines += [
                f"- {one_line(c['text'])}"
                + (f" — owner {c['owner']}" if c["owner"] else "")
                + (f", due {c['due']}" if c["due"] else "")
                + (" **(overdue)**" if c["overdue"] else "")
                for c in own
            ]
    return lines


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
            f"{STATUS_MARK.get(c['status'], '·')} {c['status']}",
            check_title(c),
            c["kind"] or "—",
            c["severity"] + (f", group {c['group']}" if c["group"] else ""),
            c["summary"],
            "—" if c["value"] is None else f"{c['value']:g}",
            duration_text(c["duration_s"]),
            stamp(c["finished_at"]),
        )
        for c in checks
    ]
    lines += _md_table(["Status", "Check", "Kind", "Severity", "Summary", "Value", "Duration", "Finished"], rows)
    failing = [c for c in checks if c["status"] not in PASSING]
    if failing:
        lines += ["", "### Failing checks"]
        for c in failing:
            lines += ["", f"#### {STATUS_MARK.get(c['status'], '·')} {check_title(c)} — {c['status']}"]
            lines += ["", one_line(c["summary"]), ""]
            lines.append(md_fence(c["details"]) if c["details"].strip() else "_no output_")
    others = [c for c in checks if c["status"] in PASSING and c["details"].strip()]
    if others:
        lines += ["", "### Output of passing checks"]
        for c in others:
            lines += ["", f"#### {check_title(c)}", "", md_fence(c["details"])]
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
            duration_text(r["duration_s"]),
            ", ".join(r["check_ids"]),
            r["verdict"],
            counts_text(r["counts"]),
        )
        for r in runs
    ]
    return lines + _md_table(["Run", "By", "Started", "Finished", "Duration", "Checks", "Verdict", "Counts"], rows)
