"""
The dashboard and the analytics commands over a PostgreSQL store, through its
local cache: the same answers as over a SQLite store holding the same turns.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from context_trace._record import Conversation, Feedback, Message
from context_trace._store.postgres import PostgresReads, PostgresStore
from context_trace._store.postgres.cache import (
    PostgresCache,
    SyncedIndex,
    default_cache_path,
)
from context_trace._store.ui_index import UIIndex
from tests.ui.conftest import NOW, build_store

from .server import READER_PASSWORD, WRITER_PASSWORD

flask = pytest.importorskip("flask")

from context_trace.ui.app import create_app  # noqa: E402

# The JSON API, one call per page and filter the dashboard serves.
API = (
    "/api/overview?range=all",
    "/api/overview?range=24h",
    "/api/overview?range=30d",
    "/api/users",
    "/api/users?sort=conversations",
    "/api/users?sort=cost",
    "/api/user?id=alice",
    "/api/user?anonymous=1",
    "/api/session?id=s-a1",
    "/api/session?id=s-m1",
    "/api/conversations",
    "/api/conversations?q=refund",
    "/api/conversations?q=anonymous",
    "/api/conversations?errors=1",
    "/api/conversations?rating=down",
    "/api/conversations?user=many",
    "/api/models",
    "/api/retention",
    "/api/retention?weeks=12",
    "/api/segments",
    "/api/cost",
    "/api/cost?by=user",
    "/api/cost?by=day&range=30d",
    "/api/compare?a=model:fake-model&b=model:other",
    "/api/satisfaction",
    "/api/unhappy",
    "/api/topics",
)
PAGES = (
    "/",
    "/users",
    "/user?id=alice",
    "/session?id=s-a1",
    "/conversations?q=refund",
    "/retention",
    "/compare?a=model:fake-model&b=model:other",
    "/topics",
    "/unhappy",
)


def _write_each(url: str, records: list[Any], host: str = "h1") -> None:
    """Each record in a transaction of its own, in order (as the SQLite writer got them)."""
    store = PostgresStore(url, host=host)
    try:
        for record in records:
            store.write([record])
    finally:
        store.close()


class _Dashboards:
    """The dashboard over a SQLite store and over the same turns in PostgreSQL."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.sqlite_path = tmp / "traces.db"
        data = build_store(self.sqlite_path)
        _write_each(url, [*data.conversations, *data.feedback])
        self.sqlite = create_app(
            self.sqlite_path,
            index=UIIndex(self.sqlite_path, tmp / "sqlite.ui-index"),
            refresh_interval=0,
        ).test_client()
        self.cache = PostgresCache(url, tmp / "cache.db")
        self.cache.build()
        self.index = SyncedIndex(self.cache, tmp / "cache.ui-index", sync_interval=0)
        self.postgres = create_app(
            self.cache.path, index=self.index, refresh_interval=0
        ).test_client()

    def both(self, path: str) -> tuple[Any, Any]:
        a, b = self.sqlite.get(path), self.postgres.get(path)
        assert (200, 200) == (a.status_code, b.status_code), (path, b.data[:300])
        if a.is_json:
            return a.get_json(), b.get_json()
        return _html(a.get_data(as_text=True)), _html(b.get_data(as_text=True))

    def close(self) -> None:
        self.index.close()


def _html(text: str) -> str:
    """A page without what differs by design: the nonce of its inline script."""
    return re.sub(r'nonce="[^"]*"', "", text)


@pytest.fixture
def dashboards(tmp_path: Path, pg_url: str) -> Iterator[_Dashboards]:
    both = _Dashboards(tmp_path, pg_url)
    yield both
    both.close()


class TestSameAsSQLite:
    @pytest.mark.parametrize("path", API)
    def test_the_api_answers_as_on_sqlite(
        self, dashboards: _Dashboards, path: str
    ) -> None:
        """Every API call over PostgreSQL gives the SQLite store's numbers and rows."""
        on_sqlite, on_postgres = dashboards.both(path)

        assert on_sqlite == on_postgres

    @pytest.mark.parametrize("path", PAGES)
    def test_the_pages_are_the_same(self, dashboards: _Dashboards, path: str) -> None:
        """Every page over PostgreSQL is the page the SQLite store gives."""
        on_sqlite, on_postgres = dashboards.both(path)

        assert on_sqlite == on_postgres


