"""Configuration from the environment (and `.env`), validated once at start-up.

Each credential can instead be given as a file (`SLACK_BOT_TOKEN_FILE=/run/secrets/slack_bot_token`,
the Docker/Kubernetes secrets convention), so it never sits in the bot's environment, which a
command check's child process could read from /proc.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Credentials that may come from a file: the variable, and the field it fills.
SECRET_FILES = {
    "SLACK_BOT_TOKEN": "slack_bot_token",
    "SLACK_SIGNING_SECRET": "slack_signing_secret",
    "SLACK_APP_TOKEN": "slack_app_token",
    "REDIS_URL": "redis_url",
    "GONOGO_WEBHOOK_SECRET": "webhook_secret",
}


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must not print the secrets it was given.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    slack_bot_token: SecretStr = Field(validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, validation_alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(default=None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default="https://slack.com/api/", validation_alias="SLACK_API_URL")
    redis_url: SecretStr | None = Field(default=None, validation_alias="REDIS_URL")
    data_dir: Path = Field(default=Path("~/.local/share/gonogo"), validation_alias="GONOGO_DATA_DIR")
    gates: Path = Field(default=Path("./gates"), validation_alias="GONOGO_GATES")
    host: str = Field(default="0.0.0.0", validation_alias="GONOGO_HOST")
    port: int = Field(default=3000, ge=0, le=65535, validation_alias="GONOGO_PORT")
    concurrency: int = Field(default=16, ge=1, validation_alias="GONOGO_CONCURRENCY")
    drain_timeout_s: float = Field(default=25.0, ge=0, validation_alias="GONOGO_DRAIN_TIMEOUT")
    # The road to Slack (docs/delivery.md): a notice held this long by a silent replica is taken over;
    # a card gets at most one chat.update per interval.
    notice_claim_idle_s: float = Field(default=60.0, gt=0, validation_alias="GONOGO_NOTICE_CLAIM_IDLE")
    card_update_interval_s: float = Field(default=1.0, gt=0, validation_alias="GONOGO_CARD_INTERVAL")
    # This replica's name in the outbox consumer group; default host-pid (stable across container
    # restarts, so a restarted replica takes its unacknowledged notices back at once).
    replica: str | None = Field(default=None, validation_alias="GONOGO_REPLICA")
    # Signs POST /api/events (CI and deploy tooling); without it the webhook answers 404.
    webhook_secret: SecretStr | None = Field(default=None, validation_alias="GONOGO_WEBHOOK_SECRET")
    # The installation this bot serves; learned from auth.test when not set.
    slack_team_id: str | None = Field(default=None, validation_alias="SLACK_TEAM_ID")
    slack_app_id: str | None = Field(default=None, validation_alias="SLACK_APP_ID")
    # Declared so the environment source reads them; `_secret_files` turns them into the values.
    slack_bot_token_file: Path | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN_FILE")
    slack_signing_secret_file: Path | None = Field(default=None, validation_alias="SLACK_SIGNING_SECRET_FILE")
    slack_app_token_file: Path | None = Field(default=None, validation_alias="SLACK_APP_TOKEN_FILE")
    redis_url_file: Path | None = Field(default=None, validation_alias="REDIS_URL_FILE")
    webhook_secret_file: Path | None = Field(default=None, validation_alias="GONOGO_WEBHOOK_SECRET_FILE")

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        """`X_FILE` fills `X` with the file's content (trailing newline dropped); not both."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, field in SECRET_FILES.items():
            path = data.get(f"{name}_FILE") or data.get(f"{field}_file")
            if not path:
                continue
            if data.get(name) or data.get(field):
                raise ValueError(f"set {name} or {name}_FILE, not both")
            try:
                data[name] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
        return data

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        # slack_sdk joins base_url + method name, so the slash matters.
        return value if value.endswith("/") else value + "/"

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    def problems(self) -> list[str]:
        """What prevents start-up, beyond types: said all at once."""
        out = []
        if not self.socket_mode and self.slack_signing_secret is None:
            out.append("SLACK_SIGNING_SECRET is required in HTTP mode (or set SLACK_APP_TOKEN for Socket Mode)")
        url = self.redis_url.get_secret_value() if self.redis_url else None
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            out.append("REDIS_URL must start with redis://, rediss:// or unix://")
        return out
