"""`gonogo preview FILE`: a gate's release card as a standalone HTML page, or its Block Kit JSON.

The card is the bot's own rendering (`bot.slack.card.render_card`) of a release nobody has
signed yet, with no results or with those of a `gonogo check --json` run; the page draws it with
the playground's renderer (its CSS and JavaScript inlined, so the file opens anywhere, offline).
"""

from __future__ import annotations

import html
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from bot.core.decision import DecisionInput, decide
from bot.core.errors import ConfigError
from bot.core.loader import load_gate
from bot.core.release import Release
from bot.core.results import CheckResult, Status
from bot.playground.assets import static_text
from bot.slack.blocks import Message
from bot.slack.card import CardView, render_card

PREVIEW_VERSION = "preview"


def read_results(path: Path, gate_id: str) -> dict[str, CheckResult]:
    """The results in a `gonogo check --json` document (checks that did not run are left out)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"--results {path}: cannot read a JSON document ({exc})"]) from None
    if not isinstance(document, dict) or not isinstance(document.get("checks"), list):
        raise ConfigError([f"--results {path}: not a `gonogo check --json` document (no checks list)"])
    found_gate = (document.get("gate") or {}).get("id")
    if found_gate and found_gate != gate_id:
        raise ConfigError([f"--results {path}: results of gate {found_gate!r}, not {gate_id!r}"])
    results: dict[str, CheckResult] = {}
    for raw in document["checks"]:
        if not isinstance(raw, dict) or raw.get("status") in (None, "not_run") or not raw.get("started_at"):
            continue
        try:
            results[str(raw["id"])] = CheckResult(
                check_id=str(raw["id"]),
                status=Status(raw["status"]),
                summary=str(raw.get("summary", "")),
                details=str(raw.get("details") or ""),
                value=raw.get("value"),
                started_at=raw["started_at"],
                finished_at=raw.get("finished_at") or raw["started_at"],
            )
        except (KeyError, ValueError) as exc:
            raise ConfigError([f"--results {path}: check {raw.get('id')!r}: {exc}"]) from None
    return results


def card_for(gate_file: Path, results_file: Path | None, now: datetime) -> tuple[str, Message]:
    loaded = load_gate(gate_file)
    gate = loaded.gate
    results = read_results(results_file, gate.id) if results_file else {}
    release = Release(
        id=f"{gate.id}@{PREVIEW_VERSION}", gate_id=gate.id, version=PREVIEW_VERSION, opened_by="preview", opened_at=now
    )
    decision = decide(DecisionInput(gate=gate, now=now, results=results))
    return gate.name, render_card(CardView(gate=gate, release=release, decision=decision, results=results, now=now))


def page(title: str, message: Message) -> str:
    """One self-contained HTML file: the card as data, drawn by the playground's renderer."""
    data = json.dumps({"text": message.text, "blocks": message.blocks, "ts": "0"}, ensure_ascii=False)
    # In a <script> element only "</" can end it early; \u003c keeps the JSON valid and inert.
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    boot = (
        "document.addEventListener('DOMContentLoaded', () => {"
        " const msg = JSON.parse(document.getElementById('card').textContent);"
        " const article = BlockKit.el('article', 'message');"
        " article.appendChild(BlockKit.message(msg, {}));"
        " document.getElementById('root').appendChild(article); });"
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}: release card preview</title>
<style>{static_text("style.css")}</style>
</head>
<body>
<div class="preview">
<p class="preview-note">gonogo preview: the card of a release nobody has signed yet; buttons are inert here.</p>
<div id="root"></div>
</div>
<script type="application/json" id="card">{data}</script>
<script>{static_text("blockkit.js")}</script>
<script>{boot}</script>
</body>
</html>
"""


def preview(gate_file: Path, *, results: Path | None, output: Path | None, blocks: bool) -> int:
    title, message = card_for(gate_file, results, datetime.now(UTC))
    if blocks:
        text = json.dumps({"text": message.text, "blocks": message.blocks}, indent=2, ensure_ascii=False) + "\n"
    else:
        text = page(title, message)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)
    return 0
