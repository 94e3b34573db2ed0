"""The `github` check against a local stand-in for the GitHub REST API.

The stand-in (aiohttp.web on a free port) serves the two endpoints the check calls from data
each test sets up, filters runs the way GitHub does (head_sha, branch, pages), and records every
request so tests can look at the headers the check sent. The clock is fixed, so ages are exact.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.core.results import Status
from checks import github
from checks.base import CheckContext
from checks.github import Spec, format_age
from tests.redis_server import free_port

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HEAD = "abc1234def5678abc1234def5678abc1234def56"
OLD_HEAD = "0001112223334445556667778889990001112223"
REPO = "acme/payments"
NO_COMMIT = " · judged the head of release: the release has no commit"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_run(
    name: str,
    number: int,
    *,
    path: str | None = None,
    conclusion: str | None = "success",
    status: str = "completed",
    age: timedelta = timedelta(hours=2),
    sha: str = HEAD,
    branch: str = "main",
) -> dict[str, Any]:
    """A workflow run as GitHub returns it (the fields the check reads, plus a few it ignores)."""
    path = path or f".github/workflows/{name}.yml"
    finished = NOW - age
    return {
        "id": 9000 + number,
        "name": name,
        "path": path,
        "workflow_id": zlib.crc32(path.encode()),
        "run_number": number,
        "event": "push",
        "status": status,
        "conclusion": conclusion if status == "completed" else None,
        "head_sha": sha,
        "head_branch": branch,
        "created_at": iso(finished - timedelta(minutes=6)),
        "updated_at": iso(finished),
        "html_url": f"https://github.com/{REPO}/actions/runs/{9000 + number}",
    }


@dataclass
class FakeGitHub:
    url: str = ""
    branches: dict[str, str] = field(default_factory=lambda: {"main": HEAD})
    runs: list[dict[str, Any]] = field(default_factory=list)
    # (status, headers, body) served for every request instead of the data: errors, rate limits.
    override: tuple[int, dict[str, str], dict[str, Any]] | None = None
    delay: float = 0
    requests: list[web.Request] = field(default_factory=list)

    async def branch(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        await asyncio.sleep(self.delay)
        if self.override:
            return web.json_response(self.override[2], status=self.override[0], headers=self.override[1])
        if f"{request.match_info['owner']}/{request.match_info['repo']}" != REPO:
            return web.json_response({"message": "Not Found"}, status=404)
        name = request.match_info["branch"]
        if name not in self.branches:
            return web.json_response({"message": "Branch not found"}, status=404)
        return web.json_response({"name": name, "commit": {"sha": self.branches[name]}, "protected": True})

    async def commit(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        if f"{request.match_info['owner']}/{request.match_info['repo']}" != REPO:
            return web.json_response({"message": "Not Found"}, status=404)
        ref = request.match_info["ref"]
        known = [run["head_sha"] for run in self.runs] + list(self.branches.values())
        found = next((sha for sha in known if sha.startswith(ref)), None)
        if found is None:
            return web.json_response({"message": f"No commit found for SHA: {ref}"}, status=422)
        return web.json_response({"sha": found, "commit": {"message": "a commit"}})

    async def workflow_runs(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        await asyncio.sleep(self.delay)
        if self.override:
            return web.json_response(self.override[2], status=self.override[0], headers=self.override[1])
        if f"{request.match_info['owner']}/{request.match_info['repo']}" != REPO:
            return web.json_response({"message": "Not Found"}, status=404)
        query = request.query
        chosen = [
            run
            for run in self.runs
            if run["head_sha"] == query.get("head_sha", run["head_sha"])
            and run["head_branch"] == query.get("branch", run["head_branch"])
        ]
        chosen.sort(key=lambda run: run["created_at"], reverse=True)  # GitHub: newest first
        per_page, page = int(query.get("per_page", "30")), int(query.get("page", "1"))
        window = chosen[(page - 1) * per_page : page * per_page]
        return web.json_response({"total_count": len(chosen), "workflow_runs": window})


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    stand_in = FakeGitHub()
    app = web.Application()
    app.router.add_get("/repos/{owner}/{repo}/branches/{branch:.+}", stand_in.branch)
    app.router.add_get("/repos/{owner}/{repo}/actions/runs", stand_in.workflow_runs)
    app.router.add_get("/repos/{owner}/{repo}/commits/{ref}", stand_in.commit)
    runner = web.AppRunner(app, shutdown_timeout=0.1)  # do not wait out a deliberately slow handler
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stand_in.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield stand_in
    finally:
        await runner.cleanup()


def make_spec(fake: FakeGitHub, **fields: Any) -> Spec:
    return Spec.model_validate({"id": "ci", "repo": REPO, "api_url": fake.url, **fields})


def make_ctx(
    session: aiohttp.ClientSession, env: dict[str, str] | None = None, *, sha: str | None = HEAD
) -> CheckContext:
    """The release's commit is HEAD unless a test says otherwise (sha=None: a release without one)."""
    return CheckContext(session=session, env=env or {}, clock=lambda: NOW, sha=sha)


