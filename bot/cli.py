"""`gonogo` command line: check, validate, windows, drill, notify, schema, serve, export, playground,
preview.

It starts fast: each command imports what it needs when it runs. Redis, Slack, rich, aiohttp
(unless a check talks HTTP), the decision engine and the evidence renderers stay out of start-up,
and loading a gate imports neither asyncio nor the time logic; bench/cli_start.py measures it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bot.core.errors import ConfigError, GonogoError

if TYPE_CHECKING:
    from datetime import datetime

    import aiohttp
    from rich.console import Console

    from bot.core.gate import Gate
    from bot.core.release import Release
    from bot.core.results import CheckResult
    from bot.services.people import People
    from bot.store.store import Store
    from checks.base import CheckContext

EXIT_CONFIG = 2
_NEVER_LOG = frozenset({"validate"})


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("gonogo")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


class _VersionAction(argparse.Action):
    """`--version`, looked up only when asked for (importlib.metadata costs start-up time)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"{parser.prog} {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gonogo", description="Release GO/NO-GO gates as code.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="run a gate's checks and print the decision (exit 0/1/3)")
    check.add_argument("file", type=Path, help="gate file")
    check.add_argument("--only", nargs="+", metavar="ID", default=None, help="run only these checks")
    check.add_argument("--json", action="store_true", help="print a machine-readable document")
    check.add_argument("--concurrency", type=int, default=None, metavar="N", help="checks at once (default 16)")
    check.add_argument("--workdir", type=Path, default=None, help="where relative paths resolve (default: cwd)")
    check.add_argument(
        "--ignore-signoffs", action="store_true", help="decide on checks alone (sign-offs and risk acceptance unknown)"
    )
    check.add_argument(
        "--stage",
        metavar="ID",
        default=None,
        help="exit with this rollout stage's verdict (default: the next stage to promote to)",
    )
    check.add_argument(
        "--release",
        metavar="ID",
        default=None,
        help="use this release's stored sign-offs, accepted risks, override and commit (needs REDIS_URL)",
    )
    check.add_argument(
        "--at",
        metavar="TIME",
        default=None,
        help="decide as of this ISO time, e.g. 2026-12-21T10:00Z (deploy windows, ages); no offset means the"
        " windows' timezone",
    )

    windows = sub.add_parser("windows", help="print a gate's open and frozen deploy periods ahead")
    windows.add_argument("file", type=Path, help="gate file")
    windows.add_argument("--next", default="30d", metavar="DURATION", help="how far ahead (default 30d, at most 366d)")
    windows.add_argument("--at", metavar="TIME", default=None, help="start at this ISO time instead of now")
    windows.add_argument("--json", action="store_true", help="print a machine-readable document")

    export = sub.add_parser("export", help="print a decided release's evidence bundle (needs REDIS_URL)")
    export.add_argument("release", help="release id, e.g. payments@1.4.0")
    export.add_argument("--format", choices=["json", "md"], default="json")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--stage", metavar="ID", default=None, help="the record of the promotion to this stage")
    which.add_argument(
        "--all", action="store_true", help="every record: the decision, then each promotion (JSON: a list)"
    )

    drill = sub.add_parser(
        "drill", help="run a gate's fire drill (exit 0 passed, 1 failed); with REDIS_URL, record it for the gate"
    )
    drill.add_argument("file", type=Path, help="gate file")
    drill.add_argument("drill", help="drill id")
    drill.add_argument("--by", default="cli", metavar="NAME", help="who ran it, as recorded (default: cli)")
    drill.add_argument("--workdir", type=Path, default=None, help="where relative paths resolve (default: cwd)")

    notify = sub.add_parser(
        "notify",
        allow_abbrev=False,  # --re... must stay an event field, never an abbreviation of --retries
        help="sign and send an event to the bot's webhook (GONOGO_URL, GONOGO_WEBHOOK_SECRET[_FILE])",
        description="Send an event: gonogo notify TYPE --field value ... (see docs/ci.md). "
        "Types: rollback, drill, deploy, check_result, open. --id sets the idempotency key (default: generated).",
    )
    notify.add_argument("type", help="rollback | drill | deploy | check_result | open")
    notify.add_argument("--url", default=None, help="the bot's base URL (default: $GONOGO_URL)")
    notify.add_argument("--retries", type=int, default=5, help="retries on 5xx and connection errors (default: 5)")
    notify.add_argument("--backoff", type=float, default=1.0, metavar="S", help="first retry delay, doubled each time")

    validate = sub.add_parser("validate", help="validate gate files and report every problem")
    validate.add_argument("target", type=Path, help="gate file or directory")

    sub.add_parser("schema", help="print the JSON Schema of the gate file")
    sub.add_parser("serve", help="run the Slack bot (configuration from the environment, see docs/slack-app.md)")

    playground = sub.add_parser(
        "playground", help="run the bot against a local Slack you drive from a browser (no workspace needed)"
    )
    playground.add_argument("--port", type=int, default=3000, help="the page and local Web API (default 3000)")
    playground.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    playground.add_argument("--gates", type=Path, default=None, help="gate file or directory (default: the demo)")
    playground.add_argument("--reset", action="store_true", help="start clean: forget the playground's data")

    preview = sub.add_parser("preview", help="render a gate's release card as a standalone HTML page")
    preview.add_argument("file", type=Path, help="gate file")
    preview.add_argument("--results", type=Path, default=None, help="a `gonogo check --json` document to show")
    preview.add_argument("-o", "--output", type=Path, default=None, help="write the page here (default: stdout)")
    preview.add_argument("--blocks", action="store_true", help="print the card's Block Kit JSON instead")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # `notify` takes free-form `--field value` pairs after its own options.
    args, extra = build_parser().parse_known_args(argv)
    if extra and args.command != "notify":
        build_parser().parse_args(argv)  # the usual "unrecognized arguments" error, exit 2
    # No argv: this is the `gonogo` program (its console script), alone in its process.
    args.pause_gc = argv is None
    # The CLI's stdout is the report; logs go to stderr, warnings only unless asked for. (Imported
    # here: `--help` and usage errors exit before, without paying for logging; `validate` never
    # logs, and does not import `logging` at all.)
    if args.command not in _NEVER_LOG:
        from bot import logs

        logs.configure(os.environ.get("GONOGO_LOG_LEVEL", "WARNING"))
    try:
        if args.command == "check":
            import asyncio

            return asyncio.run(_check(args))
        if args.command == "validate":
            return _validate(args.target, pause_gc=args.pause_gc)
        if args.command == "windows":
            return _windows(args)
        if args.command == "drill":
            import asyncio

            return asyncio.run(_drill(args))
        if args.command == "notify":
            from bot.notify import notify

            return notify(args.type, extra, url=args.url, retries=args.retries, backoff_s=args.backoff)
        if args.command == "export":
            import asyncio

            return asyncio.run(_export(args.release, args.format, stage=args.stage, every=args.all))
        if args.command == "schema":
            from bot.core.gate import Gate

            print(json.dumps(Gate.model_json_schema(), indent=2))
            return 0
        if args.command == "serve":
            return _serve()
        if args.command == "playground":
            return _playground(args)
        if args.command == "preview":
            from bot.playground.preview import preview

            return preview(args.file, results=args.results, output=args.output, blocks=args.blocks)
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
    import asyncio

    from pydantic import ValidationError

    from bot import logs
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


