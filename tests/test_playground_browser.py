"""The playground in a real browser: Playwright driving Debian's chromium against `gonogo playground`.

Outside CI the tests skip, saying why, when the `playwright` package or a `chromium` on the PATH
is missing; in CI (CI=true) they fail instead, so a broken install never passes silently.
Browsers are never downloaded: `executable_path` is the system chromium.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from tests.playground_harness import (
    OUTSIDER,
    REPO,
    SRE,
    TECH_LEAD,
    Playground,
    processes_working_in,
    start_playground,
    write_gates,
)

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Dialog, Locator, Page, ViewportSize

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 1000}
TIMEOUT_MS = 20_000  # generous: the machine is shared and has 2 cores
ARTIFACTS = Path(os.environ.get("GONOGO_TEST_ARTIFACTS") or REPO / "tmp" / "artifacts")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run the browser tests: .ci/run installs what they need)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile directory of this module's own."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed: pip install -e '.[dev]'")
    executable = shutil.which("chromium")
    if executable is None:
        _unavailable("no chromium on the PATH: apt-get install chromium")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as driver:
        launched = driver.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT
        )
        launched.set_default_timeout(TIMEOUT_MS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def playground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Playground]:
    tmp = tmp_path_factory.mktemp("browser-playground")
    running = start_playground(tmp, "--gates", str(write_gates(tmp / "gates")))
    try:
        yield running
    finally:
        running.stop()
    # After real traffic (and with pages still listening for events), Ctrl-C still stops everything.
    assert processes_working_in(running.data_dir) == [], "the embedded redis-server outlived the playground"


@pytest.fixture
def page(browser: BrowserContext, playground: Playground) -> Iterator[Page]:
    opened = browser.new_page()
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:  # alert() from injected script would land here
        dialogs.append(dialog.message)
        dialog.dismiss()

    opened.on("dialog", refuse)
    opened.goto(playground.url)
    opened.locator("body[data-ready='1']").wait_for()
    try:
        yield opened
    finally:
        opened.close()
    assert dialogs == [], f"the page opened browser dialogs: {dialogs}"


def act_as(page: Page, user: str) -> None:
    page.get_by_label("Acting as", exact=True).select_option(user)
    page.wait_for_function("() => !document.querySelector('#modal-root .overlay')")


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def card(page: Page, release_title: str) -> Locator:
    """The card is the message whose header names the release."""
    return page.locator("article.message:not(.ephemeral)").filter(
        has=page.locator("h3.bk-header", has_text=release_title)
    )


def expect_text(locator: Locator, pattern: str | re.Pattern[str]) -> None:
    from playwright.sync_api import expect

    expect(locator).to_contain_text(pattern, timeout=TIMEOUT_MS)


def test_release_flow_in_the_browser(page: Page) -> None:
    from playwright.sync_api import expect

    send(page, "/gonogo open payments 1.0.0")
    the_card = card(page, "Payments API 1.0.0")
    expect(the_card).to_have_count(1)
    expect_text(the_card.locator("h3.bk-header"), "NO-GO")
    page.evaluate("() => { window.__notReloaded = true; }")

    # Tech Lead: Approve, confirm, and the approval is on the card.
    act_as(page, TECH_LEAD)
    the_card.get_by_role("button", name="Approve as Tech Lead").click()
    confirm = page.get_by_role("alertdialog", name="Approve?")
    expect_text(confirm, "Approve payments@1.0.0 as Tech Lead?")
    confirm.get_by_role("button", name="Approve").click()
    expect_text(the_card, re.compile(r"✅ Tech Lead \(1/1\) — approved by @tech"))

    # SRE: Reject asks for a reason; an empty one is refused field by field, then it is recorded.
    act_as(page, SRE)
    the_card.locator("[data-block-id='role|sre']").get_by_role("button", name="Reject").click()
    page.get_by_role("alertdialog", name="Reject?").get_by_role("button", name="Reject").click()
    modal = page.get_by_role("dialog", name="Reject")
    reason = modal.get_by_label("Reason")
    modal.get_by_role("button", name="Reject").click()
    expect_text(modal.locator("[data-block-id='reason'] .field-error"), "Please complete this required field.")
    reason.fill("   ")  # passes Slack's own check; the bot answers response_action: errors
    modal.get_by_role("button", name="Reject").click()
    expect_text(modal.locator("[data-block-id='reason'] .field-error"), "A rejection needs a reason.")
    reason.fill("Rollback plan untested")
    modal.get_by_role("button", name="Reject").click()
    expect(modal).to_have_count(0)
    expect_text(the_card, "rejected by @sre")
    expect_text(the_card, "Rollback plan untested")

    # Run checks: the verdict changes in place, no reload (the SRE's optional rejection only warns).
    the_card.get_by_role("button", name="Run checks").click()
    expect_text(the_card.locator("h3.bk-header"), re.compile(r"^\S+ GO · Payments API 1\.0\.0"))
    expect_text(the_card, "Unit tests")
    assert page.evaluate("() => window.__notReloaded === true"), "the page was reloaded"

    # Someone outside every role: their Approve is refused in a message only they can see.
    act_as(page, OUTSIDER)
    the_card.get_by_role("button", name="Approve as Tech Lead").click()
    page.get_by_role("alertdialog", name="Approve?").get_by_role("button", name="Approve").click()
    refusal = page.locator("article.message.ephemeral").filter(has_text="Tech Lead").last
    expect_text(refusal, "Only visible to you")
    refusal_text = refusal.locator(".bk-blocks").inner_text()
    act_as(page, TECH_LEAD)
    expect_text(the_card, "approved by @tech")
    ephemerals = page.locator("article.message.ephemeral .bk-blocks").all_inner_texts()
    assert refusal_text not in ephemerals, "the Tech Lead sees the outsider's refusal"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "playground-release-flow.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_hostile_text_renders_as_text(page: Page) -> None:
    from playwright.sync_api import expect

    hostile = "<img src=x onerror=window.__pwned=1> <script>window.__pwned=2</script> *still bold*"
    act_as(page, SRE)
    send(page, hostile)  # a person's message, stored as typed
    mine = page.locator("article.message").filter(has_text="onerror").last
    expect_text(mine, "<img src=x onerror=window.__pwned=1>")
    expect_text(mine, "<script>window.__pwned=2</script>")
    expect(mine.locator("b")).to_have_text("still bold")
    # Through the bot: it quotes the unknown gate back, escaped, in an ephemeral answer.
    send(page, "/gonogo open <img/src=x/onerror=window.__pwned=3> 1.0.0")
    answer = page.locator("article.message.ephemeral").filter(has_text="onerror").last
    # The bot escapes what it echoes: `_` gets a zero-width space so Slack cannot start italics.
    expect_text(answer, re.compile(r"<img/src=x/onerror=window\.(\u200b?_){2}\u200b?pwned=3>"))
    assert page.locator("#messages img, #messages script").count() == 0
    assert page.evaluate("() => window.__pwned") is None


@pytest.mark.parametrize(
    ("source", "html"),
    [
        ("*bold* _italic_ ~strike~", "<b>bold</b> <i>italic</i> <s>strike</s>"),
        ("`a *b*` x", "<code>a *b*</code> x"),
        ("```\nline <1>\n```", '<pre class="code-block">line &lt;1&gt;\n</pre>'),
        ("<https://example.com/a?b=1&amp;c=2|the docs>", "the docs"),
        ("<javascript:alert(1)|click>", "&lt;javascript:alert(1)|click&gt;"),
        ("<@U01TECH> in <#C0PAYMENTS>", '<span class="mention">@tech</span> in'),
        ("<!here> <!subteam^S0SRE>", '<span class="mention broadcast">@here</span>'),
        ("&lt;b&gt; &amp; :white_check_mark: :warning: :nope:", "&lt;b&gt; &amp; ✅ ⚠️ :nope:"),
        ("snake_case_name and 2*3*4", "snake_case_name and 2*3*4"),
    ],
)
def test_mrkdwn_renderer(page: Page, source: str, html: str) -> None:
    rendered = page.evaluate(
        "([s]) => BlockKit.mrkdwn(s, {names: {U01TECH: 'tech'}, channels: {C0PAYMENTS: 'payments'}}).innerHTML",
        [source],
    )
    assert html in rendered
    if source.startswith("<https://"):
        href = page.evaluate("([s]) => BlockKit.mrkdwn(s, {}).querySelector('a').getAttribute('href')", [source])
        assert href == "https://example.com/a?b=1&c=2"


def test_preview_page_renders_offline(browser: BrowserContext, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    gates = write_gates(tmp_path / "gates")
    out = tmp_path / "card.html"
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "preview", str(gates / "payments.yml"), "-o", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    browser.set_offline(True)
    page = browser.new_page()
    try:
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(out.as_uri())
        expect_text(page.locator("h3.bk-header"), "Payments API preview")
        expect(page.get_by_role("button", name="Approve as Tech Lead")).to_be_disabled()
        assert [u for u in requests if not u.startswith("file:")] == []
    finally:
        page.close()
        browser.set_offline(False)
