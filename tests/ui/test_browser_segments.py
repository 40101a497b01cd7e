"""Segment filters and the Retention page in a real headless Chromium (Debian's)."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from ._browser import assert_no_script_ran, severe_logs
from .conftest import XSS_IMG


def test_segment_filter_through_the_form(browser, plans_server):
    """Choosing a segment in the conversations filter lists its turns and keeps
    it in the URL; a stored payload among the values stays text."""
    browser.get(plans_server.url + "/conversations")
    choice = Select(browser.find_element(By.ID, "segment"))
    labels = [o.text for o in choice.options]
    choice.select_by_visible_text("plan = pro (3)")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(browser, 10).until(lambda d: "meta=" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#conversations tbody tr")

    assert "meta=plan%3Apro" in browser.current_url
    assert 3 == len(rows)
    assert f"plan = {XSS_IMG} (1)" in labels
    assert_no_script_ran(browser)


def test_overview_segment_and_retention_page(browser, plans_server):
    """The overview filtered to a segment counts its turns; the Retention page
    draws its cohort table without a console error."""
    browser.get(plans_server.url + "/?range=all")
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
