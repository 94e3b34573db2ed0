"""The architecture reads from the imports: core <- store <- services <- slack and commands <- server
and cli (issue 8). Services decide, they don't talk: no module of bot/services imports a Slack client.

Read from the source (ast), not by importing: a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYERS = {
    "core": "bot/core",
    "store": "bot/store",
    "services": "bot/services",
    "slack": "bot/slack",
    "commands": "commands",
}
# What each layer must not import (module prefixes).
FORBIDDEN = {
    "core": ("bot.store", "bot.services", "bot.slack", "commands", "bot.server", "bot.cli", "slack_sdk", "slack_bolt"),
    "store": ("bot.services", "bot.slack", "commands", "bot.server", "bot.cli", "slack_sdk", "slack_bolt"),
    "services": ("bot.slack", "commands", "bot.server", "bot.cli", "slack_sdk", "slack_bolt"),
    "slack": ("commands", "bot.server", "bot.cli"),
    "commands": ("bot.server", "bot.cli"),
}
# The Slack client side, never to be imported by a service (no exceptions allowed, ever).
SLACK_CLIENT = (
    "slack_sdk",
    "slack_bolt",
    "bot.slack.client",
    "bot.slack.deliverer",
    "bot.slack.refresher",
    "bot.slack.ratelimit",
    "bot.slack.road",
    "bot.slack.release_cards",
)
# Services queue facts for a renderer kind the deliverer runs, never a message built with a Block
# Kit renderer of bot/slack/ (issue 8). Empty, and it stays empty.
KNOWN_RENDERER_IMPORTS: set[tuple[str, str]] = set()


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules(layer: str) -> list[Path]:
    return sorted((ROOT / LAYERS[layer]).glob("*.py"))


def under(module: str, prefixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return None


def test_the_services_layer_imports_no_slack_client() -> None:
    offending = {
        (str(path.relative_to(ROOT)), module)
        for path in modules("services")
        for module in imports_of(path)
        if under(module, SLACK_CLIENT)
    }
    assert offending == set()


def test_the_check_sees_a_slack_client_import(tmp_path: Path) -> None:
    """The reader above is not blind: an import inside a function is found as well."""
    sample = tmp_path / "sample.py"
    sample.write_text("def later():\n    from slack_sdk.web.async_client import AsyncWebClient\n")
    assert under("slack_sdk.web.async_client", SLACK_CLIENT) == "slack_sdk"
    assert "slack_sdk.web.async_client" in imports_of(sample)


@pytest.mark.parametrize("layer", list(FORBIDDEN))
def test_imports_run_one_way(layer: str) -> None:
    offending = set()
    for path in modules(layer):
        rel = str(path.relative_to(ROOT))
        for module in imports_of(path):
            prefix = under(module, FORBIDDEN[layer])
            if prefix is None:
                continue
            if (rel, module) in KNOWN_RENDERER_IMPORTS or any(
                (rel, known) in KNOWN_RENDERER_IMPORTS and module.startswith(known + ".")
                for _, known in KNOWN_RENDERER_IMPORTS
            ):
                continue
            offending.add((rel, module))
    assert offending == set()


def test_the_known_exceptions_are_still_needed() -> None:
    """An entry of KNOWN_RENDERER_IMPORTS that is gone from the code must leave the list too."""
    stale = {
        (rel, module)
        for rel, module in KNOWN_RENDERER_IMPORTS
        if (ROOT / rel).exists() and module not in imports_of(ROOT / rel)
    }
    assert stale == set()
