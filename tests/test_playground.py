"""`gonogo playground` without a browser: the page's backend sends the bot real signed Slack traffic,
each user sees only what Slack would show them, Ctrl-C leaves nothing running, `--reset` starts
clean; plus `gonogo preview` and the one stand-in shared with the suite."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import tests.bot_harness
from bot.core.loader import load_gate
from bot.playground import run as playground_run
from bot.playground.standin import SlackStandIn, block_errors
from bot.playground.workspace import Directory, display_name, sign
from tests.delivery_kit import until
from tests.playground_harness import (
    CHANNEL,
    OUTSIDER,
    REPO,
    SRE,
    TECH_LEAD,
    Playground,
    processes_in_session,
    processes_working_in,
    start_playground,
    write_gates,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def playground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Playground]:
    tmp = tmp_path_factory.mktemp("playground")
    running = start_playground(tmp, "--gates", str(write_gates(tmp / "gates")))
    try:
        yield running
    finally:
        running.stop()
    # After real traffic (and with pages still listening for events), Ctrl-C still stops everything.
    assert processes_working_in(running.data_dir) == [], "the embedded redis-server outlived the playground"


@pytest.fixture
async def page(playground: Playground) -> AsyncIterator[Page]:
    async with aiohttp.ClientSession(base_url=playground.url) as session:
        yield Page(session)


class Page:
    """What the page's JavaScript does, as plain HTTP calls."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(path, json=body) as response:
            assert response.status == 200, await response.text()
            return dict(await response.json())

    async def state(self, user: str, channel: str = CHANNEL) -> dict[str, Any]:
        async with self.session.get("/pg/state", params={"user": user, "channel": channel}) as response:
            assert response.status == 200, await response.text()
            return dict(await response.json())

    async def until(
        self, user: str, found: Callable[[dict[str, Any]], Any], what: str, timeout: float = 20.0
    ) -> dict[str, Any]:
        """`user`'s view of the workspace once `found` holds for it."""

        last: dict[str, Any] = {}

        async def state() -> dict[str, Any] | None:
            last.update(seen := await self.state(user))
            return seen if found(seen) else None

        try:
            return await until(state, timeout, what)
        except TimeoutError as timed_out:  # with what the user saw last
            raise TimeoutError(f"{timed_out}: {json.dumps(last)[:2000]}") from None

    async def command(self, user: str, text: str, channel: str = CHANNEL) -> dict[str, Any]:
        return await self.post("/pg/command", {"user": user, "channel": channel, "text": text})

    async def click(self, user: str, message: dict[str, Any], action_id: str, value_part: str = "") -> None:
        for block in message["blocks"]:
            for element in block.get("elements", []):
                if element.get("action_id") == action_id and value_part in element.get("value", ""):
                    body = {
                        "user": user,
                        "channel": CHANNEL,
                        "ts": message["ts"],
                        "block_id": block.get("block_id", ""),
                        "action_id": action_id,
                        "value": element.get("value"),
                    }
                    await self.post("/pg/action", body)
                    return
        raise AssertionError(f"no {action_id} button")


def card_of(state: dict[str, Any], release: str) -> dict[str, Any] | None:
    return next((m for m in state["messages"] if release in json.dumps(m.get("blocks", []))), None)


def card_text(state: dict[str, Any], release: str) -> str:
    card = card_of(state, release)
    return json.dumps(card["blocks"], ensure_ascii=False) if card else ""


async def test_page_is_served_offline_with_a_strict_policy(page: Page) -> None:
    async with page.session.get("/") as response:
        html = await response.text()
        assert response.status == 200
        assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    assert "Acting as" in html and ">Message<" in html
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert src.startswith("/static/"), f"{src} is not served by the playground"
    for name in ("app.js", "blockkit.js", "style.css"):
        async with page.session.get(f"/static/{name}") as response:
            assert response.status == 200
            assert "http://" not in await response.text() and "https://" not in await response.text()
    async with page.session.get("/static/../workspace.py") as response:
        assert response.status == 404