# --- named workflows -------------------------------------------------------------------------


async def test_all_green_passes(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("test", 412), make_run("build", 87, age=timedelta(hours=5))]
    outcome = await github.run(make_spec(fake, workflows=["test", "build"]), make_ctx(http_session))
    assert outcome.status is Status.PASS, outcome.summary
    assert outcome.summary == "test, build green on main@abc1234 (oldest 5h ago)"
    assert outcome.value == 5 * 3600
    assert outcome.details.splitlines() == [
        f"{REPO} main commit {HEAD}",
        f"- test: success, run #412, finished 2h ago, https://github.com/{REPO}/actions/runs/9412",
        f"- build: success, run #87, finished 5h ago, https://github.com/{REPO}/actions/runs/9087",
    ]


async def test_one_green_workflow(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("test", 412, age=timedelta(minutes=42))]
    outcome = await github.run(make_spec(fake, workflows=["test"]), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.PASS, "test green on main@abc1234 (42m ago)")


async def test_a_failed_workflow_fails(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("test", 412, conclusion="failure"), make_run("build", 87)]
    outcome = await github.run(make_spec(fake, workflows=["test", "build"]), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.FAIL, "test: failure (run #412)")
    assert "- test: failure, run #412" in outcome.details


async def test_a_running_workflow_fails(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("test", 413, status="in_progress", age=timedelta(minutes=1)), make_run("build", 87)]
    outcome = await github.run(make_spec(fake, workflows=["test", "build"]), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.FAIL, "test is in_progress (run #413)")
    assert "- test: in_progress, run #413, started 7m ago" in outcome.details


