"""The JSON API against the real server, over a store written by the real writer."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._store.ui_index import UIIndex
from tests.failures import (
    AFTER_ERROR,
    FAILED_SESSION,
    MODEL_ERROR,
    TOOL_ERROR,
    TOOL_QUESTION,
    TOOL_SESSION,
    USER,
)

from .conftest import NOW, Server, turn


class TestOverview:
    def test_all_time_counts_and_ratings(self, server):
        """Overview counts every turn, error, token and rating in the store."""
        body = server.api("/api/overview?range=all")

        assert (69, 1) == (body["conversations"], body["errors"])
        assert (690, 345) == (body["prompt_tokens"], body["completion_tokens"])
        assert (1, 1) == (body["rating_up"], body["rating_down"])
        assert ["many", 60] == body["top_users"][0]

    def test_24h_excludes_old_turns_with_exact_percentiles(self, server):
        """The 24 h range leaves out the 10-day-old turn; its percentiles are exact."""
        body = server.api("/api/overview?range=24h")

        assert 68 == body["conversations"]
        latencies = sorted(
            [100, 200, 300, 1000, 2000, 50, 60, 70] + [10 + i for i in range(60)]
        )
        assert latencies[33] == body["latency_p50_ms"]  # nearest rank: ceil(34)
        assert latencies[64] == body["latency_p95_ms"]  # ceil(0.95 * 68) = 65

    def test_histogram_percentiles_are_close(self, server):
        """Longer ranges read percentiles from the histogram, within 6%."""
        body = server.api("/api/overview?range=30d")
        latencies = sorted(
            [100, 200, 300, 400, 1000, 2000, 50, 60, 70] + [10 + i for i in range(60)]
        )

        assert abs(body["latency_p50_ms"] - latencies[34]) <= 0.06 * latencies[34]
        assert 69 == sum(d["conversations"] for d in body["days"])

    def test_bad_range(self, server):
        """An unknown range is a 400 naming the choices."""
        status, body = server.get("/api/overview?range=year")

        assert 400 == status
        assert "range must be one of 24h, 7d, 30d, all" == body["error"]


class TestUsers:
    def test_rows_and_anonymous_row(self, server):
        """Users lists each user and one row for turns with no user."""
        body = server.api("/api/users?sort=user&order=asc")
        rows = {row["user_id"]: row for row in body["items"]}

        assert 4 == body["total"]
        assert {None, "alice", "bob", "many"} == set(rows)
        assert (3, 0) == (rows[None]["conversations"], rows[None]["sessions"])
        alice = rows["alice"]
        assert (4, 2, 1, 1, 0) == (
            alice["conversations"],
            alice["sessions"],
            alice["errors"],
            alice["rating_up"],
            alice["rating_down"],
        )
        assert 200 == alice["latency_p50_ms"]  # of 100, 200, 300, 400
        assert 14 == len(alice["activity"])
        # Her three turns of an hour ago: today's, or yesterday's (some or all)
        # when the suite runs in the first hour of a UTC day.
        today = datetime.fromtimestamp(time.time(), timezone.utc).date()
        days = [
            datetime.fromtimestamp(NOW - age, timezone.utc).date()
            for age in (3600, 3500, 3400)
        ]
        assert [days.count(today - timedelta(days=1)), days.count(today)] == alice[
            "activity"
        ][-2:]

    def test_sort_search_and_pagination(self, server):
        """Users sort by a column, search by id substring and page by offset."""
        first = server.api("/api/users?sort=conversations&limit=2")
        second = server.api(
            f"/api/users?sort=conversations&limit=2&offset={first['next']}"
        )
        found = server.api("/api/users?q=LI")

        assert ["many", "alice"] == [r["user_id"] for r in first["items"]]
        assert [None, "bob"] == sorted(
            (r["user_id"] for r in second["items"]), key=lambda u: u or ""
        )
        assert second["next"] is None
        assert ["alice"] == [r["user_id"] for r in found["items"]]

    def test_unknown_sort(self, server):
        """An unknown sort column is a 400, never SQL."""
        status, body = server.get("/api/users?sort=user_key;drop")

        assert 400 == status
        assert body["error"].startswith("sort must be one of")


class TestUserAndSession:
    def test_user_sessions(self, server):
        """A user's sessions come newest first with turns, errors and last message."""
        body = server.api("/api/user?id=alice")
        sessions = body["sessions"]["items"]

        assert ["s-a1", "s-a2"] == [s["session_id"] for s in sessions]
        assert (3, 1, 1) == (
            sessions[0]["turns"],
            sessions[0]["errors"],
            sessions[0]["rating_up"],
        )
        assert "answer to thanks" == sessions[0]["last_message"]

    def test_session_pagination(self, server):
        """A user's sessions page with a last_at cursor."""
        first = server.api("/api/user?id=many&limit=2")
        rest = server.api(
            f"/api/user?id=many&limit=2&before={first['sessions']['next']}"
        )

        assert 2 == len(first["sessions"]["items"])
        assert 1 == len(rest["sessions"]["items"])
        assert rest["sessions"]["next"] is None

    def test_anonymous_user(self, server):
        """anonymous=1 is the no-user row."""
        body = server.api("/api/user?anonymous=1")

        assert (None, 3) == (body["user"]["user_id"], body["user"]["conversations"])

    def test_session_transcript(self, server):
        """A session returns every turn with messages, tool call, tokens and errors."""
        body = server.api("/api/session?id=s-a1")
        first = body["turns"][0]

        assert ["c-a1", "c-a2", "c-a3"] == [t["conversation_id"] for t in body["turns"]]
        assert ["user", "tool", "assistant"] == [m["role"] for m in first["messages"]]
        assert ("lookup_order", '{"id": 42}') == (
            first["messages"][1]["name"],
            first["messages"][1]["tool_input"],
        )
        assert (100, "fake-model", 10, 5) == (
            first["latency_ms"],
            first["model"],
            first["prompt_tokens"],
            first["completion_tokens"],
        )
        assert "ValueError: x" == body["turns"][1]["error"]

    def test_unknown_ids_404(self, server):
        """Unknown users and sessions are 404s."""
        assert 404 == server.get("/api/user?id=nobody")[0]
        assert 404 == server.get("/api/session?id=nothing")[0]


