"""Tests for the SQLite store: SQLiteExporter, SQLiteReader and the outbox."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from context_trace._exporters.base import ExportResult
from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Feedback, Message
from context_trace._store import codec, schema
from context_trace._store.codec import record_from_json, record_to_json
from context_trace._store.models import (
    DayStats,
    SessionSummary,
    StoredConversation,
    UserSummary,
)
from context_trace._store.reader import SQLiteReader

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY = 86_400.0
# The exporter and the store it writes through.
LOGGERS = (
    "context_trace._exporters.sqlite",
    "context_trace._store.sqlite_store",
    "context_trace._store.sqlite_outbox",
)
WRITER_SCRIPT = Path(__file__).with_name("_sqlite_writer.py")

HELLO = (("user", "hi"), ("assistant", "hello"))


def turn(
    id: str,
    *,
    user: str | None = "u1",
    session: str | None = None,
    at: float = T0,
    latency: float = 0.5,
    messages: tuple[tuple[str, str], ...] = HELLO,
    metadata: dict[str, str] | None = None,
    error: str | None = None,
) -> Conversation:
    return Conversation(
        id=id,
        user_id=user,
        session_id=session,
        started_at=at,
        ended_at=at + latency,
        messages=tuple(Message(role, content) for role, content in messages),  # type: ignore[arg-type]
        metadata=metadata or {},
        error=error,
    )


def rating(
    id: str, session: str, value: int, *, user: str | None = "u1", at: float = T0 + 60
) -> Feedback:
    return Feedback(
        id=id, session_id=session, user_id=user, rating=value, created_at=at
    )


def texts(messages: list[Message] | tuple[Message, ...]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in messages]


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain read-write connection to inspect or damage a file, always closed."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def scalar(path: Path, sql: str) -> Any:
    with raw(path) as conn:
        return conn.execute(sql).fetchone()[0]


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name in LOGGERS and r.levelno >= logging.ERROR
    ]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def exporter(db: Path) -> Iterator[SQLiteExporter]:
    store = SQLiteExporter(db)
    yield store
    store.shutdown()


@pytest.fixture
def open_reader(db: Path) -> Iterator[Any]:
    """Open readers on the store; all are closed at teardown."""
    readers: list[SQLiteReader] = []

    def open_() -> SQLiteReader:
        reader = SQLiteReader(db)
        readers.append(reader)
        return reader

    yield open_
    for reader in readers:
        reader.close()


class TestSchema:
    def test_schema_version_and_pragmas(self, exporter, db):
        """The first export creates the tables, sets version 1 and turns on WAL."""
        exporter.export([turn("c1")])

        with raw(db) as conn:
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
                )
            }
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]

        assert {
            "users",
            "sessions",
            "conversations",
            "messages",
            "feedback",
            "outbox",
            "meta",
        } <= tables
        assert schema.SCHEMA_VERSION == version
        assert "wal" == mode

    def test_construction_touches_nothing(self, tmp_path):
        """Creating an exporter neither creates nor opens the file."""
        path = tmp_path / "sub" / "store.db"

        store = SQLiteExporter(path)
        store.shutdown()

        assert not path.parent.exists()

    def test_creates_parent_directories(self, tmp_path):
        """Missing parent directories of the path are created on first use."""
        path = tmp_path / "a" / "b" / "store.db"
        store = SQLiteExporter(path)

        result = store.export([turn("c1")])
        store.shutdown()

        assert ExportResult.success(1) == result
        assert path.exists()

    def test_messages_view_has_the_plain_shape(self, exporter, db):
        """The messages view lists messages with their conversation and session ids."""
        exporter.export([turn("c1", session="s1")])

        with raw(db) as conn:
            rows = conn.execute(
                "SELECT conversation_id, session_id, seq, role, content, name,"
                " tool_input FROM messages ORDER BY seq"
            ).fetchall()

        assert [
            ("c1", "s1", 0, "user", "hi", None, None),
            ("c1", "s1", 1, "assistant", "hello", None, None),
        ] == rows

    def test_newer_schema_is_refused(self, exporter, db):
        """A store written by a newer schema version is refused with a clear error."""
        exporter.check()
        with raw(db) as conn:
            conn.execute("PRAGMA user_version = 99")
        store = SQLiteExporter(db)

        with pytest.raises(ValueError, match="schema version 99 is newer"):
            store.check()
        store.shutdown()

    def test_foreign_database_is_refused(self, db):
        """A SQLite file with other tables is not taken over."""
        with raw(db) as conn:
            conn.execute("CREATE TABLE things (x)")
        store = SQLiteExporter(db)

        with pytest.raises(ValueError, match="not a context_trace store"):
            store.check()
        result = store.export([turn("c1")])
        store.shutdown()

        assert ExportResult.failure(1) == result

    def test_migration_hook_upgrades(self, exporter, db, monkeypatch):
        """A registered step upgrades an existing store to the next version."""
        exporter.export([turn("c1")])
        exporter.shutdown()

        def add_column(conn: sqlite3.Connection) -> None:
            conn.execute("ALTER TABLE conversations ADD COLUMN extra TEXT")

        target = schema.SCHEMA_VERSION + 1
        monkeypatch.setattr(schema, "SCHEMA_VERSION", target)
        monkeypatch.setitem(schema._MIGRATIONS, target, add_column)
        store = SQLiteExporter(db)
        store.check()
        store.shutdown()

        assert target == scalar(db, "PRAGMA user_version")
        assert 1 == scalar(db, "SELECT count(extra IS NULL) FROM conversations")


class TestExport:
    def test_round_trip(self, exporter, open_reader):
        """Every field of a conversation and its messages is stored and read back."""
        conversation = Conversation(
            id="c1",
            user_id="alice",
            session_id=None,
            started_at=T0 + 0.123456789,
            ended_at=T0 + 1.5,
            messages=(
                Message("system", "be brief"),
                Message("user", "weather in Paris? 🌧"),
                Message(
                    "tool", "12°C, rain", name="weather", tool_input='{"city":"Paris"}'
                ),
                Message("assistant", "12°C and rainy."),
            ),
            metadata={
                "model": "gpt-4o",
                "prompt_tokens": "10",
                "completion_tokens": "5",
                "total_tokens": "15",
                "tags": "a,b",
            },
            error="ValueError: nope",
        )

        result = exporter.export([conversation])
        stored = list(open_reader().conversations())

        assert ExportResult.success(1) == result
        assert [
            StoredConversation(
                id="c1",
                user_id="alice",
                session_id=None,
                started_at=T0 + 0.123456789,
                ended_at=T0 + 1.5,
                latency_ms=conversation.latency_ms,
                model="gpt-4o",
                prompt_tokens=10,
                completion_tokens=5,
                total_tokens=15,
                error="ValueError: nope",
                metadata=dict(conversation.metadata),
                messages=conversation.messages,
            )
        ] == stored

    def test_unparsable_token_counts_are_null(self, exporter, open_reader):
        """Token metadata that is not an integer is stored as NULL, kept in metadata."""
        exporter.export([turn("c1", metadata={"total_tokens": "n/a"})])

        (stored,) = open_reader().conversations()

        assert (None, "n/a") == (stored.total_tokens, stored.metadata["total_tokens"])

    def test_feedback_round_trip(self, exporter, db):
        """Feedback rows keep every field."""
        feedback = Feedback(
            id="f1",
            session_id="s1",
            user_id="alice",
            rating=-1,
            conversation_id="c9",
            created_at=T0 + 3.25,
        )

        exporter.export([turn("c9", user="alice", session="s1"), feedback])
        with raw(db) as conn:
            row = conn.execute("SELECT * FROM feedback").fetchone()

        assert ("f1", "s1", "alice", "c9", -1, T0 + 3.25) == row

    def test_redelivery_is_stored_once(self, exporter, db):
        """A batch exported twice, with a duplicate inside, is stored once."""
        batch = [
            turn("c1", session="s1"),
            turn("c2"),
            turn("c2"),
            rating("f1", "s1", 1),
        ]

        first = exporter.export(batch)
        second = exporter.export(batch)

        assert ExportResult.success(4) == first == second
        assert 2 == scalar(db, "SELECT count(*) FROM conversations")
        assert 4 == scalar(db, "SELECT count(*) FROM messages")
        assert 1 == scalar(db, "SELECT count(*) FROM feedback")

    def test_redelivered_session_turn_keeps_its_messages(self, exporter, open_reader):
        """Re-delivering a session turn neither duplicates nor strips its messages."""
        first = turn("c1", session="s1")

        exporter.export([first])
        exporter.export([first])

        assert HELLO == tuple(texts(open_reader().session_messages("s1")))

    def test_turn_without_user(self, exporter, db, open_reader):
        """A turn without a user is stored with a NULL user and adds no users row."""
        exporter.export([turn("c1", user=None)])

        (stored,) = open_reader().conversations()

        assert stored.user_id is None
        assert 0 == scalar(db, "SELECT count(*) FROM users")

    def test_users_and_sessions_span_every_turn(self, exporter, db):
        """first/last seen and session start/last activity cover turns out of order."""
        exporter.export([turn("c2", session="s1", at=T0 + 100)])
        exporter.export([turn("c1", session="s1", at=T0, latency=2.0)])
        exporter.export([turn("c3", session="s1", at=T0 + 50)])

        with raw(db) as conn:
            user = conn.execute("SELECT * FROM users").fetchone()
            session = conn.execute(
                "SELECT id, user_id, started_at, last_at FROM sessions"
            ).fetchone()

        assert ("u1", T0, T0 + 100.5) == user
        assert ("s1", "u1", T0, T0 + 100.5) == session

    def test_the_last_rating_of_a_turn_wins(self, exporter, open_reader, db):
        """A turn keeps its newest rating; a late older one or a re-delivery changes nothing."""
        up, down = rating("f1", "s1", 1, at=T0 + 61), rating("f2", "s1", -1, at=T0 + 62)
        exporter.export([turn("c1", session="s1"), turn("c2", session="s1", at=T0 + 1)])

        exporter.export([up, down])
        exporter.export([up, down])  # re-delivered
        exporter.export([rating("f3", "s1", 1, at=T0 + 60)])  # older, late
        (summary,) = open_reader().sessions()
        with raw(db) as conn:
            rows = conn.execute("SELECT id, conversation_id FROM feedback").fetchall()

        assert (0, 1) == (summary.rating_up, summary.rating_down)
        assert [("f2", "c2")] == rows

    def test_a_neutral_rating_replaces_a_thumbs_down(self, exporter, open_reader):
        """Rating 0 after -1 leaves the turn neutral: neither up nor down."""
        exporter.export([turn("c1", session="s1")])

        exporter.export([rating("f1", "s1", -1, at=T0 + 61)])
        exporter.export([rating("f2", "s1", 0, at=T0 + 62)])
        (summary,) = open_reader().sessions()

        assert (0, 0) == (summary.rating_up, summary.rating_down)

    def test_rating_for_unknown_session_is_refused(self, exporter, open_reader, caplog):
        """A rating of a session the store lacks creates no session or user: refused, logged."""
        caplog.set_level(logging.WARNING, logger="context_trace")

        first = exporter.export([rating("f1", "s9", 1, user="bob", at=T0 + 7)])
        again = exporter.export([rating("f2", "s9", -1, user="bob", at=T0 + 8)])
        reader = open_reader()

        assert ([], []) == (reader.sessions(), reader.users())
        assert (ExportResult(rejected=1), ExportResult(rejected=1)) == (first, again)
        assert [
            "context_trace: a rating of session 's9' was not stored:"
            " the store holds no such session"
        ] == [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    @pytest.mark.parametrize(
        ("feedback", "reason"),
        [
            (
                Feedback("f1", "s1", "u1", 1, "c-other", T0 + 60),
                "the session has no turn 'c-other'",
            ),
            (
                Feedback("f1", "s1", "u1", 1, "c2", T0 + 60),
                "the session has no turn 'c2'",
            ),
            (
                Feedback("f1", "s1", "u1", 1, None, T0 + 0.1),
                "the session had no answered turn when it was rated",
            ),
        ],
    )
    def test_rating_of_a_turn_not_in_the_session_is_refused(
        self, exporter, db, caplog, feedback, reason
    ):
        """An unknown turn, another session's turn, or a rating before any answer: refused."""
        caplog.set_level(logging.WARNING, logger="context_trace")
        exporter.export([turn("c1", session="s1"), turn("c2", session="s2")])

        result = exporter.export([feedback])

        assert 0 == scalar(db, "SELECT count(*) FROM feedback")
        assert ExportResult(rejected=1) == result
        assert [
            f"context_trace: a rating of session 's1' was not stored: {reason}"
        ] == [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    def test_rating_targets_the_last_answered_turn_and_its_sessions_user(
        self, exporter, db
    ):
        """With no turn named, the last turn with an answer before the rating; the session's user."""
        exporter.export(
            [
                turn("c1", user="alice", session="s1"),
                turn("c2", user="alice", session="s1", at=T0 + 10),
                turn(
                    "c3", user="alice", session="s1", at=T0 + 20,
                    messages=(("user", "and?"),), error="ValueError: x",
                ),
                turn("c4", user="alice", session="s1", at=T0 + 100),
            ]
        )  # fmt: skip

        exporter.export([rating("f1", "s1", -1, user="mallory", at=T0 + 30)])
        with raw(db) as conn:
            stored = conn.execute(
                "SELECT conversation_id, user_id FROM feedback"
            ).fetchall()
            users = [r[0] for r in conn.execute("SELECT id FROM users")]

        assert [("c2", "alice")] == stored
        assert ["alice"] == users

    def test_unencodable_text_is_replaced(self, exporter, open_reader):
        """A lone surrogate is stored as '?' instead of failing the whole batch."""
        bad = turn("c1", messages=(("user", "bad \ud800 text"),))

        result = exporter.export([bad, turn("c2", at=T0 + 1)])

        assert ExportResult.success(2) == result
        assert [[("user", "bad ? text")], list(HELLO)] == [
            texts(c.messages) for c in open_reader().conversations()
        ]

    def test_empty_batch(self, exporter, db):
        """An empty batch succeeds without touching the file."""
        result = exporter.export([])

        assert ExportResult.success(0) == result
        assert not db.exists()

    def test_export_after_shutdown_fails_quietly(self, exporter):
        """After shutdown, export returns a failure and shutdown can run again."""
        exporter.export([turn("c1")])
        exporter.shutdown()

        result = exporter.export([turn("c2"), turn("c3")])
        exporter.shutdown()

        assert ExportResult.failure(2) == result

    def test_non_record_fails_the_batch(self, exporter, caplog):
        """A batch holding a non-record fails as a whole, logged once, nothing raised."""
        caplog.set_level(logging.DEBUG, logger="context_trace")
        batch: list[Any] = [turn("c1"), "not a record"]

        results = [exporter.export(batch), exporter.export(batch)]

        assert [ExportResult.failure(2)] * 2 == results
        assert 1 == len(errors_logged(caplog))


# Rows for TestInsertRows: None in every row of a column (a literal), in some
# rows (bound), never.
INSERT_ROWS = (
    [
        (1, None, "a", None, 1.5),
        (2, None, None, None, 2.5),
        (3, None, "c", None, 0.0),
    ],
    [(1, "x", None, None, None)],
    [(i, None if i % 3 else "s", None, None, float(i)) for i in range(450)],
    [(None, None, None, None, None), (None, None, None, None, None)],
)


class TestInsertRows:
    """insert_rows writes Nones as NULL literals or bound values: the same rows."""

    @pytest.mark.parametrize("rows", INSERT_ROWS, ids=["mixed", "one", "chunks", "all"])
    def test_rows_match_executemany(self, tmp_path, rows):
        """Every row reads back as executemany stores it, Nones as NULLs."""
        from context_trace._store.connection import insert_rows

        conn = sqlite3.connect(tmp_path / "rows.db", isolation_level=None)
        for table in ("a", "b"):
            conn.execute(f"CREATE TABLE {table} (i, s, t, u, f)")
        insert_rows(conn, "INSERT INTO a (i, s, t, u, f)", rows)
        conn.executemany("INSERT INTO b VALUES (?, ?, ?, ?, ?)", rows)

        read = "SELECT i, s, t, u, f, typeof(s), typeof(u) FROM {} ORDER BY rowid"
        assert (
            conn.execute(read.format("b")).fetchall()
            == conn.execute(read.format("a")).fetchall()
        )
        conn.close()


class TestSessionDedup:
    def test_history_resent_by_another_writer_is_stored_once(self, db, open_reader):
        """Two writers re-sending a session's history store every message once."""
        system = ("system", "be nice")
        one, two = SQLiteExporter(db), SQLiteExporter(db)
        try:
            one.export([turn("c1", session="s1", messages=(system, *HELLO))])
            two.export(
                [
                    turn(
                        "c2",
                        session="s1",
                        at=T0 + 10,
                        messages=(
                            system,
                            *HELLO,
                            ("user", "bye"),
                            ("assistant", "ciao"),
                        ),
                    )
                ]
            )
        finally:
            one.shutdown()
            two.shutdown()

        assert [
            system,
            *HELLO,
            ("user", "bye"),
            ("assistant", "ciao"),
        ] == texts(open_reader().session_messages("s1"))

    def test_cached_session_sees_turns_of_other_writers(self, db, open_reader):
        """A writer's cached seen-set picks up turns another process added since."""
        one, two = SQLiteExporter(db), SQLiteExporter(db)
        q1, q2, q3 = HELLO, (("user", "q2"), ("assistant", "a2")), (("user", "q3"),)
        try:
            one.export([turn("c1", session="s1", messages=q1)])
            two.export([turn("c2", session="s1", at=T0 + 1, messages=q1 + q2)])
            one.export(
                [
                    turn(
                        "c3",
                        session="s1",
                        at=T0 + 2,
                        messages=q1 + q2 + q3 + (("assistant", "a3"),),
                    )
                ]
            )
        finally:
            one.shutdown()
            two.shutdown()

        assert [*q1, *q2, ("user", "q3"), ("assistant", "a3")] == texts(
            open_reader().session_messages("s1")
        )

    def test_repeated_question_is_kept(self, exporter, open_reader):
        """Asking the same question again is stored again."""
        exporter.export([turn("c1", session="s1")])
        exporter.export(
            [turn("c2", session="s1", at=T0 + 1, messages=(*HELLO, *HELLO))]
        )

        assert [*HELLO, *HELLO] == texts(open_reader().session_messages("s1"))

    def test_turns_of_one_session_in_one_batch(self, exporter, open_reader):
        """History re-sent by a later turn of the same batch is stripped too."""
        later = (*HELLO, ("user", "more"), ("assistant", "sure"))

        exporter.export(
            [
                turn("c1", session="s1"),
                turn("c2", session="s1", at=T0 + 1, messages=later),
            ]
        )

        assert list(later) == texts(open_reader().session_messages("s1"))

    def test_tool_messages_are_not_history(self, exporter, open_reader):
        """Tool output is never treated as re-sent history."""
        with_tool = (("user", "look it up"), ("tool", "42"), ("assistant", "it is 42"))
        exporter.export([turn("c1", session="s1", messages=with_tool)])

        exporter.export(
            [
                turn(
                    "c2",
                    session="s1",
                    at=T0 + 1,
                    messages=(("tool", "42"), ("user", "ok")),
                )
            ]
        )

        assert [*with_tool, ("tool", "42"), ("user", "ok")] == texts(
            open_reader().session_messages("s1")
        )

    def test_turns_without_session_are_not_stripped(self, exporter, open_reader):
        """Turns outside a session keep every message."""
        exporter.export([turn("c1"), turn("c2", at=T0 + 1)])

        assert [list(HELLO)] * 2 == [
            texts(c.messages) for c in open_reader().conversations()
        ]


class TestReader:
    @pytest.fixture
    def filled(self, exporter: SQLiteExporter) -> SQLiteExporter:
        """alice: 2 sessions, 3 turns, one failed; bob: 1 turn the next day."""
        exporter.export(
            [
                turn("a1", user="alice", session="sa", at=T0, latency=1.0),
                turn(
                    "a2",
                    user="alice",
                    session="sa",
                    at=T0 + 60,
                    latency=3.0,
                    messages=(("user", "again"), ("assistant", "sure")),
                    error="RuntimeError: boom",
                ),
                turn("a3", user="alice", session="sb", at=T0 + 120, latency=2.0),
                turn("b1", user="bob", session="sc", at=T0 + DAY, latency=0.5),
                turn("x1", user=None, at=T0 + DAY + 1, latency=0.5),
                rating("f1", "sa", 1, user="alice", at=T0 + 70),
                rating("f2", "sb", -1, user="alice", at=T0 + 130),
            ]
        )
        return exporter

    def test_users(self, filled, open_reader):
        """users() totals each user, most recently seen first, then the turns with no user."""
        assert [
            UserSummary("bob", 1, 1, T0 + DAY + 0.5, 500.0, 0, 0, 0),
            UserSummary("alice", 3, 2, T0 + 130, 2000.0, 1, 1, 1),
            UserSummary(None, 1, 0, T0 + DAY + 1.5, 500.0, 0, 0, 0),
        ] == open_reader().users()

    def test_sessions(self, filled, open_reader):
        """sessions() lists sessions by last activity, with turns, ratings and errors."""
        assert [
            SessionSummary("sc", "bob", T0 + DAY, T0 + DAY + 0.5, 1, 0, 0),
            SessionSummary("sb", "alice", T0 + 120, T0 + 130, 1, 0, 1),
            SessionSummary("sa", "alice", T0, T0 + 70, 2, 1, 0, errors=1),
        ] == open_reader().sessions()

    def test_sessions_filter_and_limit(self, filled, open_reader):
        """sessions() filters by user and stops at the limit."""
        reader = open_reader()

        assert ["sb", "sa"] == [s.session_id for s in reader.sessions("alice")]
        assert ["sb"] == [s.session_id for s in reader.sessions("alice", limit=1)]
        assert [] == reader.sessions("nobody")

    def test_transcript_of_session(self, filled, open_reader):
        """transcript() of a session id gives its turns' messages in order."""
        kind, metadata, messages = open_reader().transcript("sa")

        assert "session" == kind
        assert ("alice", 2, 1) == (
            metadata["user_id"],
            metadata["turns"],
            metadata["rating_up"],
        )
        assert [*HELLO, ("user", "again"), ("assistant", "sure")] == texts(messages)

    def test_transcript_of_conversation(self, filled, open_reader):
        """transcript() of a conversation id gives that turn's messages."""
        kind, metadata, messages = open_reader().transcript("a2")

        assert "conversation" == kind
        assert ("sa", 3000, "RuntimeError: boom") == (
            metadata["session_id"],
            metadata["latency_ms"],
            metadata["error"],
        )
        assert [("user", "again"), ("assistant", "sure")] == texts(messages)

    def test_transcript_of_unknown_id(self, filled, open_reader):
        """transcript() of an unknown id is None."""
        assert open_reader().transcript("nope") is None

    def test_daily_stats(self, filled, open_reader):
        """daily_stats() totals per UTC day."""
        assert [
            DayStats("2023-11-14", 3, 1, 2, 1, 2000.0),
            DayStats("2023-11-15", 2, 1, 1, 0, 500.0),
        ] == open_reader().daily_stats()

    def test_conversations_since(self, filled, open_reader):
        """conversations(since) yields the turns started at or after since, in order."""
        assert ["a3", "b1", "x1"] == [
            c.id for c in open_reader().conversations(since=T0 + 120)
        ]

    def test_conversations_reads_every_page(self, exporter, open_reader):
        """conversations() pages through large stores without losing or repeating."""
        ids = [f"c{i:04d}" for i in range(1_234)]
        # Equal start times force the (started_at, n) tie-break across pages.
        exporter.export([turn(i, at=T0 + (n // 600)) for n, i in enumerate(ids)])

        stored = list(open_reader().conversations())

        assert ids == [c.id for c in stored]
        assert all(list(HELLO) == texts(c.messages) for c in stored)

    def test_session_messages_through_the_writer(self, filled):
        """The exporter serves a session's transcript through its own connection."""
        assert [*HELLO, ("user", "again"), ("assistant", "sure")] == texts(
            filled.session_messages("sa")
        )
        assert [] == filled.session_messages("nope")

    def test_reader_sees_later_commits(self, exporter, open_reader):
        """An open reader sees what writers commit after it opened."""
        exporter.export([turn("c1")])
        reader = open_reader()

        exporter.export([turn("c2", at=T0 + 1)])

        assert ["c1", "c2"] == [c.id for c in reader.conversations()]


class TestReaderErrors:
    def test_missing_file(self, tmp_path):
        """A missing file raises FileNotFoundError naming the path."""
        path = tmp_path / "nope.db"

        with pytest.raises(FileNotFoundError, match="no context_trace database at"):
            SQLiteReader(path)
        assert not path.exists()

    def test_garbage_file(self, tmp_path):
        """A file that is not SQLite raises ValueError."""
        path = tmp_path / "garbage.db"
        path.write_bytes(b"\x00garbage\xff" * 500)

        with pytest.raises(ValueError, match="is not a context_trace database"):
            SQLiteReader(path)

    def test_other_sqlite_database(self, tmp_path):
        """A SQLite file of another application raises ValueError."""
        path = tmp_path / "other.db"
        with raw(path) as conn:
            conn.execute("CREATE TABLE things (x)")

        with pytest.raises(ValueError, match="not a context_trace database"):
            SQLiteReader(path)

    def test_damaged_store(self, exporter, db):
        """A store whose pages were overwritten raises ValueError when read."""
        exporter.export([turn(f"c{i}", at=T0 + i) for i in range(200)])
        exporter.shutdown()
        data = bytearray(db.read_bytes())
        page = 4096
        data[page:] = b"\xa5" * (len(data) - page)  # keep page 1: the schema
        db.write_bytes(bytes(data))

        with pytest.raises(ValueError, match=re.escape(str(db))), SQLiteReader(db) as r:
            r.daily_stats()

    def test_reader_never_creates_a_store(self, tmp_path):
        """Opening a reader on an empty file reports it and leaves it empty."""
        path = tmp_path / "empty.db"
        path.touch()

        with pytest.raises(ValueError, match="not a context_trace database"):
            SQLiteReader(path)
        assert 0 == path.stat().st_size


class TestBrokenStore:
    def test_corrupt_file(self, tmp_path, caplog):
        """A corrupt file fails every export with one ERROR line and no exception."""
        caplog.set_level(logging.DEBUG, logger="context_trace")
        path = tmp_path / "corrupt.db"
        path.write_bytes(b"\x00garbage\xff" * 1000)
        store = SQLiteExporter(path)

        results = [store.export([turn(f"c{i}"), turn(f"d{i}")]) for i in range(3)]
        with pytest.raises(ValueError, match="file is not a database"):
            store.check()
        store.shutdown()

        assert [ExportResult.failure(2)] * 3 == results
        assert [
            f"context_trace: cannot use SQLite store at {path}: file is not a database"
        ] == errors_logged(caplog)

    def test_unwritable_path(self, tmp_path, caplog):
        """A path under a regular file fails exports with one ERROR line naming it."""
        caplog.set_level(logging.DEBUG, logger="context_trace")
        blocker = tmp_path / "file"
        blocker.write_text("x")
        path = blocker / "store.db"
        store = SQLiteExporter(path)

        results = [store.export([turn(f"c{i}")]) for i in range(3)]
        with pytest.raises(OSError, match="cannot create directory"):
            store.check()
        store.shutdown()

        assert [ExportResult.failure(1)] * 3 == results
        (line,) = errors_logged(caplog)
        assert line.startswith(f"context_trace: cannot use SQLite store at {path}: ")

    def test_recovers_once_the_path_works(self, tmp_path):
        """Export retries opening, so fixing the path makes the next batch succeed."""
        blocker = tmp_path / "dir"
        blocker.write_text("x")
        store = SQLiteExporter(blocker / "store.db")

        failed = store.export([turn("c1")])
        blocker.unlink()
        stored = store.export([turn("c2")])
        store.shutdown()

        assert (ExportResult.failure(1), ExportResult.success(1)) == (failed, stored)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"outbox_max": 0}, "outbox_max must be at least 1, got 0"),
            ({"busy_timeout": -1.0}, "busy_timeout must be >= 0, got -1.0"),
        ],
    )
    def test_bad_arguments(self, db, kwargs, message):
        """Invalid arguments are rejected when the exporter is created."""
        with pytest.raises(ValueError, match=message):
            SQLiteExporter(db, **kwargs)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name in LOGGERS and r.levelno == logging.WARNING
    ]


