"""The loaded gates, reloadable: a bad edit never replaces the last good set."""

from __future__ import annotations

import logging
from pathlib import Path

from bot.core.errors import ConfigError, NotFound
from bot.core.loader import LoadedGate, load_gates

log = logging.getLogger("gonogo.gates")


class GateSet:
    def __init__(self, source: Path) -> None:
        self.source = source
        self._gates: dict[str, LoadedGate] = load_gates(source)  # start-up refuses on errors

    @property
    def ids(self) -> list[str]:
        return sorted(self._gates)

    def get(self, gate_id: str) -> LoadedGate:
        try:
            return self._gates[gate_id]
        except KeyError:
            known = ", ".join(self.ids) or "none"
            raise NotFound(f"unknown gate {gate_id!r} (known gates: {known})") from None

    def reload(self) -> list[str]:
        """Load again; on any error keep the current set and return the problems."""
        try:
            fresh = load_gates(self.source)
        except ConfigError as exc:
            log.error("gate reload failed, keeping the last good set", extra={"problems": exc.problems})
            return exc.problems
        self._gates = fresh
        log.info("gates reloaded", extra={"gates": self.ids})
        return []
