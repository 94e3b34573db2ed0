"""The `command` check with real processes: exit codes, argv vs shell, cwd, environment hygiene,
timeouts and cancellation that kill the whole process group, bounded output, masking."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.core.masking import MASK, Masker
from bot.core.results import Status
from bot.services.runner import run_checks, run_one
from checks.base import CheckContext
from checks.command import Spec, child_env, run
from checks.process import TAIL_BYTES

PY = sys.executable


def spec(run: list[str] | str, **fields: Any) -> Spec:
    return Spec.model_validate({"id": "cmd", "run": run, **fields})


def shell(script: str | list[str], **fields: Any) -> Spec:
    return Spec.model_validate({"id": "cmd", "run": script, "shell": True, **fields})


@pytest.fixture
def ctx(http_session: aiohttp.ClientSession, tmp_path: Path) -> CheckContext:
    return CheckContext(session=http_session, base_dir=tmp_path, env={"PATH": os.environ["PATH"]})


def alive(pid: int) -> bool:
    """Whether `pid` still runs. A zombie counts as gone: it was killed, and this machine's init
    does not reap orphans."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def read_pid(path: Path, within: float = 5.0) -> int:
    deadline = time.monotonic() + within
    while True:
        text = path.read_text().strip() if path.exists() else ""
        if text.isdigit():
            return int(text)
        assert time.monotonic() < deadline, f"{path} was never written"
        await asyncio.sleep(0.02)


# --- exit codes -------------------------------------------------------------------------------


async def test_exit_0_passes_with_the_output_as_details(ctx: CheckContext) -> None:
    outcome = await run(spec([PY, "-c", "print('all 73 tests passed')"]), ctx)
    assert outcome.status is Status.PASS
    assert outcome.summary.startswith("exit 0 after ")
    assert outcome.summary.endswith(" s")
    assert outcome.details == "all 73 tests passed"
    assert outcome.value == 0
    assert outcome.started_at <= outcome.finished_at


