"""The dashboard's sidecar index: the store's writer pays nothing, the index keeps up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from context_trace import cli
from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Feedback
from context_trace._store.schema import SCHEMA_VERSION
from context_trace._store.ui_index import UIIndex, default_index_path
from tests.failures import record_failures

from .conftest import NOW, Server, build_store, checksum, turn

_TABLES = (
    "ui_user_stats",
    "ui_day_stats",
    "ui_user_day",
    "ui_latency_hist",
    "ui_models",
    "ui_turns",
    "ui_sessions",
    "ui_feedback",
    "ui_segment_user",
    "ui_rated_segment",
)


def _dump(index: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every summary table's rows, and the FTS matches of a few words."""
    conn = sqlite3.connect(index)
    try:
        tables = {
            name: sorted(conn.execute(f"SELECT * FROM {name}").fetchall(), key=repr)
            for name in _TABLES
        }
        for word in ("order", "zebra", "brand", "hello", "late"):
            tables[f"fts:{word}"] = conn.execute(
                "SELECT rowid FROM conversations_fts WHERE conversations_fts MATCH ?"
                " ORDER BY rowid",
                (word,),
            ).fetchall()
        return tables
    finally:
        conn.close()


def _schema(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT type, name FROM sqlite_master ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()


def test_writer_creates_no_triggers_or_dashboard_tables(tmp_path: Path):
    """A store the writer creates has no triggers, no ui_* tables and no FTS index."""
    db = tmp_path / "traces.db"
    build_store(db)

    schema = _schema(db)
    assert [] == [name for kind, name in schema if kind == "trigger"]
    assert [] == [
        name for _, name in schema if name.startswith(("ui_", "conversations_fts"))
    ]
    assert (
        SCHEMA_VERSION
        == (sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0])
    )


def test_ui_leaves_the_store_schema_alone_and_writes_its_sidecar(tmp_path: Path):
    """context-trace ui serves a store without changing it; its index is a new file."""
    db = tmp_path / "traces.db"
    build_store(db)
    schema, digest = _schema(db), checksum(db)
    srv = Server(db)
    try:
        body = srv.api("/api/conversations?q=zebra")
    finally:
        srv.stop()

    assert ["c-n1"] == [c["conversation_id"] for c in body["items"]]
    assert (schema, digest) == (_schema(db), checksum(db))
    assert tmp_path / "traces.db.ui-index" == default_index_path(db)
    assert (tmp_path / "traces.db.ui-index").is_file()


def test_incremental_refresh_equals_a_full_build(tmp_path: Path):
    """Indexing in small chunks while turns and late ratings arrive gives a fresh build's tables."""
    db = tmp_path / "traces.db"
    build_store(db)
    index = UIIndex(db, tmp_path / "live.ui-index")
    calls = 0
    while not index.refresh(max_rows=4):
        calls += 1
    assert 69 // 4 <= calls

    writer = SQLiteExporter(db)
    assert (
        0
        == writer.export(
            [
                turn("late-1", "carol", "s-c", 5, 42, "brand new"),
                turn("late-2", "alice", "s-a1", 4, 43, "late follow-up"),
                # A session first seen with no user, then claimed by one.
                turn("late-3", None, "s-d", 3, 44, "late anonymous"),
            ]
        ).failed
    )
    assert (
        0 == writer.export([turn("late-4", "dave", "s-d", 2, 45, "late dave")]).failed
    )
    # Ratings after the turns: on an old session, and twice on the new one.
    rated = writer.export(
        [
            Feedback("f3", "s-a1", "alice", -1, None, NOW),
            Feedback("f4", "s-c", "carol", 1, None, NOW),
            Feedback("f4", "s-c", "carol", 1, None, NOW),  # re-delivered
            Feedback("f5", "s-x", "erin", 1, None, NOW),  # no such session
        ]
    )
    assert (0, 1) == (rated.failed, rated.rejected)
    while not index.refresh(max_rows=2):
        pass
    # carol changes her mind: the newer rating replaces the counted one.
    assert (
        0 == writer.export([Feedback("f6", "s-c", "carol", -1, None, NOW + 1)]).failed
    )
    writer.shutdown()
    while not index.refresh(max_rows=2):
        pass
    index.close()
    fresh = UIIndex(db, tmp_path / "fresh.ui-index")
    fresh.build()
    fresh.close()

    incremental = _dump(tmp_path / "live.ui-index")
    assert _dump(tmp_path / "fresh.ui-index") == incremental
    stats = {row[0]: row for row in incremental["ui_user_stats"]}
    # user_key, conversations, sessions, errors, latency_sum, tokens in/out, up, down
    assert ("alice", 5, 2, 1, 1043, 50, 25, 1, 1) == stats["alice"][:9]
    assert (1, 1, 0, 1) == (stats["carol"][1], stats["carol"][2], *stats["carol"][7:9])
    assert "erin" not in stats
    assert (1, 1) == (stats["dave"][1], stats["dave"][2])  # s-d moved to dave
    assert (4, 0) == (stats[""][1], stats[""][2])


