"""
Reading the per-user satisfaction sums that :mod:`._satisfaction_users` keeps
in the dashboard's sidecar index: whether an index keeps them, every user's
score for all time (:func:`scores_sql`), and the unhappy users over a range
(:func:`unhappy`: the running totals by day, or the per-day sums for a short
range), each exact at the reader's own "now".
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from ._satisfaction_report import Group, TurnScore
from ._satisfaction_signals import _FAILED, IDLE_GAP, WEIGHTS, Signal

__all__ = ["available", "scores_sql", "unhappy", "user_group"]

_DOWN, _UP, _END = WEIGHTS["rating_down"], WEIGHTS["rating_up"], WEIGHTS["ended_after_failure"]  # fmt: skip


# --------------------------------------------------------------------------- reading
def available(conn: sqlite3.Connection) -> bool:
    """Whether the index attached as ``ui`` keeps these sums."""
    return bool(
        conn.execute(
            "SELECT 1 FROM ui.sqlite_master WHERE name = 'usat_meta'"
        ).fetchone()
    )


# The weight of a turn's rating, with its usat_extra row as ``e``.
_RATING_WEIGHT = (
    f"(CASE WHEN e.rating < 0 THEN {_DOWN!r} WHEN e.rating > 0 THEN {_UP!r}"
    " ELSE 0.0 END)"
)
# The turns whose "session ended" a reader at cutoff ?1 counts otherwise than
# the index did, with the change to their score (d).
_CORRECTION = (
    "SELECT t.n AS n, t.user_key AS user_key, t.started_at AS started_at,"
    " (1 - 2 * s.ended) * ("
    f" max(0.0, min(1.0, 1.0 - (t.penalty + {_RATING_WEIGHT} + {_END!r})))"
    f" - max(0.0, min(1.0, 1.0 - (t.penalty + {_RATING_WEIGHT})))) AS d"
    " FROM ui.usat_session s JOIN ui.sat_turns t ON t.n = s.last_n"
    " LEFT JOIN ui.usat_extra e ON e.n = s.last_n"
    " WHERE (s.ended = 0 AND s.last_at <= ?1) OR (s.ended = 1 AND s.last_at > ?1)"
)


def scores_sql() -> str:
    """
    CTEs ``corr`` and ``sat(user_key, score, turns, flagged)``: every user's
    satisfaction for all time, as :meth:`Group.score` computes it, at the
    cutoff ``?1`` (the reader's now less :data:`IDLE_GAP`). To follow ``WITH``.
    """
    return (
        f"corr AS MATERIALIZED ({_CORRECTION}),"
        " sat AS (SELECT u.user_key AS user_key, (u.score_sum + (SELECT total(d)"
        " FROM corr WHERE corr.user_key = u.user_key)) / u.turns AS score,"
        " u.turns AS turns, u.flagged AS flagged FROM ui.usat_user u)"
    )


def _day_end(epoch: float) -> float:
    """The midnight (UTC) after *epoch*."""
    return float((int(epoch) // 86_400 + 1) * 86_400)


# The turns from ?3 on the first day of a range (?3 to ?4), one by one with
# their final score, through the store's started_at index; and the change to
# the scores of the turns from ?3 whose "session ended" the reader counts
# otherwise than the index did.
_FIRST_DAY = (
    "SELECT t.user_key AS user_key, 1 AS turns, max(0.0, min(1.0, 1.0 - (t.penalty"
    f" + {_RATING_WEIGHT} + coalesce(e.ended, 0) * {_END!r}))) AS score_sum,"
    " (t.penalty > 0 OR coalesce(e.rating < 0, 0) OR coalesce(e.ended, 0)) AS flagged"
    " FROM main.conversations c JOIN ui.sat_turns t ON t.n = c.n"
    " LEFT JOIN ui.usat_extra e ON e.n = t.n"
    " WHERE c.started_at >= ?3 AND c.started_at < ?4"
    " UNION ALL SELECT user_key, 0, d, 0 FROM corr WHERE started_at >= ?3"
)
# Every user's figures from ?3: their total, less their running total at the
# range's first day ?2 (one lookup per user, whatever the range's length),
# plus the turns of that first day from ?3 (``edge``, summed per user).
_RANGE_RUNNING = (
    "edge AS MATERIALIZED (SELECT user_key, sum(turns) AS turns, total(score_sum)"
    f" AS score_sum, sum(flagged) AS flagged FROM ({_FIRST_DAY}) GROUP BY user_key),"
    " x AS (SELECT u.user_key AS user_key,"
    " u.turns - coalesce(c.turns, 0) + coalesce(g.turns, 0) AS turns,"
    " u.score_sum - coalesce(c.score_sum, 0.0) + coalesce(g.score_sum, 0.0)"
    " AS score_sum, u.flagged - coalesce(c.flagged, 0) + coalesce(g.flagged, 0)"
    " AS flagged FROM ui.usat_user u LEFT JOIN ui.usat_user_cum c"
    " ON c.user_key = u.user_key AND c.day = (SELECT max(day) FROM ui.usat_user_cum m"
    " WHERE m.user_key = u.user_key AND m.day <= ?2)"
    " LEFT JOIN edge g ON g.user_key = u.user_key"
    # A range holds no more of a user's turns and flagged turns than all time:
    # the users who cannot qualify skip the running-total lookup.
    " WHERE u.flagged > 0 AND u.turns >= ?5)"
    " SELECT user_key, score_sum / turns AS score, flagged FROM x"
    " WHERE user_key != '' AND turns >= ?5 AND flagged > 0"
)
# The same from the per-day sums after ?2: cheaper when the range holds fewer
# (user, day) rows than there are users, and the way on an index not yet
# refreshed since the running totals came.
_RANGE_DAILY = (
    "x AS (SELECT user_key, turns, score_sum, flagged FROM ui.usat_user_day"
    f" WHERE day > ?2 UNION ALL {_FIRST_DAY})"
    " SELECT user_key, total(score_sum) / sum(turns) AS score,"
    " sum(flagged) AS flagged FROM x WHERE user_key != '' GROUP BY user_key"
    " HAVING sum(turns) >= ?5 AND sum(flagged) > 0"
)


def _range_sql(conn: sqlite3.Connection, first_day: str) -> str:
    """The way to a range's users from *first_day* (see above): the cheaper one."""
    if not conn.execute(
        "SELECT 1 FROM ui.sqlite_master WHERE name = 'usat_user_cum'"
    ).fetchone():
        return _RANGE_DAILY
    users = conn.execute("SELECT count(*) FROM ui.usat_user").fetchone()[0]
    days = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM ui.usat_user_day WHERE day > ? LIMIT ?)",
        (first_day, users),
    ).fetchone()[0]
    return _RANGE_DAILY if days < users else _RANGE_RUNNING


