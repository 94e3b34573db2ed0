"""The modals behind the card's buttons (pure Block Kit views) and reading their submissions.

Each modal carries what it is about in `private_metadata` (release, subject, channel), so the
submission handler needs nothing but the payload, whichever replica receives it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import CheckboxesElement, InputBlock, Option, PlainTextInputElement
from slack_sdk.models.views import View

from bot.core.text import cut
from bot.slack.blocks import escape, section

MODAL_APPROVE = "gonogo_approve_modal"
MODAL_REJECT = "gonogo_reject_modal"
MODAL_MANUAL = "gonogo_manual_modal"
MODAL_RISK = "gonogo_risk_modal"
MODAL_ROLLBACK = "gonogo_rollback_modal"
RUN_NOW = "run_now"  # the block, action and option of the rollback modal's "run the command now"
INPUT_ACTION = "value"
MAX_INPUT = 2000  # characters, every text input (Slack enforces it in its client; forged payloads do not)


@dataclass(frozen=True)
class ModalContext:
    release: str
    subject: str  # role, check or risk id
    channel: str
    sha: str | None = None  # the commit of the card the button was on (a sign-off is bound to it)

    def encode(self) -> str:
        return json.dumps({"release": self.release, "subject": self.subject, "channel": self.channel, "sha": self.sha})

    @classmethod
    def decode(cls, raw: str) -> ModalContext:
        data = json.loads(raw)
        sha = data.get("sha")
        return cls(
            release=str(data["release"]),
            subject=str(data["subject"]),
            channel=str(data["channel"]),
            sha=str(sha) if sha else None,
        )


def _text_input(
    block_id: str, label: str, *, optional: bool, multiline: bool, placeholder: str, initial: str | None = None
) -> InputBlock:
    return InputBlock(
        block_id=block_id,
        label=label,
        optional=optional,
        element=PlainTextInputElement(
            action_id=INPUT_ACTION,
            multiline=multiline,
            max_length=MAX_INPUT,
            placeholder=cut(placeholder, 150),
            initial_value=cut(initial, MAX_INPUT) if initial else None,
        ),
    )


def _view(callback_id: str, title: str, submit: str, context: ModalContext, blocks: list[Any]) -> dict[str, Any]:
    view = View(
        type="modal",
        callback_id=callback_id,
        title=cut(title, 24),
        submit=submit,
        close="Cancel",
        private_metadata=context.encode(),
        blocks=blocks,
    )
    return view.to_dict()  # to_dict() validates


def approve_modal(context: ModalContext, label: str) -> dict[str, Any]:
    return _view(
        MODAL_APPROVE,
        "Approve",
        "Approve",
        context,
        [
            section(f"Approve *{escape(context.release)}* as *{escape(label)}*."),
            _text_input("comment", "Comment", optional=True, multiline=True, placeholder="What you checked (optional)"),
        ],
    )


def reject_modal(context: ModalContext, label: str) -> dict[str, Any]:
    return _view(
        MODAL_REJECT,
        "Reject",
        "Reject",
        context,
        [
            section(f"Reject *{escape(context.release)}* as *{escape(label)}*. Everyone will see your reason."),
            _text_input("reason", "Reason", optional=False, multiline=True, placeholder="What must change first"),
        ],
    )


def manual_modal(context: ModalContext, title: str, instructions: str | None) -> dict[str, Any]:
    hint = f"\n_{escape(instructions)}_" if instructions else ""
    return _view(
        MODAL_MANUAL,
        "Mark done",
        "Mark done",
        context,
        [
            section(f"Mark *{escape(title)}* done for *{escape(context.release)}*.{hint}"),
            _text_input("evidence", "Evidence", optional=False, multiline=True, placeholder="A link or a sentence"),
        ],
    )


def risk_modal(context: ModalContext, description: str, mitigation: str | None) -> dict[str, Any]:
    mitigated = f"\nMitigation: {escape(mitigation)}" if mitigation else ""
    what = f"*{escape(context.subject)}* for *{escape(context.release)}*"
    return _view(
        MODAL_RISK,
        "Accept risk",
        "Accept",
        context,
        [
            section(f"Accept risk {what}: {escape(description)}{mitigated}"),
            _text_input("reason", "Why it is acceptable", optional=False, multiline=True, placeholder="Reason"),
            _text_input(
                "expires", "Expires after", optional=True, multiline=False, placeholder="e.g. 7d, 24h (optional)"
            ),
        ],
    )


def rollback_modal(context: ModalContext, gate_name: str, reason: str, command: str | None) -> dict[str, Any]:
    """Confirm `/gonogo rollback`: the release, the reason (editable, as typed: masked already), and
    "run the rollback command now" when the gate has one."""
    blocks: list[Any] = [
        section(
            f"Roll back *{escape(context.release)}* ({escape(gate_name)})? The announcement, with your reason,"
            " goes to the gate's channel; the release's signers and opener are told in its thread."
        ),
        _text_input("reason", "Reason", optional=False, multiline=True, placeholder="What went wrong", initial=reason),
    ]
    if command is not None:
        blocks.append(
            InputBlock(
                block_id=RUN_NOW,
                label="Rollback command",
                optional=True,
                hint=cut(f"Runs: {command}", 150),
                element=CheckboxesElement(
                    action_id=RUN_NOW,
                    options=[Option(value=RUN_NOW, text="Run the rollback command now")],
                ),
            )
        )
    return _view(MODAL_ROLLBACK, "Roll back", "Roll back", context, blocks)


def checked(view: dict[str, Any], block_id: str) -> bool:
    """Whether the checkbox `block_id` (its only option) was ticked in a submitted view."""
    state = view.get("state", {}).get("values", {}).get(block_id, {}).get(block_id, {})
    return any(isinstance(o, dict) and o.get("value") == block_id for o in state.get("selected_options") or [])


def too_long(view: dict[str, Any]) -> dict[str, str]:
    """Inputs longer than the modal allows, as the `errors` of a view submission's ack."""
    errors = {}
    for block_id, inputs in (view.get("state", {}).get("values") or {}).items():
        value = (inputs or {}).get(INPUT_ACTION, {}).get("value") if isinstance(inputs, dict) else None
        if isinstance(value, str) and len(value) > MAX_INPUT:
            errors[str(block_id)] = f"At most {MAX_INPUT} characters, please ({len(value)} given)."
    return errors


def submitted(view: dict[str, Any], block_id: str) -> str:
    """The text a user typed into one input of a submitted view ('' when left empty)."""
    value = view.get("state", {}).get("values", {}).get(block_id, {}).get(INPUT_ACTION, {}).get("value")
    return str(value or "").strip()
