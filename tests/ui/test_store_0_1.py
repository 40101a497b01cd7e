"""The dashboard over a store file written by context_trace 0.1.0, before and after a writer migrates it."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._store.schema import SCHEMA_VERSION

from .conftest import Server, checksum, turn

FILE_0_1 = Path(__file__).parents[1] / "exporters" / "data" / "store_0_1.sqlite"


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def _users(server: Server) -> dict[str | None, int]:
    body = server.api("/api/users?sort=user&order=asc")
    return {row["user_id"]: row["conversations"] for row in body["items"]}


def test_dashboard_reads_a_0_1_file_as_it_is_and_after_migration(tmp_path: Path):
    """The 0.1.0 file is served read-only, then migrated by a writer, and served again."""
    db = tmp_path / "store.sqlite"
    shutil.copyfile(FILE_0_1, db)
    before = checksum(db)

    server = Server(db)
    try:
        users_0_1 = _users(server)
        session = server.api("/api/session?id=s1")
    finally:
        code, _ = server.stop()

    assert (0, before, 1) == (code, checksum(db), _version(db))
    assert {"alice": 2, "bob": 2} == users_0_1
    assert [
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "weather?"),
        ("tool", "sunny"),
        ("assistant", "sunny"),
    ] == [(m["role"], m["content"]) for t in session["turns"] for m in t["messages"]]

    writer = SQLiteExporter(str(db))
    result = writer.export([turn("after-migration", "carol", None, 60, 100)])
    writer.shutdown()
    assert (1, SCHEMA_VERSION) == (result.exported, _version(db))

    server = Server(db)
    try:
        users_now = _users(server)
    finally:
        server.stop()

    assert {"alice": 2, "bob": 2, "carol": 1} == users_now
