"""The dashboard in a real headless Chromium (Debian's), driven by Selenium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from tests.failures import TOOL_ERROR, TOOL_QUESTION, TOOL_SESSION  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("browser tests need chromium and chromium-driver (see .ci/run)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def severe_logs(driver: Any) -> list[str]:
    """Console errors (JS exceptions, CSP violations, failed loads) since last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_overview_to_user_to_session_transcript(browser, server):
    """Overview -> click a top user -> open a session -> the transcript shows the tool call."""
    browser.get(server.url + "/?range=all")
    assert "69" == browser.find_element(By.ID, "stat-conversations").text
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-conversations rect")

    browser.find_element(By.LINK_TEXT, "alice").click()
    assert "alice" == browser.find_element(By.TAG_NAME, "h1").text

    browser.find_element(By.LINK_TEXT, "s-a1").click()
    transcript = browser.find_element(By.ID, "transcript")
    tool = transcript.find_element(By.CSS_SELECTOR, ".msg.tool")

    assert "TOOL · LOOKUP_ORDER" == tool.find_element(By.CLASS_NAME, "role").text
    assert '{"id": 42}' == tool.find_element(By.CLASS_NAME, "tool-input").text
    assert "order 42: shipped" == tool.find_element(By.CLASS_NAME, "content").text
    assert "ValueError: x" == transcript.find_element(By.CLASS_NAME, "error-text").text
    assert [] == severe_logs(browser)


def test_users_page_sorts_and_lists_the_anonymous_row(browser, server):
    """The users table sorts by clicking a header and shows the (no user) row."""
    browser.get(server.url + "/users")
    browser.find_element(
        By.XPATH, "//table[@id='users']//th/a[text()='Conversations']"
    ).click()
    first = browser.find_element(By.CSS_SELECTOR, "#users tbody tr td a.user")
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#users a.user")]

    assert "many" == first.text
    assert "(no user)" in names
    assert [] == severe_logs(browser)


def test_search_form(browser, server):
    """Typing a word in the conversations search finds the turn."""
    browser.get(server.url + "/conversations")
    box = browser.find_element(By.NAME, "q")
    box.send_keys("zebra")
    box.submit()
    rows = browser.find_elements(By.CSS_SELECTOR, "#conversations tbody tr")

    assert 1 == len(rows)
    assert "anonymous zebra" in rows[0].text
    assert [] == severe_logs(browser)


@pytest.mark.parametrize("page", ["/session?id=s-b1", "/conversations?user=bob"])
def test_stored_payloads_do_not_execute(browser, server, page):
    """Stored <script> and <img onerror> payloads render as text and never run."""
    browser.get(server.url + page)
    text = browser.find_element(By.TAG_NAME, "main").text

    assert browser.execute_script("return window.__pwned === undefined")
    assert "pwned" != browser.title
    assert "<script>window.__pwned = 1;" in text
    assert "<img src=x onerror=" in text
    assert [] == browser.find_elements(By.CSS_SELECTOR, "main script, main img")
    assert [] == severe_logs(browser)


def test_a_tool_error_is_visible_and_filterable(browser, failures_server):
    """A turn whose tool failed (the agent answered anyway): counted, highlighted, filterable."""
    url = failures_server.url
    browser.get(url + "/?range=all")
    tool_errors = browser.find_element(By.ID, "stat-tool-errors")
    errors = browser.find_element(By.ID, "stat-error-rate").find_element(
        By.XPATH, "following-sibling::span"
    )

    assert ("1", "errors (2)") == (tool_errors.text, errors.text)

    browser.get(url + f"/session?id={TOOL_SESSION}")
    turn = browser.find_element(By.ID, "turn-1")
    tool = turn.find_element(By.CSS_SELECTOR, ".msg.tool")

    assert "tool-error" in turn.get_attribute("class").split()
    assert "failed" in tool.get_attribute("class").split()
    assert (
        "TOOL · LOOKUP_ORDER · FAILED" == tool.find_element(By.CLASS_NAME, "role").text
    )
    assert TOOL_ERROR == tool.find_element(By.CLASS_NAME, "content").text
    # Highlighted: a red-tinted box with a red edge, not the plain tool colours.
    assert "rgba(253, 236, 234, 1)" == tool.value_of_css_property("background-color")
    assert "rgba(179, 38, 30, 1)" == tool.value_of_css_property("border-left-color")
    assert "a tool failed" in turn.find_element(By.CLASS_NAME, "turn-meta").text
    assert "1" == browser.find_element(By.ID, "session-tool-errors").text

    browser.get(url + "/conversations")
    browser.find_element(By.NAME, "tool_errors").click()
    browser.find_element(By.CSS_SELECTOR, ".filters button").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "#conversations tbody tr")

    assert "tool_errors=1" in browser.current_url
    assert [TOOL_QUESTION] == [
        r.find_element(By.CLASS_NAME, "preview").text for r in rows
    ]

    browser.get(url + "/conversations?errors=1")
    failed = browser.find_elements(By.CSS_SELECTOR, "#conversations tbody tr")

    assert 2 == len(failed)
    assert TOOL_QUESTION not in " ".join(r.text for r in failed)

    browser.get(url + "/users")
    cell = browser.find_element(By.CSS_SELECTOR, "#users tbody td.tool-errors")

    assert "1" == cell.text
    assert [] == severe_logs(browser)
