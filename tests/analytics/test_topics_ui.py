"""The dashboard's topics: the JSON API, the Topics page, drill-down and the user page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from context_trace.analytics.topic_index import TopicIndex
from context_trace.ui.app import create_app

from .test_topic_index import _first_asks, _record


@pytest.fixture
def client(tmp_path: Path) -> object:
    store = tmp_path / "traces.db"
    _record(store, _first_asks())
    with TopicIndex(store) as index:
        index.build()
    return create_app(store, refresh_interval=0).test_client()


def test_api_topics_lists_topics_with_counts(client) -> None:
    """GET /api/topics: each topic with label, question, conversations, users, share."""
    data = client.get("/api/topics").get_json()
    assert data["available"] is True
    assert sum(t["conversations"] for t in data["items"]) == 30
    ava = client.get("/api/topics?user=ava").get_json()["items"]
    assert sum(t["conversations"] for t in ava) == 10


def test_topics_page_links_to_its_conversations(client) -> None:
    """The Topics page's rows open the topic's page, which links to
    /conversations?topic=<id>, showing that topic's turns."""
    page = client.get("/topics").get_data(as_text=True)
    links = re.findall(r'href="/topics/(t[0-9a-f]+)\?range=all"', page)
    assert links
    api = {t["id"]: t for t in client.get("/api/topics").get_json()["items"]}
    first = links[0]
    topic = client.get(f"/topics/{first}").get_data(as_text=True)
    assert f'href="/conversations?topic={first}&amp;range=all"' in topic
    turns = client.get(f"/api/conversations?topic={first}&limit=500").get_json()
    assert len(turns["items"]) == api[first]["conversations"]
    html = client.get(f"/conversations?topic={first}").get_data(as_text=True)
    assert f'name="topic" value="{first}"' in html


def test_user_page_shows_their_topics(client) -> None:
    """A user's page lists their topics, each linking to their turns in it."""
    html = client.get("/user?id=ava").get_data(as_text=True)
    assert 'id="user-topics"' in html
    assert re.search(r"/conversations\?topic=t[0-9a-f]+&amp;user=ava", html)


def test_unknown_topic_shows_no_conversations(client) -> None:
    """A topic id that does not exist filters to nothing (not an error)."""
    data = client.get("/api/conversations?topic=tnothere").get_json()
    assert data["items"] == []


def test_topic_filter_combines_with_search_user_and_paging(client) -> None:
    """A topic's turns with search words, a user or a cursor are exactly the
    intersection, newest first."""
    topic = client.get("/api/topics").get_json()["items"][0]["id"]
    mine = client.get(f"/api/conversations?topic={topic}&limit=500").get_json()["items"]
    ids = [c["conversation_id"] for c in mine]
    everyone = client.get("/api/conversations?limit=500").get_json()["items"]
    assert ids == [
        c["conversation_id"] for c in everyone if c["conversation_id"] in ids
    ]
    word = mine[0]["preview"].split()[-1].strip("?.!,")
    found = client.get(f"/api/conversations?topic={topic}&q={word}&limit=500")
    words = client.get(f"/api/conversations?q={word}&limit=500").get_json()["items"]
    assert [c["conversation_id"] for c in found.get_json()["items"]] == [
        c["conversation_id"] for c in words if c["conversation_id"] in ids
    ]
    ava = client.get(f"/api/conversations?topic={topic}&user=ava&limit=500")
    assert [c["conversation_id"] for c in ava.get_json()["items"]] == [
        c["conversation_id"] for c in mine if c["user_id"] == "ava"
    ]
    first = client.get(f"/api/conversations?topic={topic}&limit=2").get_json()
    rest = client.get(
        f"/api/conversations?topic={topic}&limit=500&before={first['next']}"
    )
    assert [
        c["conversation_id"] for c in first["items"] + rest.get_json()["items"]
    ] == ids
