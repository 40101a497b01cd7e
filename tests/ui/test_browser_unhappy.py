"""Unhappy users in a real headless Chromium: users -> an unhappy user -> the flagged turn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.stores import write_records

from ._browser import assert_no_script_ran
from .conftest import XSS_IMG, XSS_SCRIPT, Server, turn

FLAGGED = 12  # uma's turn that says the answer did not help


@pytest.fixture(scope="module")
def unhappy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """uma: one long session (stored payloads in turn 3) whose turn 12 says
    "that didn't help"; zed: three plain turns."""
    path: Path = tmp_path_factory.mktemp("unhappy") / "traces.db"
    convs = []
    for i in range(1, 15):
        # Long enough that the transcript scrolls (the same question with
        # another number each time: none of them is a rephrase).
        text = f"question number {i} about shipping zone {i}. " + " ".join(
            ["Which carriers deliver there and how long does it take?"] * 4
        )
        if i == 3:
            text = f"{XSS_SCRIPT} {XSS_IMG}"
        if i == FLAGGED:
            text = "That didn't help at all."
        convs.append(turn(f"c-u{i}", "uma", "s-uma", 5000 - i * 10, 100, text))
    convs += [
        turn(f"c-z{i}", "zed", "s-zed", 4000 - i, 100, f"hello {i}") for i in range(3)
    ]
    with Server(write_records(path, convs)) as srv:
        yield srv


def _check_targeted(browser: Any) -> None:
    """The page is scrolled to the flagged turn, which is the :target."""
    assert browser.current_url.endswith(f"#turn-{FLAGGED}")
    target = browser.execute_script("return document.querySelector(':target').id")
    assert f"turn-{FLAGGED}" == target
    in_view = browser.execute_script(
        "const r = document.getElementById(arguments[0]).getBoundingClientRect();"
        # Sub-pixel layout can leave the scrolled-to turn a fraction of a
        # pixel above the top.
        " return r.top > -1 && r.top < window.innerHeight && window.scrollY > 0;",
        target,
    )
    assert in_view
    turn_text = browser.find_element(By.ID, target).text
    assert "That didn't help at all." in turn_text
    assert "says it did not help" in turn_text  # the marker, with its reason


def test_users_to_unhappy_user_to_the_flagged_turn(browser, unhappy_server):
    """Users sorted by satisfaction -> the unhappy user -> their flagged turn: the
    transcript opens scrolled to it; stored payloads stay text."""
    browser.set_window_size(1000, 600)
    browser.get(unhappy_server.url + "/users?sort=satisfaction&order=asc")
    first = browser.find_element(By.CSS_SELECTOR, "#users tbody tr td a.user")
    assert "uma" == first.text
    first.click()
    assert "uma" == browser.find_element(By.TAG_NAME, "h1").text
    browser.find_element(By.CSS_SELECTOR, "#user-flagged a.evidence").click()
    _check_targeted(browser)
    assert "<script>window.__pwned = 1;" in browser.find_element(By.ID, "turn-3").text
    assert_no_script_ran(browser, markup_in_main=True)


def test_unhappy_page_links_to_the_flagged_turn(browser, unhappy_server):
    """Nav -> Unhappy users -> the evidence link opens the transcript at the turn."""
    browser.set_window_size(1000, 600)
    browser.get(unhappy_server.url + "/")
    assert "1" == browser.find_element(By.ID, "stat-unhappy").text
    browser.find_element(By.ID, "nav-unhappy").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "#unhappy tbody tr")
    assert ["uma"] == [r.find_element(By.CLASS_NAME, "user").text for r in rows]
    rows[0].find_element(By.CSS_SELECTOR, "a.evidence").click()
    _check_targeted(browser)
    assert_no_script_ran(browser, markup_in_main=True)
