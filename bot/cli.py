"""`gonogo` command line: check, validate, schema (serve and export join with the bot)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from rich.console import Console, Group
from rich.live import Live

from bot import logs
from bot.core.decision import DecisionInput, decide
from bot.core.errors import ConfigError, GonogoError
from bot.core.gate import Gate
from bot.core.loader import load_gate, load_gates
from bot.core.masking import Masker
from bot.core.results import CheckResult
from bot.services.runner import DEFAULT_CONCURRENCY, run_checks
from bot.terminal import json_document, results_table, verdict_text
from checks.base import CheckContext

if TYPE_CHECKING:
    from bot.services.people import People
    from bot.store.store import Store

# Redis, Slack and the evidence renderers are imported where they are used: `gonogo check` in a
# CI job should not pay their import time on every run (see bench/fanout.py).

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gonogo", description="Release GO/NO-GO gates as code.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="run a gate's checks and print the decision (exit 0/1/3)")
    check.add_argument("file", type=Path, help="gate file")
    check.add_argument("--only", nargs="+", metavar="ID", default=None, help="run only these checks")
    check.add_argument("--json", action="store_true", help="print a machine-readable document")
    check.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N")
    check.add_argument("--workdir", type=Path, default=None, help="where relative paths resolve (default: cwd)")
    check.add_argument(
        "--ignore-signoffs", action="store_true", help="decide on checks alone (sign-offs and risk acceptance unknown)"
    )
    check.add_argument(
        "--release",
        metavar="ID",
        default=None,
        help="use this release's stored sign-offs, accepted risks, override and commit (needs REDIS_URL)",
    )

    export = sub.add_parser("export", help="print a decided release's evidence bundle (needs REDIS_URL)")
    export.add_argument("release", help="release id, e.g. payments@1.4.0")
    export.add_argument("--format", choices=["json", "md"], default="json")

    validate = sub.add_parser("validate", help="validate gate files and report every problem")
    validate.add_argument("target", type=Path, help="gate file or directory")

    sub.add_parser("schema", help="print the JSON Schema of the gate file")
    sub.add_parser("serve", help="run the Slack bot (configuration from the environment, see docs/slack-app.md)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The CLI's stdout is the report; logs go to stderr, warnings only unless asked for.
    logs.configure(os.environ.get("GONOGO_LOG_LEVEL", "WARNING"))
    try:
        if args.command == "check":
            return asyncio.run(_check(args))
        if args.command == "validate":
            return _validate(args.target)
        if args.command == "export":
            return asyncio.run(_export(args.release, args.format))
        if args.command == "schema":
            print(json.dumps(Gate.model_json_schema(), indent=2))
            return 0
        if args.command == "serve":
            return _serve()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except GonogoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")


def _serve() -> int:
    from pydantic import ValidationError

    from bot.server import serve
    from bot.settings import Settings

    logs.configure()
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = ".".join(str(p) for p in error["loc"])
            print(f"error: {name}: {error['msg']}", file=sys.stderr)
        return EXIT_CONFIG
    problems = settings.problems()
    if problems:
        raise ConfigError(problems)
    asyncio.run(serve(settings))
    return 0


def _validate(target: Path) -> int:
    gates = load_gates(target)
    for loaded in gates.values():
        print(f"ok: {loaded.path} ({loaded.gate.id}: {len(loaded.gate.checks)} checks)")
    return 0


async def _check(args: argparse.Namespace) -> int:
    loaded = load_gate(args.file)
    gate = loaded.gate
    specs = list(gate.checks)
    if args.only:
        unknown = sorted(set(args.only) - {c.id for c in specs})
        if unknown:
            raise ConfigError([f"--only: unknown check {', '.join(unknown)} in {args.file.name}"])
        specs = [c for c in specs if c.id in set(args.only)]
    if args.concurrency < 1:
        raise ConfigError(["--concurrency must be at least 1"])

    console = Console(stderr=args.json)
    live = console.is_terminal and not args.json
    results: dict[str, CheckResult] = {}
    env = dict(os.environ)
    async with aiohttp.ClientSession() as session:
        ctx = CheckContext(session=session, base_dir=args.workdir or Path.cwd(), env=env)
        await _run_with_progress(gate, specs, ctx, results, console, live=live, quiet=args.json, n=args.concurrency)

    now = datetime.now(UTC)
    if args.release:
        from bot.services.people import with_manual_marks

        people, sha = await _release_facts(args.release, gate.id)
        results = with_manual_marks(gate, results, people.marks)
        decision = decide(people.decision_input(gate, now, results, sha))
    else:
        decision = decide(DecisionInput(gate=gate, now=now, results=results, ignore_signoffs=args.ignore_signoffs))
    if args.json:
        document = json_document(
            gate, decision, results, gate_file=str(args.file), gate_sha256=loaded.sha256, release=args.release
        )
        print(json.dumps(document, indent=2))
    else:
        if not live:
            console.print(results_table(gate, results))
        console.print(verdict_text(decision))
    return decision.verdict.exit_code


@contextlib.asynccontextmanager
async def _store() -> AsyncIterator[Store]:
    from bot.store.store import Store

    url = os.environ.get("REDIS_URL")
    if not url:
        raise ConfigError(["REDIS_URL is not set: it must point at the bot's Redis"])
    from bot.store.connection import connect

    handle = connect(url, Path("."))
    try:
        yield Store(handle.client)
    finally:
        await handle.close()


async def _release_facts(release_id: str, gate_id: str) -> tuple[People, str | None]:
    """What people recorded in Slack for this release, so CI and the card decide alike."""
    from bot.core.release import parse_release_id
    from bot.services.people import load_people

    parse_release_id(release_id)
    async with _store() as store:
        release = await store.get_release(release_id)
        if release is None:
            raise ConfigError([f"--release: no release {release_id!r} in the store"])
        if release.gate_id != gate_id:
            raise ConfigError([f"--release: {release_id} belongs to gate {release.gate_id}, not {gate_id}"])
        return await load_people(store, release_id), release.sha


async def _export(release_id: str, fmt: str) -> int:
    from bot.core.evidence_markdown import render_markdown
    from bot.core.release import parse_release_id

    parse_release_id(release_id)
    async with _store() as store:
        raw = await store.get_bundle(release_id)
    if raw is None:
        raise ConfigError([f"{release_id} has no evidence bundle: decide it first (`/gonogo decide {release_id}`)"])
    bundle = json.loads(raw)
    text = json.dumps(bundle, indent=2, sort_keys=True) if fmt == "json" else render_markdown(bundle)
    # What people typed is masked before it is stored; masking again here covers bundles decided
    # before that (and secrets this environment knows by value).
    print(Masker.from_env(os.environ).mask(text))
    return 0


async def _run_with_progress(
    gate: Gate,
    specs: list[Any],
    ctx: CheckContext,
    results: dict[str, CheckResult],
    console: Console,
    *,
    live: bool,
    quiet: bool,
    n: int,
) -> None:
    masker = Masker.from_env(ctx.env)
    running = {s.id for s in specs}
    if live:
        with Live(results_table(gate, results, running), console=console, refresh_per_second=8) as display:

            async def tick(result: CheckResult) -> None:
                results[result.check_id] = result
                running.discard(result.check_id)
                display.update(Group(results_table(gate, results, running)))

            await run_checks(specs, ctx, masker=masker, concurrency=n, on_result=tick)
        return

    async def line(result: CheckResult) -> None:
        results[result.check_id] = result
        if not quiet:  # plain progress for CI logs: one line per finished check
            console.print(f"{result.status.value:>7}  {result.check_id}: {result.summary}", highlight=False)

    await run_checks(specs, ctx, masker=masker, concurrency=n, on_result=line)


if __name__ == "__main__":
    raise SystemExit(main())