async def test_nonzero_exit_fails_with_the_code(ctx: CheckContext) -> None:
    outcome = await run(spec([PY, "-c", "import sys; print('2 failed'); sys.exit(3)"]), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary.startswith("exit 3 after ")
    assert outcome.details == "2 failed"
    assert outcome.value == 3


async def test_a_child_killed_by_a_signal_says_which(ctx: CheckContext) -> None:
    outcome = await run(spec([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary.startswith("killed by SIGKILL after ")


async def test_stdout_and_stderr_are_merged_in_the_order_written(ctx: CheckContext) -> None:
    code = "import sys\nfor s, t in ((sys.stdout, 'out1'), (sys.stderr, 'err'), (sys.stdout, 'out2')):\n"
    code += "    print(t, file=s, flush=True)"
    outcome = await run(spec([PY, "-c", code]), ctx)
    assert outcome.details == "out1\nerr\nout2"


async def test_stdin_is_empty_so_nothing_waits_for_an_answer(ctx: CheckContext) -> None:
    outcome = await run(spec([PY, "-c", "import sys; print(repr(sys.stdin.read()))"], timeout="5s"), ctx)
    assert outcome.status is Status.PASS
    assert outcome.details == "''"


# --- argv, shell, cwd ---------------------------------------------------------------------------


async def test_argv_is_not_interpreted_by_a_shell(ctx: CheckContext, tmp_path: Path) -> None:
    outcome = await run(spec(["echo", "$HOME; touch pwned", "`id`", "|", "*"]), ctx)
    assert outcome.status is Status.PASS
    assert outcome.details == "$HOME; touch pwned `id` | *"
    assert not (tmp_path / "pwned").exists()


async def test_shell_true_runs_a_pipeline(ctx: CheckContext) -> None:
    outcome = await run(shell("printf 'a\\nb\\nc\\n' | grep -c ."), ctx)
    assert outcome.status is Status.PASS
    assert outcome.details == "3"


async def test_shell_true_joins_a_list_into_one_script(ctx: CheckContext) -> None:
    outcome = await run(shell(["echo", "one", "&&", "echo", "two"]), ctx)
    assert outcome.details == "one\ntwo"


async def test_shell_exit_127_is_explained(ctx: CheckContext) -> None:
    outcome = await run(shell("no-such-program-gonogo-test"), ctx)
    assert outcome.status is Status.FAIL
    assert outcome.summary.startswith("exit 127 (command not found) after ")


async def test_runs_in_base_dir_by_default_and_cwd_is_relative_to_it(ctx: CheckContext, tmp_path: Path) -> None:
    (tmp_path / "service" / "api").mkdir(parents=True)
    where = [PY, "-c", "import os; print(os.getcwd())"]
    assert (await run(spec(where), ctx)).details == str(tmp_path)
    assert (await run(spec(where, cwd="service/api"), ctx)).details == str(tmp_path / "service" / "api")


async def test_a_relative_program_is_found_from_cwd(ctx: CheckContext, tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "check.sh"
    script.write_text("#!/bin/sh\necho checked in $(pwd)\n")
    script.chmod(0o755)
    outcome = await run(spec(["./check.sh"], cwd="scripts"), ctx)
    assert outcome.status is Status.PASS
    assert outcome.details == f"checked in {tmp_path / 'scripts'}"


async def test_a_missing_cwd_is_an_error_not_command_not_found(ctx: CheckContext) -> None:
    outcome = await run(spec(["true"], cwd="nowhere"), ctx)
    assert outcome.status is Status.ERROR
    assert outcome.summary == "working directory nowhere does not exist"


async def test_a_missing_program_is_an_error(ctx: CheckContext) -> None:
    outcome = await run(spec(["no-such-program-gonogo-test", "--flag"]), ctx)
    assert outcome.status is Status.ERROR
    assert outcome.summary == "command not found: no-such-program-gonogo-test"


async def test_a_program_without_execute_permission_is_an_error(ctx: CheckContext, tmp_path: Path) -> None:
    (tmp_path / "build.sh").write_text("#!/bin/sh\necho built\n")  # mode 0644: not executable
    outcome = await run(spec(["./build.sh"]), ctx)
    assert outcome.status is Status.ERROR
    assert outcome.summary.startswith("permission denied: ./build.sh")


# --- environment --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "passed"),
    [
        ("PATH", True),
        ("HOME", True),
        ("LANG", True),
        ("GIT_SHA", True),
        ("CI", True),
        ("SLACK_BOT_TOKEN", False),
        ("SLACK_SIGNING_SECRET", False),
        ("SLACK_CHANNEL", False),  # the bot's own settings, even the harmless-looking ones
        ("REDIS_URL", False),
        ("GONOGO_X", False),
        ("GONOGO_ADMINS", False),
        ("MY_API_TOKEN", False),
        ("DB_PASSWORD", False),
        ("github_token", False),
        ("STRIPE_API_KEY", False),
        ("AWS_SECRET_ACCESS_KEY", False),
        ("DEPLOY_PRIVATE_KEY", False),
        ("GOOGLE_APPLICATION_CREDENTIALS", False),
        ("VAULT_PASSPHRASE", False),
        ("REDIS_URL_FILE", False),
        # Not secrets, whatever a substring says: a variable is secret by its name.
        ("PWD", True),
        ("SSH_AUTH_SOCK", True),
        ("GIT_AUTHOR_NAME", True),
        ("XAUTHORITY", True),
    ],
)
def test_child_env_withholds_the_bots_secrets(name: str, passed: bool) -> None:
    assert (name in child_env({name: "value-123456"}, {})) is passed


def test_child_env_adds_extra_and_extra_wins_even_for_secret_names() -> None:
    env: Mapping[str, str] = {"PATH": "/usr/bin", "LANG": "C", "NPM_TOKEN": "from-the-bot"}
    extra = {"LANG": "C.UTF-8", "NPM_TOKEN": "asked-for", "FEATURE": "on"}
    assert child_env(env, extra) == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "NPM_TOKEN": "asked-for", "FEATURE": "on"}
    assert env == {"PATH": "/usr/bin", "LANG": "C", "NPM_TOKEN": "from-the-bot"}  # not modified


async def test_the_child_sees_extra_env_but_not_the_bots_secrets(
    http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    bot_env = {
        "PATH": os.environ["PATH"],
        "GIT_SHA": "abc123",
        "SLACK_BOT_TOKEN": "xoxb-1111-2222-secret",
        "REDIS_URL": "redis://:hunter22@redis:6379/0",
        "GONOGO_X": "gonogo-setting",
        "MY_API_TOKEN": "api-token-value",
        "DB_PASSWORD": "db-password-value",
    }
    ctx = CheckContext(session=http_session, base_dir=tmp_path, env=bot_env)
    outcome = await run(spec(["env"], env={"TARGET": "staging", "DB_PASSWORD": "for-the-tests"}), ctx)
    assert outcome.status is Status.PASS
    seen = dict(line.split("=", 1) for line in outcome.details.splitlines())
    assert seen["PATH"] == os.environ["PATH"]
    assert seen["GIT_SHA"] == "abc123"
    assert seen["TARGET"] == "staging"
    assert seen["DB_PASSWORD"] == "for-the-tests"  # set by the check itself
    for name in ("SLACK_BOT_TOKEN", "REDIS_URL", "GONOGO_X", "MY_API_TOKEN"):
        assert name not in seen


# --- timeouts, cancellation, leftovers ----------------------------------------------------------


async def test_timeout_kills_the_child_and_its_grandchild(ctx: CheckContext, tmp_path: Path) -> None:
    script = "echo started; sleep 30 & echo $! > grandchild.pid; echo $$ > child.pid; wait"
    begin = time.monotonic()
    outcome = await run(shell(script, timeout="500ms"), ctx)
    assert time.monotonic() - begin < 3
    assert outcome.status is Status.FAIL
    assert outcome.summary == "timed out after 500ms"
    assert outcome.details == "started"  # the output so far
    assert await gone(await read_pid(tmp_path / "grandchild.pid"))
    assert await gone(await read_pid(tmp_path / "child.pid"))


async def test_timeout_of_a_group_ignoring_sigterm_is_reported_within_the_runners_grace(
    ctx: CheckContext, tmp_path: Path
) -> None:
    # An ignored signal stays ignored in children: only SIGKILL ends these. The check must still
    # say "timed out" itself (FAIL, with output) before the runner's deadline makes it an error.
    script = "trap '' TERM; echo stubborn; sleep 30 & echo $! > grandchild.pid; wait"
    outcome = await run_one(shell(script, timeout="300ms"), ctx, Masker())
    assert outcome.status is Status.FAIL, outcome.summary
    assert outcome.summary == "timed out after 300ms"
    assert outcome.details == "stubborn"
    assert await gone(await read_pid(tmp_path / "grandchild.pid"))


async def test_cancelling_the_run_kills_the_process_group(ctx: CheckContext, tmp_path: Path) -> None:
    script = "echo $$ > child.pid; sleep 30 & echo $! > grandchild.pid; wait"
    task = asyncio.create_task(run_checks([shell(script, timeout="1m")], ctx))
    grandchild = await read_pid(tmp_path / "grandchild.pid")
    child = await read_pid(tmp_path / "child.pid")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The check re-raised only after the group was signalled: no waiting should be needed.
    assert await gone(grandchild, within=1)
    assert await gone(child, within=1)


async def test_a_background_process_left_behind_neither_hangs_the_check_nor_outlives_it(
    ctx: CheckContext, tmp_path: Path
) -> None:
    # The background sleep inherits the output pipe: reading until end of output would wait 30 s.
    script = "sleep 30 & echo $! > leftover.pid; echo done"
    begin = time.monotonic()
    outcome = await run(shell(script, timeout="20s"), ctx)
    assert time.monotonic() - begin < 3
    assert outcome.status is Status.PASS
    assert outcome.details == "done"
    assert await gone(await read_pid(tmp_path / "leftover.pid"))


# --- output size and secrets --------------------------------------------------------------------


async def test_huge_output_keeps_a_bounded_tail(ctx: CheckContext) -> None:
    code = (
        "import sys\n"
        "block = b'x' * 1048575 + b'\\n'\n"
        "for _ in range(50): sys.stdout.buffer.write(block)\n"
        "sys.stdout.buffer.write(b'THE END\\n')"
    )
    tracemalloc.start()
    try:
        outcome = await run(spec([PY, "-c", code], timeout="30s"), ctx)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.status is Status.PASS
    assert outcome.details.endswith("\nTHE END")
    assert len(outcome.details) <= TAIL_BYTES
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for 50 MB of output"


async def test_secrets_the_child_prints_are_masked_by_the_runner(
    http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    ctx = CheckContext(
        session=http_session,
        base_dir=tmp_path,
        env={"PATH": os.environ["PATH"], "DEPLOY_TOKEN": "very-secret-deploy-value"},
    )
    printed = "deploying with very-secret-deploy-value and xoxb-123456-abcdef-slack"
    [outcome] = await run_checks([spec(["echo", printed])], ctx)
    assert outcome.status is Status.PASS
    assert "very-secret-deploy-value" not in outcome.details
    assert "xoxb-123456" not in outcome.details
    assert outcome.details == f"deploying with {MASK} and {MASK}"


def test_pass_env_opens_named_secrets_but_never_the_bots_own() -> None:
    env = {"VAULT_TOKEN": "v", "AWS_SECRET_ACCESS_KEY": "a", "SLACK_BOT_TOKEN": "s", "REDIS_URL": "r", "PATH": "/bin"}
    passed = child_env(env, {}, ["VAULT_TOKEN", "SLACK_BOT_TOKEN", "REDIS_URL"])
    assert passed == {"VAULT_TOKEN": "v", "PATH": "/bin"}