def unhappy(
    conn: sqlite3.Connection,
    *,
    now: float,
    since: float | None = None,
    limit: int | None = 10,
    min_turns: int = 3,
    evidence: int = 5,
) -> list[dict[str, Any]]:
    """
    :meth:`Report.unhappy` from the sums: the users with at least *min_turns*
    turns from *since* and a flagged one, lowest score first (ties: more
    flagged turns first, then the key), each as :meth:`Group.as_dict` gives
    it. *conn* is the store with the index attached as ``ui``.
    """
    cutoff = now - IDLE_GAP
    if since is None:
        rows = conn.execute(
            f"WITH {scores_sql()} SELECT user_key, score, flagged FROM sat"
            " WHERE user_key != '' AND turns >= ?2 AND flagged > 0"
            " ORDER BY round(score, 9), -flagged, user_key LIMIT ?3",
            (cutoff, min_turns, -1 if limit is None else limit),
        ).fetchall()
    else:
        first_day = time.strftime("%Y-%m-%d", time.gmtime(since))
        # Scores to 9 places, as Report.unhappy orders them: the ways add in
        # different orders, and equal scores go by flagged turns, then key.
        rows = conn.execute(
            f"WITH corr AS MATERIALIZED ({_CORRECTION}),"
            f" {_range_sql(conn, first_day)}"
            " ORDER BY round(score, 9), -flagged, user_key LIMIT ?6",
            (cutoff, first_day, since, _day_end(since), min_turns,
             -1 if limit is None else limit),
        ).fetchall()  # fmt: skip
    return [
        user_group(conn, key, now=now, since=since).as_dict(evidence=evidence)
        for key, _, _ in rows
    ]


def user_group(
    conn: sqlite3.Connection, user_key: str, *, now: float, since: float | None
) -> Group:
    """One user's scored turns from *since* (their signals final), as a :class:`Group`."""
    cutoff = now - IDLE_GAP
    rows = conn.execute(
        "SELECT c.id, s.id, t.position, t.started_at, t.model, t.signals, e.rating,"
        " (x.session_n IS NOT NULL AND x.last_at <= ?) FROM ui.sat_turns t"
        " JOIN main.conversations c ON c.n = t.n"
        " LEFT JOIN main.sessions s ON s.n = t.session_n"
        " LEFT JOIN ui.usat_extra e ON e.n = t.n"
        " LEFT JOIN ui.usat_session x ON x.session_n = t.session_n AND x.last_n = t.n"
        " WHERE t.user_key = ? AND t.started_at >= ? ORDER BY t.n",
        (cutoff, user_key, -1e300 if since is None else since),
    ).fetchall()
    group = Group(user_key or None)
    for cid, sid, position, started, model, signals, rating, ended in rows:
        parsed = [Signal(name, reason) for name, reason in json.loads(signals)]
        if rating is not None and rating < 0:
            parsed.append(Signal("rating_down", "rated \U0001f44e"))
        elif rating is not None and rating > 0:
            parsed.append(Signal("rating_up", "rated \U0001f44d"))
        if ended and any(p.name in _FAILED for p in parsed):
            failed = [p for p in parsed if p.name in _FAILED]
            what = "a failed turn" if failed[0].name == "error" else "a non-answer"
            parsed.append(
                Signal("ended_after_failure", f"the session ended right after {what}")
            )
        group.turns.append(
            TurnScore(cid, user_key or None, sid, position, started, model, "", parsed)
        )
    return group