class TestDeletedStore:
    def test_a_deleted_file_is_recreated_with_one_warning(self, db, caplog):
        """Turns written after the file is deleted land in a recreated store, not nowhere."""
        caplog.set_level(logging.DEBUG, logger="context_trace")
        store = SQLiteExporter(db)
        before = store.export([turn("before-1"), turn("before-2")])
        db.unlink()

        after = [store.export([turn(f"after-{i}", at=T0 + i)]) for i in range(3)]
        with SQLiteReader(db) as reader:
            stored = [c.id for c in reader.conversations()]
        store.shutdown()

        assert ExportResult.success(2) == before
        assert [ExportResult.success(1)] * 3 == after
        assert ["after-0", "after-1", "after-2"] == stored
        assert [
            f"context_trace: the SQLite store at {db} was deleted or replaced while"
            " in use; reopening the path (a deleted store is created again, empty)"
        ] == warnings_logged(caplog)

    def test_outbox_rows_claimed_from_the_deleted_file_stay_there(self, db, caplog):
        """Finishing a claim from the deleted file never touches the new file's rows."""
        caplog.set_level(logging.DEBUG, logger="context_trace")
        store = SQLiteExporter(db, keep_local=False)
        store.outbox_put([turn("old-1"), turn("old-2")])
        ((old_id, _),) = store.outbox_claim(1)
        db.unlink()

        store.outbox_put([turn("new-1")])  # in the new file, numbered from 1 again
        store.outbox_done([old_id])  # the delivery claimed before the deletion ends
        pending = [record.id for _, record in store.outbox_claim(10)]
        store.shutdown()

        assert ["new-1"] == pending
        assert 1 == scalar(db, "SELECT count(*) FROM outbox")
        (warning,) = warnings_logged(caplog)
        assert warning.endswith("; 2 undelivered outbox records in it are lost")

    def test_a_replaced_file_is_reopened(self, db, tmp_path):
        """A store moved into place (a restored copy) gets the later turns, intact."""
        store = SQLiteExporter(db)
        store.export([turn("old-1")])
        copy = tmp_path / "copy.db"
        other = SQLiteExporter(copy)
        other.export([turn("restored-1")])
        other.shutdown()
        os.replace(copy, db)

        store.export([turn("new-1", at=T0 + 1)])
        store.shutdown()
        with SQLiteReader(db) as reader:
            stored = [c.id for c in reader.conversations()]

        assert ["restored-1", "new-1"] == stored
        assert "ok" == scalar(db, "pragma integrity_check")


