"""Settings: credentials from files (the Docker/Kubernetes secrets convention), and a gate that
may not hand the bot's own settings to a check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bot.core.errors import ConfigError
from bot.core.loader import load_gates
from bot.settings import Settings
from tests.bot_harness import write_gate


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_every_credential_can_come_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {
        "SLACK_BOT_TOKEN": "xoxb-from-a-file",
        "SLACK_SIGNING_SECRET": "signing-from-a-file",
        "SLACK_APP_TOKEN": "xapp-from-a-file",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "GONOGO_WEBHOOK_SECRET": "webhook-from-a-file",
    }
    for name, value in files.items():
        path = tmp_path / name.lower()
        path.write_text(value + "\n")  # `echo value > file` leaves a newline
        monkeypatch.setenv(f"{name}_FILE", str(path))
        monkeypatch.delenv(name, raising=False)
    loaded = settings()
    assert loaded.slack_bot_token.get_secret_value() == "xoxb-from-a-file"
    assert loaded.slack_signing_secret is not None
    assert loaded.slack_signing_secret.get_secret_value() == "signing-from-a-file"
    assert loaded.slack_app_token is not None and loaded.slack_app_token.get_secret_value() == "xapp-from-a-file"
    assert loaded.redis_url is not None and loaded.redis_url.get_secret_value() == "redis://127.0.0.1:1/0"
    assert loaded.webhook_secret is not None and loaded.webhook_secret.get_secret_value() == "webhook-from-a-file"


def test_a_credential_and_its_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("xoxb-file")
    with pytest.raises(ValidationError, match="set SLACK_BOT_TOKEN or SLACK_BOT_TOKEN_FILE, not both"):
        settings(SLACK_BOT_TOKEN="xoxb-env", SLACK_BOT_TOKEN_FILE=str(path))
    with pytest.raises(ValidationError, match="cannot read"):
        settings(SLACK_BOT_TOKEN_FILE=str(tmp_path / "missing"))


def test_installation_ids_can_be_set() -> None:
    loaded = settings(SLACK_BOT_TOKEN="xoxb-1", SLACK_TEAM_ID="T0ACME", SLACK_APP_ID="A0GONOGO")
    assert (loaded.slack_team_id, loaded.slack_app_id) == ("T0ACME", "A0GONOGO")


@pytest.mark.parametrize(
    "check",
    [
        '{id: h, kind: http, url: "https://x", bearer_token_env: SLACK_BOT_TOKEN}',
        '{id: c, kind: command, run: ["true"], pass_env: [VAULT_TOKEN, REDIS_URL]}',
        "{id: g, kind: github, repo: acme/api, token_env: GONOGO_WEBHOOK_SECRET}",
        '{id: p, kind: prometheus, url: "http://p", query: up, expect: "> 0", bearer_token_env: SLACK_APP_TOKEN}',
    ],
)
def test_a_gate_cannot_name_the_bots_own_variables(tmp_path: Path, check: str) -> None:
    write_gate(tmp_path, f"id: g\nname: G\nchannel: C1\nchecks:\n  - {check}\n")
    with pytest.raises(ConfigError, match="gonogo's own settings"):
        load_gates(tmp_path)
