"""Loading gate files: YAML -> `Gate`, with every problem reported at once.

Errors read like `payments.yml:23: checks[3].expect: unknown operator '=<'`: the file, the line
(found by walking the YAML node tree, which is cheap), the field path and the reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bot.core.errors import ConfigError
from bot.core.gate import Gate

GATE_SUFFIXES = (".yml", ".yaml")
# libyaml when PyYAML was built with it (the wheels are): several times faster than pure Python.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class LoadedGate:
    gate: Gate
    path: Path
    sha256: str  # of the file's bytes: evidence bundles record exactly which gate decided


def load_gate(path: Path) -> LoadedGate:
    raw = _read(path)
    problems: list[str] = []
    gate = _parse(path, raw, problems)
    if gate is None:
        raise ConfigError(problems)
    return LoadedGate(gate=gate, path=path, sha256=hashlib.sha256(raw).hexdigest())


def load_gates(target: Path) -> dict[str, LoadedGate]:
    """A gate file, or every *.yml/*.yaml in a directory (sorted). Gate ids must be unique."""
    if not target.exists():
        raise ConfigError([f"{target}: no such file or directory"])
    files = sorted(p for p in target.iterdir() if p.suffix in GATE_SUFFIXES) if target.is_dir() else [target]
    if not files:
        raise ConfigError([f"{target}: no gate files (*.yml, *.yaml)"])
    problems: list[str] = []
    loaded: dict[str, LoadedGate] = {}
    for path in files:
        try:
            one = load_gate(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if one.gate.id in loaded:
            problems.append(f"{path.name}: gate id {one.gate.id!r} is also used by {loaded[one.gate.id].path.name}")
            continue
        loaded[one.gate.id] = one
    if problems:
        raise ConfigError(problems)
    return loaded


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None


def _parse(path: Path, raw: bytes, problems: list[str]) -> Gate | None:
    name = path.name
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_LOADER)  # noqa: S506 (_LOADER is a safe loader)
    except UnicodeDecodeError:
        problems.append(f"{name}: not UTF-8 text")
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problems.append(f"{name}{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{name}: expected a mapping of gate fields at the top level")
        return None
    try:
        return Gate.model_validate(data)
    except ValidationError as exc:
        # The node tree (for line numbers) only when there is something to point at: composing
        # costs as much as loading, and `gonogo validate` / start-up should not pay it twice.
        node = yaml.compose(raw.decode("utf-8"), Loader=_LOADER)
        for error in exc.errors():
            problems.extend(_format(name, node, data, error))
        return None


def _format(name: str, node: yaml.Node | None, data: Any, error: Any) -> list[str]:
    message = _message(error)
    loc = _strip_tags(data, tuple(error["loc"]))
    if not loc and "\n" in message:  # cross-reference problems: one per line, already path-prefixed
        return [f"{name}: {line}" for line in message.splitlines()]
    line = _line_of(node, loc)
    where = f":{line}" if line else ""
    return [f"{name}{where}: {_path(loc) or '(gate)'}: {message}"]


def _message(error: Any) -> str:
    kind, text = error["type"], str(error["msg"])
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    for prefix in ("Value error, ", "Assertion failed, "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _strip_tags(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the union tags pydantic inserts (checks.3.prometheus.expect -> checks.3.expect)."""
    kept: list[Any] = []
    current = data
    for part in loc:
        if isinstance(current, dict) and part not in current and current.get("kind") == part:
            continue
        if isinstance(current, dict) and part not in current and isinstance(part, str) and "[" in part:
            continue  # pydantic's union member names like "list[str]" / "function-after[...]"
        kept.append(part)
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            current = current[part]
        else:
            current = None
    return tuple(kept)


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node the path reaches."""
    best = node
    for part in loc:
        if isinstance(best, yaml.MappingNode):
            match = next((v for k, v in best.value if getattr(k, "value", None) == part), None)
        elif isinstance(best, yaml.SequenceNode) and isinstance(part, int) and part < len(best.value):
            match = best.value[part]
        else:
            match = None
        if match is None:
            break
        best = match
    return best.start_mark.line + 1 if best is not None else None
