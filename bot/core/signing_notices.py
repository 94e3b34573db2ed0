"""The notices of break-glass overrides, promotions and evidence uploads (pure): which message,
where, under which key.

The services build these inside the atomic step that records what happened (an override request,
the approval that completes its quorum, a promotion). Payloads hold facts (masked where they came
from a tool), never rendered text: their renderers (bot/slack/signing_render.py) escape every field
that came from outside. Keys make each one unique, so a retried write or delivery posts it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.core.notices import Notice, Target, notice_key

OVERRIDE_REQUEST = "override_request"
OVERRIDE_ACTIVE = "override_active"
PROMOTION = "promotion"
FILE_UPLOAD = "file_upload"  # the deliverer uploads the payload's content (files_upload_v2)


def override_request(
    gate_id: str,
    release_id: str,
    *,
    request_id: str,
    requested_by: str,
    reason: str,
    approvers: Sequence[tuple[str, str, int]],
    targets: Sequence[tuple[str, Target]],
    at: datetime,
) -> list[Notice]:
    """The request with its Approve buttons, once per (name, target): the card's thread and the
    channel. `approvers`: (role id, role title, approvals needed) in the gate's order."""
    payload = {
        "release": release_id,
        "request": request_id,
        "requested_by": requested_by,
        "reason": reason,
        "approvers": [{"role": role, "label": label, "count": count} for role, label, count in approvers],
    }
    return [
        Notice(
            kind=OVERRIDE_REQUEST,
            gate_id=gate_id,
            release_id=release_id,
            target=target,
            payload=payload,
            key=notice_key(OVERRIDE_REQUEST, release_id, request_id, name),
            created_at=at,
            actor=requested_by,
        )
        for name, target in targets
    ]


def override_active(
    gate_id: str,
    release_id: str,
    channel: str,
    *,
    request_id: str,
    reason: str,
    approvers: Sequence[tuple[str, str]],
    failing: Sequence[str],
    at: datetime,
) -> Notice:
    """The quorum is met: the channel hears who let it go and what fails right now (a freeze the
    override passes says so in its reason). Once per request. `approvers`: (user, role)."""
    return Notice(
        kind=OVERRIDE_ACTIVE,
        gate_id=gate_id,
        release_id=release_id,
        target=Target.to_channel(channel),
        payload={
            "release": release_id,
            "reason": reason,
            "approvers": [{"user": user, "role": role} for user, role in approvers],
            "failing": list(failing),
        },
        key=notice_key(OVERRIDE_ACTIVE, release_id, request_id),
        created_at=at,
    )


def promotion(
    gate_id: str,
    release_id: str,
    channel: str,
    *,
    stage: str,
    rev: int,
    actor: str,
    override: bool,
    opened: int,
    at: datetime,
) -> Notice:
    """ "🚀 payments@1.4.0 promoted to Canary 5%", once per promotion (the release revision it wrote)."""
    return Notice(
        kind=PROMOTION,
        gate_id=gate_id,
        release_id=release_id,
        target=Target.to_channel(channel),
        payload={"release": release_id, "stage": stage, "actor": actor, "override": override, "opened": opened},
        key=notice_key(PROMOTION, release_id, stage, str(rev)),
        created_at=at,
        actor=actor,
    )


def file_upload(
    gate_id: str,
    release_id: str,
    target: Target,
    *,
    key: str,
    content: str,
    filename: str,
    title: str,
    actor: str,
    at: datetime,
) -> Notice:
    """A file for a channel or the card's thread. `content` must be masked already: it is stored in
    the outbox as it is and uploaded verbatim."""
    return Notice(
        kind=FILE_UPLOAD,
        gate_id=gate_id,
        release_id=release_id,
        target=target,
        payload={"content": content, "filename": filename, "title": title},
        key=notice_key(FILE_UPLOAD, release_id, key),
        created_at=at,
        actor=actor,
    )
