"""
The sidecar's priced cost cache: each user's and each session's cost, in dollars,
under the prices of one price table (see :mod:`.cost`).

Costs are priced when read, so a price change (a newer ``genai-prices``, an
override) re-prices all history. Pricing every user (or session) on each request
is too slow on a large store, so the dashboard's index keeps the result:

- ``ui_cost_price``: the price table it was priced with, one row per model of the
  index (the prices NULL: unpriced);
- ``ui_cost_user_priced`` and ``ui_cost_session_priced``: per user and per session
  (``0``: the turns of no session) the token sums, the calls left unpriced, the
  number of priced models and the cost, indexed by cost; a session's row also
  has the times of its first and last turn with a model call, so that a range
  reads the sessions wholly in it from here and prices only the few that
  straddle its start (see :func:`.cost.cost_report`);
- ``ui_cost_priced_state``: the last turn number they cover.

:func:`price_costs` runs in the index's refresh, with the dashboard's
:class:`~context_trace.analytics.pricing.Pricer`: when a model's price differs
from the stored one it prices everything again in bulk SQL; otherwise it
re-prices only the users and sessions that the new turns touched (from their
per-model sums, as :func:`.cost.cost_report` does, so the figures are the same).
A reader uses the cache only when its own prices are the stored ones and the
cache covers every indexed turn (:func:`priced_for`); else it prices at read time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .cost_index import _SUMS
from .cost_user_bounds import BOUND_SCHEMA, BOUND_TABLES, keep_bounds

if TYPE_CHECKING:
    from context_trace.analytics.pricing import Pricer

    from .cost import ModelPriceRow

__all__ = ["PRICED_SCHEMA", "PRICED_TABLES", "price_costs", "priced_for"]

PRICED_TABLES = ("ui_cost_price", "ui_cost_priced_state", "ui_cost_user_priced",
                 "ui_cost_session_priced", *BOUND_TABLES)  # fmt: skip
_PRICE_COLUMNS = ("p_in", "p_out", "p_cr", "p_cw", "p_r")
# The per-group columns, in this order everywhere.
_GROUP_COLUMNS = ("turns", "calls", "unpriced", "input", "output", "cache_read",
                  "cache_write", "reasoning", "cost", "priced")  # fmt: skip
_COLUMN_DEFS = ",\n".join(
    f"        {c} {'REAL' if c == 'cost' else 'INTEGER'} NOT NULL DEFAULT 0"
    for c in _GROUP_COLUMNS
)

PRICED_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS ui_cost_price (
        model TEXT PRIMARY KEY,
        p_in REAL, p_out REAL, p_cr REAL, p_cw REAL, p_r REAL
    ) WITHOUT ROWID
    """,
    "CREATE TABLE IF NOT EXISTS ui_cost_priced_state (n INTEGER NOT NULL)",
    f"""
    CREATE TABLE IF NOT EXISTS ui_cost_user_priced (
        user_key TEXT PRIMARY KEY,
{_COLUMN_DEFS}
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS ui_cost_user_priced_cost"
    " ON ui_cost_user_priced (cost DESC, user_key)",
    f"""
    CREATE TABLE IF NOT EXISTS ui_cost_session_priced (
        session_n INTEGER PRIMARY KEY,
{_COLUMN_DEFS},
        first_at REAL NOT NULL,
        last_at REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS ui_cost_session_priced_cost"
    " ON ui_cost_session_priced (cost DESC, session_n)",
    # The sessions with a turn from a time on (a range's sessions).
    "CREATE INDEX IF NOT EXISTS ui_cost_session_priced_last"
    " ON ui_cost_session_priced (last_at)",
    # A range's sessions by whole cost, read from the index alone (the walk of
    # cost_sources._sessions_from).
    "CREATE INDEX IF NOT EXISTS ui_cost_session_priced_walk"
    " ON ui_cost_session_priced (cost DESC, session_n, last_at, first_at)",
    # The turns of no session from a time on, with their sums: read from the
    # index alone by cost per session over a range.
    "CREATE INDEX IF NOT EXISTS ui_cost_turn_alone ON ui_cost_turn (started_at,"
    " model, turns, calls, reported, input, output, cache_read, cache_write,"
    " reasoning) WHERE session_n IS NULL",
    # The turns of a session from a time on: to re-price the sessions new turns
    # touch, and a range's sessions that straddle its start.
    "CREATE INDEX IF NOT EXISTS ui_cost_turn_session"
    " ON ui_cost_turn (session_n, started_at)",
)

# A row of per-model sums (x) joined to its stored price (p.model NULL: unpriced).
_COST = (
    "CASE WHEN p.model IS NULL THEN 0 ELSE (max(x.input - x.cache_read"
    " - x.cache_write, 0) * p.p_in + x.cache_read * p.p_cr + x.cache_write * p.p_cw"
    " + max(x.output - x.reasoning, 0) * p.p_out + x.reasoning * p.p_r) / 1e6 END"
)
_UNPRICED = "CASE WHEN p.model IS NULL THEN x.calls ELSE x.calls - x.reported END"
_PRICED_SUMS = (
    "sum(x.turns), sum(x.calls), sum(" + _UNPRICED + "), sum(x.input),"
    " sum(x.output), sum(x.cache_read), sum(x.cache_write), sum(x.reasoning),"
    f" total({_COST}), count(p.model)"
)
_JOIN = " LEFT JOIN ui_cost_price p ON p.model = x.model AND p.p_in IS NOT NULL"
_INSERT_COLS = ", ".join(_GROUP_COLUMNS)


