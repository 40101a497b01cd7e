"""
The overview's top users over 7 and 30 days, kept in the dashboard's sidecar.

``range=7d`` (``30d``) ranks the users by their turns from the range's first
UTC day on: today less 6 (29) days, whole days. Summing ``ui_user_day`` over
the range reads a row per user and day in it, which grows with the turns: a
store whose 30 days are busy has about a million. Instead the sidecar keeps,
for each of these spans, the first day it counts from (``uw_range``) and each
user's turns since that day (``uw_user``, indexed in rank order), so the top
ten is ten rows of an index:

- a refresh adds its chunk's turns on or after each span's first day;
- when the UTC day changes, the next refresh moves each span's first day on,
  subtracting the ``ui_user_day`` rows of the days that left (or counting the
  span again from ``ui_user_day`` after a gap of more than the span);
- a sidecar without the tables gets them, counted from ``ui_user_day``; so
  does one whose spans stop short of the turns indexed (an older version of
  the dashboard indexed turns into it).

So a span's rows are always ``sum(conversations)`` of ``ui_user_day`` per user
over ``day >= first_day``, the overview's own definition. A reader whose first
day is not one kept (another clock) sums ``ui_user_day`` itself.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import date, timedelta
from typing import Any

__all__ = ["SPANS", "TABLES", "first_days", "index_window", "top_users"]

#: The spans kept, in days (the overview's ``7d`` and ``30d``).
SPANS = (7, 30)
TABLES = ("uw_meta", "uw_range", "uw_user")
#: How many users the overview lists.
TOP = 10

_SCHEMA = (
    "CREATE TABLE uw_range (span INTEGER PRIMARY KEY, first_day TEXT NOT NULL)",
    # The last turn (conversations.n) the spans count.
    "CREATE TABLE uw_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    """
    CREATE TABLE uw_user (
        span INTEGER NOT NULL,
        user_key TEXT NOT NULL,
        conversations INTEGER NOT NULL,
        PRIMARY KEY (span, user_key)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX uw_user_rank ON uw_user (span, conversations DESC, user_key)",
)
# Adds sign * each user's turns of ui_user_day on days in [?2, ?3) to span ?1.
_ADD_DAYS = (
    "INSERT INTO uw_user (span, user_key, conversations)"
    " SELECT ?1, user_key, {sign} sum(conversations) FROM ui_user_day"
    " WHERE day >= ?2 AND day < ?3 GROUP BY user_key"
    " ON CONFLICT (span, user_key) DO UPDATE SET"
    " conversations = conversations + excluded.conversations"
)
# Later than any day: the open end of a span.
_NO_END = "9999-99-99"


def first_days(now: float) -> dict[int, str]:
    """Each span's first day (``YYYY-MM-DD``, UTC) at epoch seconds *now*."""
    today = date.fromisoformat(time.strftime("%Y-%m-%d", time.gmtime(now)))
    return {span: (today - timedelta(days=span - 1)).isoformat() for span in SPANS}


def _count(conn: sqlite3.Connection, span: int, first_day: str) -> None:
    """Count span *span* again, from *first_day* on."""
    conn.execute("DELETE FROM uw_user WHERE span = ?", (span,))
    conn.execute(_ADD_DAYS.format(sign=""), (span, first_day, _NO_END))
    conn.execute(
        "INSERT INTO uw_range (span, first_day) VALUES (?, ?) ON CONFLICT (span)"
        " DO UPDATE SET first_day = excluded.first_day",
        (span, first_day),
    )


def index_window(conn: sqlite3.Connection, start: int, end: int, now: float) -> None:
    """
    Keep the spans level with ``ui_user_day``, their first days those at *now*.

    *conn* is the sidecar inside a refresh that indexed the turns numbered
    (*start*, *end*]: they are in ``temp.chunk`` (``day``, ``user_key``) and
    already in ``ui_user_day``. A sidecar without the tables, or whose spans
    do not count up to *start* (another version of the index refreshed it),
    gets them counted from ``ui_user_day``.
    """
    wanted = first_days(now)
    level = (
        conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'uw_meta'").fetchone()
        and conn.execute(
            "SELECT value = ? FROM uw_meta WHERE key = 'last_n'", (start,)
        ).fetchone()[0]
    )
    if not level:
        for table in TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT INTO uw_meta VALUES ('last_n', ?)", (end,))
        for span, first in wanted.items():
            _count(conn, span, first)
        return
    conn.execute("UPDATE uw_meta SET value = ? WHERE key = 'last_n'", (end,))
    kept = dict(conn.execute("SELECT span, first_day FROM uw_range").fetchall())
    if end > start:
        conn.execute(
            "INSERT INTO uw_user (span, user_key, conversations)"
            " SELECT r.span, c.user_key, count(*) FROM temp.chunk c"
            " JOIN uw_range r ON c.day >= r.first_day GROUP BY r.span, c.user_key"
            " ON CONFLICT (span, user_key) DO UPDATE SET"
            " conversations = conversations + excluded.conversations"
        )
    for span, first in wanted.items():
        old = kept.get(span)
        if old == first:
            continue
        if (
            old is None
            or abs((date.fromisoformat(first) - date.fromisoformat(old)).days) > span
        ):
            _count(conn, span, first)
            continue
        if first > old:  # the days that left the span
            conn.execute(_ADD_DAYS.format(sign="-"), (span, old, first))
            conn.execute(
                "DELETE FROM uw_user WHERE span = ? AND conversations = 0", (span,)
            )
        else:  # the clock went back: the days that came back
            conn.execute(_ADD_DAYS.format(sign=""), (span, first, old))
        conn.execute("UPDATE uw_range SET first_day = ? WHERE span = ?", (first, span))


def top_users(conn: sqlite3.Connection, first_day: str) -> list[Any] | None:
    """
    The top users (``[user_key, turns]``, most turns first, then by key) from
    *first_day* on, or None when the sidecar (attached to *conn* as ``ui``)
    keeps no span from that day, or the span has no turns.
    """
    if not conn.execute(
        "SELECT 1 FROM ui.sqlite_master WHERE name = 'uw_range'"
    ).fetchone():
        return None
    rows = conn.execute(
        "SELECT user_key, conversations FROM ui.uw_user WHERE span ="
        " (SELECT span FROM ui.uw_range WHERE first_day = ?)"
        " ORDER BY conversations DESC, user_key LIMIT ?",
        (first_day, TOP),
    ).fetchall()
    return rows or None
