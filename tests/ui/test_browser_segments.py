"""Segment filters and the Retention page in a real headless Chromium (Debian's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from context_trace._exporters.sqlite import SQLiteExporter

from .conftest import XSS_IMG, Server, turn
from .test_browser import severe_logs


@pytest.fixture(scope="module")
def segment_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Three pro turns, two free ones and one whose plan is a stored XSS payload."""
    path = tmp_path_factory.mktemp("segments-ui") / "traces.db"
    plans = ["pro", "pro", "pro", "free", "free", XSS_IMG]
    convs = []
    for i, plan in enumerate(plans):
        conv = turn(f"c{i}", f"u{i % 3}", f"s{i % 3}", 3600 - i, 100 + i)
        convs.append(
            conv.__class__(
                **{
                    **{f: getattr(conv, f) for f in conv.__dataclass_fields__},
                    "metadata": {**conv.metadata, "plan": plan},
                }
            )
        )
    store = SQLiteExporter(path)
    assert 0 == store.export(convs).failed
    store.shutdown()
    server = Server(path)
    yield server
    server.stop()


def test_segment_filter_through_the_form(browser, segment_server):
    """Choosing a segment in the conversations filter lists its turns and keeps
    it in the URL; a stored payload among the values stays text."""
    browser.get(segment_server.url + "/conversations")
    choice = Select(browser.find_element(By.ID, "segment"))
    labels = [o.text for o in choice.options]
    choice.select_by_visible_text("plan = pro (3)")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(browser, 10).until(lambda d: "meta=" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#conversations tbody tr")

    assert "meta=plan%3Apro" in browser.current_url
    assert 3 == len(rows)
    assert f"plan = {XSS_IMG} (1)" in labels
    assert "pwned" != browser.title
    assert None is browser.execute_script("return window.__pwned")
    assert [] == severe_logs(browser)


def test_overview_segment_and_retention_page(browser, segment_server):
    """The overview filtered to a segment counts its turns; the Retention page
    draws its cohort table without a console error."""
    browser.get(segment_server.url + "/?range=all")
    Select(browser.find_element(By.ID, "segment")).select_by_visible_text(
        "plan = free (2)"
    )
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(browser, 10).until(lambda d: "meta=" in d.current_url)
    count = browser.find_element(By.ID, "stat-conversations").text
    browser.find_element(By.ID, "nav-retention").click()
    cohort = browser.find_elements(By.CSS_SELECTOR, "#cohorts tbody tr")

    assert "2" == count
    assert cohort
    assert "3" == browser.find_element(By.ID, "stat-wau").text
    assert [] == severe_logs(browser)