class TestProcesses:
    def test_two_processes_lose_nothing(self, db, open_reader):
        """Two processes writing 2,000 turns each at once store all 4,000."""
        writers = [
            subprocess.Popen(
                [sys.executable, str(WRITER_SCRIPT), str(db), name, "2000", "25"],
                stdin=subprocess.PIPE,
                text=True,
            )
            for name in ("one", "two")
        ]
        for writer in writers:  # start both together
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.close()
        codes = [writer.wait(timeout=120) for writer in writers]
        reader = open_reader()

        assert [0, 0] == codes
        assert 4_000 == len(list(reader.conversations()))
        assert 12_000 == sum(
            len(reader.session_messages(f"shared-{i}")) for i in range(5)
        )
        assert 4_000 == sum(s.turns for s in reader.sessions())

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_child_writes_after_fork(self, exporter, open_reader):
        """After fork the child opens its own connection; both processes can write."""
        exporter.export([turn("parent-1")])  # the parent's connection is open
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() in a multi-threaded process; this
            # test's child only runs the code under test and exits.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                result = exporter.export([turn("child-1", at=T0 + 1)])
                exporter.shutdown()
                code = 0 if result == ExportResult.success(1) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        after = exporter.export([turn("parent-2", at=T0 + 2)])

        assert 0 == os.waitstatus_to_exitcode(status)
        assert ExportResult.success(1) == after
        assert ["parent-1", "child-1", "parent-2"] == [
            c.id for c in open_reader().conversations()
        ]


