"""`POST /api/events`: the signed webhook CI and deploy tooling report to.

Order matters: the signature and its timestamp are verified over the raw bytes BEFORE anything is
parsed (401 otherwise); then the body is validated (400 with every validation error, never the
input echoed back); then the event service applies it once (202 with the event id, also for a
replayed id). Whatever goes wrong answers JSON with a 4xx or 503, never a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.core.errors import Conflict, Forbidden, GonogoError, NotFound, StoreUnavailable, UsageError
from bot.core.events import InvalidEvent, parse_event
from bot.core.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from bot.services.events import EventService

log = logging.getLogger("gonogo.webhook")

PATH = "/api/events"
MAX_BODY_BYTES = 256 * 1024


def _answer(status: int, **fields: Any) -> web.Response:
    return web.json_response({"ok": 200 <= status < 300, **fields}, status=status)


class EventsEndpoint:
    """The aiohttp handler. `events` is read per request: the service exists once the bot started."""

    def __init__(
        self,
        secret: str | None,
        events: Callable[[], EventService | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.events = events
        self.clock = clock

    async def handle(self, request: web.Request) -> web.Response:
        if not self.secret:
            return _answer(404, error="the events webhook is off: set GONOGO_WEBHOOK_SECRET to turn it on")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _answer(413, error=f"body larger than {MAX_BODY_BYTES} bytes")
        raw = await request.read()
        if len(raw) > MAX_BODY_BYTES:
            return _answer(413, error=f"body larger than {MAX_BODY_BYTES} bytes")
        problem = verify(
            self.secret, request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER), raw, self.clock()
        )
        if problem is not None:
            log.warning("webhook request refused", extra={"reason": problem, "remote": request.remote})
            return _answer(401, error=problem)
        try:
            event = parse_event(raw)
        except InvalidEvent as exc:
            return _answer(400, error="invalid event", errors=exc.errors)
        service = self.events()
        if service is None:
            return _answer(503, error="starting up, try again")
        try:
            accepted = await service.accept(event)
        except StoreUnavailable as exc:
            return _answer(503, error=str(exc), id=event.id)
        except NotFound as exc:
            return _answer(404, error=str(exc), id=event.id)
        except Conflict as exc:
            return _answer(409, error=str(exc), id=event.id)
        except (UsageError, Forbidden, GonogoError) as exc:
            return _answer(400, error=str(exc), id=event.id)
        log.info(
            "webhook event",
            extra={"type": event.type, "id": event.id, "gate": event.gate_id, "duplicate": accepted.duplicate},
        )
        return _answer(202, id=event.id, duplicate=accepted.duplicate)


def register(app: web.Application, endpoint: EventsEndpoint) -> None:
    app.router.add_post(PATH, endpoint.handle)