async def test_a_missing_workflow_fails(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    # A run of "deploy" on an older commit does not count for the head.
    fake.runs = [make_run("test", 412), make_run("deploy", 3, sha=OLD_HEAD)]
    outcome = await github.run(make_spec(fake, workflows=["test", "deploy"]), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.FAIL, "no run of workflow 'deploy' for commit abc1234")
    assert outcome.value == 2 * 3600


async def test_a_stale_success_fails(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("test", 412, age=timedelta(hours=30)), make_run("build", 87)]
    outcome = await github.run(make_spec(fake, workflows=["test", "build"], max_age="24h"), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.FAIL, "test succeeded 30h ago (max 24h)")
    assert outcome.value == 30 * 3600


async def test_just_over_max_age_says_so(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("test", 412, age=timedelta(hours=24, seconds=30))]
    outcome = await github.run(make_spec(fake, workflows=["test"], max_age="1d"), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.FAIL, "test succeeded just over 24h ago (max 24h)")


async def test_every_problem_is_summarized(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("a", 1, conclusion="cancelled"), make_run("b", 1, conclusion="timed_out")]
    outcome = await github.run(make_spec(fake, workflows=["a", "b", "c", "d"]), make_ctx(http_session))
    assert outcome.summary == (
        "a: cancelled (run #1); b: timed_out (run #1); no run of workflow 'c' for commit abc1234; +1 more"
    )


@pytest.mark.parametrize("wanted", ["test.yml", "test", "Unit tests", "unit TESTS"])
async def test_workflows_match_by_name_or_file(
    fake: FakeGitHub, http_session: aiohttp.ClientSession, wanted: str
) -> None:
    fake.runs = [make_run("Unit tests", 412, path=".github/workflows/test.yml")]
    outcome = await github.run(make_spec(fake, workflows=[wanted]), make_ctx(http_session))
    assert outcome.status is Status.PASS, outcome.summary
    assert outcome.summary == f"{wanted} green on main@abc1234 (2h ago)"


async def test_the_latest_run_of_a_workflow_decides(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [
        make_run("test", 411, conclusion="failure", age=timedelta(hours=3)),
        make_run("test", 412, age=timedelta(hours=1)),
    ]
    outcome = await github.run(make_spec(fake, workflows=["test"]), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.PASS, "test green on main@abc1234 (1h ago)")

    fake.runs[1] = make_run("test", 412, conclusion="failure", age=timedelta(hours=1))
    fake.runs[0] = make_run("test", 411, age=timedelta(hours=3))
    outcome = await github.run(make_spec(fake, workflows=["test"]), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.FAIL, "test: failure (run #412)")


async def test_runs_beyond_the_first_page_are_read(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    # The one "lint" run is older than 120 "matrix" runs, so it sits on the second page.
    fake.runs = [make_run("matrix", n, age=timedelta(minutes=200 - n)) for n in range(1, 121)]
    fake.runs.append(make_run("lint", 7, age=timedelta(hours=5)))
    outcome = await github.run(make_spec(fake, workflows=["lint", "matrix"]), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.PASS, "lint, matrix green on main@abc1234 (oldest 5h ago)")
    pages = [r.query.get("page") for r in fake.requests if r.path.endswith("/actions/runs")]
    assert pages == ["1", "2"]


# --- default: every workflow on the head -----------------------------------------------------


async def test_default_covers_every_workflow_on_the_head(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [
        make_run("test", 412),
        make_run("lint", 50, age=timedelta(hours=1)),
        make_run("build", 87, age=timedelta(hours=3)),
        make_run("nightly", 9, conclusion="failure", sha=OLD_HEAD),  # another commit
        make_run("pr-checks", 77, conclusion="failure", branch="feature/x"),  # another branch
    ]
    outcome = await github.run(make_spec(fake), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.PASS, "build, lint, test green on main@abc1234 (oldest 3h ago)")
    runs_request = fake.requests[-1]
    assert (runs_request.query["head_sha"], runs_request.query["branch"]) == (HEAD, "main")

    fake.runs.append(make_run("docs", 12, conclusion="failure"))
    outcome = await github.run(make_spec(fake), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.FAIL, "docs: failure (run #12)")


async def test_default_with_no_runs_fails(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("test", 1, sha=OLD_HEAD)]
    outcome = await github.run(make_spec(fake), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.FAIL, "no workflow runs for commit abc1234")


async def test_default_ignores_skipped_workflows(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("test", 412), make_run("release", 4, conclusion="skipped")]
    outcome = await github.run(make_spec(fake), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.PASS, "test green on main@abc1234 (2h ago)")
    assert "- release: skipped, run #4" in outcome.details and "(not counted)" in outcome.details

    # ... but a workflow the gate names must really succeed.
    outcome = await github.run(make_spec(fake, workflows=["release"]), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.FAIL, "release: skipped (run #4)")


async def test_default_with_only_skipped_workflows_fails(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("release", 4, conclusion="skipped")]
    outcome = await github.run(make_spec(fake), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.FAIL, "no workflow ran for commit abc1234: all 1 skipped")


# --- requests: token, headers, branch names --------------------------------------------------


async def test_token_is_sent_as_bearer(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("test", 412)]
    await github.run(make_spec(fake), make_ctx(http_session, {"GITHUB_TOKEN": "ghp_example"}, sha=None))
    assert len(fake.requests) == 2
    for request in fake.requests:
        assert request.headers["Authorization"] == "Bearer ghp_example"
        assert request.headers["Accept"] == "application/vnd.github+json"
        assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"


async def test_token_env_is_configurable(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("test", 412)]
    env = {"GITHUB_TOKEN": "wrong", "CI_READ_TOKEN": "ghp_right"}
    await github.run(make_spec(fake, token_env="CI_READ_TOKEN"), make_ctx(http_session, env))
    assert {r.headers["Authorization"] for r in fake.requests} == {"Bearer ghp_right"}


async def test_no_token_sends_no_authorization(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.runs = [make_run("test", 412)]
    outcome = await github.run(make_spec(fake), make_ctx(http_session, {"GITHUB_TOKEN": ""}))
    assert outcome.status is Status.PASS
    assert fake.requests and all("Authorization" not in r.headers for r in fake.requests)


async def test_branch_names_with_slashes(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.branches["release/1.2"] = HEAD
    fake.runs = [make_run("test", 412, branch="release/1.2")]
    outcome = await github.run(make_spec(fake, branch="release/1.2"), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.PASS, "test green on release/1.2@abc1234 (2h ago)")


# --- answers that end the check early --------------------------------------------------------


async def test_missing_branch_fails(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    outcome = await github.run(make_spec(fake, branch="release"), make_ctx(http_session, sha=None))
    assert (outcome.status, outcome.summary) == (Status.FAIL, "branch release not found in acme/payments" + NO_COMMIT)
    assert len(fake.requests) == 1


async def test_invisible_repo_is_an_error_asking_for_a_token(
    fake: FakeGitHub, http_session: aiohttp.ClientSession
) -> None:
    spec = make_spec(fake).model_copy(update={"repo": "acme/secret"})
    outcome = await github.run(spec, make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (
        Status.ERROR,
        "repository acme/secret not found (private? set GITHUB_TOKEN)",
    )
    outcome = await github.run(spec, make_ctx(http_session, {"GITHUB_TOKEN": "ghp_x"}))
    assert outcome.summary == "repository acme/secret not found (or not visible with GITHUB_TOKEN)"


@pytest.mark.parametrize("code", [403, 429])
async def test_rate_limit_is_an_error_with_the_reset_time(
    fake: FakeGitHub, http_session: aiohttp.ClientSession, code: int
) -> None:
    reset = int((NOW + timedelta(minutes=9, seconds=30)).timestamp())
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    fake.override = (code, headers, {"message": "API rate limit exceeded for 127.0.0.1."})
    outcome = await github.run(make_spec(fake), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (
        Status.ERROR,
        "GitHub rate limit, resets in 10 min (set GITHUB_TOKEN for a higher limit)",
    )
    outcome = await github.run(make_spec(fake), make_ctx(http_session, {"GITHUB_TOKEN": "ghp_x"}))
    assert outcome.summary == "GitHub rate limit, resets in 10 min"


async def test_secondary_rate_limit(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.override = (403, {"retry-after": "60"}, {"message": "You have exceeded a secondary rate limit."})
    outcome = await github.run(make_spec(fake), make_ctx(http_session, {"GITHUB_TOKEN": "ghp_x"}))
    assert (outcome.status, outcome.summary) == (Status.ERROR, "GitHub secondary rate limit, retry in 60 s")


async def test_rejected_token_is_an_error(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.override = (401, {}, {"message": "Bad credentials"})
    outcome = await github.run(make_spec(fake), make_ctx(http_session, {"GITHUB_TOKEN": "ghp_revoked"}))
    assert (outcome.status, outcome.summary) == (
        Status.ERROR,
        "GitHub rejected the token in GITHUB_TOKEN (401 Bad credentials)",
    )
    outcome = await github.run(make_spec(fake), make_ctx(http_session))
    assert outcome.summary == "GitHub API answered 401 (Bad credentials): set GITHUB_TOKEN"


async def test_forbidden_without_token_asks_for_one(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.override = (403, {}, {"message": "Must have admin rights to Repository."})
    outcome = await github.run(make_spec(fake), make_ctx(http_session))
    assert outcome.status is Status.ERROR
    assert outcome.summary.endswith("(Must have admin rights to Repository.): set GITHUB_TOKEN")


async def test_server_error_is_an_error(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.override = (502, {}, {"message": "Server Error"})
    outcome = await github.run(make_spec(fake), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (
        Status.ERROR,
        "GitHub API answered HTTP 502 for /repos/acme/payments/actions/runs (Server Error)",
    )


async def test_unreachable_api_is_an_error(http_session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    spec = Spec(id="ci", repo=REPO, api_url=url)
    outcome = await github.run(spec, make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (
        Status.ERROR,
        f"cannot reach the GitHub API at {url}: Connection refused",
    )


async def test_silent_api_is_an_error_within_the_timeout(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    fake.delay = 2
    outcome = await github.run(make_spec(fake, timeout="200ms"), make_ctx(http_session))
    assert (outcome.status, outcome.summary) == (Status.ERROR, "no answer from the GitHub API within 200ms")


# --- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (42, "42s"),
        (300, "5m"),
        (2 * 3600 + 15 * 60, "2h15m"),
        (24 * 3600, "24h"),
        (30 * 3600 + 59, "30h"),
        (7 * 86400, "7d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
    ],
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


# --- the release's commit ----------------------------------------------------------------------


async def test_the_release_commit_is_judged_not_the_branch_head(
    fake: FakeGitHub, http_session: aiohttp.ClientSession
) -> None:
    # main moved on (HEAD is green); the release is at OLD_HEAD, whose run failed.
    fake.runs = [make_run("test", 412), make_run("test", 400, conclusion="failure", sha=OLD_HEAD)]
    outcome = await github.run(make_spec(fake), make_ctx(http_session, sha=OLD_HEAD))
    assert (outcome.status, outcome.summary) == (Status.FAIL, "test: failure (run #400)")
    assert [r.path for r in fake.requests] == [f"/repos/{REPO}/actions/runs"]  # never the branch head
    assert fake.requests[0].query["head_sha"] == OLD_HEAD
    assert outcome.details.splitlines()[0] == f"{REPO} main commit {OLD_HEAD}"


async def test_a_short_release_sha_is_resolved_to_the_full_one(
    fake: FakeGitHub, http_session: aiohttp.ClientSession
) -> None:
    fake.runs = [make_run("test", 400, sha=OLD_HEAD), make_run("test", 412)]
    outcome = await github.run(make_spec(fake), make_ctx(http_session, sha=OLD_HEAD[:7]))
    assert (outcome.status, outcome.summary) == (Status.PASS, "test green on main@0001112 (2h ago)")
    assert [r.path for r in fake.requests] == [f"/repos/{REPO}/commits/{OLD_HEAD[:7]}", f"/repos/{REPO}/actions/runs"]
    assert fake.requests[1].query["head_sha"] == OLD_HEAD


async def test_an_unknown_release_commit_is_an_error(fake: FakeGitHub, http_session: aiohttp.ClientSession) -> None:
    outcome = await github.run(make_spec(fake), make_ctx(http_session, sha="fedcba9"))
    assert outcome.status is Status.ERROR
    assert "No commit found for SHA: fedcba9" in outcome.summary


async def test_without_a_release_commit_the_branch_head_is_judged_and_the_summary_says_so(
    fake: FakeGitHub, http_session: aiohttp.ClientSession
) -> None:
    fake.runs = [make_run("test", 412), make_run("test", 400, conclusion="failure", sha=OLD_HEAD)]
    outcome = await github.run(make_spec(fake), make_ctx(http_session, sha=None))
    assert (outcome.status, outcome.summary) == (
        Status.PASS,
        "test green on main@abc1234 (2h ago) · judged the head of main: the release has no commit",
    )
    assert [r.path for r in fake.requests] == [f"/repos/{REPO}/branches/main", f"/repos/{REPO}/actions/runs"]