class TestConversations:
    def test_full_text_search(self, server):
        """Search finds turns by words of their messages, tool output included."""
        assert ["c-n1"] == [
            c["conversation_id"]
            for c in server.api("/api/conversations?q=zebra")["items"]
        ]
        assert ["c-a1"] == [
            c["conversation_id"]
            for c in server.api("/api/conversations?q=shipped")["items"]
        ]
        assert [] == server.api("/api/conversations?q=%22unbalanced%20OR%20(")["items"]

    def test_filters(self, server):
        """User, anonymous, rating, error, model and range filters narrow the list."""

        def ids(query: str) -> set[str]:
            return {
                c["conversation_id"]
                for c in server.api("/api/conversations?limit=500&" + query)["items"]
            }

        assert {"c-a1", "c-a2", "c-a3", "c-a4"} == ids("user=alice")
        assert {"c-n1", "c-n2", "c-n3"} == ids("anonymous=1")
        # Each session's rating went to its last answered turn.
        assert {"c-a3"} == ids("rating=up")
        assert {"c-b2"} == ids("rating=down")
        assert {"c-a2"} == ids("errors=1")
        assert {"c-a4"} == ids("model=other")
        assert {"c-a1", "c-a2", "c-a3"} == ids("user=alice&range=24h")

    def test_keyset_pagination_visits_each_once(self, server):
        """Pages of 10 walk all 69 turns newest first, each exactly once."""
        seen: list[str] = []
        cursor = ""
        while True:
            page = server.api("/api/conversations?limit=10" + cursor)
            seen += [c["conversation_id"] for c in page["items"]]
            if page["next"] is None:
                break
            cursor = f"&before={page['next']}"

        assert 69 == len(seen) == len(set(seen))

    def test_models(self, server):
        """The models endpoint lists every model seen."""
        assert ["fake-model", "other"] == server.api("/api/models")["items"]


