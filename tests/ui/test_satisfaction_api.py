"""Satisfaction in the dashboard (API, session page, Chromium), on a real ``context-trace ui``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.stores import record_store
from tests.test_satisfaction import HAPPY, QUIET, UNHAPPY, _record

from ._browser import severe_logs
from .conftest import Server


@pytest.fixture(scope="module")
def sat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A dashboard over a store recorded with real LangChain turns."""
    path = record_store(tmp_path_factory.mktemp("sat-ui") / "traces.db", _record)
    with Server(path) as server:
        yield server


class TestUnhappyAPI:
    def test_lists_unhappy_users_with_evidence(self, sat_server: Server) -> None:
        """/api/unhappy: users with 3+ turns and a flagged turn, with reasons."""
        body = sat_server.api("/api/unhappy")
        assert [u["key"] for u in body["users"]] == [UNHAPPY]
        evidence = body["users"][0]["evidence"]
        assert ("una-1", 2) in {(e["session_id"], e["turn"]) for e in evidence}
        assert body["range"] == "all"

    def test_min_turns_and_limit(self, sat_server: Server) -> None:
        """min_turns=1 adds the one-turn user; limit=1 keeps the lowest."""
        body = sat_server.api("/api/unhappy?min_turns=1")
        assert [u["key"] for u in body["users"]] == [UNHAPPY, QUIET]
        body = sat_server.api("/api/unhappy?min_turns=1&limit=1")
        assert [u["key"] for u in body["users"]] == [UNHAPPY]

    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ("range=1y", "range must be one of"),
            ("min_turns=0", "min_turns must be"),
            ("limit=0", "limit must be"),
        ],
    )
    def test_bad_arguments(self, sat_server: Server, query: str, message: str) -> None:
        """A bad argument is a 400 naming it."""
        status, body = sat_server.get(f"/api/unhappy?{query}")
        assert status == 400
        assert message in body["error"]

    def test_satisfaction_aggregates(self, sat_server: Server) -> None:
        """/api/satisfaction: the overall score, per user, per model and per day."""
        body = sat_server.api("/api/satisfaction?range=all")
        assert body["turns"] == 10
        assert 0 < body["score"] < 1
        users = {u["key"]: u for u in body["users"]}
        assert users[HAPPY]["score"] == 1.0
        assert users[UNHAPPY]["ratings_down"] == 1
        assert sum(m["turns"] for m in body["models"]) == 10
        assert sum(d["turns"] for d in body["days"]) == 10


class TestSessionMarkers:
    def test_flagged_turns_are_marked_with_reasons(self, sat_server: Server) -> None:
        """The session page marks each flagged turn with its reasons, and only those."""
        status, page = sat_server.get("/session?id=una-1")
        assert status == 200
        turns = page.split('<section class="turn')[1:]
        assert 'class="sat-flag"' not in turns[0]
        assert "rephrases the previous question" in turns[1]
        assert "did not answer" in turns[1]
        assert "says it did not help" in turns[2]
        # Quoted text is escaped, never markup.
        assert "says it did not help: &#34;didn&#39;t help&#34;" in turns[2]


def test_browser_shows_the_flagged_turn(browser: Any, sat_server: Server) -> None:
    """users sorted by satisfaction -> the least satisfied user -> a session: the marker."""
    browser.get(sat_server.url + "/users")
    browser.find_element(
        By.XPATH, "//table[@id='users']//th/a[starts-with(text(), 'Satisfaction')]"
    ).click()  # the most satisfied first
    browser.find_element(
        By.XPATH, "//table[@id='users']//th/a[starts-with(text(), 'Satisfaction')]"
    ).click()  # the least satisfied first
    first = browser.find_element(By.CSS_SELECTOR, "#users tbody tr")
    assert first.find_element(By.CSS_SELECTOR, "a.user").text == UNHAPPY
    assert first.find_element(By.CSS_SELECTOR, "td.satisfaction").text == "0.58"
    browser.find_element(By.LINK_TEXT, UNHAPPY).click()
    browser.find_element(By.LINK_TEXT, "una-1").click()
    marker = browser.find_element(By.CSS_SELECTOR, "#turn-2 .sat-flag")
    assert "rephrases the previous question" in marker.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#turn-1 .sat-flag")
    assert [] == severe_logs(browser)


class TestUsersColumn:
    def test_scores_match_the_report(self, sat_server: Server) -> None:
        """/api/users' satisfaction is the user's score as /api/satisfaction gives it."""
        users = sat_server.api("/api/users?limit=500")["items"]
        expected = {
            u["key"]: u["score"]
            for u in sat_server.api("/api/satisfaction?range=all")["users"]
        }
        got = {u["user_id"]: u["satisfaction"] for u in users}
        assert got == pytest.approx(expected, abs=1e-3)

    def test_sorts_by_satisfaction(self, sat_server: Server) -> None:
        """sort=satisfaction&order=asc puts the least satisfied user first."""
        users = sat_server.api("/api/users?sort=satisfaction&order=asc")["items"]
        assert [u["user_id"] for u in users] == [UNHAPPY, QUIET, HAPPY]
        users = sat_server.api("/api/users?sort=satisfaction&order=desc")["items"]
        assert users[0]["user_id"] == HAPPY