def test_new_turns_and_ratings_appear_in_the_running_ui(tmp_path: Path):
    """Turns and ratings written after the ui started show in the API and in search."""
    db = tmp_path / "traces.db"
    build_store(db)
    srv = Server(db)
    writer = SQLiteExporter(db)
    try:
        before = srv.api("/api/overview?range=all")
        assert [] == srv.api("/api/conversations?q=quokka")["items"]
        assert (
            0
            == writer.export(
                [
                    turn("new-1", "carol", "s-c", 5, 42, "a quokka question"),
                    turn("new-2", "alice", "s-a1", 4, 43, "another quokka"),
                ]
            ).failed
        )
        assert (
            0
            == writer.export(
                [
                    Feedback(
                        "f9",
                        "s-a1",
                        "alice",
                        -1,
                        None,
                        turn("x", None, None, 1, 1).started_at,
                    )
                ]
            ).failed
        )
        overview = srv.api("/api/overview?range=all")
        found = srv.api("/api/conversations?q=quokka")
        carol = srv.api("/api/user?id=carol")
        alice_rows = srv.api("/api/users?q=alice")["items"]
    finally:
        srv.stop()
        writer.shutdown()

    assert (69, 1, 1) == (
        before["conversations"],
        before["rating_up"],
        before["rating_down"],
    )
    assert (71, 1, 2) == (
        overview["conversations"],
        overview["rating_up"],
        overview["rating_down"],
    )
    assert ["new-2", "new-1"] == [c["conversation_id"] for c in found["items"]]
    assert (1, 1) == (carol["user"]["conversations"], carol["user"]["sessions"])
    assert ["s-c"] == [s["session_id"] for s in carol["sessions"]["items"]]
    assert (5, 1, 1) == (
        alice_rows[0]["conversations"],
        alice_rows[0]["rating_up"],
        alice_rows[0]["rating_down"],
    )


def test_index_of_a_replaced_store_is_rebuilt(tmp_path: Path):
    """A sidecar left by another store under the same name is rebuilt, not reused."""
    db = tmp_path / "traces.db"
    build_store(db)
    with UIIndex(db) as index:
        index.build()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    writer = SQLiteExporter(db)
    assert 0 == writer.export([turn("other-1", "zoe", "s-z", 5, 7, "elsewhere")]).failed
    writer.shutdown()

    with UIIndex(db) as index:
        index.build()
    stats = _dump(default_index_path(db))["ui_user_stats"]

    assert ["zoe"] == [row[0] for row in stats]


def test_cli_still_reads_the_store(tmp_path: Path, capsys):
    """The CLI reads a store the ui has indexed, and the writer keeps adding to it."""
    db = tmp_path / "traces.db"
    build_store(db)
    with UIIndex(db) as index:
        index.build()
    writer = SQLiteExporter(db)
    assert (
        0 == writer.export([turn("new-1", "carol", "s-c", 5, 42, "brand new")]).failed
    )
    writer.shutdown()

    assert 0 == cli.main(["users", "--db", str(db), "--json"])
    assert '"carol"' in capsys.readouterr().out


def test_index_option_puts_the_sidecar_elsewhere(tmp_path: Path):
    """--index FILE keeps the dashboard's index there and nothing next to the store."""
    db = tmp_path / "store" / "traces.db"
    db.parent.mkdir()
    build_store(db)
    elsewhere = tmp_path / "cache" / "mine.ui-index"
    srv = Server(db, "--index", str(elsewhere))
    try:
        body = srv.api("/api/conversations?q=zebra")
    finally:
        srv.stop()

    assert ["c-n1"] == [c["conversation_id"] for c in body["items"]]
    assert elsewhere.is_file()
    assert [] == [p.name for p in db.parent.iterdir() if "ui-index" in p.name]


def test_an_index_of_the_previous_version_is_rebuilt(tmp_path: Path):
    """A sidecar written before tool errors were indexed (version 1) is rebuilt with them."""
    db = tmp_path / "traces.db"
    record_failures(db)
    with UIIndex(db) as index:
        index.build()
    # What 0.2's first dashboard left: the same tables without the tool_errors
    # columns, marked version 1.
    conn = sqlite3.connect(default_index_path(db))
    for table in ("ui_user_stats", "ui_day_stats"):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN tool_errors")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    srv = Server(db)
    try:
        overview = srv.api("/api/overview?range=all")
        users = srv.api("/api/users")
    finally:
        srv.stop()

    assert (2, 1) == (overview["errors"], overview["tool_errors"])
    assert [1] == [u["tool_errors"] for u in users["items"]]
