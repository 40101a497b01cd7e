"""The browser tests' shared no-script check (``tests/ui/_browser.py``) in a real
headless Chromium: it fails on a page where a stored payload ran, so a browser
test that relies on it fails when it should."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from ._browser import assert_no_script_ran, severe_logs


def _open(browser: Any, html: str) -> None:
    """Show *html* (a data: URL, nothing leaves the machine), the console emptied first."""
    severe_logs(browser)
    browser.get("data:text/html," + quote(html))


@pytest.mark.parametrize(
    ("html", "markup_in_main"),
    [
        ("<title>pwned</title><main>x</main>", False),
        ("<main>x</main><script>window.__pwned = 1</script>", False),
        ("<main>x</main><script>throw new Error('boom')</script>", False),
        ("<main><img src='data:,'></main>", True),
    ],
    ids=["title", "window.__pwned", "console error", "markup in main"],
)
def test_the_check_fails_where_a_payload_ran(
    browser: Any, html: str, markup_in_main: bool
) -> None:
    """A changed title, a set window.__pwned, a console error or (asked for)
    markup in main each fail the check."""
    _open(browser, html)

    with pytest.raises(AssertionError):
        assert_no_script_ran(browser, markup_in_main=markup_in_main)


def test_the_check_passes_a_page_where_nothing_ran(browser: Any) -> None:
    """A page showing stored markup as text passes, markup_in_main too."""
    _open(browser, "<main>&lt;script&gt;window.__pwned = 1&lt;/script&gt;</main>")

    assert_no_script_ran(browser, markup_in_main=True)
