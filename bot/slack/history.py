"""`/gonogo history <release>`: the release's audit trail as an ephemeral Slack message.

Pure: the entries (oldest first, as `Store.audit` returns them) and the clock are parameters.

Paging: pages are numbered 1..P from the oldest, but they are cut from the NEWEST end, so the
last page always holds the newest PAGE_SIZE entries and page 1 holds whatever is left over
(possibly fewer). The default (no `--page`) is the last page: what people ask history for is
"what just happened". Within a page, entries run oldest to newest (newest last), like a chat.
A page outside 1..P gets a clear message naming the valid range, never a silent clamp: a
mistyped page number should not look like "nothing happened".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_sdk.models.blocks import Block

from bot.core.decision import Verdict
from bot.core.results import Status
from bot.core.text import chunk_lines, cut, one_line
from bot.slack.blocks import Message, context, escape, escape_code, message, reason_mrkdwn, section, user_ref
from bot.store.store import AuditEntry

PAGE_SIZE = 40
LINE_LIMIT = 400  # one entry's line; 40 of them fit 6 sections, far below the 50-block limit
COMMENT_LIMIT = 200
DATA_LIMIT = 200  # the generic fallback's compact data


# --- paging ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    number: int  # 1..pages
    pages: int
    start: int  # index of the first entry shown (0-based, inclusive)
    stop: int  # index after the last entry shown
    total: int

    @property
    def older(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def newer(self) -> int | None:
        return self.number + 1 if self.number < self.pages else None


def page_count(total: int) -> int:
    return -(-total // PAGE_SIZE)  # ceiling division


def paginate(total: int, page: int | None) -> Page | None:
    """The slice to show, or None when `page` is outside 1..P (or there is nothing at all)."""
    pages = page_count(total)
    number = pages if page is None else page
    if pages == 0 or not 1 <= number <= pages:
        return None
    # Cut from the newest end: page P ends at `total`, each older page PAGE_SIZE before.
    stop = total - (pages - number) * PAGE_SIZE
    return Page(number=number, pages=pages, start=max(0, stop - PAGE_SIZE), stop=stop, total=total)


# --- one entry ---------------------------------------------------------------------------------


def _text(value: Any, limit: int = COMMENT_LIMIT) -> str:
    """User- or tool-provided text: one line, cut, escaped (so `<!channel>` cannot ping)."""
    return escape(cut(one_line(str(value)), limit))


def _code(value: Any, limit: int = 60) -> str:
    # Backticks inside would end the code span early; ids and shas never contain any.
    return "`" + escape_code(cut(str(value).replace("`", "'"), limit)) + "`"


def _sha(value: Any) -> str:
    return _code(str(value)[:7]) if value else "no commit"


def _quote(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return f": “{_text(value)}”" if value else ""


def _when(value: Any) -> str:
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return _text(value, 40)
    return stamp(moment)


def _verdict(value: Any) -> str:
    if value is None:
        return "?"
    try:
        verdict = Verdict(str(value))
    except ValueError:
        return _text(value, 40)
    return f"{verdict.emoji} {verdict.value}"


def _counts(counts: Any) -> str:
    if not isinstance(counts, Mapping) or not counts:
        return ""
    order = [s.value for s in Status]
    keys = sorted(counts, key=lambda k: (order.index(k) if k in order else len(order), str(k)))
    return ", ".join(f"{counts[k]} {_text(k, 20)}" for k in keys)


def _role(data: Mapping[str, Any]) -> str:
    # The service may add the role's label; the id alone is still unambiguous.
    label, role = data.get("label"), data.get("role", "?")
    return f"*{_text(label, 60)}*" if label else _code(role)


def _opened(actor: str, data: Mapping[str, Any]) -> str:
    sha = f"sha {_sha(data['sha'])}" if data.get("sha") else "no commit"
    return f"opened by {actor} ({sha})"


def _sha_moved(actor: str, data: Mapping[str, Any]) -> str:
    return f"commit moved from {_sha(data.get('from'))} to {_sha(data.get('to'))} by {actor}"


def _run(actor: str, data: Mapping[str, Any]) -> str:
    checks = data.get("checks")
    count = f"{len(checks)} check(s)" if isinstance(checks, list) else "checks"
    duration = data.get("duration_s")
    took = f" in {float(duration):.1f} s" if isinstance(duration, int | float) else ""
    counts = _counts(data.get("counts"))
    return f"run by {actor}: {count}{took} → {_verdict(data.get('verdict'))}" + (f" ({counts})" if counts else "")


def _signed(actor: str, data: Mapping[str, Any]) -> str:
    vote = str(data.get("vote", "approve"))
    verb = {"approve": "✅ approved", "reject": "❌ rejected"}.get(vote, _text(vote, 20))
    return f"{actor} {verb} as {_role(data)}{_quote(data, 'comment')}"


def _withdrawn(actor: str, data: Mapping[str, Any]) -> str:
    return f"{actor} withdrew their {_role(data)} sign-off"


def _refused(actor: str, data: Mapping[str, Any]) -> str:
    # The signing service records what was attempted (`action`); a `reason` is shown when given.
    action = _text(data.get("action") or "a sign-off", 120)
    why = f": {_text(data['reason'])}" if data.get("reason") else ""
    role = f" (role {_role(data)})" if data.get("role") or data.get("label") else ""
    return f"🚫 refused {actor}: {action}{role}{why}"


def _signoff_stale(actor: str, data: Mapping[str, Any]) -> str:
    whose = user_ref(str(data["user"])) + "'s" if data.get("user") else "a"
    return f"🕰️ {whose} {_role(data)} sign-off went stale: {_text(data.get('reason', 'no reason given'))}"


def _manual_done(actor: str, data: Mapping[str, Any]) -> str:
    evidence = f" with evidence {_text(data['evidence'], 300)}" if data.get("evidence") else " (no evidence given)"
    return f"{actor} marked manual check {_code(data.get('check', '?'))} done{evidence}"


def _manual_reopened(actor: str, data: Mapping[str, Any]) -> str:
    evidence = f" (evidence was {_text(data['evidence'], 300)})" if data.get("evidence") else ""
    return f"{actor} reopened manual check {_code(data.get('check', '?'))}{evidence}{_quote(data, 'reason')}"


def _risk_accepted(actor: str, data: Mapping[str, Any]) -> str:
    risk = data.get("risk") or data.get("risk_id") or "?"
    role = f" as {_role(data)}" if data.get("role") or data.get("label") else ""
    until = f" until {_when(data['expires_at'])}" if data.get("expires_at") else ""
    return f"🟡 {actor} accepted risk {_code(risk)}{role}{until}{_quote(data, 'reason')}"


def _override_requested(actor: str, data: Mapping[str, Any]) -> str:
    sha = f" for {_sha(data['sha'])}" if data.get("sha") else ""
    return f"🟠 {actor} requested an override{sha}{_quote(data, 'reason')}"


def _override_approved(actor: str, data: Mapping[str, Any]) -> str:
    return f"{actor} approved the override as {_role(data)}"


def _override_active(actor: str, data: Mapping[str, Any]) -> str:
    until = f" until {_when(data['expires_at'])}" if data.get("expires_at") else ""
    approvers = data.get("approvers") or []
    by = f", approved by {', '.join(user_ref(str(u)) for u in approvers)}" if approvers else ""
    failing = [str(f) for f in data.get("failing") or []]
    # Reason texts carry `{@U…}` tokens: reason_mrkdwn escapes them and keeps the mentions.
    lets = "; ".join(reason_mrkdwn(cut(one_line(f), 150)) for f in failing[:5])
    more = f" (+{len(failing) - 5} more)" if len(failing) > 5 else ""
    return f"🟠 override active{until}{by}" + (f" · overriding: {lets}{more}" if failing else "")


def _override_cancelled(actor: str, data: Mapping[str, Any]) -> str:
    by = f" requested by {user_ref(str(data['requested_by']))}" if data.get("requested_by") else ""
    return f"🟠 {actor} cancelled the override{by}"


def _override_expired(actor: str, data: Mapping[str, Any]) -> str:
    return "override expired" + (f": {_text(data['reason'])}" if data.get("reason") else "")


def _decided(actor: str, data: Mapping[str, Any]) -> str:
    tally = ""
    if isinstance(data.get("checks_passed"), int) and isinstance(data.get("checks_total"), int):
        tally = f" ({data['checks_passed']}/{data['checks_total']} checks pass)"
    return f"decided by {actor}: {_verdict(data.get('verdict'))}{tally}"


def _closed(actor: str, data: Mapping[str, Any]) -> str:
    return f"closed by {actor}{_quote(data, 'reason')}"


def _reopened(actor: str, data: Mapping[str, Any]) -> str:
    return f"reopened by {actor}{_quote(data, 'reason')}"


def _evidence_uploaded(actor: str, data: Mapping[str, Any]) -> str:
    name = _code(data["file"], 120) if data.get("file") else "the evidence bundle"
    verdict = f" ({_verdict(data['verdict'])})" if data.get("verdict") else ""
    return f"📎 {name}{verdict} uploaded by {actor}"


DESCRIBERS: dict[str, Callable[[str, Mapping[str, Any]], str]] = {
    "opened": _opened,
    "sha_moved": _sha_moved,
    "run": _run,
    "signed": _signed,
    "withdrawn": _withdrawn,
    "signoff_refused": _refused,
    "refused": _refused,
    "signoff_stale": _signoff_stale,
    "manual_done": _manual_done,
    "manual_reopened": _manual_reopened,
    "risk_accepted": _risk_accepted,
    "override_requested": _override_requested,
    "override_approved": _override_approved,
    "override_active": _override_active,
    "override_cancelled": _override_cancelled,
    "override_expired": _override_expired,
    "decided": _decided,
    "closed": _closed,
    "reopened": _reopened,
    "evidence_uploaded": _evidence_uploaded,
}


def _generic(entry: AuditEntry) -> str:
    # An event this renderer does not know yet (a newer replica wrote it): still show the facts.
    data = json.dumps(entry.data, sort_keys=True, default=str, ensure_ascii=False) if entry.data else ""
    return f"{_code(entry.type)} by {user_ref(entry.actor)}" + (f": {_text(data, DATA_LIMIT)}" if data else "")


def describe(entry: AuditEntry) -> str:
    """What happened, as escaped mrkdwn without the time: `opened by <@U01> (sha `abc1234`)`."""
    describer = DESCRIBERS.get(entry.type)
    if describer is None:
        return _generic(entry)
    try:
        return describer(user_ref(entry.actor), entry.data)
    except (KeyError, TypeError, ValueError):
        # Malformed data (hand-edited stream, older writer) must not hide the whole history.
        return _generic(entry)


def stamp(moment: datetime) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def entry_line(entry: AuditEntry) -> str:
    return cut(f"{stamp(entry.at)} · {describe(entry)}", LINE_LIMIT)


# --- the message -------------------------------------------------------------------------------


def _command(release_id: str, page: int) -> str:
    return f"`/gonogo history {escape_code(release_id)} --page {page}`"


def navigation(release_id: str, page: Page) -> str:
    """`Showing 41–80 of 80 · page 2 of 2 · older: `/gonogo history payments@1.4.0 --page 1``."""
    parts = [f"Showing {page.start + 1}–{page.stop} of {page.total}"]
    if page.pages > 1:
        parts.append(f"page {page.number} of {page.pages}")
    if page.older is not None:
        parts.append(f"older: {_command(release_id, page.older)}")
    if page.newer is not None:
        parts.append(f"newer: {_command(release_id, page.newer)}")
    return " · ".join(parts)


def render_history(
    release_id: str, entries: Sequence[AuditEntry], *, page: int | None = None, now: datetime
) -> Message:
    """One page of the audit trail (oldest first in, newest last out); the last page by default."""
    title = f"*History of {escape(release_id)}*"
    as_of = f"as of {stamp(now)}"
    if not entries:
        text = f"{title}\nNothing recorded yet."
        return message(f"No history for {release_id} yet", [section(text), context(as_of)])
    shown = paginate(len(entries), page)
    if shown is None:
        pages = page_count(len(entries))
        valid = "page 1" if pages == 1 else f"pages 1–{pages}"
        text = (
            f"{title}\nThere is no page {page}: {len(entries)} entries make {valid}"
            f" ({PAGE_SIZE} a page, page {pages} is the newest). Try {_command(release_id, pages)}."
        )
        return message(f"No page {page} in the history of {release_id}", [section(text), context(as_of)])
    lines = [entry_line(e) for e in entries[shown.start : shown.stop]]
    blocks: list[Block] = [section(f"{title} · {navigation(release_id, shown)}")]
    blocks += [section(chunk) for chunk in chunk_lines(lines)]
    blocks.append(context(as_of))
    fallback = f"History of {release_id}: entries {shown.start + 1}–{shown.stop} of {shown.total}"
    return message(fallback, blocks)
