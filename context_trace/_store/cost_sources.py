"""
Where a cost report's rows of per-model token sums come from (see :mod:`.cost`):
the cheapest of the index's tables that answers the question (per-day sums, per
user, per segment, per topic and day, the priced per-session cache), else the
turns' own rows (``ui_cost_turn``), and the SQL that prices a row of sums.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from .cost_index import _COLS, _SUMMED, _SUMS

# A segment's conditions, as .segments has them (not imported: it imports the
# index, which imports this module).
Segment = tuple[tuple[str, str], ...]
# (SQL, parameters) of a segment's turn rows (with ``n``) from an epoch.
SegmentSource = Callable[[float | None], tuple[str, list[Any]]]

# The cost of a row of sums joined to its price (p.model NULL: unpriced).
COST_SQL = (
    "CASE WHEN p.model IS NULL THEN 0 ELSE (max(x.input - x.cache_read"
    " - x.cache_write, 0) * p.p_in + x.cache_read * p.p_cr + x.cache_write * p.p_cw"
    " + max(x.output - x.reasoning, 0) * p.p_out + x.reasoning * p.p_r) / 1e6 END"
)
UNPRICED_SQL = "CASE WHEN p.model IS NULL THEN x.calls ELSE x.calls - x.reported END"


def _rows_source(
    conn: sqlite3.Connection,
    by: str,
    segment: Segment,
    since: float | None,
    first_day: str | None,
    segment_source: SegmentSource | None,
) -> tuple[str, list[Any]]:
    """
    SQL of ``(grp, model, turns, calls, reported, input, output, cache_read,
    cache_write, reasoning)`` rows for the question, from the cheapest table
    that answers it, and its parameters.
    """
    day_group = {"model": "''", "day": "day"}
    if first_day is not None and not segment and by in day_group:
        return (
            f"SELECT {day_group[by]} AS grp, model, {_SUMMED} FROM ui_cost_day"
            " WHERE day >= ? GROUP BY grp, model",
            [first_day],
        )
    if first_day == "" and not segment and by == "user":
        return (f"SELECT user_key AS grp, model, {_COLS} FROM ui_cost_user", [])
    if by == "user" and not segment and (first_day or since is not None):
        return _user_days(first_day, since)
    if first_day == "" and len(segment) == 1 and by == "user":
        return (
            f"SELECT user_key AS grp, model, {_COLS} FROM ui_cost_segment_user"
            " WHERE key = ? AND value = ?",
            list(segment[0]),
        )
    if first_day is not None and len(segment) == 1 and by in day_group:
        return (
            f"SELECT {day_group[by]} AS grp, model, {_SUMMED} FROM ui_cost_segment_day"
            " WHERE key = ? AND value = ? AND day >= ? GROUP BY grp, model",
            [*segment[0], first_day],
        )
    if (
        by == "topic"
        and len(segment) < 2
        and first_day is not None
        and topic_sums(conn)
    ):
        return _topic_source(first_day, segment)
    if since is None and first_day:
        since = _day_start(first_day)
    group = {
        "model": "''",
        "day": "date(k.started_at, 'unixepoch')",
        "user": "k.user_key",
        # Not through ui_cost_turn_session (.cost_priced): a lookup per row.
        "session": "+k.session_n",
        # A lookup per turn in the topics file (not summarised there).
        "topic": "(SELECT t.topic_id FROM topics.topic_turns t WHERE t.n = k.n)",
    }[by]
    sums = ", ".join(f"sum(k.{c}) AS {c}" for c in _SUMS)
    if segment:
        if segment_source is None:
            raise ValueError("a segment needs its segment_source")
        source, params = segment_source(since)
        return (
            f"SELECT {group} AS grp, k.model AS model, {sums} FROM ({source}) s"
            " CROSS JOIN ui_cost_turn k ON k.n = s.n GROUP BY grp, k.model",
            params,
        )
    if since is None:
        return (
            f"SELECT {group} AS grp, k.model AS model, {sums} FROM ui_cost_turn k"
            " GROUP BY grp, k.model",
            [],
        )
    return (
        f"SELECT {group} AS grp, k.model AS model, {sums} FROM ui_cost_turn k"
        # min(n + 0): through the store's started_at index (see segments).
        " WHERE k.n >= (SELECT coalesce(min(n + 0), 1 << 62) FROM conversations"
        " WHERE started_at >= ?) AND k.started_at >= ? GROUP BY grp, k.model",
        [since, since],
    )


def _user_days(first_day: str | None, since: float | None) -> tuple[str, list[Any]]:
    """
    Per user and model, the token sums of whole UTC days from *first_day*, or
    from the time *since*: see :func:`user_day_rows`.
    """
    rows, params = user_day_rows(first_day, since)
    return (
        f"SELECT user_key AS grp, model, {_SUMMED} FROM ({rows}) GROUP BY grp, model",
        params,
    )


def user_day_rows(
    first_day: str | None, since: float | None, users: Sequence[str] | None = None
) -> tuple[str, list[Any]]:
    """
    SQL of ``(user_key, model, sums...)`` rows, not summed, covering whole UTC
    days from *first_day*, or the time *since*: the whole days after its day
    from the per-user, per-day sums, the rest of its day from the turns (as
    :func:`_model_source`); with *users*, only theirs (looked up day by day).
    """
    cols = ", ".join(f"x.{c}" for c in _SUMS)
    if first_day:
        op, day = ">=", first_day
    else:
        assert since is not None
        op, day = ">", time.strftime("%Y-%m-%d", time.gmtime(since))
    if users is None:
        sql = (
            f"SELECT user_key, model, {_COLS} FROM ui_cost_user_day x WHERE day {op} ?"
        )
        mine, params = "", [day]
    else:
        mine = f" AND x.user_key IN ({','.join('?' * len(users))})"
        sql = (
            f"SELECT x.user_key, x.model, {cols} FROM (SELECT DISTINCT day FROM"
            f" ui_cost_day WHERE day {op} ?) d CROSS JOIN ui_cost_user_day x"
            f" ON x.day = d.day{mine}"
        )
        params = [day, *users]
    if first_day:
        return sql, params
    midnight = _day_start(day) + 86_400
    bounds = (
        f"x.n >= {_BOUNDS.format('min')} AND x.n <= {_BOUNDS.format('max')}"
        " AND x.started_at >= ? AND x.started_at < ?"
    )
    if users is None:
        return (
            f"{sql} UNION ALL SELECT x.user_key, x.model, {cols} FROM ui_cost_turn x"
            f" WHERE {bounds}",
            [*params, *[since, midnight] * 3],
        )
    # These users' turns of the rest of the day: through their lists of turn
    # numbers (ui_turns), not a scan of the day's turns for each batch.
    return (
        f"{sql} UNION ALL SELECT x.user_key, x.model, {cols} FROM ui_turns t"
        f" CROSS JOIN ui_cost_turn x ON x.n = t.n"
        f" WHERE t.user_key IN ({','.join('?' * len(users))})"
        f" AND {bounds.replace('x.n', 't.n')}",
        [*params, *users, *[since, midnight] * 3],
    )


# The first (min) or last (max) number of the store's turns started in [?, ?):
# turns are numbered in commit order, not time order, so the store's
# started_at index bounds them.
_BOUNDS = (
    "(SELECT {0}(n + 0) FROM conversations WHERE started_at >= ? AND started_at < ?)"
)


def topic_sums(conn: sqlite3.Connection) -> bool:
    """Whether the attached topics file keeps its per-topic, per-day token sums."""
    try:
        version = conn.execute("PRAGMA topics.user_version").fetchone()[0]
        tables = conn.execute(
            "SELECT count(*) FROM topics.sqlite_master WHERE name IN"
            " ('topic_costs', 'topic_segment_costs')"
        ).fetchone()[0]
    except sqlite3.OperationalError:  # no topics file attached
        return False
    # From the topics file's version 4 on (a file made by hand lacks them).
    return tables == 2 and int(version or 0) >= 4


def _topic_source(first_day: str, segment: Segment) -> tuple[str, list[Any]]:
    """
    Per topic and model, the token sums of whole UTC days from *first_day*
    (``""``: all) in *segment* (one condition at most) from the topics file's
    per-day sums; the turns that have no topic yet (the topics file assigns them
    in order: those numbered after its last) under None, from their own rows.
    """
    since = _day_start(first_day) if first_day else 0.0
    last = "(SELECT coalesce(max(n), 0) FROM topics.topic_turns)"
    if not segment:
        return (
            f"SELECT topic_id AS grp, model, {_SUMMED} FROM topics.topic_costs"
            " WHERE day >= ? GROUP BY grp, model UNION ALL"
            f" SELECT NULL, model, {_SUMMED} FROM ui_cost_turn WHERE n > {last}"
            " AND started_at >= ? GROUP BY model",
            [first_day, since],
        )
    ((key, value),) = segment
    return (
        f"SELECT topic_id AS grp, model, {_SUMMED} FROM topics.topic_segment_costs"
        " WHERE key = ? AND value = ? AND day >= ? GROUP BY grp, model UNION ALL"
        f" SELECT NULL, model, {_SUMMED} FROM ui_cost_turn WHERE n IN (SELECT n"
        f" FROM ui_segment_turn WHERE key = ? AND value = ? AND n > {last})"
        " AND started_at >= ? GROUP BY model",
        [key, value, first_day, key, value, since],
    )


def _model_source(
    segment: Segment, first_day: str | None, since: float | None = None
) -> tuple[str, list[Any]] | None:
    """SQL of ``('', model, sums...)`` rows from per-day sums, when they answer."""
    if first_day is None and since is not None and not segment:
        # From a time (24h): the whole days after its day from the per-day
        # sums, the whole hours left of its day from the per-hour sums, its
        # first, partial hour from the turns (numbered in commit order, not
        # time order: the store's started_at index bounds their numbers).
        day = time.strftime("%Y-%m-%d", time.gmtime(since))
        midnight = int(_day_start(day)) // 3600 + 24
        hour = int(-(-since // 3600))
        bounds = _BOUNDS
        return (
            f"SELECT '' AS grp, model, {_SUMMED} FROM (SELECT model, {_COLS}"
            " FROM ui_cost_day WHERE day > ? UNION ALL"
            f" SELECT model, {_COLS} FROM ui_cost_hour WHERE hour >= ? AND hour < ?"
            f" UNION ALL SELECT model, {_COLS} FROM ui_cost_turn"
            f" WHERE n >= {bounds.format('min')} AND n <= {bounds.format('max')}"
            " AND started_at >= ? AND started_at < ?) GROUP BY model",
            [day, hour, midnight, *[since, hour * 3600] * 3],
        )
    if first_day is None or len(segment) > 1:
        return None
    if not segment:
        return (
            f"SELECT '' AS grp, model, {_SUMMED} FROM ui_cost_day WHERE day >= ?"
            " GROUP BY model",
            [first_day],
        )
    return (
        f"SELECT '' AS grp, model, {_SUMMED} FROM ui_cost_segment_day"
        " WHERE key = ? AND value = ? AND day >= ? GROUP BY model",
        [*segment[0], first_day],
    )


def _day_start(day: str) -> float:
    from datetime import date

    return float((date.fromisoformat(day) - date(1970, 1, 1)).days * 86_400)


def _sessions_from(
    conn: sqlite3.Connection,
    prices: str,
    params: list[Any],
    sums: str,
    start: float,
    limit: int | None,
) -> list[Any]:
    """
    Per session, the cost of its turns from *start*, the costliest first (at
    most *limit*): the sessions wholly from *start* read from the index's priced
    cache, those that straddle it (and the turns of no session) priced here.

    With a *limit*, the range's sessions are walked by their whole cost, the
    costliest first (the cache's cost index), and a straddling one is priced
    over its turns from *start* only when reached; the walk stops once the
    *limit*-th costliest found costs more than the next session costs in all
    (its cost from *start* can only be lower), so a range reads a few hundred
    sessions, not every session in it.
    """
    cols = ", ".join(f"sum(k.{c}) AS {c}" for c in _SUMS)
    alone_sql = (
        f"WITH {prices}, x AS (SELECT k.model AS model, {cols} FROM ui_cost_turn k"
        " {0} WHERE k.session_n IS NULL AND k.started_at >= ? GROUP BY k.model)"
        f" SELECT NULL, {sums}"
    )
    try:  # the index alone, where the index has it (.cost_priced)
        alone = conn.execute(
            alone_sql.format("INDEXED BY ui_cost_turn_alone"), [*params, start]
        ).fetchall()
    except sqlite3.OperationalError:
        alone = conn.execute(alone_sql.format(""), [*params, start]).fetchall()
    rows = [r for r in alone if r[2]]  # no call of no session: no row
    if limit is None:
        whole = conn.execute(
            f"SELECT session_n, {_CACHED} FROM ui_cost_session_priced"
            # The range's sessions (a few of all), not all of them by cost.
            " INDEXED BY ui_cost_session_priced_last"
            " WHERE last_at >= ?1 AND first_at >= ?1 AND session_n != 0",
            [start],
        ).fetchall()
        split = conn.execute(
            "SELECT session_n FROM ui_cost_session_priced"
            " WHERE last_at >= ? AND first_at < ? AND session_n != 0",
            [start, start],
        ).fetchall()
        rows += whole + _straddling(conn, prices, params, sums, start, split)
        return sorted(rows, key=_rank)
    walk = conn.execute(
        # The cost index with the times (ui_cost_session_priced_walk, when the
        # index has it): no lookup of the rows the walk passes over.
        "SELECT session_n, first_at, cost FROM ui_cost_session_priced"
        " WHERE last_at >= ? AND session_n != 0 ORDER BY cost DESC, session_n",
        [start],
    )
    best: list[Any] = []
    while batch := walk.fetchmany(_WALK_BATCH):
        split = [(r[0],) for r in batch if r[1] < start]
        whole = [r[0] for r in batch if r[1] >= start]
        found = conn.execute(
            f"SELECT session_n, {_CACHED} FROM ui_cost_session_priced"
            f" WHERE session_n IN ({','.join('?' * len(whole))})",
            whole,
        ).fetchall()
        found += _straddling(conn, prices, params, sums, start, split)
        best = sorted([*best, *found], key=_rank)[:limit]
        last = batch[-1]
        # Every session after *last* costs, from start, at most its whole
        # cost, which is at most last's (equal: a higher number ranks after).
        if len(best) >= limit and _rank(best[-1]) <= (-last[2], (1, last[0])):
            break
    return sorted([*best, *rows], key=_rank)[:limit]


# The priced cache's columns as a report row has them, after its key.
_CACHED = (
    "turns, calls, unpriced, input, output, cache_read, cache_write, reasoning, cost"
)
# Sessions read from the cost index per step of the walk.
_WALK_BATCH = 128


def _rank(row: Sequence[Any]) -> tuple[float, tuple[int, ...]]:
    """A session row's place: the costliest first, then no session, then by number."""
    return (-row[9], (0,) if row[0] is None else (1, row[0]))


def _straddling(
    conn: sqlite3.Connection,
    prices: str,
    params: list[Any],
    sums: str,
    start: float,
    sessions: Sequence[tuple[Any, ...]],
    segment: Segment = (),
) -> list[Any]:
    """
    The cost rows of these sessions' turns from *start* (in *segment*, if
    any), priced from their sums.
    """
    out: list[Any] = []
    cols = ", ".join(f"sum(k.{c}) AS {c}" for c in _SUMS)
    cond, values = _in_segment(segment)
    for at in range(0, len(sessions), 500):
        numbers = [r[0] for r in sessions[at : at + 500]]
        out += conn.execute(
            f"WITH {prices}, x AS (SELECT k.session_n AS grp, k.model AS model, {cols}"
            f" FROM ui_cost_turn k WHERE k.session_n IN ({','.join('?' * len(numbers))})"
            f" AND k.started_at >= ?{cond} GROUP BY grp, k.model)"
            f" SELECT x.grp, {sums} GROUP BY x.grp",
            [*params, *numbers, start, *values],
        ).fetchall()
    return out


def _in_segment(segment: Segment) -> tuple[str, list[Any]]:
    """`` AND`` conditions: the turn ``k.n`` is in *segment* (as .segments has it)."""
    cond = "".join(
        " AND EXISTS (SELECT 1 FROM ui_segment_turn t WHERE t.key = ?"
        " AND t.value = ? AND t.n = k.n)"
        for _ in segment
    )
    return cond, [v for pair in segment for v in pair]


def segment_sessions(
    conn: sqlite3.Connection,
    prices: str,
    params: list[Any],
    sums: str,
    start: float,
    limit: int,
    segment: Segment,
) -> list[Any] | None:
    """
    Per session, the cost of its turns in *segment* from *start*, the costliest
    first (at most *limit*), by the walk of :func:`_sessions_from`: a session
    costs, in a segment, at most its whole cost. None when the walk would read
    too many sessions (a rare segment value, or one with few turns in the range):
    its turns are then fewer than the sessions walked, and cheaper to read.
    """
    key, value = segment[0]
    if not worth_walking(conn, key, value):
        return None
    walk = conn.execute(
        "SELECT session_n, cost FROM ui_cost_session_priced"
        " WHERE last_at >= ? AND session_n != 0 ORDER BY cost DESC, session_n",
        [start],
    )
    best: list[Any] = []
    read = 0
    while batch := walk.fetchmany(_WALK_BATCH):
        read += len(batch)
        if read > _WALK_MAX:
            return None
        found = _straddling(conn, prices, params, sums, start, batch, segment)
        best = sorted([*best, *found], key=_rank)[:limit]
        last = batch[-1]
        if len(best) >= limit and _rank(best[-1]) <= (-last[1], (1, last[0])):
            break
    cond, values = _in_segment(segment)
    cols = ", ".join(f"sum(k.{c}) AS {c}" for c in _SUMS)
    alone = conn.execute(
        f"WITH {prices}, x AS (SELECT k.model AS model, {cols} FROM ui_cost_turn k"
        f" WHERE k.session_n IS NULL AND k.started_at >= ?{cond} GROUP BY k.model)"
        f" SELECT NULL, {sums}",
        [*params, start, *values],
    ).fetchall()
    return sorted([*best, *(r for r in alone if r[2])], key=_rank)[:limit]


# A segment value walked only when it has at least 1/this of the turns.
_SEGMENT_SHARE = 100


def worth_walking(conn: sqlite3.Connection, key: str, value: str) -> bool:
    """
    Whether the segment value *key*=*value* has at least 1/``_SEGMENT_SHARE``
    of the index's turns: then a walk of the costliest (sessions, users) finds
    its top rows soon; a rarer value's turns are fewer to read than the walk.
    """
    mine, everyone = conn.execute(
        "SELECT (SELECT coalesce(sum(conversations), 0) FROM ui_segments"
        " WHERE key = ? AND value = ?), (SELECT coalesce(sum(turns), 0)"
        " FROM ui_cost_day)",
        [key, value],
    ).fetchone()
    return bool(mine * _SEGMENT_SHARE >= everyone)


# The most sessions a walk reads before it leaves the question to the turns.
_WALK_MAX = 1_500


def _one_pass(
    conn: sqlite3.Connection,
    prices: str,
    params: list[Any],
    source: str,
    more: list[Any],
    by: str,
    limit: int | None,
) -> tuple[list[Any], list[Any]]:
    """(per model, per group) rows as :func:`cost_report` reads them, from one
    read of *source*'s (group, model) rows, priced in SQL and summed here."""
    per_model: dict[Any, list[Any]] = {}
    per_group: dict[Any, list[Any]] = {}
    for grp, model, *sums in conn.execute(
        f"WITH {prices}, x AS ({source}) SELECT x.grp, x.model, x.turns, x.calls,"
        f" {UNPRICED_SQL}, x.input, x.output, x.cache_read, x.cache_write,"
        f" x.reasoning, {COST_SQL} FROM x LEFT JOIN price p ON p.model = x.model",
        [*params, *more],
    ):
        for table, key in ((per_model, model), (per_group, grp)):
            row = table.setdefault(key, [key, 0, 0, 0, 0, 0, 0, 0, 0, 0.0])
            for i, value in enumerate(sums, 1):
                row[i] += value or 0
    models = sorted(per_model.values(), key=lambda r: (-r[9], r[0]))
    if by == "day":
        grouped = sorted(per_group.values(), key=lambda r: r[0])
    else:
        grouped = sorted(
            per_group.values(),
            key=lambda r: (-r[9], (0,) if r[0] is None else (1, r[0])),
        )[:limit]
    return models, grouped
