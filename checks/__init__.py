"""The check kinds, registered in one explicit dict.

Adding a kind: write `checks/<kind>.py` with `Spec` and `run`, then add it to `AnyCheckSpec`
and `REGISTRY` below. Nothing is discovered implicitly. Every gate load imports these modules, so
they import what only running a check needs (asyncio, aiohttp, regex) inside `run`; a kind that
talks HTTP sets `uses_http = True` on its Spec and uses `ctx.http`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from bot.core.results import CheckResult
from checks import command, external, file, github, http, manual, prometheus, tcp
from checks.base import CheckContext, SpecBase

AnyCheckSpec = Annotated[
    command.Spec | http.Spec | prometheus.Spec | github.Spec | file.Spec | tcp.Spec | manual.Spec | external.Spec,
    Field(discriminator="kind"),
]


@dataclass(frozen=True)
class CheckKind:
    spec: type[SpecBase]
    run: Callable[[Any, CheckContext], Awaitable[CheckResult]]


REGISTRY: dict[str, CheckKind] = {
    "command": CheckKind(command.Spec, command.run),
    "http": CheckKind(http.Spec, http.run),
    "prometheus": CheckKind(prometheus.Spec, prometheus.run),
    "github": CheckKind(github.Spec, github.run),
    "file": CheckKind(file.Spec, file.run),
    "tcp": CheckKind(tcp.Spec, tcp.run),
    "manual": CheckKind(manual.Spec, manual.run),
    "external": CheckKind(external.Spec, external.run),
}


def run_check(spec: SpecBase, ctx: CheckContext) -> Awaitable[CheckResult]:
    kind: str = getattr(spec, "kind")  # noqa: B009 - every registered Spec has a `kind` literal
    return REGISTRY[kind].run(spec, ctx)
