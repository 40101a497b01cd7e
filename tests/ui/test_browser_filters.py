"""
The filter bar, the compare page, the charts and a CSV download in a real
headless Chromium (Debian's), driven through the pages' own controls.

The store: users u0..u2; turns on plans pro (3), free (2) and a stored XSS
payload (1), so segment labels carry the payload as text.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from . import _browser
from ._browser import assert_no_script_ran
from .conftest import XSS_IMG


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def chromium(downloads: Path) -> Iterator[Any]:
    """A headless Chromium whose downloads go to *downloads* (Chrome prefs);
    skips or fails without one, as the shared browser fixture does."""
    yield from _browser.chromium(downloads)


def test_filter_bar_filters_users_and_the_link_is_shareable(chromium, plans_server):
    """Choosing a range and a segment in the bar filters the users table; the URL
    holds both, and opening it afresh gives the same rows."""
    chromium.get(plans_server.url + "/users")
    Select(chromium.find_element(By.ID, "range")).select_by_visible_text("last 24h")
    Select(chromium.find_element(By.ID, "segment")).select_by_visible_text(
        "plan = free (2)"
    )
    chromium.find_element(By.CSS_SELECTOR, "#filter-bar button").click()
    WebDriverWait(chromium, 10).until(lambda d: "meta=" in d.current_url)
    url = chromium.current_url
    users = [e.text for e in chromium.find_elements(By.CSS_SELECTOR, "#users a.user")]
    chromium.get(url)
    again = [e.text for e in chromium.find_elements(By.CSS_SELECTOR, "#users a.user")]

    assert "range=24h" in url
    assert "meta=plan%3Afree" in url
    assert ["u0", "u1"] == sorted(users)
    assert users == again
    assert_no_script_ran(chromium)


def test_retention_honours_the_segment_from_the_bar(chromium, plans_server):
    """On Retention, the bar's segment narrows the report and its chart redraws."""
    chromium.get(plans_server.url + "/retention")
    Select(chromium.find_element(By.ID, "segment")).select_by_visible_text(
        "plan = free (2)"
    )
    chromium.find_element(By.CSS_SELECTOR, "#filter-bar button").click()
    WebDriverWait(chromium, 10).until(lambda d: "meta=" in d.current_url)
    drawn = WebDriverWait(chromium, 10).until(
        lambda d: d.find_element(By.ID, "chart-weekly").get_attribute("data-points")
    )

    assert "2" == chromium.find_element(By.ID, "stat-wau").text
    assert "8" == drawn
    assert chromium.find_elements(By.CSS_SELECTOR, "#chart-weekly canvas")
    assert_no_script_ran(chromium)


def test_compare_two_segments_through_the_page_controls(chromium, plans_server):
    """Choosing A and B on the compare page shows both sides' figures with their
    counts; the payload among the values stays text."""
    chromium.get(plans_server.url + "/")
    chromium.find_element(By.ID, "nav-compare").click()
    a = Select(chromium.find_element(By.ID, "segment-a"))
    labels = [o.text for o in a.options]
    a.select_by_visible_text("plan = pro (3)")
    Select(chromium.find_element(By.ID, "segment-b")).select_by_visible_text(
        "plan = free (2)"
    )
    chromium.find_element(By.CSS_SELECTOR, "#compare-form button").click()
    WebDriverWait(chromium, 10).until(lambda d: "b=" in d.current_url)
    row = chromium.find_element(By.ID, "measure-conversations")
    users = chromium.find_element(By.ID, "measure-users")

    assert f"plan = {XSS_IMG} (1)" in labels
    assert "3" == row.find_element(By.CLASS_NAME, "side-a").text
    assert "2" == row.find_element(By.CLASS_NAME, "side-b").text
    assert ("3", "2") == (
        users.find_element(By.CLASS_NAME, "side-a").text,
        users.find_element(By.CLASS_NAME, "side-b").text,
    )
    assert_no_script_ran(chromium)


def test_compare_this_week_against_last_through_the_page_controls(
    chromium, plans_server
):
    """The compare page's period mode: this week against last for plan=pro,
    both sides' figures with their counts and a cost row, as the API answers."""
    chromium.get(plans_server.url + "/compare")
    Select(chromium.find_element(By.ID, "period")).select_by_visible_text(
        "this week against last week"
    )
    Select(chromium.find_element(By.ID, "segment")).select_by_visible_text(
        "plan = pro (3)"
    )
    chromium.find_element(By.ID, "compare-periods").click()
    WebDriverWait(chromium, 10).until(lambda d: "period=week" in d.current_url)
    row = chromium.find_element(By.ID, "measure-conversations")
    sides = [row.find_element(By.CLASS_NAME, c).text for c in ("side-a", "side-b")]
    cost = chromium.find_element(By.ID, "measure-cost_per_conversation")
    _, body = plans_server.get("/api/compare?period=week&meta=plan:pro")

    assert "meta=plan%3Apro" in chromium.current_url
    assert 3 == sum(int(s) for s in sides)  # the six turns are from the last hour
    assert [str(body[s]["conversations"]["value"]) for s in ("a", "b")] == sides
    assert f"(n = {sides[0]})" in cost.find_element(By.CLASS_NAME, "side-a").text
    assert_no_script_ran(chromium)


def test_a_csv_link_downloads_the_table(chromium, plans_server, downloads):
    """The conversations page's CSV link downloads the filtered table, the same
    rows the API's CSV answers."""
    chromium.get(plans_server.url + "/conversations?meta=plan:pro")
    chromium.find_element(By.ID, "csv-conversations").click()
    target = downloads / "conversations.csv"
    deadline = time.monotonic() + 20
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    _, expected = plans_server.get("/api/conversations?meta=plan:pro&format=csv")
    text = target.read_bytes().decode()
    rows = list(csv.DictReader(io.StringIO(text, newline="")))

    assert expected == text
    assert ["c0", "c1", "c2"] == sorted(r["conversation_id"] for r in rows)
    assert_no_script_ran(chromium)


def test_overview_charts_and_sparklines_draw(chromium, plans_server):
    """The overview's charts and the users table's sparklines draw on canvases."""
    chromium.get(plans_server.url + "/?range=7d")
    drawn = WebDriverWait(chromium, 10).until(
        lambda d: d.find_element(By.ID, "chart-conversations").get_attribute(
            "data-points"
        )
    )
    chromium.get(plans_server.url + "/users")
    sparks = WebDriverWait(chromium, 10).until(
        lambda d: [
            s.get_attribute("data-points")
            for s in d.find_elements(By.CSS_SELECTOR, "span.spark")
            if s.find_elements(By.TAG_NAME, "canvas")
        ]
    )

    assert "7" == drawn
    assert ["14", "14", "14"] == sparks
    assert_no_script_ran(chromium)
