"""`tcp`: something accepts connections on host:port within the timeout.

The host is resolved here and its addresses are tried one after the other (as asyncio itself
does), so that a failure names one clear reason ("connection refused") instead of asyncio's
"Multiple exceptions: ..." when a name has both an IPv6 and an IPv4 address.
"""

from __future__ import annotations

import contextlib
import os
import time
from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import Field

from bot.core.durations import format_duration
from bot.core.results import CheckResult, Status
from checks.base import CheckContext, SpecBase, result, seconds


class Spec(SpecBase):
    kind: Literal["tcp"] = "tcp"
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)

    default_timeout: ClassVar[timedelta] = timedelta(seconds=5)


def target(host: str, port: int) -> str:
    """ "db.internal:5432", "[::1]:6379"."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_os_error(exc: OSError) -> str:
    """ "connection refused", "network is unreachable": the errno's words, not asyncio's repr."""
    import socket

    if exc.errno is not None and not isinstance(exc, socket.gaierror):
        text = os.strerror(exc.errno)
    else:
        text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _latency(took: float) -> str:
    return f"{took * 1000:.0f} ms" if took < 1 else seconds(timedelta(seconds=took))


async def _connect_any(host: str, port: int) -> None:
    """Connect to the first address of `host` that accepts, then close; raise the last error."""
    import asyncio
    import socket

    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))  # unique, resolver order kept
    errors: list[OSError] = []
    for address in addresses:
        try:
            _, writer = await asyncio.open_connection(address, port)
        except OSError as exc:
            errors.append(exc)
            continue
        writer.close()
        # A peer resetting the connection we are closing anyway is not our concern.
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    if not errors:
        raise OSError(f"{host} has no address")
    # One reason for the summary: resolvers list IPv6 first, so the last is usually the IPv4
    # address, the one a service is most often meant to listen on.
    raise errors[-1]


async def run(spec: Spec, ctx: CheckContext) -> CheckResult:
    import asyncio  # here, not at import: loading gates must not pay for it
    import socket

    started = ctx.clock()
    where = target(spec.host, spec.port)
    limit = spec.timeout or Spec.default_timeout
    # Latency on the monotonic clock: ctx.clock() is wall time (and may be faked).
    begin = time.perf_counter()
    try:
        async with asyncio.timeout(limit.total_seconds()):
            await _connect_any(spec.host, spec.port)
    except TimeoutError:
        summary = f"no answer from {where} within {format_duration(limit)}"
        return result(spec, Status.FAIL, summary, started_at=started, finished_at=ctx.clock())
    except socket.gaierror as exc:
        summary = f"{where}: cannot resolve {spec.host} ({describe_os_error(exc)})"
        return result(spec, Status.FAIL, summary, started_at=started, finished_at=ctx.clock())
    except OSError as exc:
        summary = f"{where}: {describe_os_error(exc)}"
        return result(spec, Status.FAIL, summary, started_at=started, finished_at=ctx.clock())
    took = time.perf_counter() - begin
    return result(
        spec,
        Status.PASS,
        f"{where} accepted in {_latency(took)}",
        started_at=started,
        finished_at=ctx.clock(),
        value=took,
    )
