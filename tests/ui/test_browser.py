"""The dashboard in a real headless Chromium (Debian's), driven by Selenium."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

# The browser fixture (tests/ui/conftest.py) skips these tests without Chromium,
# or fails them where CI requires it.
from tests.failures import TOOL_ERROR, TOOL_QUESTION, TOOL_SESSION

from ._browser import assert_no_script_ran, severe_logs


def test_overview_to_user_to_session_transcript(browser, server):
    """Overview -> click a top user -> open a session -> the transcript shows the tool call."""
    browser.get(server.url + "/?range=all")
    assert "69" == browser.find_element(By.ID, "stat-conversations").text
    assert WebDriverWait(browser, 10).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-conversations canvas")
    )

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


def test_search_shows_the_count_and_marked_snippets(browser, server):
    """A search says how many turns matched and marks the words in each snippet."""
    browser.get(server.url + "/conversations")
    box = browser.find_element(By.NAME, "q")
    box.send_keys("pwned")
    box.submit()
    count = browser.find_element(By.ID, "match-count").text
    snippets = browser.find_elements(By.CSS_SELECTOR, "#conversations .snippet")
    marks = browser.find_elements(By.CSS_SELECTOR, "#conversations .snippet mark")

    assert "2 matches" == count
    assert 2 == len(snippets)
    assert "<script>window.__pwned = 1;" in snippets[1].text
    assert {"pwned"} == {mark.text for mark in marks}
    assert [] == severe_logs(browser)


@pytest.mark.parametrize(
    "page", ["/session?id=s-b1", "/conversations?user=bob", "/conversations?q=pwned"]
)
def test_stored_payloads_do_not_execute(browser, server, page):
    """Stored <script> and <img onerror> payloads render as text and never run."""
    browser.get(server.url + page)
    text = browser.find_element(By.TAG_NAME, "main").text

    assert "<script>window.__pwned = 1;" in text
    assert "<img src=x onerror=" in text
    assert_no_script_ran(browser, markup_in_main=True)


@pytest.mark.parametrize(("range_", "bars"), [("7d", 7), ("30d", 30)])
def test_a_range_draws_one_bar_per_day(browser, server, range_, bars):
    """Clicking 7d (30d) draws 7 (30) bars in each daily chart (uPlot, a canvas)."""
    browser.get(server.url + "/?range=all")
    browser.find_element(By.LINK_TEXT, range_).click()
    drawn = [
        WebDriverWait(browser, 10).until(
            lambda d, c=chart: d.find_element(By.ID, c).get_attribute("data-points")
        )
        for chart in ("chart-conversations", "chart-active_users")
    ]

    assert [str(bars)] * 2 == drawn
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-conversations canvas")
    assert [] == severe_logs(browser)


def test_ratings_read_as_words_and_the_emoji_have_names(browser, server):
    """The ratings card reads 'helpful 1 · unhelpful 1'; each emoji has a name."""
    browser.get(server.url + "/?range=all")
    card = browser.find_element(By.ID, "stat-ratings")
    names = [e.accessible_name for e in card.find_elements(By.CLASS_NAME, "emoji")]

    assert "👍 helpful 1 · 👎 unhelpful 1" == card.text
    assert ["thumbs up", "thumbs down"] == names
    assert [] == severe_logs(browser)


def test_latencies_read_as_ms_or_seconds(browser, rated_server):
    """The overview's p50 and p95 read '1.4 s' and '12.3 s', not 1412.0."""
    browser.get(rated_server.url + "/?range=24h")

    assert "1.4 s" == browser.find_element(By.ID, "stat-p50").text
    assert "12.3 s" == browser.find_element(By.ID, "stat-p95").text


def test_session_turns_show_rating_metadata_and_latency(browser, rated_server):
    """Each turn of a session shows its latency, its rating in words (the last
    one given) and, opened, its metadata."""
    browser.get(rated_server.url + "/session?id=s-r")
    metas = [e.text for e in browser.find_elements(By.CLASS_NAME, "turn-meta")]
    first = browser.find_element(By.ID, "turn-1")
    first.find_element(By.CSS_SELECTOR, "details.metadata summary").click()
    metadata = first.find_element(By.CSS_SELECTOR, "details.metadata dl").text

    assert "1.4 s" in metas[0]
    assert "rated 👎 unhelpful" in metas[0]
    assert "rated 👍 helpful" in metas[1]
    assert "rated" not in metas[2]
    assert "plan\npro" in metadata
    assert "region\n<b>eu</b>" in metadata  # stored markup stays text
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
    # The click only starts the navigation: read the rows of the page it loads.
    WebDriverWait(browser, 10).until(lambda b: "tool_errors=1" in b.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#conversations tbody tr")

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
