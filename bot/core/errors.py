"""One small error hierarchy. Every error carries a message fit to show a user as is."""

from __future__ import annotations


class GonogoError(Exception):
    """Base: `str(exc)` is safe and useful to show a user (no stack traces, no secrets)."""


class ConfigError(GonogoError):
    """Gate files that do not validate; `problems` lists every one, path-prefixed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class UsageError(GonogoError):
    """Bad command input: unknown gate, bad version, extra words."""


class NotFound(GonogoError):
    pass


class Forbidden(GonogoError):
    """The user may not do this (not in the role, self-approval, ...)."""


class Conflict(GonogoError):
    """The request clashes with current state (a run already in progress, release closed, ...)."""


class CommitMoved(Conflict):
    """A click carried the commit its card was drawn for, and the release is at another one now."""

    def __init__(self, release_id: str, message: str) -> None:
        self.release_id = release_id
        super().__init__(message)


class StoreUnavailable(GonogoError):
    """Redis cannot be reached, and the command never got there: nothing was written by it.
    Fail closed, never report GO."""

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__("state store unavailable, try again")


class OutcomeUnknown(StoreUnavailable):
    """A write was sent to Redis and no answer came back (a timeout, a dropped connection): it may
    or may not have been applied. Never tell a user "nothing was changed" after this."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.args = ("the state store did not confirm the write: check before trying again",)


RESTARTING = "gonogo is restarting, try again in a few seconds."


class Restarting(GonogoError):
    """gonogo is draining for a restart and takes no new work."""

    def __init__(self) -> None:
        super().__init__(RESTARTING)
