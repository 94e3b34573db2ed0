"""The events CI and deploy tooling send to `POST /api/events` (pure models, one per `type`).

Every event has an `id`: the idempotency key (a repeat is accepted and does nothing). Text that
came from outside (reasons, summaries, output, actors, stage names) is masked before it is stored
(`masked`); it is escaped wherever it is rendered.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from bot.core.durations import Duration
from bot.core.gate import ID_PATTERN
from bot.core.masking import Masker, truncate_line, truncate_tail
from bot.core.release import RELEASE_ID, SHA, VERSION
from bot.core.results import Status
from checks.base import CHECK_ID_PATTERN

EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
SUMMARY_LIMIT = 300
DETAILS_LIMIT = 2800  # Slack sections hold 3000 characters, as for check output
REASON_LIMIT = 2000


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


EventId = Annotated[str, Field(pattern=EVENT_ID_PATTERN, description="Idempotency key, unique per gate")]
ReleaseRef = Annotated[str, Field(pattern=RELEASE_ID.pattern, description="<gate>@<version>")]
GateRef = Annotated[str, Field(pattern=ID_PATTERN)]
Sha = Annotated[str, BeforeValidator(_lower), Field(pattern=SHA.pattern, description="7 to 40 hex characters")]
Actor = Annotated[str, Field(min_length=1, max_length=100, description="Slack user id or a CI name")]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: EventId

    @property
    def gate_id(self) -> str:
        raise NotImplementedError

    def masked(self, masker: Masker) -> Self:
        return self


class RollbackEvent(_Event):
    type: Literal["rollback"]
    release: ReleaseRef
    reason: str = Field(min_length=1, max_length=REASON_LIMIT)
    actor: Actor
    status: Literal["started", "succeeded", "failed"]

    @property
    def gate_id(self) -> str:
        return self.release.partition("@")[0]

    def masked(self, masker: Masker) -> Self:
        return self.model_copy(update={"reason": masker.mask(self.reason), "actor": masker.mask(self.actor)})


class DrillEvent(_Event):
    type: Literal["drill"]
    gate: GateRef
    drill: str = Field(pattern=CHECK_ID_PATTERN)
    status: Literal["passed", "failed"]
    duration: Duration
    output: str | None = Field(default=None, description="The output's tail (masked and cut to 2800 characters)")
    actor: Actor

    @property
    def gate_id(self) -> str:
        return self.gate

    def masked(self, masker: Masker) -> Self:
        output = truncate_tail(masker.mask(self.output), DETAILS_LIMIT) if self.output else self.output
        return self.model_copy(update={"output": output, "actor": masker.mask(self.actor)})


class DeployEvent(_Event):
    type: Literal["deploy"]
    release: ReleaseRef
    sha: Sha | None = None
    stage: str = Field(min_length=1, max_length=80, description='e.g. "dark launch", "canary 1%", "100%"')
    status: Literal["started", "succeeded", "failed"]

    @property
    def gate_id(self) -> str:
        return self.release.partition("@")[0]

    def masked(self, masker: Masker) -> Self:
        return self.model_copy(update={"stage": masker.mask(self.stage)})


class CheckResultEvent(_Event):
    type: Literal["check_result"]
    release: ReleaseRef
    check: str = Field(pattern=CHECK_ID_PATTERN)
    status: Status
    summary: str = Field(min_length=1, max_length=REASON_LIMIT)
    details: str | None = None
    sha: Sha | None = None

    @property
    def gate_id(self) -> str:
        return self.release.partition("@")[0]

    def masked(self, masker: Masker) -> Self:
        details = truncate_tail(masker.mask(self.details), DETAILS_LIMIT) if self.details else self.details
        return self.model_copy(
            update={"summary": truncate_line(masker.mask(self.summary), SUMMARY_LIMIT), "details": details}
        )


class OpenEvent(_Event):
    type: Literal["open"]
    gate: GateRef
    version: str = Field(pattern=VERSION.pattern)
    sha: Sha | None = None
    at: AwareDatetime | None = Field(default=None, description="When CI opened it (default: when received)")
    target: AwareDatetime | None = Field(
        default=None,
        description="When the release is planned to go out: the gate's pre-launch checklist is posted at its"
        " offsets before it; sent again with another time, it moves the target",
    )

    @property
    def gate_id(self) -> str:
        return self.gate


Event = Annotated[
    RollbackEvent | DrillEvent | DeployEvent | CheckResultEvent | OpenEvent,
    Field(discriminator="type"),
]
EVENT_TYPES = ("rollback", "drill", "deploy", "check_result", "open")
_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


class InvalidEvent(ValueError):
    """The body is not a valid event: `errors` says why, field by field (never echoing input)."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['loc']}: {e['msg']}" for e in errors))


def parse_event(raw: bytes) -> Event:
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        errors = [
            {
                "loc": ".".join(str(part) for part in error["loc"]) or "(body)",
                "msg": error["msg"],
                "type": error["type"],
            }
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise InvalidEvent(errors) from None


def event_schema() -> dict[str, Any]:
    return _ADAPTER.json_schema()
