"""
What every browser test shares: Debian's headless Chromium driven by Selenium,
the rule for a machine without it, its console errors, and the check that no
stored text ran as script.

A browser test takes the ``browser`` fixture of ``tests/ui/conftest.py``; a test
that needs other browser settings (a download folder) builds its own fixture on
:func:`chromium`, so the skip-or-fail rule (:func:`no_browser`) stays the same.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

# Set (to 1) where the browser tests must run: a missing browser is then an
# error, not a skip. .ci/run sets it; a set CI variable (CI=true) does the same.
REQUIRE_BROWSER_ENV = "CONTEXT_TRACE_REQUIRE_BROWSER"
INSTALL_HINT = "apt-get install chromium chromium-driver"
# Debian's Chromium and its driver, found on PATH (never a downloaded browser).
BROWSER_PROGRAMS = ("chromium", "chromedriver")
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)
_FALSE = ("", "0", "false", "no", "off")


def requiring_variable(environ: Mapping[str, str]) -> str | None:
    """
    The variable that requires the browser tests to run (``NAME=value``), if any:
    the requiring variable when set, else CI. ``0``, ``false`` or ``no`` do not
    require them, so ``CONTEXT_TRACE_REQUIRE_BROWSER=0`` lets a CI without a
    browser skip them.
    """
    for name in (REQUIRE_BROWSER_ENV, "CI"):
        value = environ.get(name, "").strip()
        if value:
            return None if value.lower() in _FALSE else f"{name}={value}"
    return None


def no_browser(missing: Sequence[str], environ: Mapping[str, str]) -> tuple[str, str]:
    """
    What the browser tests do when the *missing* programs are not found:
    ``("skip", reason)`` on a developer's machine, ``("fail", reason)`` where
    :func:`requiring_variable` finds the browser required.
    """
    reason = (
        "the browser tests need Debian's chromium and chromium-driver "
        f"({INSTALL_HINT}); not found on PATH: {', '.join(missing)}"
    )
    required_by = requiring_variable(environ)
    if required_by is not None:
        return "fail", f"{reason}; {required_by} requires them"
    return "skip", reason


def chromium(downloads: Path | None = None) -> Iterator[Any]:
    """
    A headless Chromium driven by Selenium, for a fixture to ``yield from``; it
    skips or fails the tests without one (:func:`no_browser`). With *downloads*,
    the files the pages download go there, without a prompt.
    """
    found = {name: shutil.which(name) for name in BROWSER_PROGRAMS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        action, reason = no_browser(missing, os.environ)
        if action == "fail":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found["chromium"]
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    if downloads is not None:
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(downloads),
                "download.prompt_for_download": False,
                "download.directory_upgrade": True,
            },
        )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found["chromedriver"]), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def severe_logs(driver: Any) -> list[str]:
    """Console errors (JS exceptions, CSP violations, failed loads) since last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def assert_no_script_ran(driver: Any, *, markup_in_main: bool = False) -> None:
    """
    No stored payload ran on the page: the title and ``window.__pwned`` are as
    the payloads would not leave them, and the console has no error. With
    *markup_in_main*, also no ``<script>`` or ``<img>`` element in ``main`` (the
    pages whose stored text holds such markup show it as text).
    """
    from selenium.webdriver.common.by import By

    assert "pwned" != driver.title
    assert driver.execute_script("return window.__pwned === undefined")
    if markup_in_main:
        assert [] == driver.find_elements(By.CSS_SELECTOR, "main script, main img")
    assert [] == severe_logs(driver)
