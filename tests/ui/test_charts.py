"""The charts: drawn by the vendored uPlot from the JSON API, no hand-drawn SVG,
nothing loaded from another origin, and the CSP unchanged."""

from __future__ import annotations

import re

import pytest

from context_trace.ui.app import CSP

PAGES = ["/?range=all", "/users", "/user?id=alice", "/retention", "/conversations"]


@pytest.mark.parametrize("page", PAGES)
def test_pages_load_the_vendored_library_and_draw_no_svg(server, page):
    """Each page loads uPlot and the chart glue from /static, and holds no SVG."""
    status, body = server.get(page)

    assert 200 == status
    assert '<script src="/static/vendor/uplot/uPlot.iife.min.js" defer>' in body
    assert '<script src="/static/charts.js" defer>' in body
    assert "<svg" not in body
    assert "script-src 'self';" in server.last_headers["Content-Security-Policy"]


@pytest.mark.parametrize("page", PAGES)
def test_no_page_names_another_origin(server, page):
    """No src or href on any page points away from the dashboard (no CDN)."""
    _, body = server.get(page)
    targets = re.findall(r'(?:src|href)="([^"]*)"', body)

    assert targets
    assert [] == [t for t in targets if "//" in t or not t.startswith(("/", "?"))]


def test_csp_stays_script_src_self():
    """The policy allows scripts from the dashboard itself only."""
    assert "script-src 'self';" in CSP
    assert "unsafe-inline" not in CSP
    assert "unsafe-eval" not in CSP


@pytest.mark.parametrize(
    "asset",
    [
        "/static/vendor/uplot/uPlot.iife.min.js",
        "/static/vendor/uplot/uPlot.min.css",
        "/static/vendor/uplot/LICENSE",
        "/static/charts.js",
    ],
)
def test_the_library_and_its_licence_are_served(server, asset):
    """The vendored files are served by the dashboard itself."""
    status, body = server.get(asset)

    assert 200 == status
    assert body


def test_overview_chart_points_at_its_api(server):
    """The overview's charts read /api/overview with the page's range and segment."""
    _, body = server.get("/?range=30d&meta=model:other")

    assert 'data-src="/api/overview?range=30d&amp;meta=model%3Aother"' in body
    assert 'data-series="days"' in body


def test_user_api_has_the_weekly_activity(server):
    """/api/user carries the 26 ISO weeks of activity the user page charts."""
    body = server.api("/api/user?id=alice")

    assert 26 == len(body["activity"])
    assert 4 == sum(w["conversations"] for w in body["activity"])