def _playground(args: argparse.Namespace) -> int:
    import asyncio

    from bot import logs
    from bot.playground.run import Options, run
    from bot.settings import Settings

    logs.configure()
    data_dir = Settings.model_fields["data_dir"].default
    data_dir = Path(os.environ.get("GONOGO_DATA_DIR") or data_dir).expanduser()
    options = Options(port=args.port, host=args.host, gates=args.gates, reset=args.reset, data_dir=data_dir)

    def ready(url: str) -> None:
        print(f"gonogo playground: open {url}  (Ctrl-C stops everything)", flush=True)

    try:
        asyncio.run(run(options, on_ready=ready))
    except OSError as exc:
        print(f"error: cannot serve the playground on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    print("gonogo playground: stopped", flush=True)
    return 0


@contextlib.contextmanager
def _starting(pause_gc: bool) -> Iterator[None]:
    """Start-up (imports, the gate models and their validator, the gate files) without garbage
    collection: it creates a few hundred thousand long-lived objects and next to no garbage, so
    the collector's passes over them (and the full one at exit) are pure cost, ~25 ms of
    `gonogo validate`. Its objects are then frozen: later collections skip them. Only in the
    program's own process (`pause_gc`): a caller's objects would be frozen too."""
    if not pause_gc or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _validate(target: Path, *, pause_gc: bool = False) -> int:
    with _starting(pause_gc):
        from bot.core.loader import load_gates

        gates = load_gates(target)
    for loaded in gates.values():
        print(f"ok: {loaded.path} ({loaded.gate.id}: {len(loaded.gate.checks)} checks)")
    return 0


def _instant(text: str | None, gate: Gate, option: str = "--at") -> datetime:
    """Now, or `--at` as an aware instant: without an offset it is wall clock in the windows' zone."""
    from datetime import UTC, datetime

    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError([f"{option}: expected an ISO time like 2026-12-21T10:00Z, got {text!r}"]) from None
    if at.tzinfo is None:
        from zoneinfo import ZoneInfo

        at = at.replace(tzinfo=ZoneInfo(gate.windows.timezone if gate.windows else "UTC"))
    return at.astimezone(UTC)


def _windows(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from rich.console import Console

    from bot.core.durations import parse_duration
    from bot.core.loader import load_gate
    from bot.core.timeplan import outlook
    from bot.terminal import windows_document, windows_lines, windows_table

    loaded = load_gate(args.file)
    gate = loaded.gate
    try:
        ahead = parse_duration(args.next)
    except ValueError as exc:
        raise ConfigError([f"--next: {exc}"]) from None
    if not timedelta(0) < ahead <= timedelta(days=366):
        raise ConfigError(["--next must be more than 0 and at most 366d"])
    start = _instant(args.at, gate)
    if gate.windows is None:
        if args.json:
            print(json.dumps({"gate": gate.id, "windows": None, "periods": []}, indent=2))
        else:
            print(f"{gate.id}: no windows in {args.file.name}: deploys are allowed at any time")
        return 0
    view = outlook(gate.windows.rules(), start, ahead)
    console = Console()
    if args.json:
        print(json.dumps(windows_document(gate, view), indent=2))
    elif console.is_terminal:
        console.print(windows_table(gate, view))
    else:
        for line in windows_lines(gate, view):
            print(line)
    return 0


async def _check(args: argparse.Namespace) -> int:
    # Only what starting the checks needs; the decision and its rendering are imported once
    # they are done (importing while checks run would stall the loop they are timed on). So is
    # rich when the output is no terminal (CI logs, --json): progress is then plain lines.
    with _starting(args.pause_gc):
        from bot.core.loader import load_gate
        from bot.services.runner import DEFAULT_CONCURRENCY
        from checks.base import CheckContext

        loaded = load_gate(args.file)
    gate = loaded.gate
    at = _instant(args.at, gate)
    specs = list(gate.checks)
    if args.only:
        unknown = sorted(set(args.only) - {c.id for c in specs})
        if unknown:
            raise ConfigError([f"--only: unknown check {', '.join(unknown)} in {args.file.name}"])
        specs = [c for c in specs if c.id in set(args.only)]
    concurrency = DEFAULT_CONCURRENCY if args.concurrency is None else args.concurrency
    if concurrency < 1:
        raise ConfigError(["--concurrency must be at least 1"])
    if args.stage is not None and gate.stage(args.stage) is None:
        known = ", ".join(s.id for s in gate.stages)
        raise ConfigError(
            [f"--stage: unknown stage {args.stage!r} in {args.file.name} (stages: {known})"]
            if known
            else [f"--stage: {args.file.name} has no stages"]
        )

    stream = sys.stderr if args.json else sys.stdout
    live = not args.json and _maybe_terminal(stream) and _console(args.json).is_terminal
    results: dict[str, CheckResult] = {}
    env = dict(os.environ)
    # With --release, the checks judge the release's commit (the github check asks for its runs).
    facts = await _release_facts(args.release, gate.id) if args.release else None
    async with _http_session(any(type(spec).uses_http for spec in specs)) as session:
        ctx = CheckContext(
            session=session, base_dir=args.workdir or Path.cwd(), env=env, sha=facts[1].sha if facts else None
        )
        await _run_with_progress(gate, specs, ctx, results, stream, live=live, quiet=args.json, n=concurrency)

    from datetime import UTC, datetime

    from bot.core.decision import DecisionInput, decide
    from bot.core.stages import decide_stages
    from bot.terminal import json_document, ladder_text, results_table, verdict_text

    console = _console(args.json)
    now = at if args.at else datetime.now(UTC)
    current, reached = None, {}
    if facts is not None:
        people, release = facts
        results = people.results_for(gate, results, release.sha, now)
        inp = people.decision_input(gate, now, results, release.sha)
        current, reached = release.current_stage, release.stages_reached
    else:
        inp = DecisionInput(
            gate=gate, now=now, results=results, ignore_signoffs=args.ignore_signoffs, window=gate.window_at(now)
        )
    ladder = decide_stages(inp, current=current, reached=reached) if gate.stages else None
    stage = None
    if ladder is not None:
        stage = (ladder.get(args.stage) if args.stage else None) or ladder.target
    decision = stage.decision if stage is not None else decide(inp)
    if args.json:
        document = json_document(
            gate,
            decision,
            results,
            gate_file=str(args.file),
            gate_sha256=loaded.sha256,
            release=args.release,
            ladder=ladder,
            stage=stage.id if stage else None,
        )
        print(json.dumps(document, indent=2))
    else:
        if not live:
            from bot.terminal import results_table

            console.print(results_table(gate, results))
        if ladder is not None and stage is not None:
            console.print(ladder_text(ladder, stage.id))
        console.print(verdict_text(decision))
    return decision.verdict.exit_code


def _maybe_terminal(stream: TextIO) -> bool:
    """False when rich would certainly say the stream is no terminal (so rich need not load yet):
    not a tty, and none of the variables rich honours to force one either way."""
    if any(name in os.environ for name in ("FORCE_TERMINAL", "FORCE_COLOR", "TTY_COMPATIBLE")):
        return True
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


def _console(to_stderr: bool) -> Console:
    from rich.console import Console

    return Console(stderr=to_stderr)


@contextlib.asynccontextmanager
async def _http_session(needed: bool) -> AsyncIterator[aiohttp.ClientSession | None]:
    """A session when some check talks HTTP; else none, and aiohttp (0.1 s to import) stays unloaded."""
    if not needed:
        yield None
        return
    import aiohttp

    async with aiohttp.ClientSession() as session:
        yield session


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


async def _drill(args: argparse.Namespace) -> int:
    """One drill through the command-check engine; recorded for the gate when REDIS_URL is set (and
    then refused while the gate's run, drill or rollback holds its operation lease)."""
    import aiohttp

    from bot.core.drills import DrillRun
    from bot.core.loader import load_gate
    from bot.core.masking import Masker
    from bot.services.drills import DrillService, find_drill, run_drill
    from checks.base import CheckContext

    gate = load_gate(args.file).gate
    drill = find_drill(gate, args.drill)
    env = dict(os.environ)
    workdir = args.workdir or Path.cwd()
    run: DrillRun
    async with aiohttp.ClientSession() as session:
        if os.environ.get("REDIS_URL"):
            from bot.store.gatestore import GateStore

            async with _store() as store:
                service = DrillService(store=GateStore(store.redis), session=session, env=env, base_dir=workdir)
                run = await service.run(gate, drill.id, args.by, source="cli")
            where = f"recorded for gate {gate.id}"
        else:
            ctx = CheckContext(session=session, base_dir=workdir, env=env)
            run = await run_drill(gate, drill, ctx, Masker.from_env(env), actor=args.by, source="cli", run_id="local")
            where = "not recorded (REDIS_URL is not set)"
    mark = "✅ PASSED" if run.passed else "❌ FAILED"
    print(f"{mark} fire drill {drill.title} in {run.duration_s:.1f} s: {run.summary} ({where})")
    if run.details and not run.passed:
        print(run.details)
    return 0 if run.passed else 1


async def _release_facts(release_id: str, gate_id: str) -> tuple[People, Release]:
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
        return await load_people(store, release_id), release


async def _export(release_id: str, fmt: str, *, stage: str | None = None, every: bool = False) -> int:
    """The decision's bundle; with rollout stages also one per promotion (`--stage`, `--all`).
    Without either flag: the decision's, or when there is none the latest promotion's."""
    from bot.core.evidence_markdown import render_markdown
    from bot.core.release import parse_release_id

    parse_release_id(release_id)
    async with _store() as store:
        raw = await store.get_bundle(release_id)
        promotions = [json.loads(p) for p in await store.promotions(release_id)]
    decided = [json.loads(raw)] if raw is not None else []
    if stage is not None:
        bundles = [b for b in promotions if (b.get("stages") or {}).get("stage") == stage][-1:]
        if not bundles:
            raise ConfigError([f"{release_id} was never promoted to {stage!r}"])
    elif every:
        bundles = decided + promotions
    else:
        bundles = decided or promotions[-1:]
    if not bundles:
        raise ConfigError(
            [f"{release_id} has no evidence bundle: decide it first (`/gonogo decide {release_id}`) or promote it"]
        )
    if fmt == "json":
        text = json.dumps(bundles if every else bundles[0], indent=2, sort_keys=True) + "\n"
    else:
        text = "\n---\n\n".join(render_markdown(b) for b in bundles)
    # What people typed is masked before it is stored; masking again here covers bundles decided
    # before that (and secrets this environment knows by value).
    from bot.core.masking import Masker

    print(Masker.from_env(os.environ).mask(text), end="")
    return 0


async def _run_with_progress(
    gate: Gate,
    specs: list[Any],
    ctx: CheckContext,
    results: dict[str, CheckResult],
    stream: TextIO,
    *,
    live: bool,
    quiet: bool,
    n: int,
) -> None:
    from bot.core.masking import Masker
    from bot.services.runner import run_checks

    masker = Masker.from_env(ctx.env)
    running = {s.id for s in specs}
    if live:
        from rich.console import Group
        from rich.live import Live

        from bot.terminal import results_table

        console = _console(stream is sys.stderr)
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
            print(f"{result.status.value:>7}  {result.check_id}: {result.summary}", file=stream, flush=True)

    await run_checks(specs, ctx, masker=masker, concurrency=n, on_result=line)


if __name__ == "__main__":
    raise SystemExit(main())
