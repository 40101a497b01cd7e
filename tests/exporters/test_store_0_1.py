"""A store file written by context_trace 0.1.0 is read as it is and migrated by a writer."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Message
from context_trace._store.models import UserSummary
from context_trace._store.reader import SQLiteReader
from context_trace._store.schema import APPLICATION_ID, SCHEMA_VERSION

from .data.write_store_0_1 import QUEUED, T0

FILE_0_1 = Path(__file__).with_name("data") / "store_0_1.sqlite"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A copy of the 0.1.0 file (the tests write to it)."""
    path = tmp_path / "store.sqlite"
    shutil.copyfile(FILE_0_1, path)
    return path


@pytest.fixture
def exporter(store: Path) -> Iterator[SQLiteExporter]:
    writer = SQLiteExporter(store)
    yield writer
    writer.shutdown()


def header(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        return int(app_id), int(version)
    finally:
        conn.close()


def schema(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT type, name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()


def texts(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in messages]


def test_a_migrated_0_1_file_matches_a_new_store(tmp_path: Path, store: Path) -> None:
    """Once a writer opens a 0.1.0 file, it has a new store's tables, indexes and header."""
    new = tmp_path / "new.sqlite"
    for path in (new, store):
        writer = SQLiteExporter(path)
        writer.check()
        writer.shutdown()

    assert (APPLICATION_ID, 1) == header(FILE_0_1)
    assert schema(new) == schema(store)
    assert (APPLICATION_ID, SCHEMA_VERSION) == header(store)


def test_reader_reads_0_1_file(store: Path) -> None:
    """The reader reports the users, transcripts and outbox a 0.1.0 writer stored."""
    with SQLiteReader(store) as reader:
        users = reader.users()
        transcript = reader.transcript("s1")
        counts = reader.outbox_counts()

    assert [
        UserSummary("bob", 2, 1, T0 + 86_400.25, 625.0, 0, 1, 1),
        UserSummary("alice", 2, 1, T0 + 12, 1250.0, 1, 0, 0),
    ] == users
    assert transcript is not None
    assert [
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "weather?"),
        ("tool", "sunny"),
        ("assistant", "sunny"),
    ] == texts(transcript.messages)
    assert {"pending": 2, "leased": 0, "dropped": 0, "failed": 0} == counts


def test_writer_continues_0_1_file(store: Path, exporter: SQLiteExporter) -> None:
    """A writer appends to a 0.1.0 session without its stored history, and delivers its outbox."""
    resent = Conversation(
        id="c4",
        user_id="alice",
        session_id="s1",
        started_at=T0 + 20,
        ended_at=T0 + 21,
        messages=(
            Message("user", "hi"),
            Message("assistant", "hello"),
            Message("user", "weather?"),
            Message("assistant", "sunny"),
            Message("user", "thanks"),
            Message("assistant", "welcome"),
        ),
    )
    result = exporter.export([resent])
    claimed = exporter.outbox_claim(10)
    exporter.outbox_done([row_id for row_id, _ in claimed])
    exporter.shutdown()

    with SQLiteReader(store) as reader:
        transcript = reader.transcript("c4")
        counts = reader.outbox_counts()
    assert 0 == result.failed
    assert list(QUEUED) == [record for _, record in claimed]
    assert transcript is not None
    assert [("user", "thanks"), ("assistant", "welcome")] == texts(transcript.messages)
    assert {"pending": 0, "leased": 0, "dropped": 0, "failed": 0} == counts
    assert (APPLICATION_ID, SCHEMA_VERSION) == header(store)