class TestOutbox:
    def test_put_claim_done(self, exporter):
        """Claimed rows come back oldest first as the original records; done deletes."""
        batch = [turn("c1"), rating("f1", "s1", 1), turn("c2", session="s1")]
        exporter.outbox_put(batch)

        claimed = exporter.outbox_claim(2)
        counts = exporter.outbox_counts()
        exporter.outbox_done([row_id for row_id, _ in claimed])

        # The rating is queued as stored: with the turn it rates.
        assert [batch[0], replace(batch[1], conversation_id="c2")] == [
            record for _, record in claimed
        ]
        assert {"pending": 1, "leased": 2, "dropped": 0, "failed": 0} == counts
        assert {"pending": 1, "leased": 0, "dropped": 0, "failed": 0} == (
            exporter.outbox_counts()
        )

    def test_unencodable_text_is_queued_replaced(self, exporter, db):
        """The outbox, too, queues a record with a lone surrogate replaced by '?'."""
        exporter.outbox_put([turn("c1", metadata={"k": "\udfff"})])

        ((_, record),) = exporter.outbox_claim(1)

        assert {"k": "?"} == record.metadata
        assert 1 == scalar(db, "SELECT count(*) FROM conversations")

    def test_keep_local_stores_report_rows(self, exporter, db):
        """With keep_local the queued records also land in the report tables."""
        exporter.outbox_put([turn("c1", session="s1"), rating("f1", "s1", 1)])

        assert 1 == scalar(db, "SELECT count(*) FROM conversations")
        assert 1 == scalar(db, "SELECT count(*) FROM feedback")

    def test_keep_local_queues_no_refused_or_outdated_rating(self, exporter, db):
        """With keep_local, a rating the store refuses or has a newer one for is not queued."""
        exporter.outbox_put(
            [turn("c1", session="s1"), rating("f2", "s1", -1, at=T0 + 62)]
        )
        exporter.outbox_claim(10)

        refused = exporter.outbox_put(
            [rating("f1", "s1", 1, at=T0 + 61), rating("f3", "s9", 1)]
        )
        with raw(db) as conn:
            stored = conn.execute("SELECT id, rating FROM feedback").fetchall()

        assert (1, []) == (refused, exporter.outbox_claim(10))
        assert [("f2", -1)] == stored

    def test_without_keep_local_only_the_outbox(self, db):
        """Without keep_local only the outbox holds the records."""
        store = SQLiteExporter(db, keep_local=False)

        store.outbox_put([turn("c1")])
        store.shutdown()

        assert 0 == scalar(db, "SELECT count(*) FROM conversations")
        assert 1 == scalar(db, "SELECT count(*) FROM outbox")

    def test_release_backs_off(self, exporter, db):
        """Released rows wait retry_after seconds; each claim counts an attempt."""
        exporter.outbox_put([turn("c1")])
        ((row_id, _),) = exporter.outbox_claim(10)

        exporter.outbox_release([row_id], retry_after=60.0)
        during_backoff = exporter.outbox_claim(10)
        counts = exporter.outbox_counts()
        exporter.outbox_release([row_id], retry_after=0.0)
        again = exporter.outbox_claim(10)

        assert [] == during_backoff
        assert {"pending": 1, "leased": 0, "dropped": 0, "failed": 0} == counts
        assert [row_id] == [r for r, _ in again]
        assert 2 == scalar(db, "SELECT attempts FROM outbox")

    def test_backoff_does_not_block_newer_rows(self, exporter):
        """Rows waiting out a backoff are skipped; newer due rows are claimed."""
        exporter.outbox_put([turn("c1")])
        exporter.outbox_release([r for r, _ in exporter.outbox_claim(1)], 60.0)
        exporter.outbox_put([turn("c2")])

        claimed = exporter.outbox_claim(10)

        assert ["c2"] == [record.id for _, record in claimed]

    def test_fail_deletes_and_counts(self, exporter):
        """A permanently failed row is deleted and counted."""
        exporter.outbox_put([turn("c1"), turn("c2")])
        claimed = exporter.outbox_claim(1)

        exporter.outbox_fail([row_id for row_id, _ in claimed])

        assert {"pending": 1, "leased": 0, "dropped": 0, "failed": 1} == (
            exporter.outbox_counts()
        )

    def test_lease_prevents_double_claim(self, db):
        """While one process holds the lease, another claims nothing."""
        one, two = SQLiteExporter(db), SQLiteExporter(db)
        try:
            one.outbox_put([turn("c1"), turn("c2")])
            first = one.outbox_claim(10)
            second = two.outbox_claim(10)
        finally:
            one.shutdown()
            two.shutdown()

        assert (2, []) == (len(first), second)

    def test_expired_lease_is_claimed_again(self, db):
        """A row whose holder let the lease expire is claimable by another process."""
        one, two = SQLiteExporter(db), SQLiteExporter(db)
        try:
            one.outbox_put([turn("c1")])
            first = one.outbox_claim(10, lease_seconds=0.0)
            second = two.outbox_claim(10, lease_seconds=60.0)
            # The first holder's late release must not cut the new lease short.
            one.outbox_release([row_id for row_id, _ in first], retry_after=0.0)
            third = SQLiteExporter(db)
            stolen = third.outbox_claim(10)
            third.shutdown()
        finally:
            one.shutdown()
            two.shutdown()

        assert [r for r, _ in first] == [r for r, _ in second]
        assert [] == stolen

    def test_bound_drops_oldest(self, db, caplog):
        """Past outbox_max pending rows the oldest are dropped, counted, warned once."""
        caplog.set_level(logging.DEBUG, logger="context_trace")
        store = SQLiteExporter(db, outbox_max=5)
        try:
            store.outbox_put([turn(f"c{i}") for i in range(8)])
            store.outbox_put([turn("c8")])
            kept = [record.id for _, record in store.outbox_claim(100)]
            counts = store.outbox_counts()
        finally:
            store.shutdown()
        warnings_logged = [
            r
            for r in caplog.records
            if r.name in LOGGERS and r.levelno == logging.WARNING
        ]

        assert ["c4", "c5", "c6", "c7", "c8"] == kept
        assert {"pending": 0, "leased": 5, "dropped": 4, "failed": 0} == counts
        assert 1 == len(warnings_logged)

    def test_leased_rows_are_not_dropped(self, db):
        """Rows being delivered are never dropped by the bound."""
        store = SQLiteExporter(db, outbox_max=2)
        try:
            store.outbox_put([turn("c1"), turn("c2")])
            leased = store.outbox_claim(2)
            store.outbox_put([turn("c3"), turn("c4"), turn("c5")])
            counts = store.outbox_counts()
        finally:
            store.shutdown()

        assert 2 == len(leased)
        assert {"pending": 2, "leased": 2, "dropped": 1, "failed": 0} == counts

    def test_rows_survive_reopening(self, db):
        """Undelivered rows are claimed by a new process after the old one stopped."""
        batch = [turn("c1", session="s1", metadata={"k": "v"}), rating("f1", "s1", -1)]
        old = SQLiteExporter(db)
        old.outbox_put(batch)
        old.outbox_claim(1, lease_seconds=0.0)  # crashed mid-delivery
        old.shutdown()

        new = SQLiteExporter(db)
        claimed = new.outbox_claim(10)
        new.shutdown()

        assert [batch[0], replace(batch[1], conversation_id="c1")] == [
            record for _, record in claimed
        ]

    def test_undecodable_row_is_failed(self, exporter, db):
        """A row whose payload cannot be decoded is deleted and counted as failed."""
        exporter.outbox_put([turn("c1")])
        with raw(db) as conn:
            conn.execute("UPDATE outbox SET payload = '{broken'")

        claimed = exporter.outbox_claim(10)

        assert [] == claimed
        assert {"pending": 0, "leased": 0, "dropped": 0, "failed": 1} == (
            exporter.outbox_counts()
        )

    def test_reader_counts(self, exporter, open_reader):
        """The reader reports the same outbox counts."""
        exporter.outbox_put([turn("c1"), turn("c2")])
        exporter.outbox_claim(1)

        assert {"pending": 1, "leased": 1, "dropped": 0, "failed": 0} == (
            open_reader().outbox_counts()
        )

    def test_after_shutdown_raises(self, exporter):
        """Outbox calls after shutdown raise RuntimeError."""
        exporter.shutdown()

        with pytest.raises(RuntimeError, match="shut down"):
            exporter.outbox_put([turn("c1")])

    def test_broken_store_raises(self, tmp_path):
        """Outbox calls on an unusable file raise the error check() raises."""
        path = tmp_path / "corrupt.db"
        path.write_bytes(b"not sqlite" * 100)
        store = SQLiteExporter(path)

        with pytest.raises(ValueError, match="file is not a database"):
            store.outbox_put([turn("c1")])
        store.shutdown()


