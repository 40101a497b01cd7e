"""
The overview's last 24 hours from per-hour sums in the dashboard's sidecar.

``range=24h`` starts at "now" less a day, mid-hour and mid-day, and shows exact
percentiles. The sidecar keeps, per UTC hour (epoch seconds // 3600), the
turns, errors, tool errors and tokens (``uh_hour``), each latency in whole ms
with its count (``uh_latency``: exact percentiles) and the turns of each user
(``uh_user_hour``: active users per day, top users). A 24-hour overview reads
the whole hours from these and only the turns of its first, partial hour from
the store: a few thousand small rows instead of a day of turns.

Only the hours of the last :data:`KEEP_HOURS` before the newest turn are kept
(filled from the store the first time, then a refresh chunk at a time), so the
tables stay the size of two days of turns; ``uh_meta.first_hour`` says from
which hour they are complete, and an overview from before it reads the store.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from context_trace._store.codec import tool_error_sql

__all__ = ["KEEP_HOURS", "TABLES", "hour_rows", "index_hours"]

#: Hours kept before the newest turn's.
KEEP_HOURS = 48
TABLES = ("uh_meta", "uh_hour", "uh_latency", "uh_user_hour")

_SCHEMA = (
    "CREATE TABLE uh_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    """
    CREATE TABLE uh_hour (
        hour INTEGER PRIMARY KEY,
        conversations INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        tool_errors INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE uh_latency (
        hour INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (hour, latency_ms)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE uh_user_hour (
        hour INTEGER NOT NULL,
        user_key TEXT NOT NULL,
        conversations INTEGER NOT NULL,
        PRIMARY KEY (hour, user_key)
    ) WITHOUT ROWID
    """,
)


def _apply(source: str) -> tuple[str, ...]:
    """Statements adding *source*'s turns (hour, user_key, latency_ms, failed,
    tool_failed, prompt_tokens, completion_tokens) to the sums."""
    return (
        "INSERT INTO uh_hour (hour, conversations, errors, tool_errors, prompt_tokens,"
        " completion_tokens) SELECT hour, count(*), sum(failed), sum(tool_failed),"
        f" sum(prompt_tokens), sum(completion_tokens) FROM ({source}) WHERE true"
        " GROUP BY hour ON CONFLICT (hour) DO UPDATE SET"
        " conversations = conversations + excluded.conversations,"
        " errors = errors + excluded.errors,"
        " tool_errors = tool_errors + excluded.tool_errors,"
        " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
        " completion_tokens = completion_tokens + excluded.completion_tokens",
        "INSERT INTO uh_latency (hour, latency_ms, n) SELECT hour, latency_ms,"
        f" count(*) FROM ({source}) WHERE true GROUP BY hour, latency_ms"
        " ON CONFLICT (hour, latency_ms) DO UPDATE SET n = n + excluded.n",
        "INSERT INTO uh_user_hour (hour, user_key, conversations) SELECT hour,"
        f" user_key, count(*) FROM ({source}) WHERE true GROUP BY hour, user_key"
        " ON CONFLICT (hour, user_key) DO UPDATE SET"
        " conversations = conversations + excluded.conversations",
    )


def index_hours(conn: sqlite3.Connection, start: int, end: int) -> None:
    """
    Add the store's turns numbered (*start*, *end*] to the per-hour sums.

    *conn* is the sidecar inside a refresh, the store attached as ``store``
    and the turns of that chunk in ``temp.chunk`` (see ``ui_index_sql``). A
    sidecar without the tables gets them, filled from the store's last
    :data:`KEEP_HOURS` hours up to *end*.
    """
    newest = conn.execute(
        "SELECT CAST(max(started_at) / 3600 AS INTEGER) FROM store.conversations"
    ).fetchone()[0]
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE name = 'uh_meta'"
    ).fetchone():
        for table in TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in _SCHEMA:
            conn.execute(statement)
        first = 0 if newest is None else newest - KEEP_HOURS
        conn.execute("INSERT INTO uh_meta VALUES ('first_hour', ?)", (first,))
        source = (
            "SELECT CAST(started_at / 3600 AS INTEGER) AS hour,"
            " coalesce(user_id, '') AS user_key, latency_ms, error IS NOT NULL"
            f" AS failed, {tool_error_sql()} AS tool_failed,"
            " coalesce(prompt_tokens, 0) AS prompt_tokens,"
            " coalesce(completion_tokens, 0) AS completion_tokens"
            # Through the store's started_at index: the last hours only.
            " FROM store.conversations WHERE started_at >= ? * 3600 AND n <= ?"
        )
        for statement in _apply(source):
            conn.execute(statement.replace("?", str(int(first)), 1), (end,))
        return
    if end > start:
        for statement in _apply(
            "SELECT CAST(started_at / 3600 AS INTEGER) AS hour, user_key, latency_ms,"
            " failed, tool_failed, prompt_tokens, completion_tokens FROM temp.chunk"
        ):
            conn.execute(statement)
    if newest is not None:
        first = newest - KEEP_HOURS
        old = conn.execute(
            "SELECT value FROM uh_meta WHERE key = 'first_hour'"
        ).fetchone()[0]
        if first > old:
            for table in ("uh_hour", "uh_latency", "uh_user_hour"):
                conn.execute(f"DELETE FROM {table} WHERE hour < ?", (first,))
            conn.execute(
                "UPDATE uh_meta SET value = ? WHERE key = 'first_hour'", (first,)
            )


def hour_rows(
    conn: sqlite3.Connection, since: float
) -> tuple[list[Any], list[Any], list[Any]] | None:
    """
    The sums of the whole hours from *since* (rounded up to the hour):
    (``[hour, conversations, errors, tool_errors, prompt_tokens,
    completion_tokens]``, ``[latency_ms, n]``, ``[hour, user_key, n]``), or
    None when the sidecar does not hold them (then read the store). *conn*
    has the sidecar attached as ``ui``.
    """
    if not conn.execute(
        "SELECT 1 FROM ui.sqlite_master WHERE name = 'uh_meta'"
    ).fetchone():
        return None
    first = int(-(-since // 3600))
    kept = conn.execute("SELECT value FROM ui.uh_meta WHERE key = 'first_hour'")
    if first < int(kept.fetchone()[0]):
        return None
    return (
        conn.execute(
            "SELECT hour, conversations, errors, tool_errors, prompt_tokens,"
            " completion_tokens FROM ui.uh_hour WHERE hour >= ?",
            (first,),
        ).fetchall(),
        conn.execute(
            "SELECT latency_ms, sum(n) FROM ui.uh_latency WHERE hour >= ?"
            " GROUP BY latency_ms",
            (first,),
        ).fetchall(),
        conn.execute(
            "SELECT hour, user_key, conversations FROM ui.uh_user_hour WHERE hour >= ?",
            (first,),
        ).fetchall(),
    )
