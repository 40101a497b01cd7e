"""Topics in a real headless Chromium: overview -> Topics -> a topic's conversations -> a transcript."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from context_trace.analytics.topic_index import TopicIndex
from tests.stores import record_store
from tests.ui._browser import assert_no_script_ran
from tests.ui.conftest import Server, browser  # noqa: F401 - the browser fixture

from .test_topic_index import _first_asks, _record

PAYLOAD = "<img src=x onerror=\"document.title='pwned'\"> set an alarm for 7 am"


@pytest.fixture(scope="module")
def topics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The dashboard over a store of real LangChain turns, topics built."""
    path = tmp_path_factory.mktemp("topics-ui") / "traces.db"
    record_store(
        path, lambda p: _record(p, [*_first_asks(), ("eve", PAYLOAD), ("eve", PAYLOAD)])
    )
    with TopicIndex(path) as index:
        index.build()
    with Server(path) as srv:
        yield srv


def test_overview_to_topic_to_conversation(browser: Any, topics_server: Server) -> None:  # noqa: F811
    """Overview -> Topics -> a topic's page (figures, trend) -> its turns -> the
    transcript; no console errors, no stored script run."""
    browser.get(topics_server.url + "/?range=all")
    browser.find_element(By.ID, "nav-topics").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "#topics tbody tr")
    assert len(rows) >= 3
    link = browser.find_element(
        By.XPATH, "//table[@id='topics']//a[contains(., 'alarm')]"
    )
    count = int(link.find_element(By.XPATH, "../../td[3]").text)
    link.click()
    assert "/topics/t" in browser.current_url
    assert str(count) == browser.find_element(By.ID, "topic-conversations").text
    drawn = WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "chart-conversations").get_attribute(
            "data-points"
        )
    )
    assert drawn not in ("0", "error")
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-conversations canvas")
    assert browser.find_element(By.ID, "topic-satisfaction").text != ""
    browser.find_element(By.ID, "topic-conversations-link").click()
    assert "topic=" in browser.current_url
    turns = browser.find_elements(By.CSS_SELECTOR, "#conversations tbody tr")
    assert len(turns) == count
    previews = [t.find_element(By.CLASS_NAME, "preview").text for t in turns]
    assert all("alarm" in p or "wake" in p for p in previews), previews
    assert any(PAYLOAD in p for p in previews)  # shown as text
    turns[0].find_element(By.CSS_SELECTOR, "td:nth-child(3) a").click()
    assert browser.find_element(By.ID, "transcript")
    assert_no_script_ran(browser, markup_in_main=True)
