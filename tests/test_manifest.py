"""The Slack app manifests: valid against Slack's schema, and in step with the bot and its docs.

Slack's published schema ships with the tests (tests/data/slack/, MIT, from slackapi/manifest-schema),
so a fresh clone validates the manifests with nothing beside it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml

from commands.parse import USAGE

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests" / "data" / "slack" / "manifest.schema.1.0.0.json"
HTTP_MANIFEST = ROOT / "manifest.yml"
SOCKET_MANIFEST = ROOT / "manifest.socket.yml"
MANIFESTS = [HTTP_MANIFEST, SOCKET_MANIFEST]
SCOPES_DOC = ROOT / "docs" / "slack-app.md"
EVENTS_PATH = "/slack/events"  # the only route bot/server.py serves for Slack


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: top level must be a mapping"
    return data


def _documented_scopes() -> list[str]:
    """The first column of the `| scope | why |` table in docs/slack-app.md."""
    lines = SCOPES_DOC.read_text(encoding="utf-8").splitlines()
    header = re.compile(r"^\|\s*scope\s*\|\s*why\s*\|\s*$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    assert start is not None, f"{SCOPES_DOC.name}: no '| scope | why |' table"
    scopes = []
    for line in lines[start + 2 :]:  # skip the header and its |---|---| separator
        if not line.startswith("|"):
            break
        cell = line.split("|")[1].strip().strip("`")
        assert cell, f"{SCOPES_DOC.name}: empty scope cell in {line!r}"
        scopes.append(cell)
    assert scopes, f"{SCOPES_DOC.name}: the scope table has no rows"
    return scopes


def _request_urls(manifest: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every URL Slack would call, as (where, url)."""
    for command in manifest.get("features", {}).get("slash_commands", []):
        if "url" in command:
            yield f"slash command {command['command']}", command["url"]
    settings = manifest.get("settings", {})
    for section in ("interactivity", "event_subscriptions"):
        for key in ("request_url", "message_menu_options_url"):
            if key in settings.get(section, {}):
                yield f"settings.{section}.{key}", settings[section][key]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_slack_schema(path: Path) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    errors = sorted(validator.iter_errors(_load(path)), key=lambda e: list(e.absolute_path))
    assert not errors, f"{path.name} does not match the Slack manifest schema:\n" + "\n".join(
        f"  {'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors
    )


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_shape(path: Path) -> None:
    manifest = _load(path)
    assert manifest["_metadata"] == {"major_version": 1, "minor_version": 1}
    # The schema spells this constraint as "regex", which validators ignore: check it here.
    assert re.fullmatch(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?", manifest["display_information"]["background_color"])
    assert manifest["features"]["bot_user"]["display_name"] == "gonogo"
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert "app_home_opened" in manifest["settings"]["event_subscriptions"]["bot_events"]
    assert manifest["settings"]["token_rotation_enabled"] is False
    assert manifest["settings"]["org_deploy_enabled"] is False


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_gonogo_command_with_usage_hint(path: Path) -> None:
    commands = {c["command"]: c for c in _load(path)["features"]["slash_commands"]}
    assert set(commands) == {"/gonogo"}
    hint = commands["/gonogo"].get("usage_hint", "")
    assert hint.strip(), f"{path.name}: /gonogo has no usage_hint"
    # Every subcommand the hint advertises is one the parser knows.
    advertised = {part.split()[0] for part in hint.split("|") if part.strip()}
    assert advertised <= set(USAGE), f"{path.name}: usage_hint names unknown subcommands {advertised - set(USAGE)}"


def test_http_request_urls_all_hit_slack_events() -> None:
    urls = list(_request_urls(_load(HTTP_MANIFEST)))
    where = {w for w, _ in urls}
    assert where >= {"slash command /gonogo", "settings.interactivity.request_url"}, where
    assert "settings.event_subscriptions.request_url" in where, where
    for place, url in urls:
        assert url.startswith("https://"), f"{place}: Slack needs HTTPS, got {url}"
        assert url.endswith(EVENTS_PATH), f"{place}: {url} must end with {EVENTS_PATH}"
    hosts = {url.split("/")[2] for _, url in urls}
    assert len(hosts) == 1, f"request URLs point at several hosts: {sorted(hosts)}"


def test_socket_variant() -> None:
    manifest = _load(SOCKET_MANIFEST)
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert list(_request_urls(manifest)) == [], "Socket Mode receives everything over the websocket"
    assert _load(HTTP_MANIFEST)["settings"]["socket_mode_enabled"] is False


def test_variants_differ_only_in_transport() -> None:
    def strip_transport(manifest: dict[str, Any]) -> dict[str, Any]:
        for command in manifest["features"]["slash_commands"]:
            command.pop("url", None)
        for section in ("interactivity", "event_subscriptions"):
            manifest["settings"][section].pop("request_url", None)
        manifest["settings"].pop("socket_mode_enabled")
        return manifest

    assert strip_transport(_load(HTTP_MANIFEST)) == strip_transport(_load(SOCKET_MANIFEST))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_bot_scopes_are_exactly_the_documented_ones(path: Path) -> None:
    documented = _documented_scopes()
    assert len(documented) == len(set(documented)), f"{SCOPES_DOC.name}: a scope is listed twice"
    scopes = _load(path)["oauth_config"]["scopes"]
    bot = scopes["bot"]
    assert len(bot) == len(set(bot)), f"{path.name}: a bot scope is listed twice"
    assert set(bot) == set(documented), (
        f"{path.name} vs {SCOPES_DOC.name}: only in manifest {sorted(set(bot) - set(documented))}, "
        f"only in docs {sorted(set(documented) - set(bot))}"
    )
    assert set(scopes) == {"bot"}, f"{path.name}: the bot needs no user or optional scopes"
