"""
Each user's cost from a few first days on, kept priced in the index: the bound
by which :mod:`.cost_users` ranks a range's users without reading the range's
rows.

The dashboard's ranges start on few days: the last 24 hours on yesterday's UTC
day, the last 7 and 30 days on the first of their whole days. For each of those
first days (:func:`first_days`) the index keeps, per user with a model call
from that day on, the sum of the cost of each of the user's rows of per-day,
per-model token sums (``ui_cost_user_day``) from that day on, then of each new
turn's rows (``ui_cost_user_bound``; the days kept in ``ui_cost_bound_day``).
Pricing rows one at a time only adds (the input not read from or written to a
cache, and the output not reasoning, are clamped at zero row by row), so a
user's figure is at least the cost of their turns in any range that starts on
or after its day: an upper bound, equal to the cost unless a row reports more
cache tokens than input tokens.

These tables belong to the priced cache (:mod:`.cost_priced`): priced under its
stored prices, level with the turns it covers, and all re-priced with it when
a price changes. :func:`keep_bounds` runs in its refresh: it adds the new
turns' cost to each day kept, and when the day turns (the dashboard's clock) it
drops the first days no range starts on any more and sums each new one from the
per-day sums. A range whose first day has no figure of its own is ranked by the
latest kept day before it, up to :data:`LOOSEST_DAYS` before (a bound over more
days is still a bound; the walk prices more users); else as before the index
kept them, from its per-day rows (:func:`.cost_users.costliest_users`).
"""

from __future__ import annotations

import sqlite3
import time

from .cost_sources import COST_SQL, _day_start

__all__ = ["BOUND_SCHEMA", "BOUND_TABLES", "LOOSEST_DAYS", "first_days",
           "keep_bounds", "kept_walk"]  # fmt: skip

BOUND_TABLES = ("ui_cost_bound_day", "ui_cost_user_bound")
BOUND_SCHEMA = (
    # Each first day kept, with the last turn number and the prices its users'
    # bounds were summed to (an index another version refreshed is noticed).
    "CREATE TABLE IF NOT EXISTS ui_cost_bound_day (first_day TEXT PRIMARY KEY,"
    " upto INTEGER NOT NULL, prices TEXT NOT NULL) WITHOUT ROWID",
    """
    CREATE TABLE IF NOT EXISTS ui_cost_user_bound (
        first_day TEXT NOT NULL,
        user_key TEXT NOT NULL,
        bound REAL NOT NULL,
        PRIMARY KEY (first_day, user_key)
    ) WITHOUT ROWID
    """,
    # A range's users by bound, the highest first: the walk reads the top only.
    "CREATE INDEX IF NOT EXISTS ui_cost_user_bound_walk"
    " ON ui_cost_user_bound (first_day, bound DESC, user_key)",
)
#: A range is ranked by a day kept at most this many days before its first day.
LOOSEST_DAYS = 2
_DAY = 86_400
# Each range of the dashboard (.analytics_models.RANGES) from its first UTC day,
# as .analytics_overview reads it: 24 hours from the time a day before (the
# whole days after its day, and the rest of its day); N days: N whole days,
# today included. In days before now.
_DAYS_BEFORE = (1, 6, 29)
# A row of sums (x) priced alone at its stored price (p.model NULL: unpriced).
_PRICED = " LEFT JOIN ui_cost_price p ON p.model = x.model AND p.p_in IS NOT NULL"
# The priced cache's stored prices, as one text.
_PRICES = (
    "(SELECT coalesce(group_concat(quote(model) || quote(p_in) || quote(p_out)"
    " || quote(p_cr) || quote(p_cw) || quote(p_r), ','), '')"
    " FROM (SELECT * FROM ui_cost_price ORDER BY model))"
)


def first_days(now: float) -> list[str]:
    """The first UTC day of each of the dashboard's ranges at *now* (epoch)."""
    return sorted(
        {time.strftime("%Y-%m-%d", time.gmtime(now - d * _DAY)) for d in _DAYS_BEFORE}
    )


