"""`github`: the latest run of each workflow on the release's commit succeeded, recently.

The commit is the release's (`ctx.sha`, a short SHA first resolved to the full one): the check
judges the Actions runs of that SHA (`head_sha`) on the spec's branch. Only a release without a
commit falls back to the branch head (one more call, for the branch's head commit), and every
verdict then says so in its summary. Per workflow only the latest run counts, so a re-run that
went green replaces the red one. Answers that leave no verdict (rate limit, bad token, GitHub
unreachable) are `error` results; a red, running, missing or stale workflow is a `fail`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from pydantic import Field

from bot.core.durations import Duration, format_duration
from bot.core.results import CheckResult, Status
from checks.base import CheckContext, SpecBase, result
from checks.http import describe_client_error


class Spec(SpecBase):
    kind: Literal["github"] = "github"
    repo: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", description="owner/name")
    branch: str = "main"
    workflows: list[str] | None = Field(
        default=None, description="Workflow names (or file names); default: every workflow on the head"
    )
    max_age: Duration = timedelta(hours=24)
    api_url: str = Field(default="https://api.github.com", pattern=r"^https?://")
    token_env: str = "GITHUB_TOKEN"

    default_timeout: ClassVar[timedelta] = timedelta(seconds=30)
    uses_http: ClassVar[bool] = True


API_VERSION = "2022-11-28"
PER_PAGE = 100
# 500 runs for one commit on one branch is already absurd; stop there rather than page forever.
MAX_PAGES = 5
_SUMMARY_PROBLEMS = 3
_SUMMARY_NAMES = 4


class _Stop(Exception):
    """An answer that ends the check early; becomes a result in `run`."""

    def __init__(self, status: Status, summary: str, details: str = "") -> None:
        super().__init__(summary)
        self.status = status
        self.summary = summary
        self.details = details


@dataclass(frozen=True)
class Run:
    """The parts of a workflow run the verdict needs."""

    workflow: str  # what groups runs of one workflow: its id, else its file
    name: str
    file: str  # ".github/workflows/test.yml" -> "test.yml"
    number: int
    status: str  # queued, in_progress, completed, ...
    conclusion: str | None  # success, failure, cancelled, skipped, ... once completed
    created: datetime
    updated: datetime  # for a completed run: when it finished
    url: str

    @property
    def label(self) -> str:
        return self.name or self.file

    def matches(self, wanted: str) -> bool:
        """ "test" matches a workflow named "test" or the file test.yml; "test.yml" matches the file."""
        stem = self.file.rsplit(".", 1)[0] if self.file.endswith((".yml", ".yaml")) else self.file
        return wanted.casefold() in {self.name.casefold(), self.file.casefold(), stem.casefold()}


def format_age(seconds: float) -> str:
    """ "42s", "5m", "2h15m", "30h", "3d4h". Hours up to two days, so that "30h ago (max 24h)" is
    comparable at a glance (humanize_age would round both to "1d")."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 48 * 3600:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours}h{minutes}m" if minutes and hours < 10 else f"{hours}h"
    days, hours = divmod(whole // 3600, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    parsed = datetime.fromisoformat(value)  # GitHub's "2024-05-01T10:00:00Z" (3.11 reads the Z)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_run(raw: Any) -> Run:
    """A run from the API's JSON; ValueError when a field the verdict needs is missing."""
    if not isinstance(raw, dict):
        raise ValueError(f"a run is {type(raw).__name__}, not an object")
    # Dynamic workflows (CodeQL default setup) have paths like "dynamic/github-code-scanning/codeql",
    # reusable ones may carry "@refs/heads/main": only the last path segment names the file.
    path = str(raw.get("path") or "").split("@", 1)[0]
    file = path.rsplit("/", 1)[-1]
    number = raw.get("run_number")
    if not isinstance(number, int):
        raise ValueError(f"run {raw.get('id')!r} has no run_number")
    return Run(
        workflow=str(raw.get("workflow_id") or path or raw.get("name")),
        name=str(raw.get("name") or ""),
        file=file,
        number=number,
        status=str(raw.get("status") or "unknown"),
        conclusion=raw.get("conclusion") if isinstance(raw.get("conclusion"), str) else None,
        created=_timestamp(raw.get("created_at")),
        updated=_timestamp(raw.get("updated_at") or raw.get("created_at")),
        url=str(raw.get("html_url") or ""),
    )


def latest(runs: list[Run]) -> Run:
    # created_at orders runs of different workflows too; run_number breaks ties within one.
    return max(runs, key=lambda run: (run.created, run.number))


class _Api:
    """GET on the GitHub REST API within one deadline shared by every call of the check."""

    def __init__(self, spec: Spec, ctx: CheckContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.token = ctx.env.get(spec.token_env) or None
        self.limit = spec.timeout or Spec.default_timeout
        # Monotonic: ctx.clock() is wall time and may be faked.
        self.deadline = time.monotonic() + self.limit.total_seconds()
        self.headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
        if self.token:
            self.headers["Authorization"] = f"Bearer {self.token}"

    @property
    def token_hint(self) -> str:
        return "" if self.token else f"set {self.spec.token_env}"

    async def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
        """(200, JSON) or (404, JSON or None); _Stop for everything else."""
        import aiohttp  # here, not at import: loading gates must not pay for it

        try:
            async with self.ctx.http.get(
                self.spec.api_url.rstrip("/") + path,
                params=params,
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=max(0.001, self.deadline - time.monotonic())),
            ) as response:
                code, headers, body = response.status, response.headers, await response.read()
        except TimeoutError:
            # aiohttp's timeouts subclass both TimeoutError and ClientError: catch this one first.
            summary = f"no answer from the GitHub API within {format_duration(self.limit)}"
            raise _Stop(Status.ERROR, summary) from None
        except aiohttp.ClientError as exc:
            summary = f"cannot reach the GitHub API at {self.spec.api_url}: {describe_client_error(exc)}"
            raise _Stop(Status.ERROR, summary) from None
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if code == 200 and document is not None:
            return code, document
        if code == 404:
            return code, document
        message = _message(document, body)
        if code == 200:
            raise _Stop(Status.ERROR, f"not a GitHub API answer from {path}: is api_url right?")
        if code in (403, 429):
            self._raise_if_rate_limited(headers)
        if code == 401:
            if self.token:
                raise _Stop(Status.ERROR, f"GitHub rejected the token in {self.spec.token_env} (401 {message})")
            raise _Stop(Status.ERROR, f"GitHub API answered 401 ({message}): {self.token_hint}")
        hint = f": {self.token_hint}" if code == 403 and not self.token else ""
        raise _Stop(Status.ERROR, f"GitHub API answered HTTP {code} for {path} ({message}){hint}")

    def _raise_if_rate_limited(self, headers: Any) -> None:
        if headers.get("x-ratelimit-remaining") == "0":
            reset = headers.get("x-ratelimit-reset", "")
            when = ""
            if reset.isdigit():
                minutes = max(1, math.ceil((int(reset) - self.ctx.clock().timestamp()) / 60))
                when = f", resets in {minutes} min"
            # Unauthenticated clients get 60 requests an hour per IP, shared by everything on the host.
            hint = f" ({self.token_hint} for a higher limit)" if not self.token else ""
            raise _Stop(Status.ERROR, f"GitHub rate limit{when}{hint}")
        retry_after = headers.get("retry-after")
        if retry_after:
            raise _Stop(Status.ERROR, f"GitHub secondary rate limit, retry in {retry_after} s")


def _message(document: Any, body: bytes) -> str:
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return str(document["message"])
    return " ".join(body[:120].decode("utf-8", errors="replace").split()) or "no message"


def _repo_not_found(api: _Api, spec: Spec) -> _Stop:
    why = f"private? {api.token_hint}" if not api.token else f"or not visible with {spec.token_env}"
    return _Stop(Status.ERROR, f"repository {spec.repo} not found ({why})")


async def _head_sha(api: _Api, spec: Spec) -> str:
    code, document = await api.get(f"/repos/{spec.repo}/branches/{quote(spec.branch, safe='/')}")
    if code == 404:
        # GitHub says "Branch not found" when it can see the repo, and a bare "Not Found" for a
        # repo that does not exist or that this token (or no token) may not see.
        if "branch" in _message(document, b"").lower():
            raise _Stop(Status.FAIL, f"branch {spec.branch} not found in {spec.repo}")
        raise _repo_not_found(api, spec)
    commit = document.get("commit") if isinstance(document, dict) else None
    sha = commit.get("sha") if isinstance(commit, dict) else None
    if not isinstance(sha, str) or not sha:
        raise _Stop(Status.ERROR, f"unexpected answer from the GitHub API: branch {spec.branch} without a commit")
    return sha


async def _commit_sha(api: _Api, spec: Spec, sha: str) -> str:
    """The full SHA of the release's commit (GitHub filters runs on full SHAs only)."""
    if len(sha) == 40:
        return sha
    code, document = await api.get(f"/repos/{spec.repo}/commits/{quote(sha)}")
    if code == 404:  # an unknown commit is a 422 ("No commit found for SHA"), an error from api.get
        raise _repo_not_found(api, spec)
    full = document.get("sha") if isinstance(document, dict) else None
    if not isinstance(full, str) or not full.startswith(sha):
        raise _Stop(Status.ERROR, f"unexpected answer from the GitHub API for commit {sha}")
    return full


async def _runs(api: _Api, spec: Spec, sha: str) -> list[Run]:
    found: list[Run] = []
    for page in range(1, MAX_PAGES + 1):
        params = {"head_sha": sha, "branch": spec.branch, "per_page": str(PER_PAGE), "page": str(page)}
        code, document = await api.get(f"/repos/{spec.repo}/actions/runs", params)
        if code == 404:
            raise _repo_not_found(api, spec)
        batch = document.get("workflow_runs") if isinstance(document, dict) else None
        if not isinstance(batch, list):
            raise _Stop(Status.ERROR, "unexpected answer from the GitHub API: no workflow_runs")
        try:
            # The API filters on head_sha already; checking again costs nothing and guards the verdict.
            found += [parse_run(r) for r in batch if not isinstance(r, dict) or r.get("head_sha") in (None, sha)]
        except ValueError as exc:
            raise _Stop(Status.ERROR, f"unexpected answer from the GitHub API: {exc}") from None
        if len(batch) < PER_PAGE:
            break
    return found


def _required(spec: Spec, runs: list[Run], subject: str) -> list[tuple[str, Run | None]]:
    """(label, latest run or None) for each workflow the check covers."""
    if spec.workflows is not None:
        chosen: list[tuple[str, Run | None]] = []
        for wanted in spec.workflows:
            candidates = [run for run in runs if run.matches(wanted)]
            chosen.append((wanted, latest(candidates) if candidates else None))
        return chosen
    by_workflow: dict[str, list[Run]] = {}
    for run in runs:
        by_workflow.setdefault(run.workflow, []).append(run)
    newest = [latest(group) for group in by_workflow.values()]
    if not newest:
        raise _Stop(Status.FAIL, f"no workflow runs for {subject}")
    return [(run.label, run) for run in sorted(newest, key=lambda run: run.label.casefold())]


def _too_old(age: float, max_age: timedelta) -> str:
    shown, limit = format_age(age), format_age(max_age.total_seconds())
    # "24h ago (max 24h)" for 24h0m30s would read as a bug; say what happened instead.
    return f"{'just over ' if shown == limit else ''}{shown} ago (max {limit})"


async def run(spec: Spec, ctx: CheckContext) -> CheckResult:
    started = ctx.clock()
    api = _Api(spec, ctx)
    # Without a release commit the branch head is judged instead: every verdict says so.
    fallback = "" if ctx.sha else f" · judged the head of {spec.branch}: the release has no commit"
    try:
        if ctx.sha:
            sha = await _commit_sha(api, spec, ctx.sha)
            subject = f"commit {sha[:7]}"
        else:
            sha = await _head_sha(api, spec)
            subject = f"head {sha[:7]}"
        runs = await _runs(api, spec, sha)
        required = _required(spec, runs, subject)
    except _Stop as stop:
        summary = stop.summary + (fallback if stop.status is not Status.ERROR else "")
        return result(spec, stop.status, summary, details=stop.details, started_at=started, finished_at=ctx.clock())

    now = ctx.clock()
    limit = spec.max_age.total_seconds()
    problems: list[str] = []
    lines = [f"{spec.repo} {spec.branch} {'commit' if ctx.sha else 'head'} {sha}"]
    counted: list[str] = []
    ages: list[float] = []
    for label, found in required:
        if found is None:
            problems.append(f"no run of workflow {label!r} for {subject}")
            lines.append(f"- {label}: no run for {subject}")
            continue
        number = f"run #{found.number}"
        if found.status != "completed":
            started_ago = format_age((now - found.created).total_seconds())
            problems.append(f"{label} is {found.status} ({number})")
            lines.append(f"- {label}: {found.status}, {number}, started {started_ago} ago, {found.url}")
            continue
        age = (now - found.updated).total_seconds()
        outcome = found.conclusion or "no conclusion"
        line = f"- {label}: {outcome}, {number}, finished {format_age(age)} ago, {found.url}"
        if outcome == "skipped" and spec.workflows is None:
            # Every job skipped by its `if:` (e.g. a deploy workflow that only acts on tags): the
            # workflow chose not to run, which is not a failure of a workflow nobody named.
            lines.append(line + " (not counted)")
            continue
        lines.append(line)
        counted.append(label)
        ages.append(age)
        if outcome != "success":
            problems.append(f"{label}: {outcome} ({number})")
        elif age > limit:
            problems.append(f"{label} succeeded {_too_old(age, spec.max_age)}")

    details = "\n".join(lines)
    value = max(ages) if ages else None  # the oldest run the verdict rests on
    finished = ctx.clock()
    if not problems and not counted:
        summary = f"no workflow ran for {subject}: all {len(required)} skipped{fallback}"
        return result(spec, Status.FAIL, summary, details=details, started_at=started, finished_at=finished)
    if problems:
        shown = "; ".join(problems[:_SUMMARY_PROBLEMS])
        if len(problems) > _SUMMARY_PROBLEMS:
            shown += f"; +{len(problems) - _SUMMARY_PROBLEMS} more"
        shown += fallback
        return result(spec, Status.FAIL, shown, details=details, value=value, started_at=started, finished_at=finished)
    names = ", ".join(counted) if len(counted) <= _SUMMARY_NAMES else f"{len(counted)} workflows"
    when = f"{'oldest ' if len(counted) > 1 else ''}{format_age(max(ages))} ago"
    summary = f"{names} green on {spec.branch}@{sha[:7]} ({when}){fallback}"
    return result(spec, Status.PASS, summary, details=details, value=value, started_at=started, finished_at=finished)