def test_empty_store(tmp_path: Path):
    """A store with no turns serves zeros and empty lists."""
    db = tmp_path / "empty.db"
    SQLiteExporter(db).check()
    srv = Server(db)
    try:
        overview = srv.api("/api/overview?range=all")
        users = srv.api("/api/users")
        status, page = srv.get("/users")
    finally:
        srv.stop()

    assert (0, None, []) == (
        overview["conversations"],
        overview["latency_p50_ms"],
        overview["days"],
    )
    assert ([], 0) == (users["items"], users["total"])
    assert 200 == status
    assert "No users yet." in page


def test_works_while_a_writer_writes(tmp_path: Path):
    """The dashboard sees turns committed after it started, while the writer is open."""
    db = tmp_path / "live.db"
    writer = SQLiteExporter(db)
    writer.export([turn("x1", "u", "s", 10, 5)])
    srv = Server(db)
    try:
        before = srv.api("/api/overview?range=all")["conversations"]
        writer.export([turn("x2", "u", "s", 5, 5)])
        after = srv.api("/api/overview?range=all")["conversations"]
    finally:
        srv.stop()
        writer.shutdown()

    assert (1, 2) == (before, after)


def test_ctrl_c_exits_cleanly(store_path: Path):
    """Ctrl-C stops the server with status 0 and no traceback."""
    srv = Server(store_path)
    code, err = srv.stop()

    assert (0, "") == (code, err)


def test_analytics_needs_a_built_index(tmp_path: Path):
    """Analytics names the missing index; UIIndex refuses a file that is no store."""
    import pytest

    from context_trace._store.analytics import Analytics
    from context_trace._store.ui_index import UIIndex

    db = tmp_path / "traces.db"
    SQLiteExporter(db).check()
    with pytest.raises(
        ValueError, match=r"no dashboard index at .*traces\.db\.ui-index"
    ):
        Analytics(db)
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ValueError, match=r"plain\.db is not a context_trace store"):
        UIIndex(plain)


def test_ctrl_c_right_after_the_url_is_clean(store_path: Path, tmp_path: Path):
    """Ctrl-C the moment the URL is printed (before the loop runs) still stops
    cleanly: status 0, the port released, the index closed."""
    import io
    import socket

    from context_trace.ui.serve import main as serve

    class CtrlCOnFlush(io.StringIO):
        def flush(self) -> None:
            if "Press Ctrl-C" in self.getvalue():
                raise KeyboardInterrupt

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = CtrlCOnFlush()
    code = serve(store_path, port=port, out=out, index_path=tmp_path / "i.db")

    assert 0 == code
    assert out.getvalue().endswith("context-trace ui: stopped\n")
    with socket.socket() as again:  # the listening socket was closed
        again.bind(("127.0.0.1", port))


def test_preview_of_a_turn_that_keeps_its_history(tmp_path: Path):
    """A session-less turn keeps its history; its preview is still its own question."""
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

    import context_trace as ct
    from context_trace._store.analytics import Analytics
    from context_trace._store.ui_index import UIIndex

    db = tmp_path / "history.db"
    ct.configure(db_path=db)
    prompt = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = prompt | ParrotFakeChatModel()
    with ct.track_user("u"):
        chain.invoke(
            {"history": [("human", "first"), ("ai", "one")], "question": "second"}
        )
    assert ct.flush()
    with UIIndex(db) as index:
        index.build()
    analytics = Analytics(db)
    try:
        [row] = analytics.conversations().items
    finally:
        analytics.close()

    assert "second" == row.preview