def _hosted_turn(
    cid: str, session: str, index: int, history: list[tuple[str, str]]
) -> Conversation:
    """Turn *index* of *session*: the system prompt and history re-sent, then new words."""
    messages = [Message("system", "You are the support bot.")]
    messages += [Message(role, text) for role, text in history]
    messages += [
        Message("user", f"{session} question {index}"),
        Message("assistant", f"{session} answer {index}"),
    ]
    started = NOW - 3600 + 60 * index
    return Conversation(
        id=cid,
        user_id=f"user-{session}",
        session_id=session,
        started_at=started,
        ended_at=started + 1,
        messages=tuple(messages),
        metadata={},
    )


def _session(session: str, turns: int) -> list[Conversation]:
    history: list[tuple[str, str]] = []
    out = []
    for index in range(turns):
        out.append(_hosted_turn(f"{session}-t{index}", session, index, history))
        history += [
            ("user", f"{session} question {index}"),
            ("assistant", f"{session} answer {index}"),
        ]
    return out


def _expected(session: str, turns: int) -> list[list[str]]:
    words = [["system", "You are the support bot."]]
    for index in range(turns):
        words += [
            ["user", f"{session} question {index}"],
            ["assistant", f"{session} answer {index}"],
        ]
    return words


def _transcript(client: Any, session: str) -> list[list[str]]:
    body = client.get(f"/api/session?id={session}").get_json()
    return [[m["role"], m["content"]] for t in body["turns"] for m in t["messages"]]


class TestAcrossHosts:
    def test_four_hosts_give_one_ordered_transcript(
        self, tmp_path: Path, pg_url: str
    ) -> None:
        """Sessions split over four hosts, delivered out of order: one transcript each."""
        sessions = {f"s{k}": _session(f"s{k}", 8) for k in range(6)}
        per_host: list[list[Conversation]] = [[] for _ in range(4)]
        for k, turns in enumerate(sessions.values()):
            for index, turn in enumerate(turns):
                per_host[(k + index) % 4].append(turn)
        for host in (3, 1, 0, 2):  # the outboxes deliver in any order
            _write_each(pg_url, per_host[host], host=f"host{host}")
        cache = PostgresCache(pg_url, tmp_path / "cache.db")
        cache.build()
        index = SyncedIndex(cache, tmp_path / "cache.ui-index", sync_interval=0)
        try:
            client = create_app(cache.path, index=index).test_client()
            shown = {s: _transcript(client, s) for s in sessions}
            overview = client.get("/api/overview?range=all").get_json()
        finally:
            index.close()
        with PostgresReads(pg_url) as reads:
            cli = {
                s: [[m.role, m.content] for m in reads.session_messages(s)]
                for s in sessions
            }

        assert {s: _expected(s, 8) for s in sessions} == shown
        assert cli == shown
        assert 48 == overview["conversations"]


class TestIncremental:
    def test_late_turns_and_a_late_rating_appear_once(
        self, tmp_path: Path, pg_url: str
    ) -> None:
        """Rows delivered after the cache was built appear after a refresh, once."""
        turns = _session("s1", 4)
        _write_each(pg_url, [turns[0], turns[2]])
        cache = PostgresCache(pg_url, tmp_path / "cache.db")
        cache.build()
        index = SyncedIndex(cache, tmp_path / "cache.ui-index", sync_interval=0)
        try:
            client = create_app(cache.path, index=index).test_client()
            before = client.get("/api/overview?range=all").get_json()["conversations"]
            # A rating that arrives before the turn it rates, then the late turns:
            # turn 1 sorts between the cached turns 0 and 2.
            rate = Feedback("r1", "s1", "user-s1", -1, "s1-t3", NOW)
            _write_each(pg_url, [rate, turns[3], turns[1]], host="late")
            for _ in range(3):  # refreshed requests: nothing counted twice
                overview = client.get("/api/overview?range=all").get_json()
            shown = _transcript(client, "s1")
            session = client.get("/api/session?id=s1").get_json()
        finally:
            index.close()

        assert (2, 4) == (before, overview["conversations"])
        assert (0, 1) == (overview["rating_up"], overview["rating_down"])
        assert _expected("s1", 4) == shown
        assert [None, None, None, -1] == [t["rating"] for t in session["turns"]]


