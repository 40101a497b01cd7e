"""The writer's footprint: a connection sized for writing, session caches bounded in bytes."""

from __future__ import annotations

import gc
import sqlite3
import tracemalloc
import uuid
from pathlib import Path

from context_trace._attribution import _SessionSystems
from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Message
from context_trace._store.reader import SQLiteReader

T0 = 1_700_000_000.0
SESSIONS = 3_000
BATCH = 500


def _pragma(conn: sqlite3.Connection, name: str) -> int:
    return int(conn.execute(f"PRAGMA {name}").fetchone()[0])


def _turn(session: int, n: int) -> Conversation:
    """Turn *n* of a session; it re-sends the session's earlier turns as history."""
    messages: list[Message] = [Message("system", "You are helpful.")]
    for k in range(n + 1):
        messages.append(Message("user", f"s{session} question {k}"))
        messages.append(Message("assistant", f"s{session} answer {k}"))
    return Conversation(
        id=f"s{session}-t{n}",
        user_id=f"u{session % 50}",
        session_id=f"session-{session:05d}-{uuid.UUID(int=session).hex}",
        started_at=T0 + n,
        ended_at=T0 + n + 0.5,
        messages=tuple(messages),
    )


def _export_turn(exporter: SQLiteExporter, n: int) -> None:
    for start in range(0, SESSIONS, BATCH):
        batch = [_turn(s, n) for s in range(start, start + BATCH)]
        assert BATCH == exporter.export(batch).exported


class TestWriterConnection:
    def test_the_writer_caches_little_and_readers_keep_their_own_settings(
        self, tmp_path: Path
    ) -> None:
        """The writer's page cache is 512 KiB with mmap off; a reader gets 16 MiB."""
        db = tmp_path / "store.db"
        exporter = SQLiteExporter(db)
        exporter.export([_turn(0, 0)])
        try:
            with exporter.store._locked() as conn:
                writer = (_pragma(conn, "cache_size"), _pragma(conn, "mmap_size"))
            with SQLiteReader(db) as reader:
                read_cache = _pragma(reader._conn, "cache_size")
        finally:
            exporter.shutdown(5)

        assert (-512, 0) == writer
        assert -16 * 1024 == read_cache


class TestSessionCaches:
    def test_seen_sets_stay_within_their_byte_bound(self, tmp_path: Path) -> None:
        """3,000 sessions written twice keep the writer's caches under 256 KiB + SQL."""
        exporter = SQLiteExporter(tmp_path / "store.db")
        try:
            exporter.export([_turn(SESSIONS, 0)])  # schema, first statements
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                _export_turn(exporter, 0)
                _export_turn(exporter, 1)
                gc.collect()
                retained = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            cache = exporter.store._seen
        finally:
            exporter.shutdown(5)

        # The seen-sets' bound, plus the SQL text of the statements kept prepared.
        assert retained <= 256 * 1024 + 256 * 1024, retained
        assert 256 * 1024 == cache.max_bytes
        assert cache.nbytes <= cache.max_bytes

    def test_an_evicted_session_still_stores_no_history_twice(
        self, tmp_path: Path
    ) -> None:
        """A session dropped from the cache is read back: its transcript has no repeats."""
        db = tmp_path / "store.db"
        exporter = SQLiteExporter(db)
        try:
            _export_turn(exporter, 0)
            _export_turn(exporter, 1)
        finally:
            exporter.shutdown(5)

        with SQLiteReader(db) as reader:
            first = reader.session_messages(_turn(0, 0).session_id or "")
            last = reader.session_messages(_turn(SESSIONS - 1, 0).session_id or "")

        expected = [
            ("system", "You are helpful."),
            ("user", "s{} question 0"),
            ("assistant", "s{} answer 0"),
            ("user", "s{} question 1"),
            ("assistant", "s{} answer 1"),
        ]
        assert [(r, t.format(0)) for r, t in expected] == [
            (m.role, m.content) for m in first
        ]
        assert [(r, t.format(SESSIONS - 1)) for r, t in expected] == [
            (m.role, m.content) for m in last
        ]

    def test_system_prompts_stay_within_their_byte_bound(self) -> None:
        """20,000 sessions' system prompts are remembered in at most 256 KiB."""
        systems = _SessionSystems(10_000)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(20_000):
                systems.changed(f"session-{uuid.uuid4().hex}", "You are helpful.")
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

        assert retained <= 256 * 1024 * 1.1, retained
        assert systems.nbytes <= 256 * 1024


class TestStatementsPerBatch:
    def test_a_batch_reads_its_sessions_history_in_one_query(
        self, tmp_path: Path
    ) -> None:
        """A batch of new sessions reads their history in one query per 64 sessions.

        Every statement releases the GIL, which a busy app thread keeps for a
        switch interval (5 ms): one history query per session made a batch with
        100 new sessions take half a second on a loaded process.
        """
        exporter = SQLiteExporter(tmp_path / "store.db")
        try:
            exporter.export([_turn(SESSIONS, 0)])  # schema, first statements
            with exporter.store._locked() as conn:
                statements: list[str] = []
                conn.set_trace_callback(statements.append)
            reads = []
            for sessions in (10, 200):
                statements.clear()
                start = len(reads) * 1_000
                batch = [_turn(s, 0) for s in range(start, start + sessions)]
                assert sessions == exporter.export(batch).exported
                reads.append(sum("messages_json FROM" in sql for sql in statements))
        finally:
            exporter.shutdown(5)

        assert [1, 4] == reads  # 10 sessions: one read; 200: four
