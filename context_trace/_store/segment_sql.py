"""
The SQL of a segment's turns, users and ratings in the dashboard's index (see
:mod:`.segments`, which re-exports the public names), and the count of a
segment's users over a range of days.
"""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from typing import Any

__all__ = [
    "Segment",
    "segment_turns",
    "segment_users",
    "users_between",
    "week1_scan",
]

Segment = tuple[tuple[str, str], ...]


def segment_turns(segment: Segment, column: str) -> tuple[str, list[Any]]:
    """SQL conditions: the turn numbered *column* (qualified) is in *segment*."""
    conds = " AND ".join(
        "EXISTS (SELECT 1 FROM ui_segment_turn t WHERE t.key = ? AND t.value = ?"
        f" AND t.n = {column})"
        for _ in segment
    )
    return conds, [v for pair in segment for v in pair]


def segment_users(segment: Segment, column: str) -> tuple[str, list[Any]]:
    """
    SQL conditions: the user keyed *column* (qualified) had a turn with each value.

    Each is ``column IN (the value's users)``, not a correlated ``EXISTS``: on
    an indexed *column* (``ui_user_stats``' key) SQLite then walks the value's
    users and looks each one up, rather than testing every user of the store.
    """
    conds = " AND ".join(
        f"{column} IN (SELECT g.user_key FROM ui_segment_user g"
        " WHERE g.key = ? AND g.value = ?)"
        for _ in segment
    )
    return conds, [v for pair in segment for v in pair]


def week1_scan(
    conn: sqlite3.Connection, segment: Segment, start: float, end: float
) -> tuple[int, int]:
    """
    (retained, users) read from the users' rows: the users first seen (ever;
    with a *segment*, who had a turn with each of its values) from *start* to
    *end* (epoch), and how many of them were active in the ISO week after
    their first. The fallback of an index without kept week-1 columns.
    """
    conds, params = segment_users(segment, "s.user_key")
    row = conn.execute(
        "SELECT count(*), coalesce(sum(EXISTS (SELECT 1 FROM ui_user_week w"
        " WHERE w.user_key = s.user_key AND w.week ="
        " date(s.first_at, 'unixepoch', '-6 days', 'weekday 1', '+7 days'))), 0)"
        " FROM ui_user_stats s WHERE s.user_key != '' AND s.first_at >= ?"
        f" AND s.first_at < ?{' AND ' + conds if conds else ''}",
        [start, end, *params],
    ).fetchone()
    return int(row[1]), int(row[0])


def users_between(
    conn: sqlite3.Connection, segment: Segment, first: str, last: str | None
) -> int:
    """
    The users (not the no-user key) with a turn on the UTC days *first* to
    *last* (``YYYY-MM-DD``, both included; None: no end): of every turn, or
    of a segment of one condition.

    With no end, the users whose last turn (in the segment: see
    :mod:`.retention_index`, whose UTC tables keep it) is on or after
    *first*: a range of an index. Otherwise, over a few days, the distinct
    keys of those days' rows; over more, each user (of the segment) looked up
    in the per-user index of their days (``ui_user_day_user``,
    ``ui_segment_user_day_user``) instead of sorting every (day, user) row of
    the range (at the benchmark's scale, 14 days hold 250,000 of them for
    50,000 users).
    """
    if len(segment) > 1:
        raise ValueError("users_between takes at most one meta condition")
    if last is None and not segment:
        return int(
            conn.execute(
                "SELECT count(*) FROM ui_user_stats WHERE user_key != ''"
                " AND last_at >= ?",
                (float((date.fromisoformat(first) - date(1970, 1, 1)).days * 86_400),),
            ).fetchone()[0]
        )
    if last is None and _utc_kept(conn):
        return int(
            conn.execute(
                "SELECT count(*) FROM ui_ret_user WHERE zone = 'UTC' AND key = ?"
                " AND value = ? AND last_day >= ?",
                (*segment[0], first),
            ).fetchone()[0]
        )
    if last is not None and not _turns_after(conn, segment, last):
        # Nothing after *last*: the same users as with no end (cheaper).
        return users_between(conn, segment, first, None)
    last = "9999-12-31" if last is None else last
    whole = _whole_period(conn, segment, first, last)
    if whole is not None:
        return whole
    head = list(segment[0]) if segment else []
    scope = "key = ? AND value = ? AND " if segment else ""
    table = "ui_segment_user_day" if segment else "ui_user_day"
    few = (date.fromisoformat(last) - date.fromisoformat(first)).days < 2
    if few or not conn.execute(f"PRAGMA index_info({table}_user)").fetchone():
        sql = (
            f"SELECT count(DISTINCT user_key) FROM {table} WHERE {scope}"
            "day BETWEEN ? AND ? AND user_key != ''"
        )
    elif segment:
        sql = (
            "SELECT count(*) FROM ui_segment_user g WHERE g.key = ?1"
            " AND g.value = ?2 AND g.user_key != '' AND EXISTS (SELECT 1"
            " FROM ui_segment_user_day d WHERE d.key = ?1 AND d.value = ?2"
            " AND d.user_key = g.user_key AND d.day BETWEEN ?3 AND ?4)"
        )
    else:
        sql = (
            "SELECT count(*) FROM ui_user_stats s WHERE s.user_key != ''"
            " AND EXISTS (SELECT 1 FROM ui_user_day d"
            " WHERE d.user_key = s.user_key AND d.day BETWEEN ? AND ?)"
        )
    return int(conn.execute(sql, [*head, first, last]).fetchone()[0])


