"""The baseline for bench/ack_latency.py: a Bolt AsyncApp whose `/gonogo` handler only acks.

Set up like the bot (bot/server.py): an AsyncWebClient on its own aiohttp session pointed at
SLACK_API_URL, the same signing secret, `process_before_response=False`, and POST /slack/events
dispatched through slack_bolt's aiohttp adapter. GET /readyz answers 200 once serving.

    SLACK_SIGNING_SECRET=... SLACK_BOT_TOKEN=... SLACK_API_URL=http://127.0.0.1:PORT/api/ \\
        python bench/ack_only_app.py --port 3001

Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient


def build_app(*, signing_secret: str, token: str, api_url: str, session: aiohttp.ClientSession) -> AsyncApp:
    client = AsyncWebClient(token=token, base_url=api_url, session=session)
    app = AsyncApp(client=client, signing_secret=signing_secret, process_before_response=False)

    @app.command("/gonogo")
    async def gonogo(ack: AsyncAck) -> None:
        await ack()

    return app


def web_app(bolt: AsyncApp) -> web.Application:
    app = web.Application()

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_post("/slack/events", events)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(host: str, port: int) -> None:
    api_url = os.environ.get("SLACK_API_URL", "https://slack.com/api/")
    if not api_url.endswith("/"):
        api_url += "/"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with aiohttp.ClientSession() as session:
        bolt = build_app(
            signing_secret=os.environ["SLACK_SIGNING_SECRET"],
            token=os.environ["SLACK_BOT_TOKEN"],
            api_url=api_url,
            session=session,
        )
        runner = web.AppRunner(web_app(bolt), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description="A Bolt AsyncApp that only acks /gonogo (latency baseline).")
    parser.add_argument("--host", default=os.environ.get("ACK_ONLY_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ACK_ONLY_PORT", "3001")))
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
