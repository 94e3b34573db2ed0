"""The playground's page files (HTML, CSS, JavaScript), shipped as package data: no build step."""

from __future__ import annotations

from importlib import resources


def static_text(name: str) -> str:
    return resources.files("bot.playground").joinpath("static", name).read_text(encoding="utf-8")