class TestFirstSync:
    def test_statements_do_not_grow_with_the_turns_copied(
        self, tmp_path: Path, pg_url: str
    ) -> None:
        """The cache's statements per sync step stay few however many turns it copies."""
        sessions = [_session(f"s{k}", 6) for k in range(100)]
        _write_each(pg_url, [t for turns in sessions for t in turns])
        statements: list[str] = []
        cache = PostgresCache(pg_url, tmp_path / "cache.db")
        try:
            cache._db.set_trace_callback(statements.append)
            cache.build()
            cache._db.set_trace_callback(None)
            copied = cache.counts()
        finally:
            cache.close()
        reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert 600 == copied
        assert len(reads) <= 10, f"{len(reads)} SELECTs to copy 600 turns"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "context_trace", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )


class TestReadOnlyRole:
    def test_the_reader_runs_ui_and_each_analytics_command(
        self,
        tmp_path: Path,
        pg_url: str,
        pg_reader_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The read-only role runs ui and every analytics command; no password shows."""
        data = build_store(tmp_path / "same.db")
        _write_each(pg_url, [*data.conversations, *data.feedback])
        env = {
            "CONTEXT_TRACE_STORE": pg_reader_url,
            "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        }
        runs = {
            " ".join(args): _cli(*args, env=env)
            for args in (
                ("topics", "--json"),
                ("unhappy", "--json", "--min-turns", "1"),
                ("retention", "--json"),
                ("compare", "--segment-a", "model:fake-model", "--segment-b",
                 "model:other", "--json"),
                ("cost", "--json", "--by", "user"),
                ("users", "--sort", "cost", "--json"),
            )
        }  # fmt: skip
        from tests.ui.conftest import Server as UIServer

        server = UIServer(tmp_path / "unused.db", env=env)
        try:
            pages = [server.get(p) for p in ("/", "/api/overview?range=all")]
        finally:
            code, err = server.stop()
        monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
        cache = default_cache_path(pg_reader_url)

        assert {k: 0 for k in runs} == {k: r.returncode for k, r in runs.items()}
        assert 69 == pages[1][1]["conversations"]
        assert (200, 0) == (pages[0][0], code)
        assert cache.exists()
        assert str(cache).startswith(str(tmp_path / "xdg"))
        shown = [r.stdout + r.stderr for r in runs.values()]
        shown += [str(p[1]) for p in pages] + [server.output, err, str(cache)]
        for password in (READER_PASSWORD, WRITER_PASSWORD):
            assert [] == [s for s in shown if password in s]
        assert "ct_reader" not in str(cache)

    def test_a_cache_without_a_store_is_a_usage_error(self, tmp_path: Path) -> None:
        """--cache alone says that it copies a PostgreSQL store, which is missing."""
        run = _cli("retention", "--cache", str(tmp_path / "c.db"), env={})

        assert 2 == run.returncode
        assert "--cache is the local copy of a PostgreSQL store" in run.stderr


class TestCacheIdentity:
    def test_a_cache_of_another_store_starts_over(
        self, tmp_path: Path, pg_server: Any
    ) -> None:
        """A cache file reused for another store holds that store's turns only."""
        first = pg_server.url(database=pg_server.database())
        second = pg_server.url(database=pg_server.database())
        _write_each(first, _session("s1", 3))
        _write_each(second, _session("s2", 2))
        path = tmp_path / "cache.db"
        with PostgresCache(first, path) as cache:
            cache.build()
            before = cache.counts()
        with PostgresCache(second, path) as cache:
            cache.build()
            after = cache.counts()

        assert (3, 2) == (before, after)
