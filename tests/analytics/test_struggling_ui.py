"""Struggling topics and unhappy users: the JSON API, the pages, the overview and the CLI."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest

from context_trace import cli
from context_trace.analytics.topic_index import (
    STRUGGLING_MIN_CONVERSATIONS,
    TopicIndex,
)
from context_trace.ui.app import create_app

from .test_topic_stats import write_store


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "traces.db"
    write_store(path)
    return path


@pytest.fixture
def client(store: Path) -> object:
    app = create_app(store, refresh_interval=0)  # builds the index, then topics
    with TopicIndex(store) as index:
        index.build()
    return app.test_client()


def _is_struggling(row: dict, rows: list[dict]) -> bool:
    turns = sum(r["conversations"] for r in rows)
    mean = sum(r["satisfaction"] * r["scored"] for r in rows) / sum(
        r["scored"] for r in rows
    )
    errors = sum(r["error_rate"] * r["conversations"] for r in rows) / turns
    return (
        row["id"] != "misc"
        and row["conversations"] >= STRUGGLING_MIN_CONVERSATIONS
        and (row["satisfaction"] < mean or row["error_rate"] > errors)
    )


def test_api_topics_struggling_follows_the_rule(client) -> None:
    """/api/topics?sort=struggling lists exactly the topics the rule picks, worst first."""
    rows = client.get("/api/topics").get_json()["items"]
    assert {"satisfaction", "error_rate", "latency_p50_ms", "trend"} <= set(rows[0])
    found = client.get("/api/topics?sort=struggling").get_json()["items"]
    assert found
    assert {r["id"] for r in found} == {
        r["id"] for r in rows if _is_struggling(r, rows)
    }
    scores = [r["satisfaction"] for r in found]
    assert scores == sorted(scores)
    bad = client.get("/api/topics?sort=worst")
    assert bad.status_code == 400
    assert bad.get_json()["error"].startswith("sort must be")


def test_topic_page_lists_its_flagged_turns_linking_to_the_turn(client) -> None:
    """A struggling topic's page: its figures, and its flagged turns, each linking
    to the session scrolled to that turn (#turn-N)."""
    found = client.get("/api/topics?sort=struggling").get_json()["items"]
    page = client.get("/topics?range=all").get_data(as_text=True)
    assert 'id="struggling"' in page
    assert f'href="/topics/{found[0]["id"]}?range=all"' in page
    html = client.get(f"/topics/{found[0]['id']}").get_data(as_text=True)
    assert f'id="topic-conversations">{found[0]["conversations"]}<' in html
    links = re.findall(r'class="evidence" href="([^"]+)"', html)
    assert links
    session, turn = re.match(
        r"/session\?id=([^#]+)#turn-(\d+)", unescape(links[0])
    ).groups()
    transcript = client.get(f"/session?id={session}").get_data(as_text=True)
    assert f'id="turn-{turn}"' in transcript
    assert client.get("/topics/tnothere").status_code == 404


def test_topic_chart_reads_the_topics_trend(client) -> None:
    """A topic's page charts its per-day trend from /api/topic, which answers the
    topic's row as /api/topics does; an unknown id is a 404."""
    row = client.get("/api/topics").get_json()["items"][0]
    html = client.get(f"/topics/{row['id']}?range=30d").get_data(as_text=True)
    src = unescape(
        re.search(r'id="chart-conversations"[^>]*data-src="([^"]+)"', html)[1]
    )
    assert src == f"/api/topic?id={row['id']}&range=30d"
    assert 'data-series="trend"' in html
    body = client.get(src).get_json()
    assert body["id"] == row["id"]
    assert body["trend"]
    assert {"day", "conversations"} == set(body["trend"][0])
    bad = client.get("/api/topic?id=tnothere")
    assert 404 == bad.status_code
    assert "no such topic" in bad.get_json()["error"]


def test_overview_shows_unhappy_count_and_struggling_topics(client) -> None:
    """The overview has a tile with the unhappy users' count, linking to /unhappy,
    and the struggling topics of its range."""
    html = client.get("/?range=all").get_data(as_text=True)
    count = re.search(r'id="stat-unhappy"><a href="/unhappy">(\d+)</a>', html)
    assert count
    assert int(count.group(1)) == 3  # ava, ben and cy each have a flagged turn
    assert 'id="overview-struggling"' in html
    assert 'id="nav-unhappy"' in html


def test_unhappy_page_links_each_user_to_their_flagged_turns(client) -> None:
    """/unhappy: one row per unhappy user, as /api/unhappy ranks them, each reason
    linking to its turn in the session's transcript."""
    html = client.get("/unhappy").get_data(as_text=True)
    users = re.findall(r'<a class="user" href="/user\?id=([^"]+)">', html)
    api = client.get("/api/unhappy").get_json()["users"]
    assert users == [u["key"] for u in api]
    links = re.findall(r'class="evidence" href="(/session[^"]+#turn-\d+)"', html)
    assert len(links) >= len(users)
    assert "useless" in html


def test_topics_command_struggling(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`context-trace topics --struggling --json` lists the struggling topics only."""
    assert cli.main(["topics", "--db", str(store), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["topics"]
    assert cli.main(["topics", "--db", str(store), "--json", "--struggling"]) == 0
    found = json.loads(capsys.readouterr().out)["topics"]
    assert found
    assert {r["id"] for r in found} == {
        r["id"] for r in rows if _is_struggling(r, rows)
    }


def test_unhappy_count_includes_a_user_only_rated_down(store: Path) -> None:
    """A user whose only bad sign is a 👎 counts as unhappy on the overview tile,
    as on the Unhappy users page."""
    from context_trace._record import Feedback
    from tests.stores import write_records
    from tests.ui.conftest import NOW, turn

    convs = [
        turn(f"c-zoe{i}", "zoe", "s-zoe", 100 - i, 50, f"hi {i}") for i in range(3)
    ]
    write_records(store, convs, [Feedback("fz", "s-zoe", "zoe", -1, "c-zoe1", NOW)])
    client = create_app(store, refresh_interval=0).test_client()
    html = client.get("/").get_data(as_text=True)
    count = re.search(r'id="stat-unhappy"><a href="/unhappy">(\d+)</a>', html)
    listed = re.findall(
        r'<a class="user" href="/user\?id=([^"]+)">',
        client.get("/unhappy").get_data(as_text=True),
    )
    assert "zoe" in listed
    assert count
    assert int(count.group(1)) == len(listed) == 4
