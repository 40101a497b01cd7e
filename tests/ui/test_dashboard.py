"""What the dashboard shows: one bar per day, readable latencies, ratings in
words, and each turn's metadata and rating in the session view."""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from context_trace._store.analytics import Analytics
from tests.stores import write_records

from .conftest import NOW, RATED_LATENCIES, turn


def today() -> date:
    return date.fromisoformat(time.strftime("%Y-%m-%d", time.gmtime()))


@pytest.mark.parametrize(("range_", "days", "turns"), [("7d", 7, 68), ("30d", 30, 69)])
def test_a_range_of_n_days_has_n_days(server, range_, days, turns):
    """7d and 30d have one point per UTC day, today last, empty days as zeros."""
    body = server.api(f"/api/overview?range={range_}")
    expected = [(today() - timedelta(days=i)).isoformat() for i in range(days)][::-1]

    assert expected == [d["day"] for d in body["days"]]
    assert (
        turns == sum(d["conversations"] for d in body["days"]) == body["conversations"]
    )


@pytest.mark.parametrize(("range_", "days"), [("7d", 7), ("30d", 30)])
def test_a_turn_every_day_gives_n_bars_not_n_plus_1(tmp_path: Path, range_, days):
    """With a turn on each of the last 40 days, 7d counts 7 days and 30d 30."""
    db = tmp_path / "daily.db"
    write_records(db, [turn(f"d{i}", "u", None, i * 86400.0, 5) for i in range(40)],
                  ui_index=True)  # fmt: skip
    with Analytics(db, now=NOW) as analytics:
        overview = analytics.overview(range_)

    assert days == len(overview.days) == overview.conversations


def test_all_time_days_run_from_the_first_turn_to_today(server):
    """The all-time series has every day from the first turn's to today's."""
    days = [d["day"] for d in server.api("/api/overview?range=all")["days"]]

    assert 11 == len(days)  # the 10-day-old turn's day to today
    assert today().isoformat() == days[-1]
    assert (
        69 == sum(d["conversations"] for d in server.api("/api/overview")["days"]) + 1
    )


def test_percentiles_are_whole_milliseconds(rated_server):
    """Percentiles from the histogram come as whole ms, not 1412.5."""
    body = rated_server.api("/api/overview?range=7d")

    assert 1413 == body["latency_p50_ms"]  # the 1412 ms bucket, to the ms


@pytest.mark.parametrize(
    ("path", "shown"),
    [("/?range=24h", ["1.4 s", "12.3 s"]), ("/", ["1.4 s"]), ("/users", ["1.4 s"]), ("/user?id=rita", ["1.4 s"]),
     ("/session?id=s-r", ["1.4 s", "87 ms", "12.3 s"]),
     ("/conversations", ["1.4 s", "87 ms", "12.3 s"])],
)  # fmt: skip
def test_latencies_are_shown_with_the_precision_they_have(rated_server, path, shown):
    """Pages show latencies as whole ms below a second and as seconds with one
    decimal above: never 1412.5 or 12345 ms."""
    status, page = rated_server.get(path)

    assert 200 == status
    assert [s for s in shown if s not in page] == []
    assert "1412" not in page
    assert "12345" not in page


def test_ratings_have_words_and_names(server):
    """Ratings read 'helpful'/'unhelpful' next to the emoji, which has a name."""
    status, page = server.get("/")

    assert 200 == status
    assert 'aria-label="thumbs up">👍</span> helpful 1</span>' in page
    assert 'aria-label="thumbs down">👎</span> unhelpful 1</span>' in page


def test_session_json_has_metadata_and_turn_ratings(rated_server):
    """The session API carries each turn's metadata and rating (the last wins)."""
    body = rated_server.api("/api/session?id=s-r")
    turns = {t["conversation_id"]: t for t in body["turns"]}

    assert {} == body["metadata"]
    assert {"r1": -1, "r2": 1, "r3": None} == {k: t["rating"] for k, t in turns.items()}
    assert {"plan": "pro", "region": "<b>eu</b>"}.items() <= turns["r1"][
        "metadata"
    ].items()
    assert set(RATED_LATENCIES) == set(turns)


def test_pages_render_from_templates_compiled_at_start(store_path, monkeypatch):
    """Every page's templates are compiled when the app is made, so no request
    (the first of each page included) loads or compiles one."""
    from context_trace.ui.app import create_app

    app = create_app(store_path, refresh_interval=0)
    loaded: list[str] = []
    loader = app.jinja_env.loader
    assert loader is not None
    original = loader.get_source

    def get_source(environment: Any, name: str) -> Any:
        loaded.append(name)
        return original(environment, name)

    monkeypatch.setattr(loader, "get_source", get_source)
    client = app.test_client()
    for page in ("/", "/users", "/conversations", "/retention", "/compare", "/nope"):
        assert client.get(page).status_code in (200, 404)

    assert [] == loaded