def _prices(pricer: Pricer, models: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    found: dict[str, tuple[Any, ...]] = {}
    for model in models:
        price = pricer.price(model)
        found[model] = (
            (None,) * 5
            if price is None
            else (
                price.input,
                price.output,
                price.cache_read,
                price.cache_write,
                price.reasoning,
            )
        )
    return found


def price_costs(
    conn: sqlite3.Connection, pricer: Pricer, upto: int, now: float
) -> bool:
    """
    Bring the priced cache level with the turns indexed up to *upto*, under
    *pricer*'s prices, inside the caller's transaction on the index; the
    users' bounds of :mod:`.cost_user_bounds` too, for the ranges of *now*
    (epoch). Returns False (the cache left as it was: readers price at read
    time) when the prices cannot be looked up.
    """
    columns = {r[1] for r in conn.execute("PRAGMA table_info(ui_cost_session_priced)")}
    if columns and "first_at" not in columns:  # an earlier layout: anew
        for table in PRICED_TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in (*PRICED_SCHEMA, *BOUND_SCHEMA):
        conn.execute(statement)
    models = [r[0] for r in conn.execute("SELECT DISTINCT model FROM ui_cost_day")]
    try:
        want = _prices(pricer, models)
    except RuntimeError:  # no pricing library: nothing cached, nothing broken
        return False
    have = {r[0]: tuple(r[1:]) for r in conn.execute("SELECT * FROM ui_cost_price")}
    state = conn.execute("SELECT n FROM ui_cost_priced_state").fetchone()
    done = -1 if state is None else int(state[0])
    if done < 0 or any(m in have and have[m] != p for m, p in want.items()):
        for table in PRICED_TABLES:  # a price changed: all of history anew
            conn.execute(f"DELETE FROM {table}")
        have, done = {}, -1
    conn.executemany(
        "INSERT INTO ui_cost_price (model, p_in, p_out, p_cr, p_cw, p_r)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(m, *p) for m, p in want.items() if m not in have],
    )
    if done < 0:
        users = sessions = ""
    else:
        if done >= upto:
            keep_bounds(conn, done, upto, now)  # the day may have turned
            return True
        users = (
            " WHERE x.user_key IN (SELECT DISTINCT user_key FROM ui_cost_turn"
            f" WHERE n > {done:d} AND n <= {upto:d})"
        )
        sessions = (
            " WHERE k.session_n IN (SELECT DISTINCT session_n FROM ui_cost_turn"
            f" WHERE n > {done:d} AND n <= {upto:d})"
        )
        if conn.execute(
            f"SELECT 1 FROM ui_cost_turn WHERE n > {done:d} AND n <= {upto:d}"
            " AND session_n IS NULL LIMIT 1"
        ).fetchone():
            sessions += " OR k.session_n IS NULL"
    conn.execute(
        f"INSERT OR REPLACE INTO ui_cost_user_priced (user_key, {_INSERT_COLS})"
        f" SELECT x.user_key, {_PRICED_SUMS} FROM ui_cost_user x{_JOIN}{users}"
        " GROUP BY x.user_key"
    )
    # Per session and model first, priced on those sums (as cost_report does).
    sums = ", ".join(f"sum(k.{c}) AS {c}" for c in _SUMS)
    conn.execute(
        "INSERT OR REPLACE INTO ui_cost_session_priced (session_n,"
        f" {_INSERT_COLS}, first_at, last_at) SELECT x.grp, {_PRICED_SUMS},"
        " min(x.first_at), max(x.last_at) FROM (SELECT coalesce(k.session_n, 0)"
        f" AS grp, k.model AS model, {sums}, min(k.started_at) AS first_at,"
        f" max(k.started_at) AS last_at FROM ui_cost_turn k{sessions}"
        f" GROUP BY grp, k.model) x{_JOIN} GROUP BY x.grp"
    )
    keep_bounds(conn, done, upto, now)
    conn.execute("DELETE FROM ui_cost_priced_state")
    conn.execute("INSERT INTO ui_cost_priced_state (n) VALUES (?)", (upto,))
    return True


def priced_for(conn: sqlite3.Connection, models: Sequence[ModelPriceRow]) -> bool:
    """
    Whether the index's priced cache answers for these prices (the models of
    :func:`.cost.price_table`): the same price for every model, and every turn
    of the index covered.
    """
    try:
        state = conn.execute(
            "SELECT n, (SELECT coalesce(max(n), 0) FROM ui_cost_turn)"
            " FROM ui_cost_priced_state"
        ).fetchone()
        have = {r[0]: tuple(r[1:]) for r in conn.execute("SELECT * FROM ui_cost_price")}
    except sqlite3.OperationalError:  # an index built before the cache
        return False
    if state is None or state[0] < state[1]:
        return False
    want = {
        m.model: (m.input, m.output, m.cache_read, m.cache_write, m.reasoning)
        for m in models
    }
    return want == have
