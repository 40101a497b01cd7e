"""
The costliest users of a range (see :mod:`.cost`), from the index's per-user,
per-day, per-model token sums without summing every user's tokens per model.

A range's users are ranked by a bound: each row of sums (a user's day and model)
priced alone, then summed per user. The cost of a user's summed tokens is at
most that bound (the input not read from or written to a cache, and the output
not reasoning, are clamped at zero row by row, which can only add), and equal
to it unless a row reports more cache tokens than input tokens. The dashboard's
index keeps that bound priced for the first days of its ranges
(:mod:`.cost_user_bounds`), so the ranking is the top of an index; when it does
not answer (other prices, another first day), the bound is summed here from the
range's rows, in one narrow SQL sort. The users are then read in the bound's
order and priced exactly, a batch at a time, from their own rows, until the
*limit*-th costliest found costs more than the next user's bound.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from .cost_index import _SUMMED, _SUMS
from .cost_sources import user_day_rows, worth_walking
from .cost_user_bounds import kept_walk

# Users priced exactly per step of the walk.
_BATCH = 256
# Relative slack of the bound (a sum in another order rounds differently).
_SLACK = 1e-9
# A walk of a segment's users (when worth_walking) reads this many users at
# most (else the segment's turns are read).
_WALK_MAX = 2_048


def costliest_users(
    conn: sqlite3.Connection,
    prices: str,
    params: list[Any],
    sums: str,
    first_day: str | None,
    since: float | None,
    limit: int,
    kept: bool = False,
) -> list[Any]:
    """
    Per user, the cost rows (as :func:`.cost.cost_report` reads them) of the
    *limit* costliest users over whole UTC days from *first_day*, or from the
    time *since*; *prices*, *params* and *sums* as :func:`.cost.price_table`
    and ``cost_report`` make them; *kept*: the index's priced cache answers
    for these prices (:func:`.cost_priced.priced_for`).
    """
    day = first_day or time.strftime("%Y-%m-%d", time.gmtime(since or 0.0))
    walk = kept_walk(conn, day) if kept else None
    if walk is None:
        rows, more = user_day_rows(first_day, since)
        walk = conn.execute(
            f"SELECT user_key, total({_bound_sql(params)}) / 1e6 AS bound"
            f" FROM ({rows}) x GROUP BY user_key ORDER BY bound DESC, user_key",
            [*_bound_params(params), *more],
        )
    best: list[Any] = []
    while batch := walk.fetchmany(_BATCH):
        mine, theirs = user_day_rows(first_day, since, [r[0] for r in batch])
        found = conn.execute(
            f"WITH {prices}, x AS (SELECT user_key AS grp, model, {_SUMMED}"
            f" FROM ({mine}) GROUP BY grp, model) SELECT x.grp, {sums} GROUP BY x.grp",
            [*params, *theirs],
        ).fetchall()
        best = sorted([*best, *(r for r in found if r[2])], key=_rank)[:limit]
        nxt = batch[-1][1]
        if len(best) >= limit and best[-1][9] > nxt * (1 + _SLACK) + 1e-15:
            break
    return best


def costliest_segment_users(
    conn: sqlite3.Connection,
    prices: str,
    params: list[Any],
    sums: str,
    start: float,
    limit: int,
    segment: tuple[tuple[str, str], ...],
) -> list[Any] | None:
    """
    As :func:`costliest_users`, over the turns from *start* (epoch) in
    *segment* (one condition), by the bounds the index keeps of the users who
    had turns in it (a user's cost in a segment is at most their cost in all),
    when the priced cache answers for these prices. None when no kept bound
    answers, or when the walk would read too many users (a segment with few
    of the range's costliest users): its turns are then cheaper to read.
    """
    ((key, value),) = segment
    day = time.strftime("%Y-%m-%d", time.gmtime(start))
    walk = kept_walk(conn, day, (key, value))
    if walk is None:
        return None
    if not worth_walking(conn, key, value):
        return None
    cols = ", ".join(f"sum(k.{c}) AS {c}" for c in _SUMS)
    best: list[Any] = []
    read = 0
    while batch := walk.fetchmany(_BATCH):
        read += len(batch)
        if read > _WALK_MAX:
            return None
        users = [r[0] for r in batch]
        # The batch's turns from start in the segment: their lists of turn
        # numbers, each looked up in the segment's rows (which have its time),
        # and only those in both in the cost rows. (Bounding the numbers by the
        # first turn from start cost more, a scan of the store's time index,
        # than the lookups it saves: the walk is mostly one batch.)
        found = conn.execute(
            f"WITH {prices}, x AS (SELECT t.user_key AS grp, k.model AS model, {cols}"
            " FROM ui_turns t CROSS JOIN ui_segment_turn s CROSS JOIN ui_cost_turn k"
            f" WHERE t.user_key IN ({','.join('?' * len(users))})"
            " AND s.key = ? AND s.value = ? AND s.n = t.n AND s.started_at >= ?"
            " AND k.n = t.n GROUP BY grp, k.model)"
            f" SELECT x.grp, {sums} GROUP BY x.grp",
            [*params, *users, key, value, start],
        ).fetchall()
        best = sorted([*best, *(r for r in found if r[2])], key=_rank)[:limit]
        nxt = batch[-1][1]
        if len(best) >= limit and best[-1][9] > nxt * (1 + _SLACK) + 1e-15:
            break
    return best


def _bound_sql(params: Sequence[Any]) -> str:
    """A row's cost by its model's price (bound as parameters), 0 if unpriced."""
    one = (
        "max(x.input - x.cache_read - x.cache_write, 0) * ? + x.cache_read * ?"
        " + x.cache_write * ? + max(x.output - x.reasoning, 0) * ? + x.reasoning * ?"
    )
    models = len(params) // 6
    if not models:
        return "0"
    return "CASE x.model " + " ".join([f"WHEN ? THEN {one}"] * models) + " ELSE 0 END"


def _bound_params(params: Sequence[Any]) -> list[Any]:
    """:func:`_bound_sql`'s parameters from :func:`.cost.price_table`'s."""
    out: list[Any] = []
    for at in range(0, len(params), 6):
        model, p_in, p_out, p_cr, p_cw, p_r = params[at : at + 6]
        out += [model, p_in, p_cr, p_cw, p_out, p_r]
    return out


def _rank(row: Sequence[Any]) -> tuple[float, str]:
    """A user row's place: the costliest first, then by key."""
    return (-row[9], row[0])
