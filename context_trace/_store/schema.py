"""The store's schema: its DDL, version, application id and migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Literal

SCHEMA_VERSION = 3
# Written to the header's application_id field ("ctrc"): tells our files apart
# from other SQLite databases without reading any table.
APPLICATION_ID = 0x63747263

REQUIRED_TABLES = frozenset(
    {
        "users",
        "sessions",
        "conversations",
        "feedback",
        "outbox",
        "meta",
    }
)

# Schema version 1.
#
# Write speed shapes it. A b-tree keyed by a random value (a uuid id) gets about
# one dirty page per inserted row once it is large, and every dirty page is one
# WAL frame at commit (measured: the frames written per batch set the insert
# rate). Keys that grow with time dirty only the tail. So:
# - conversations and sessions get an INTEGER PRIMARY KEY ``n`` (insertion
#   order, stable under VACUUM) next to their UNIQUE text ``id``; the text ids
#   are the only random b-trees a turn touches, besides ``users``;
# - a turn's messages are one JSON column of its row, ``[[role, content, name,
#   tool_input], ...]``: one row per turn instead of one per message cut the
#   insert cost by a fifth. The ``messages`` view lists them as rows
#   (conversation_id, session_id, seq, role, content, name, tool_input) for ad
#   hoc SQL; it needs SQLite's JSON functions (built in since 3.38, compiled in
#   by most older builds). context_trace itself decodes the JSON in Python;
# - a session's turns are indexed by the session's number, not its text id:
#   active sessions are recent, so their entries sit near the index's tail;
# - there are no per-user indexes on conversations or sessions: users() and a
#   user's sessions() scan, which is fine for the CLI and saves a random page
#   per turn on every insert;
# - partial indexes skip rows that can never match (no session).
_SCHEMA_V1 = (
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE sessions (
        n INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        user_id TEXT,
        started_at REAL NOT NULL,
        last_at REAL NOT NULL,
        rating_up INTEGER NOT NULL DEFAULT 0,
        rating_down INTEGER NOT NULL DEFAULT 0,
        metadata TEXT NOT NULL DEFAULT '{}'
    )
    """,
    """
    CREATE TABLE conversations (
        n INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        user_id TEXT,
        session_id TEXT,
        session_n INTEGER,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        latency_ms INTEGER NOT NULL,
        model TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        total_tokens INTEGER,
        error TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        messages_json TEXT NOT NULL DEFAULT '[]'
    )
    """,
    """
    CREATE VIEW messages AS
    SELECT c.id AS conversation_id, c.session_id AS session_id,
        CAST(m.key AS INTEGER) AS seq,
        json_extract(m.value, '$[0]') AS role,
        json_extract(m.value, '$[1]') AS content,
        json_extract(m.value, '$[2]') AS name,
        json_extract(m.value, '$[3]') AS tool_input
    FROM conversations c, json_each(c.messages_json) m
    """,
    """
    CREATE TABLE feedback (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        user_id TEXT,
        conversation_id TEXT,
        rating INTEGER NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
    # AUTOINCREMENT: a row id is never reused, so a late outbox_done() from a
    # process whose lease expired cannot delete a newer row that got its id.
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        record_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_until REAL NOT NULL DEFAULT 0
    )
    """,
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO meta (key, value) VALUES ('dropped', 0), ('failed', 0)",
    # Per session: transcripts, turn counts, the seen-set loaded on insert. Its
    # entries are (session_n, n), so "turns of a session numbered above x" is a
    # range seek; transcripts sort a session's few turns by time in memory.
    "CREATE INDEX conversations_session ON conversations (session_n)"
    " WHERE session_n IS NOT NULL",
    "CREATE INDEX feedback_session ON feedback (session_id)",
    # The outbox bound counts and drops the oldest pending rows through the
    # first; claims find deliverable rows through the second, so rows waiting
    # out a backoff cost nothing to skip.
    "CREATE INDEX outbox_status ON outbox (status)",
    "CREATE INDEX outbox_due ON outbox (lease_until)",
    # By time: a day is a started_at range; export --since reads it in order.
    "CREATE INDEX conversations_started ON conversations (started_at)",
)


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1:
        conn.execute(statement)


# Migration hook: _MIGRATIONS[n] upgrades a store from version n - 1 to n. A
# future version adds its step here and bumps SCHEMA_VERSION; stores are upgraded
# in one transaction when a writer opens them.
def _add_lease_holders(conn: sqlite3.Connection) -> None:
    """
    v2: an outbox lease (and a backoff) names the process that set it.

    A lease whose holder has died is free at once (``holder.is_alive``), instead
    of parking the row until ``lease_until``. Rows of a v1 file have no holder:
    their leases run out as before.
    """
    conn.execute("ALTER TABLE outbox ADD COLUMN holder TEXT")
    conn.execute(
        "CREATE INDEX outbox_holder ON outbox (holder) WHERE holder IS NOT NULL"
    )


def _add_destinations(conn: sqlite3.Connection) -> None:
    """
    v3: each outbox row names the destination it is for (the Context API or
    OTLP).

    One outbox serves several senders (the Context API, an OTLP backend): a
    record queued for two of them is two rows, claimed, retried and counted per
    destination. Rows of a v2 file were all for the Context API. Claims find a
    destination's due rows through ``outbox_destination_due`` (which replaces
    ``outbox_due``).
    """
    conn.execute(
        "ALTER TABLE outbox ADD COLUMN destination TEXT NOT NULL DEFAULT 'context'"
    )
    conn.execute("DROP INDEX IF EXISTS outbox_due")
    conn.execute(
        "CREATE INDEX outbox_destination_due ON outbox (destination, lease_until)"
    )


_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _create_v1,
    2: _add_lease_holders,
    3: _add_destinations,
}


def pragma_int(
    conn: sqlite3.Connection, name: Literal["application_id", "user_version"]
) -> int:
    row = conn.execute(f"PRAGMA {name}").fetchone()
    return int(row[0])


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }


def is_current(conn: sqlite3.Connection) -> bool:
    """Whether the file is a context_trace store at this schema version already."""
    return (
        pragma_int(conn, "application_id") == APPLICATION_ID
        and pragma_int(conn, "user_version") == SCHEMA_VERSION
    )


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """
    Create or upgrade the schema; raise ValueError for a foreign or newer file.

    The caller holds a write transaction (see ``connection.open_writer``).
    """
    app_id = pragma_int(conn, "application_id")
    version = pragma_int(conn, "user_version")
    if app_id != APPLICATION_ID and (app_id != 0 or table_names(conn)):
        raise ValueError(
            f"cannot use SQLite store at {path}: it is a SQLite database but"
            " not a context_trace store"
        )
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"cannot use SQLite store at {path}: schema version {version} is"
            f" newer than this context_trace supports ({SCHEMA_VERSION});"
            " upgrade context_trace"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        _MIGRATIONS[target](conn)
    # PRAGMA takes no bound parameters; both values are int constants.
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
