"""Conversation search: the number of matches and a marked snippet per row."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.stores import write_records

from .conftest import XSS_SCRIPT, Server, turn

TEXTS = {
    "t-cpp": "how do I learn c++ quickly",
    "t-quote": 'she said "foo bar" twice',
    "t-xss": f"refund {XSS_SCRIPT} refund",
}


@pytest.fixture(scope="module")
def search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("search") / "traces.db"
    convs = [turn(cid, "u", "s", 100 + i, 10, text) for i, (cid, text) in
             enumerate(TEXTS.items())]  # fmt: skip
    convs += [turn(f"t-r{i}", "u", "s", 200 + i, 10, f"refund number {i}")
              for i in range(7)]  # fmt: skip
    with Server(write_records(db, convs)) as srv:
        yield srv


def search(srv: Server, text: str, extra: str = "") -> dict:
    return srv.api(f"/api/conversations?q={quote(text)}{extra}")


def test_total_counts_every_match(search_server):
    """A search page carries the number of matches on all pages, not just its own."""
    first = search(search_server, "refund", "&limit=3")
    rest = search(search_server, "refund", f"&limit=50&before={first['next']}")
    everything = search_server.api("/api/conversations")

    assert 8 == first["total"] == rest["total"]
    assert 3 + 5 == len(first["items"]) + len(rest["items"])
    assert everything["total"] is None  # no search, no count


def test_snippet_marks_the_matched_words(search_server):
    """Each row's snippet is its matching passage with the matched words marked."""
    (row,) = search(search_server, "refund number 3")["items"]

    assert "t-r3" == row["conversation_id"]
    assert row["snippet"].startswith(
        "<mark>refund</mark> <mark>number</mark> <mark>3</mark>"
    )


def test_snippet_escapes_stored_markup(search_server):
    """Stored HTML comes back escaped in the snippet; only <mark> is markup."""
    (row,) = search(search_server, "pwned")["items"]
    snippet = row["snippet"]

    assert "<script>" not in snippet
    assert "&lt;script&gt;window.__<mark>pwned</mark> = 1;" in snippet
    assert {"<mark>", "</mark>"} == {
        tag for tag in ("<mark>", "</mark>", "<script>", "<img") if tag in snippet
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [("c++", "t-cpp"), ('"foo', "t-quote"), ('"foo bar"', "t-quote"),
     ("learn* c++", "t-cpp"), ("^said (foo", "t-quote")],
)  # fmt: skip
def test_search_syntax_characters_find_turns(search_server, text, expected):
    """Text with FTS5 syntax (quotes, operators, ++) finds the turns holding it."""
    body = search(search_server, text)

    assert [expected] == [c["conversation_id"] for c in body["items"]]
    assert 1 == body["total"]


def test_a_filtered_count_is_bounded_and_says_so(search_server, monkeypatch):
    """With a filter on the turns' columns, a search counts among its newest
    SEARCH_COUNT_LIMIT word matches only, and flags the total as a lower bound."""
    from context_trace._store import analytics
    from context_trace._store.ui_index import default_index_path

    db = search_server.db
    with analytics.Analytics(db, default_index_path(db)) as store:
        exact = store.conversations(search="refund", range_="24h")
        monkeypatch.setattr(analytics, "SEARCH_COUNT_LIMIT", 3)
        bounded = store.conversations(search="refund", range_="24h")
        unfiltered = store.conversations(search="refund")

    assert (8, True) == (exact.total, exact.total_exact)
    assert (3, False) == (bounded.total, bounded.total_exact)
    assert (8, True) == (unfiltered.total, unfiltered.total_exact)