def _utc_kept(conn: sqlite3.Connection) -> bool:
    """Whether the index keeps the segments' UTC retention tables (``ui_ret_*``)."""
    try:
        row = conn.execute("SELECT 1 FROM ui_ret_zone WHERE zone = 'UTC'").fetchone()
    except sqlite3.OperationalError:  # an index from before them
        return False
    return row is not None


def _turns_after(conn: sqlite3.Connection, segment: Segment, last: str) -> bool:
    """Whether a turn (of the segment) started on a UTC day after *last*."""
    table, scope = (
        ("ui_segment_day", "key = ? AND value = ? AND ")
        if segment
        else ("ui_day_stats", "")
    )
    head = list(segment[0]) if segment else []
    return bool(
        conn.execute(
            f"SELECT 1 FROM {table} WHERE {scope}day > ? AND conversations > 0 LIMIT 1",
            [*head, last],
        ).fetchone()
    )


def _whole_period(
    conn: sqlite3.Connection, segment: Segment, first: str, last: str
) -> int | None:
    """
    :func:`users_between` when *first* starts an ISO week or a calendar month
    and *last* is in it with no turn after it in that period (a period so far,
    or a whole one): the users the index counts for that week or month
    (``ui_user_week``/``ui_user_month``; for a segment, its UTC retention
    tables: the cohorts' users active that week, or that month's rows). None
    for another range, or an index without those tables.
    """
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    week_end = start + timedelta(days=6)
    month_end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    month_end -= timedelta(days=1)
    if start.weekday() == 0 and end <= week_end:
        period, until = "week", week_end
    elif start.day == 1 and end <= month_end:
        period, until = "month", month_end
    else:
        return None
    if segment and not _utc_kept(conn):
        return None
    head = list(segment[0]) if segment else []
    later = conn.execute(
        f"SELECT 1 FROM {'ui_segment_day' if segment else 'ui_day_stats'}"
        f" WHERE {'key = ? AND value = ? AND ' if segment else ''}day > ?"
        " AND day <= ? AND conversations > 0 LIMIT 1",
        [*head, last, until.isoformat()],
    ).fetchone()
    if later:
        return None
    if period == "week" and segment:
        sql = (
            "SELECT coalesce(sum(users), 0) FROM ui_ret_cohort WHERE zone = 'UTC'"
            " AND key = ? AND value = ? AND cohort <= ?3 AND week = ?3"
        )
    elif period == "week":
        sql = "SELECT count(*) FROM ui_user_week WHERE week = ? AND user_key != ''"
    elif segment:
        sql = (
            "SELECT count(*) FROM ui_ret_user_month WHERE zone = 'UTC' AND key = ?"
            " AND value = ? AND month = ?"
        )
    else:
        sql = "SELECT count(*) FROM ui_user_month WHERE month = ? AND user_key != ''"
    key = first if period == "week" else first[:7]
    return int(conn.execute(sql, [*head, key]).fetchone()[0])


def _has_rated_segments(conn: sqlite3.Connection) -> bool:
    """Whether the index keeps each rating by segment value (``ui_rated_segment``)."""
    try:
        conn.execute("SELECT 1 FROM ui_rated_segment LIMIT 0")
    except sqlite3.OperationalError:  # an index from before it, not yet refreshed
        return False
    return True


def _rated(
    conn: sqlite3.Connection, segment: Segment, since: float
) -> tuple[str, list[Any]]:
    """
    The ratings of the segment's turns, ``(created_at, rating)``, from *since*:
    a range of the index's ratings by segment value (its first condition; the
    others filter by the turn). An index without that table: each rating of
    the store finds its turn, then the turn's (key, value) row (CROSS JOIN
    keeps that order), two lookups per rating of the store.
    """
    (key, value), rest = segment[0], segment[1:]
    if _has_rated_segments(conn):
        sql = (
            "SELECT r.created_at AS created_at, r.rating AS rating"
            " FROM ui_rated_segment r WHERE r.key = ? AND r.value = ?"
            " AND r.created_at >= ?"
        )
        params: list[Any] = [key, value, since]
        if rest:
            conds, more = segment_turns(rest, "r.n")
            sql += f" AND {conds}"
            params += more
        return sql, params
    sql = (
        "SELECT f.created_at AS created_at, f.rating AS rating FROM feedback f"
        " CROSS JOIN conversations c ON c.id = f.conversation_id"
        " CROSS JOIN ui_segment_turn s ON s.key = ? AND s.value = ? AND s.n = c.n"
        " AND f.created_at >= ?"
    )
    params = [key, value, since]
    if rest:
        conds, more = segment_turns(rest, "c.n")
        sql += f" WHERE {conds}"
        params += more
    return sql, params  # the ratings given from *since* (epoch)
