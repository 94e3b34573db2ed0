"""Assertions on rendered Slack messages, shared by the card, record and history tests."""

from __future__ import annotations

from slack_sdk.models.blocks import Block

from bot.slack.blocks import Message


def assert_valid(message: Message, *, text_limit: int = 40_000) -> None:
    """What Slack itself enforces: 50 blocks, valid Block Kit, unique block ids, section and header
    text limits; `text_limit` lets a renderer hold its notification text to a tighter bound."""
    assert 0 < len(message.blocks) <= 50
    assert message.text and len(message.text) <= text_limit
    ids = [b["block_id"] for b in message.blocks if "block_id" in b]
    assert len(ids) == len(set(ids))
    for raw in message.blocks:
        block = Block.parse(raw)
        assert block is not None
        block.validate_json()
        if raw["type"] == "section":
            assert len(raw["text"]["text"]) <= 3000
        if raw["type"] == "header":
            assert len(raw["text"]["text"]) <= 150


def all_text(message: Message) -> str:
    """Every visible text of a message: block texts and element texts (plain strings or objects)."""
    parts: list[str] = []
    for block in message.blocks:
        if "text" in block:
            parts.append(block["text"]["text"])
        for element in block.get("elements", []):
            if "text" in element:
                text = element["text"]
                parts.append(text["text"] if isinstance(text, dict) else text)
    return "\n".join(parts)
