"""The decision record as posted to the gate's channel, rendered from the evidence bundle dict only.

Pure Block Kit rendering: no Slack calls."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from slack_sdk.models.blocks import Block, ContextBlock, HeaderBlock, MarkdownTextObject, PlainTextObject

from bot.core.decision import Verdict
from bot.core.evidence import PASSING, STATUS_MARK, stamp
from bot.core.text import SECTION_LIMIT, chunk_lines, cut, one_line
from bot.slack.blocks import HEADER_LIMIT, Message, escape, escape_code, message, section, user_ref

MAX_FAILING_SHOWN = 15  # on the Slack record; the bundle lists them all


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
        + (f" · commit `{escape_code(release['sha'][:12])}`" if release["sha"] else " · no commit"),
        f"Decided {stamp(bundle['decided_at'], seconds=False)} by {user_ref(bundle['decided_by'])}",
        f"Gate file `{escape_code(PurePath(gate['file']).name)}` · sha256 `{escape_code(gate['sha256'][:12])}…`"
        f" · {escape(bundle['policy'].get('kind', '?'))} policy",
    ]
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=cut(header, HEADER_LIMIT), emoji=True)),
        section("\n".join(facts)),
        section(_record_checks(bundle)),
    ]
    if bundle.get("stages"):
        blocks.insert(2, section(_record_stages(bundle["stages"])))
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
                    f" · blocker digest `{escape_code(bundle['blocker_digest'])}`"
                )
            ]
        )
    )
    failing = f", failing: {', '.join(bundle['failing_checks'])}" if bundle["failing_checks"] else ""
    text = (
        f"{verdict.value}: {release['id']} decided by @{bundle['decided_by']}"
        f" — {bundle['checks_passed']}/{bundle['checks_total']} checks pass{failing}"
    )
    return message(one_line(text), blocks)


def _record_stages(stages: Mapping[str, Any]) -> str:
    """The stage this record decides, and the ladder as it stood."""
    what = "Promoted to" if stages["action"] == "promote" else "Decided for"
    head = f"*{what} {escape(one_line(stages['name']))}*"
    if stages["override"]:
        head += " — ⚠️ not GO: passed by a break-glass override"
    rungs = []
    for s in stages["ladder"]:
        verdict = Verdict(s["verdict"])
        body = verdict.value if verdict is not Verdict.NO_GO else f"{len(s['open'])} open"
        rungs.append(f"{verdict.emoji} {escape(one_line(s['name']))} — {body}")
    return _first_chunk([head, " · ".join(rungs)], "lines")


def _record_checks(bundle: Mapping[str, Any]) -> str:
    lines = [f"*Checks passed {bundle['checks_passed']}/{bundle['checks_total']}*"]
    failing = [c for c in bundle["checks"] if c["status"] not in PASSING]
    for c in failing[:MAX_FAILING_SHOWN]:
        tag = "" if c["severity"] == "required" else f" _({c['severity']})_"
        summary = escape(cut(one_line(c["summary"]), 160))
        lines.append(f"{STATUS_MARK.get(c['status'], '·')} *{escape(c['name'])}*{tag} — {summary}")
    if len(failing) > MAX_FAILING_SHOWN:
        lines.append(f"…and {len(failing) - MAX_FAILING_SHOWN} more failing checks in the evidence bundle")
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
        monitor = ", ".join(f"`{escape_code(r)}`" for r in step["monitor"])
        return f"*Next step:* {escape(step['text'])}" + (f" ({monitor})" if monitor else "")
    if step["text"].startswith("proceed"):
        # Under an override the items to fix are exactly the override's "failing" list, shown above.
        return "*Next step:* proceed under override; fix what was failing (above) after release"
    lines = ["*Next step:* fix:"]
    lines += [f"• {_slack_text(item, mentioned)}" for item in step["fix"]]
    return _first_chunk(lines, "items")