def keep_bounds(conn: sqlite3.Connection, done: int, upto: int, now: float) -> None:
    """
    Bring the kept bounds level with the index's turns numbered up to *upto*
    (those up to *done* counted already; -1: none, the tables emptied) and
    with the first days of *now*, inside the priced cache's refresh (its
    prices stored in ``ui_cost_price``).
    """
    for statement in BOUND_SCHEMA:
        conn.execute(statement)
    # A day summed to other turns or prices (another version of the index's
    # code refreshed it meanwhile) is summed anew.
    conn.execute(
        "DELETE FROM ui_cost_user_bound WHERE first_day IN (SELECT first_day FROM"
        f" ui_cost_bound_day WHERE upto != ?1 OR prices != {_PRICES})",
        (max(done, 0),),
    )
    conn.execute(
        f"DELETE FROM ui_cost_bound_day WHERE upto != ?1 OR prices != {_PRICES}",
        (max(done, 0),),
    )
    kept = {r[0] for r in conn.execute("SELECT first_day FROM ui_cost_bound_day")}
    if kept and upto > done >= 0:
        for day in kept:  # the new turns, each row priced alone
            conn.execute(
                "INSERT INTO ui_cost_user_bound (first_day, user_key, bound)"
                f" SELECT ?, x.user_key, total({COST_SQL}) FROM ui_cost_turn x"
                f"{_PRICED} WHERE x.n > ? AND x.n <= ? AND x.started_at >= ?"
                " GROUP BY x.user_key ON CONFLICT DO UPDATE"
                " SET bound = bound + excluded.bound",
                (day, done, upto, _day_start(day)),
            )
    want = set(first_days(now))
    for day in sorted(kept - want):
        conn.execute("DELETE FROM ui_cost_user_bound WHERE first_day = ?", (day,))
        conn.execute("DELETE FROM ui_cost_bound_day WHERE first_day = ?", (day,))
    for day in sorted(want - kept):  # from the per-day sums (every turn indexed)
        conn.execute(
            "INSERT INTO ui_cost_user_bound (first_day, user_key, bound)"
            f" SELECT ?, x.user_key, total({COST_SQL}) FROM ui_cost_user_day x"
            f"{_PRICED} WHERE x.day >= ? GROUP BY x.user_key",
            (day, day),
        )
        conn.execute(
            "INSERT INTO ui_cost_bound_day (first_day, upto, prices)"
            f" VALUES (?, 0, {_PRICES})",
            (day,),
        )
    conn.execute("UPDATE ui_cost_bound_day SET upto = ?", (max(upto, 0),))


def kept_walk(
    conn: sqlite3.Connection, first_day: str, segment: tuple[str, str] | None = None
) -> sqlite3.Cursor | None:
    """
    ``(user_key, bound)`` of every user with a call from *first_day* on (with
    *segment*, a ``(key, value)``: every user who ever had a turn in it), the
    highest bound first, from the kept day closest before it (see the module
    docstring); None when no kept day answers. The caller has checked that the
    priced cache answers for its prices (:func:`.cost_priced.priced_for`).
    """
    try:
        day = conn.execute(
            "SELECT max(first_day) FROM ui_cost_bound_day WHERE first_day <= ?"
            " AND upto = (SELECT n FROM ui_cost_priced_state)"
            f" AND prices = {_PRICES}",
            (first_day,),
        ).fetchone()[0]
    except sqlite3.OperationalError:  # an index from before the kept bounds
        return None
    if day is None or _day_start(first_day) - _day_start(day) > LOOSEST_DAYS * _DAY:
        return None
    # The segment's users only (ui_segment_user): the others cost nothing in it.
    mine = (
        ""
        if segment is None
        else " AND EXISTS (SELECT 1 FROM ui_segment_user s WHERE s.key = ?"
        " AND s.value = ? AND s.user_key = b.user_key)"
    )
    return conn.execute(
        "SELECT b.user_key, b.bound FROM ui_cost_user_bound b WHERE b.first_day = ?"
        f"{mine} ORDER BY b.bound DESC, b.user_key",
        (day, *(segment or ())),
    )