class TestRecordJson:
    def test_conversation_round_trip(self):
        """A conversation survives JSON exactly, tool fields and metadata included."""
        conversation = Conversation(
            id="c1",
            user_id=None,
            session_id="s1",
            started_at=T0 + 0.1,
            ended_at=T0 + 0.30000000000000004,
            messages=(
                Message("user", 'ünïcödé \u2028 "quoted"'),
                Message("tool", "out", name="calc", tool_input='{"x": 1}'),
            ),
            metadata={"model": "m", "tags": "a,b"},
            error=None,
        )

        assert conversation == record_from_json(record_to_json(conversation))

    def test_feedback_round_trip(self):
        """Feedback survives JSON exactly."""
        feedback = Feedback(
            "f1", "s1", "u1", -1, conversation_id=None, created_at=T0 + 0.7
        )

        assert feedback == record_from_json(record_to_json(feedback))

    @pytest.mark.parametrize(
        "text",
        [
            "{broken",
            "[]",
            '{"type": "other"}',
            '{"type": "feedback", "id": "f1"}',
            '{"type": "conversation", "id": 1, "user_id": null, "session_id": null,'
            ' "started_at": 0, "ended_at": 0, "messages": [], "metadata": {},'
            ' "error": null}',
            '{"type": "conversation", "id": "c", "user_id": null, "session_id": null,'
            ' "started_at": 0, "ended_at": 0, "messages": [["robot", "x", null, null]],'
            ' "metadata": {}, "error": null}',
        ],
    )
    def test_invalid_json(self, text):
        """Text that is not a serialised record raises ValueError."""
        with pytest.raises(ValueError, match="not a serialised context_trace record"):
            record_from_json(text)

    def test_not_a_record(self):
        """Serialising something else raises TypeError."""
        with pytest.raises(TypeError, match="not a context_trace record: str"):
            record_to_json("nope")  # type: ignore[arg-type]