class TestToolErrors:
    """A turn whose tool failed but which answered: its own state, apart from errors."""

    def test_overview_counts_tool_errors_apart(self, failures_server):
        """The overview counts the turn with a failed tool apart from the failed turns."""
        for range_ in ("24h", "7d", "all"):
            body = failures_server.api(f"/api/overview?range={range_}")

            assert (6, 2, 1) == (
                body["conversations"],
                body["errors"],
                body["tool_errors"],
            )

    def test_users_and_sessions_count_tool_errors(self, failures_server):
        """Users (sortable by tool_errors) and a user's sessions carry tool_errors."""
        users = failures_server.api("/api/users?sort=tool_errors")
        user = failures_server.api(f"/api/user?id={USER}")

        assert [(USER, 2, 1)] == [
            (u["user_id"], u["errors"], u["tool_errors"]) for u in users["items"]
        ]
        assert (2, 1) == (user["user"]["errors"], user["user"]["tool_errors"])
        assert {FAILED_SESSION: (2, 0), TOOL_SESSION: (0, 1)} == {
            s["session_id"]: (s["errors"], s["tool_errors"])
            for s in user["sessions"]["items"]
        }

    def test_session_marks_the_turn_and_the_failed_tool(self, failures_server):
        """The session's turn has tool_error and no error; the tool message has error."""
        body = failures_server.api(f"/api/session?id={TOOL_SESSION}")
        first, second = body["turns"]

        assert 1 == body["session"]["tool_errors"]
        assert (None, True, None, False) == (
            first["error"],
            first["tool_error"],
            second["error"],
            second["tool_error"],
        )
        assert {
            "role": "tool",
            "content": TOOL_ERROR,
            "name": "lookup_order",
            "tool_input": '{"order_id":"42"}',
            "error": True,
        } == first["messages"][1]

    def test_filters_tell_tool_errors_from_errors(self, failures_server):
        """tool_errors=1 finds the turn with a failed tool; errors=1 finds only failed turns."""
        tools = failures_server.api("/api/conversations?tool_errors=1")
        errors = failures_server.api("/api/conversations?errors=1")

        assert [(TOOL_SESSION, None, True)] == [
            (c["session_id"], c["error"], c["tool_error"]) for c in tools["items"]
        ]
        assert TOOL_QUESTION == tools["items"][0]["preview"]
        assert [AFTER_ERROR, MODEL_ERROR] == [c["error"] for c in errors["items"]]
        assert not any(c["tool_error"] for c in errors["items"])


class _Noticed(io.StringIO):
    """An output that tells when a line about the index being brought up to date is written."""

    def __init__(self) -> None:
        super().__init__()
        self.noticed = threading.Event()

    def write(self, text: str) -> int:
        if "brought up to date" in text:
            self.noticed.set()
        return super().write(text)


def test_a_slow_index_open_says_why(store_path: Path, tmp_path: Path, monkeypatch):
    """Opening an index that an earlier version made fills its new tables first
    (minutes at a million turns): when opening takes a while, the dashboard says
    so instead of seeming to hang; a quick open says nothing."""
    from context_trace.ui import serve

    out = _Noticed()
    real = serve.UIIndex

    def slow_open(*args: Any, **kwargs: Any) -> UIIndex:
        # Stands for the one-time upgrade: still opening when the notice is due.
        out.noticed.wait(10.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(serve, "_SLOW_OPEN", 0.05)
    monkeypatch.setattr(serve, "UIIndex", slow_open)
    serve.open_index(store_path, out, tmp_path / "slow.ui-index").close()
    monkeypatch.setattr(serve, "_SLOW_OPEN", 60.0)
    monkeypatch.setattr(serve, "UIIndex", real)
    quick = _Noticed()
    serve.open_index(store_path, quick, tmp_path / "slow.ui-index").close()

    assert out.noticed.is_set(), out.getvalue()
    assert "Opening the dashboard index" in out.getvalue()
    assert not quick.noticed.is_set(), quick.getvalue()
