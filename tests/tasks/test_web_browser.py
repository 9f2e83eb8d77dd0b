"""The review queue in a real browser: Playwright driving Debian's Chromium
(``executable_path``; no browser download), against the app on a real uvicorn.

Install: ``apt-get install -y chromium`` and ``pip install playwright`` (the Python package
only: never ``playwright install``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import create_pg_database, drop_pg_database_later
from tests.tasks.test_web_support import Served, WebEnv, serve, sqlite_url, stop, web_env

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is required: apt-get update && apt-get install -y chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[WebEnv]:
    yield from web_env(sqlite_url(tmp_path), tmp_path)


@pytest.fixture
def pg_env(tmp_path: Path) -> Iterator[WebEnv]:
    url = create_pg_database("shotline_web")
    yield from web_env(url, tmp_path)
    drop_pg_database_later(url)


@pytest.fixture
def served(env: WebEnv) -> Iterator[Served]:
    s = serve(env.settings)
    yield s
    stop(s)


def open_page(browser: Browser, base: str) -> Page:
    page = browser.new_context(base_url=base).new_page()
    page.set_default_timeout(15_000)
    return page


def log_in(page: Page, token: str) -> None:
    page.goto("/login")
    page.get_by_label("Reviewer token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#whoami")).to_be_visible()


def test_log_in_and_approve_by_keyboard(browser: Browser, env: WebEnv, served: Served) -> None:
    first, second = env.gated(), env.gated()
    token_id, token = env.token("alice")
    page = open_page(browser, served.base)
    log_in(page, token)
    card = page.locator(f"#shot-{first}")
    expect(card).to_have_class("card current")
    page.keyboard.press("a")
    expect(card.locator(".state-value")).to_have_text("approved")
    expect(card.locator(".message")).to_have_text("approved as alice")
    # Focus moved on: the next `a` decides the next card.
    expect(page.locator(f"#shot-{second}")).to_have_class("card current")
    assert env.events(first) == [("approve", "alice", f"token:{token_id}", None)]
    assert env.state(second) == "pending_review"
    # Every action has a button with an accessible name.
    expect(page.get_by_role("button", name=f"Approve shot {second}")).to_be_visible()
    expect(page.get_by_role("button", name=f"Reject shot {second}")).to_be_visible()


def test_reject_with_a_reason_from_the_picker(
    browser: Browser, env: WebEnv, served: Served
) -> None:
    env.gated()
    shot = env.gated()
    _, token = env.token("bob")
    page = open_page(browser, served.base)
    log_in(page, token)
    page.keyboard.press("j")
    page.keyboard.press("r")
    picker = page.locator(f"#reason-{shot}")
    expect(picker).to_be_focused()
    picker.select_option("wrong colour")
    picker.press("Enter")
    expect(page.locator(f"#shot-{shot} .state-value")).to_have_text("rejected")
    assert env.events(shot)[0][:2] == ("reject", "bob")
    assert env.events(shot)[0][3] == "wrong colour"


def test_csrf_less_post_is_refused(browser: Browser, env: WebEnv, served: Served) -> None:
    shot = env.gated()
    _, token = env.token("alice")
    page = open_page(browser, served.base)
    log_in(page, token)
    status = page.evaluate(
        """id => fetch('/api/shots/' + id + '/approve', {method: 'POST',
             headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => r.status)""",
        shot,
    )
    assert status == 403
    form_status = page.evaluate(
        """id => fetch('/shots/' + id + '/approve', {method: 'POST',
             body: new URLSearchParams({csrf: 'forged'})}).then(r => r.status)""",
        shot,
    )
    assert form_status == 403
    assert env.state(shot) == "pending_review"


def test_hostile_title_is_text_and_nothing_remote_loads(
    browser: Browser, env: WebEnv, served: Served
) -> None:
    shot = env.gated(title=XSS)
    _, token = env.token("alice")
    page = open_page(browser, served.base)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    log_in(page, token)
    title = page.locator(f"#shot-{shot} .title")
    expect(title).to_have_text(XSS)
    assert title.locator("img").count() == 0
    page.goto(f"/shots/{shot}")
    expect(page.locator(".title")).to_have_text(XSS)
    page.wait_for_timeout(300)
    assert dialogs == []
    assert requests and all(u.startswith(served.base) for u in requests), requests


def test_unlisted_reviewer_is_refused(browser: Browser, env: WebEnv, served: Served) -> None:
    shot = env.gated()
    _, token = env.token("zed")
    page = open_page(browser, served.base)
    log_in(page, token)
    page.get_by_role("button", name=f"Approve shot {shot}").click()
    expect(page.locator(f"#shot-{shot} .message")).to_contain_text(
        "'zed' may not review brand 'acme'"
    )
    assert env.state(shot) == "pending_review"


def test_revoked_token_is_refused(browser: Browser, env: WebEnv, served: Served) -> None:
    env.gated()
    token_id, token = env.token("alice")
    page = open_page(browser, served.base)
    log_in(page, token)
    env.revoke(token_id)
    page.reload()
    expect(page).to_have_url(f"{served.base}/login")
    page.get_by_label("Reviewer token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("unknown, expired or revoked token")


def test_pick_one_of_four_by_keyboard(browser: Browser, env: WebEnv, served: Served) -> None:
    from tests.tasks.test_web_pick import slot_of_four

    ids = slot_of_four(env, gate_rejects=-1)
    _, token = env.token("carol")
    page = open_page(browser, served.base)
    log_in(page, token)
    expect(page.locator(f"#shot-{ids[0]} .meta")).to_contain_text("candidate 1 of 4")
    expect(
        page.get_by_role("button", name=f"Pick shot {ids[2]} (candidate 3 of 4)")
    ).to_be_visible()
    page.keyboard.press("3")
    expect(page.locator(f"#shot-{ids[2]} .decided")).to_have_text("picked by carol")
    for other in (ids[0], ids[1], ids[3]):
        expect(page.locator(f"#shot-{other} .state-value")).to_have_text("rejected")
    assert [env.state(i) for i in ids] == ["rejected", "rejected", "published", "rejected"]


def test_two_browsers_approve_one_shot(browser: Browser, pg_env: WebEnv) -> None:
    shot = pg_env.gated()
    _, alice = pg_env.token("alice")
    _, bob = pg_env.token("bob")
    served = serve(pg_env.settings)
    try:
        a, b = open_page(browser, served.base), open_page(browser, served.base)
        log_in(a, alice)
        log_in(b, bob)
        a.keyboard.press("a")
        expect(a.locator(f"#shot-{shot} .message")).to_have_text("approved as alice")
        b.keyboard.press("a")
        expect(b.locator(f"#shot-{shot} .message")).to_have_text(
            re.compile(rf"shot {shot}: already approved by 'alice'( \(and published\))?$")
        )
        # The live poll brings the other decision onto bob's card as well.
        expect(b.locator(f"#shot-{shot} .decided")).to_contain_text("by alice")
        assert [e[:2] for e in pg_env.events(shot)] == [("approve", "alice")]
    finally:
        stop(served)
