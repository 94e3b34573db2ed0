"""The notices a release's card thread gets (pure): check details, the full results listing, the
open-conditions listing and re-asks of stale sign-offs.

A service builds them inside the atomic step that writes the facts they report (a run's record, the
note that a signature was asked about again: bot/store/store.py); bot/slack/thread_notices.py renders
them. Payloads hold masked facts (check results as the runner masked them), never rendered text.
Keys derive from those facts, so a repeated step posts nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime

from bot.core.announcements import SIGNOFF_STALE
from bot.core.gate import Gate
from bot.core.notices import Notice, Target, notice_key
from bot.core.results import CheckResult, Status
from bot.core.stages import Ladder

CHECK_DETAILS = "check_details"  # payload: {"title", "result": CheckResult JSON}
RESULTS_LISTING = "results_listing"  # payload: {"gate", "total", "rows": [{"title", "result": JSON | None}]}
CONDITIONS_LISTING = "conditions_listing"  # payload: {"gate", "ladder": Ladder JSON}

# What the card shows and what goes to the thread instead (the card's renderer folds at the same bounds).
FOLD_AT = 15  # above this many checks, passing ones fold into one line on the card
MAX_CONDITIONS_SHOWN = 12  # under "Why" on a staged card; more fold, and the thread lists them all
LISTING_ROWS = 300  # checks per results-listing message: 300 lines of at most ~300 characters fit its 50 blocks


def _notice(kind: str, release_id: str, target: Target, payload: dict[str, object], key: str, at: datetime) -> Notice:
    return Notice(
        kind=kind,
        gate_id=release_id.partition("@")[0],
        release_id=release_id,
        target=target,
        payload=payload,
        key=key,
        created_at=at,
    )


def check_details(
    gate: Gate, release_id: str, target: Target, run_id: str, result: CheckResult, at: datetime
) -> Notice:
    """A check that did not pass: its summary and output tail (masked by the runner), once per run."""
    check = next((c for c in gate.checks if c.id == result.check_id), None)
    payload: dict[str, object] = {
        "title": check.title if check else result.check_id,
        "result": result.model_dump(mode="json"),
    }
    key = notice_key(CHECK_DETAILS, release_id, run_id, result.check_id)
    return _notice(CHECK_DETAILS, release_id, target, payload, key, at)


def run_details(
    gate: Gate,
    release_id: str,
    target: Target,
    run_id: str,
    ran: Sequence[CheckResult],
    stored: Mapping[str, CheckResult],
    at: datetime,
) -> list[Notice]:
    """What a run's end posts in the card's thread: the details of each check of the run that did not
    pass and, for a gate whose card folds its passing checks, every check's latest result (`stored`)."""
    notices: list[Notice] = []
    if len(gate.checks) > FOLD_AT:
        rows = []
        for check in gate.checks:
            found = stored.get(check.id)
            # The listing shows one line per check: the output tail stays in the details.
            slim = found.model_copy(update={"details": ""}).model_dump(mode="json") if found else None
            rows.append({"title": check.title, "result": slim})
        for page, start in enumerate(range(0, len(rows), LISTING_ROWS)):
            payload: dict[str, object] = {
                "gate": gate.name,
                "total": len(gate.checks),
                "rows": rows[start : start + LISTING_ROWS],
            }
            key = notice_key(RESULTS_LISTING, release_id, run_id, str(page))
            notices.append(_notice(RESULTS_LISTING, release_id, target, payload, key, at))
    for result in ran:
        if not (result.status.passing or result.status is Status.PENDING):
            notices.append(check_details(gate, release_id, target, run_id, result, at))
    return notices


def conditions_listing(
    gate: Gate, release_id: str, target: Target, ladder: Ladder | None, key: str, at: datetime
) -> list[Notice]:
    """A staged card shows a dozen open conditions; past that, the thread lists them all (`key`: what
    makes this listing unique, e.g. the run that found them)."""
    if ladder is None or sum(len(s.own()) for s in ladder.stages) <= MAX_CONDITIONS_SHOWN:
        return []
    payload: dict[str, object] = {"gate": gate.name, "ladder": ladder.model_dump(mode="json")}
    key = notice_key(CONDITIONS_LISTING, release_id, key)
    return [_notice(CONDITIONS_LISTING, release_id, target, payload, key, at)]


def stale_token(role: str, user: str, signed_at: datetime) -> str:
    """A stale signature, as noted once it was asked about (the webhook's moves note the same)."""
    return f"{role}|{user}|{signed_at.isoformat()}"


def stale_signers(
    release_id: str, target: Target, signers: Sequence[Mapping[str, str]], tokens: Sequence[str], at: datetime
) -> Notice:
    """The signers of stale sign-offs, asked to sign again (`signers`: [{"user", "vote", "label",
    "reason"}]). Keyed by the signatures asked about (`tokens`): the same ask is posted once."""
    digest = hashlib.sha256("\n".join(sorted(tokens)).encode()).hexdigest()[:24]
    payload: dict[str, object] = {"release": release_id, "signers": [dict(s) for s in signers]}
    return _notice(SIGNOFF_STALE, release_id, target, payload, notice_key("signoff-stale", release_id, digest), at)