async def test_workspace_lists_channels_and_people_by_role(page: Page) -> None:
    async with page.session.get("/pg/workspace") as response:
        workspace = await response.json()
    assert workspace["channels"] == [{"id": CHANNEL, "name": "payments-releases"}]
    assert workspace["groups"] == [{"role": "Tech Lead", "users": [TECH_LEAD]}, {"role": "SRE", "users": [SRE]}]
    assert workspace["outsider"] == OUTSIDER
    assert OUTSIDER not in {u for g in workspace["groups"] for u in g["users"]}


async def test_signed_traffic_round_trip_and_private_answers(page: Page) -> None:
    opened = await page.command(TECH_LEAD, "/gonogo open payments 2.0.0")
    assert opened["ok"], opened
    state = await page.until(TECH_LEAD, lambda s: card_of(s, "payments@2.0.0"), "the card")
    card = card_of(state, "payments@2.0.0")
    assert card is not None and card["bot_id"]
    # The opener's confirmation went to the response_url: theirs only.
    await page.until(TECH_LEAD, lambda s: any("Opened payments@2.0.0" in e["text"] for e in s["ephemerals"]), "ack")
    assert not any("Opened payments@2.0.0" in e["text"] for e in (await page.state(SRE))["ephemerals"])

    # The outsider's click reaches the bot, which refuses it privately.
    await page.click(OUTSIDER, card, "gonogo_approve", "tech-lead")
    refused = await page.until(OUTSIDER, lambda s: s["ephemerals"], "the refusal")
    assert "Tech Lead" in refused["ephemerals"][-1]["text"]
    assert (await page.state(TECH_LEAD))["ephemerals"][-1]["text"] != refused["ephemerals"][-1]["text"]

    # Reject opens a modal on the SRE's screen only; response_action errors come back per field.
    await page.click(SRE, card, "gonogo_reject", "|sre")
    state = await page.until(SRE, lambda s: s["view"], "the reject modal")
    view = state["view"]
    assert (await page.state(TECH_LEAD))["view"] is None
    answer = await page.post("/pg/submit", {"user": SRE, "view_id": view["id"], "values": {"reason": {"value": "  "}}})
    assert answer == {"ok": False, "errors": {"reason": "A rejection needs a reason."}}
    answer = await page.post(
        "/pg/submit", {"user": SRE, "view_id": view["id"], "values": {"reason": {"value": "no rollback plan"}}}
    )
    assert answer == {"ok": True}
    assert (await page.state(SRE))["view"] is None
    await page.until(SRE, lambda s: "no rollback plan" in card_text(s, "payments@2.0.0"), "the rejection on the card")


async def test_unknown_commands_users_and_other_peoples_dms_are_refused(page: Page, playground: Playground) -> None:
    answer = await page.command(TECH_LEAD, "/deploy now")
    assert answer == {"ok": False, "error": "unknown_command"}
    async with page.session.post("/pg/command", json={"user": "U0NOBODY", "channel": CHANNEL, "text": "/gonogo"}) as r:
        assert r.status == 400
    someone_elses = (await page.state(SRE, channel=CHANNEL))["dm"]
    async with page.session.get("/pg/state", params={"user": TECH_LEAD, "channel": someone_elses}) as response:
        assert response.status == 403
    async with page.session.post("/pg/action", data=b"not json") as response:
        assert response.status == 400


def test_requests_are_signed_as_slack_signs_them() -> None:
    """The backend's signer reproduces the example in Slack's "Verifying requests" documentation."""
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
        b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
        b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F"
        b"96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = sign(secret, body, timestamp=1531420618)
    assert headers["X-Slack-Signature"] == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_directory_names_and_outsider(tmp_path: Path) -> None:
    loaded = load_gate(write_gates(tmp_path) / "payments.yml")
    directory = Directory.from_gates([loaded.gate])
    assert display_name("U01TECH") == "tech" and display_name("U0DEMOSRE1") == "demosre1"
    assert directory.people[OUTSIDER].roles == []
    assert directory.people[TECH_LEAD].roles == ["Tech Lead"]


def test_ctrl_c_leaves_nothing_running(tmp_path: Path) -> None:
    """The default playground (demo gate, demo service, embedded Redis, bot) stops on one Ctrl-C."""
    running = start_playground(tmp_path)
    sid = running.process.pid
    assert processes_working_in(running.data_dir), "the embedded redis-server should be running"
    code = running.ctrl_c()
    assert code == 0
    assert processes_in_session(sid) == []
    assert processes_working_in(running.data_dir) == []
    assert (running.data_dir / "playground" / "workspace.json").exists()


