"""Cost in a real headless Chromium (Debian's): the overview tile, the users
table sorted by cost through its own header, a session's cost."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from ._browser import severe_logs
from .conftest import Server
from .test_cost import PRICES, build_cost_store


@pytest.fixture(scope="module")
def cost_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The hand-worked cost store (see test_cost), served with ``--prices``."""
    folder = tmp_path_factory.mktemp("cost-ui")
    prices = folder / "prices.json"
    prices.write_text(json.dumps(PRICES))
    with Server(
        build_cost_store(folder / "traces.db"), "--prices", str(prices)
    ) as server:
        yield server


def test_cost_tile_users_sort_and_session(browser, cost_server):
    """The overview shows the cost and the unpriced calls; sorting the users
    table by its Cost header puts the costliest first; a session shows its cost."""
    browser.get(cost_server.url + "/?range=all")
    tile = browser.find_element(By.ID, "stat-cost").text
    unpriced = browser.find_element(By.ID, "stat-unpriced").text
    browser.get(cost_server.url + "/users")
    browser.find_element(By.LINK_TEXT, "Cost").click()
    WebDriverWait(browser, 10).until(lambda d: "sort=cost" in d.current_url)
    first = browser.find_element(By.CSS_SELECTOR, "#users tbody tr")
    cost = first.find_element(By.CSS_SELECTOR, "td.cost").text
    user = first.find_element(By.CSS_SELECTOR, "td").text
    browser.get(cost_server.url + "/session?id=s-u1")
    session = browser.find_element(By.ID, "session-cost").text

    assert ("$2.0091", "2 calls unpriced") == (tile, unpriced)
    assert "u3" == user
    assert "$2.0000" == cost
    assert "$0.0089" == session
    assert [] == severe_logs(browser)
