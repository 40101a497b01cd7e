"""
Screenshots of the dashboard for the README, taken from the demo's store.

    python scripts/screenshots.py [--out docs]

Runs ``context-trace demo`` into a temporary store, serves ``context-trace ui``
over it on a free loopback port, and saves the Overview, the Users page, the
demo's showcase session (the one with a tool call), the Retention page, the
Compare page (the demo's variants A and B side by side), the Topics
page, the biggest topic's page and the Unhappy users page as PNGs with Debian's headless
Chromium (``apt-get install chromium chromium-driver``) through Selenium.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from context_trace._demo import run_demo
from context_trace.analytics.topic_index import TopicIndex
from context_trace.ui.serve import make_server

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--window-size=1280,800",
)


def _compare_path(url: str) -> str:
    """
    The Compare page of the demo's ``variant`` A and B, else of the first key
    with two values (else two keys' first).
    """
    with urllib.request.urlopen(url + "/api/segments", timeout=30) as response:
        keys: dict[str, list[Any]] = json.load(response)["keys"]
    pairs = [(k, v) for k, values in keys.items() for v, _ in values]
    # Stable sorts: the variant key first, then the keys with the most values;
    # within a key, its values in name order (A before B).
    pairs.sort(key=lambda kv: str(kv[1]))
    pairs.sort(key=lambda kv: (kv[0] != "variant", -len(keys[kv[0]])))
    sides = [f"{k}:{v}" for k, v in pairs[:2]]
    return "/compare?" + urlencode(dict(zip("ab", sides, strict=False)))


def _charts_drawn(driver: Any) -> None:
    """Wait (10 s at most) until every chart on the page has drawn."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and driver.execute_script(
        "return [...document.querySelectorAll('figure.chart')]"
        ".some(f => !f.dataset.points)"
    ):
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    db = Path(tempfile.mkdtemp()) / "demo.db"
    result = run_demo(db)
    server = make_server(db, "127.0.0.1", 0, None)
    url = f"http://127.0.0.1:{server.effective_port}"
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in _FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        # The topics are assigned by the server's background thread.
        with TopicIndex(db) as topics:
            topics.build()
            biggest = topics.summary()[0].id
        pages = {
            "ui-overview.png": "/?range=30d",
            "ui-users.png": "/users?sort=conversations",
            "ui-session.png": f"/session?id={quote(result.showcase_session)}",
            "ui-retention.png": "/retention",
            "ui-compare.png": _compare_path(url),
            "ui-topics.png": "/topics?range=all",
            "ui-topic.png": f"/topics/{biggest}",
            "ui-unhappy.png": "/unhappy",
        }
        for name, path in pages.items():
            driver.get(url + path)
            _charts_drawn(driver)
            driver.save_screenshot(str(args.out / name))
            print(f"wrote {args.out / name}")
    finally:
        driver.quit()
        server.close()


if __name__ == "__main__":
    main()