# Rows as the store writes them: message lists and str -> str metadata, with
# text that JSON must escape (quotes, backslashes, control characters) or keep
# as it is (non-ASCII, U+2028), and the numbers, booleans and nulls of a record.
STORE_VALUES = [
    [["user", 'ünïcödé \u2028 "quoted" \\ \x00\x1f\x7f\t\n', None, None]],
    [["tool", "out", "calc", '{"x": 1}', True], ["assistant", "", None, None]],
    {"plan": "pro", "ключ": "значение", "emoji": "\U0001f600"},
    [12345678901234567, -3, 0, False, None],
    [],
    {},
]
STDLIB = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class TestStoreJson:
    @pytest.mark.parametrize("value", STORE_VALUES)
    def test_text_is_the_standard_librarys(self, value):
        """The store's JSON text is what the standard library writes, and reads back equal."""
        text = codec.encode(value)

        assert STDLIB.encode(value) == text
        assert value == codec.decode(text)

    @pytest.mark.parametrize("value", STORE_VALUES)
    def test_same_text_without_orjson(self, value, monkeypatch):
        """Without orjson installed, the store writes and reads the same text."""
        with_orjson = codec.encode(value)
        monkeypatch.setattr(codec, "_orjson", None)

        assert with_orjson == codec.encode(value)
        assert value == codec.decode(with_orjson)

    def test_floats_read_back_exactly(self):
        """Floats read back exactly (their text may differ in exponent form only)."""
        value = [T0 + 0.30000000000000004, 0.1, 1e-7, -2.5e300]

        assert value == codec.decode(codec.encode(value))
        assert value == json.loads(codec.encode(value))

    @pytest.mark.parametrize("value", [["lone \ud800 surrogate"], [2**70]])
    def test_what_orjson_refuses_is_written_as_before(self, value):
        """A lone surrogate or a huge integer is encoded by the standard library."""
        assert STDLIB.encode(value) == codec.encode(value)

    def test_text_orjson_refuses_is_read_as_before(self):
        """JSON orjson refuses (a lone surrogate escape) is read by the standard library."""
        assert ["\ud800"] == codec.decode('["\\ud800"]')

    def test_messages_column_round_trip(self):
        """A turn's messages column reads back as the same messages, a failed tool included."""
        messages = [
            Message("system", "Be brief."),
            Message("user", "ünïcödé \u2028"),
            Message("tool", "boom", name="calc", tool_input='{"x": 1}', error=True),
            Message("assistant", "done"),
        ]
        text = codec.messages_json(messages)

        assert messages == codec.messages_from_json(text)
        assert [list(codec.message_row(m)) for m in messages] == json.loads(text)