def test_reset_starts_clean(tmp_path: Path) -> None:
    gates = write_gates(tmp_path / "gates")
    first = start_playground(tmp_path, "--gates", str(gates))
    try:
        state = _sync_command(first.url, TECH_LEAD, "/gonogo open payments 3.0.0")
        assert card_of(state, "payments@3.0.0")
    finally:
        first.stop()
    kept = start_playground(tmp_path, "--gates", str(gates))
    try:
        assert card_of(_sync_state(kept.url, TECH_LEAD), "payments@3.0.0"), "messages survive a restart"
    finally:
        kept.stop()
    clean = start_playground(tmp_path, "--gates", str(gates), "--reset")
    try:
        assert _sync_state(clean.url, TECH_LEAD)["messages"] == []
        again = _sync_command(clean.url, TECH_LEAD, "/gonogo open payments 3.0.0")
        assert any("Opened payments@3.0.0" in e["text"] for e in again["ephemerals"]), "the release was forgotten"
    finally:
        clean.stop()


def _sync_state(url: str, user: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{url}pg/state?user={user}&channel={CHANNEL}", timeout=10) as response:  # noqa: S310
        return dict(json.loads(response.read()))


def _sync_command(url: str, user: str, text: str) -> dict[str, Any]:
    import urllib.request

    body = json.dumps({"user": user, "channel": CHANNEL, "text": text}).encode()
    request = urllib.request.Request(f"{url}pg/command", body, {"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = _sync_state(url, user)
        if state["ephemerals"] and card_of(state, text.split()[-2] + "@" + text.split()[-1]):
            return state
        time.sleep(0.05)
    raise AssertionError(f"no card after {text}")


# -- gonogo preview ---------------------------------------------------------------------------


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_preview_blocks_are_the_bots_card(tmp_path: Path) -> None:
    gates = write_gates(tmp_path / "gates")
    done = _cli("preview", str(gates / "payments.yml"), "--blocks")
    assert done.returncode == 0, done.stderr
    card = json.loads(done.stdout)
    assert block_errors(card["blocks"]) == []
    assert card["blocks"][0]["type"] == "header" and "Payments API" in card["blocks"][0]["text"]["text"]
    assert "Approve as Tech Lead" in done.stdout


def test_preview_page_is_standalone_and_inert(tmp_path: Path) -> None:
    gate = tmp_path / "gate.yml"
    gate.write_text(
        "id: hostile\nname: 'Pay </script><script>alert(1)</script>'\nchannel: C1\n"
        "checks: [{id: unit, kind: command, run: [python3, -c, 'pass']}]\n"
    )
    results = tmp_path / "check.json"
    checked = _cli("check", str(gate), "--json", "--ignore-signoffs")
    assert checked.returncode == 0, checked.stderr
    results.write_text(checked.stdout)
    out = tmp_path / "card.html"
    done = _cli("preview", str(gate), "--results", str(results), "-o", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert html.count("<script") == 3  # the data, the renderer, the boot: all ours
    assert "<script>alert(1)" not in html
    assert not re.search(r'(?:src|href)="https?:', html)
    data = html.split('<script type="application/json" id="card">', 1)[1].split("</script>", 1)[0]
    card = json.loads(data)
    assert "✅" in json.dumps(card, ensure_ascii=False)  # the check's result is on the card

    wrong = tmp_path / "other.json"
    wrong.write_text(json.dumps({"gate": {"id": "payments"}, "checks": []}))
    refused = _cli("preview", str(gate), "--results", str(wrong))
    assert refused.returncode == 2 and "not 'hostile'" in refused.stderr


# -- one stand-in --------------------------------------------------------------------------------


def test_suite_and_playground_share_one_stand_in() -> None:
    assert vars(tests.bot_harness)["SlackStandIn"] is SlackStandIn is vars(playground_run)["SlackStandIn"]
    assert not (REPO / "tests" / "slack_standin.py").exists()
