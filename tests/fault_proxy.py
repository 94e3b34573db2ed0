"""A TCP proxy in front of a real Redis that loses answers on purpose.

`lose_answer_after(pattern)`: the next command containing `pattern` is delivered to Redis, which
executes it, but its answer (and everything after it on that connection) never comes back, as
when a connection drops after sending. `cut_before(pattern)`: the next command containing
`pattern` never reaches Redis (nor anything after it on that connection), as when the process
died just before sending it. Other connections are untouched.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.redis_server import free_port


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._pattern: bytes | None = None
        self._cut: bytes | None = None
        self.lost = asyncio.Event()  # set once an answer was swallowed
        self.cut = asyncio.Event()  # set once a command was held back
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_answer_after(self, pattern: bytes) -> None:
        self._pattern = pattern

    def cut_before(self, pattern: bytes) -> None:
        self._cut = pattern

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.target_port)
        mute = asyncio.Event()

        async def upstream() -> None:
            while data := await client_in.read(65536):
                if self._cut is not None and self._cut in data:
                    self._cut = None
                    self.cut.set()
                    await asyncio.Event().wait()  # this connection sends nothing more
                if self._pattern is not None and self._pattern in data:
                    self._pattern = None
                    mute.set()
                server_out.write(data)
                await server_out.drain()

        async def downstream() -> None:
            while data := await server_in.read(65536):
                if mute.is_set():
                    self.lost.set()
                    continue
                client_out.write(data)
                await client_out.drain()

        tasks = {asyncio.create_task(upstream()), asyncio.create_task(downstream())}
        self._tasks |= tasks
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            self._tasks -= tasks
            for writer in (client_out, server_out):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
