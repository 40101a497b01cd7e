"""
Per-user satisfaction kept up to date in the dashboard's sidecar index.

The users table (sorted by satisfaction), the Unhappy users list and
``/api/unhappy`` read these sums; no request scores a turn or reads every
rating. :func:`index_users` runs in each refresh of the index
(``UIIndex._step``), after ``_satisfaction_index.index_chunk`` has scored the
new turns (``sat_turns``) and after the ratings were diffed; it keeps tables
of its own (``usat_*``):

- ``usat_feedback``: the store's ratings of a turn (a copy, by rating id), so
  that a turn's rating is a lookup, whether the rating came before the turn
  or after it;
- ``usat_extra``: the turns whose score has more than their own signals: their
  current rating (the newest) and whether "the session ended right after a
  failure" is counted on them;
- ``usat_session``: the sessions whose last turn failed or did not answer,
  with their last activity, and whether their end has been counted;
- ``usat_user`` and ``usat_user_day`` (per UTC day of the turn): turns, the
  sum of their final scores and the flagged turns; ``usat_user_signal``: per
  user, the turns carrying each signal;
- ``usat_user_cum``: the same sums per user up to and including each UTC day
  with a turn (a running total), so that a user's figures from a day on are
  their total less one lookup, whatever the length of the range.

A turn's final score is what :class:`~._satisfaction_report.Report` gives it
(its own signals, its rating, the ended session). When a rating comes, goes or
changes, or a session ends or resumes, the turn's old contribution is counted
out of the sums and the new one in.

"The session ended" depends on the clock: the refresh counts the sessions idle
for :data:`IDLE_GAP` at its own time; a reader at another time corrects the
few sessions between the two (:func:`scores_sql`), so a reader's figures are
exact at its own "now". Reading them (:func:`available`, :func:`scores_sql`,
:func:`unhappy`) is in :mod:`._satisfaction_users_read`.

Size: one ``usat_user`` row per user, one ``usat_user_day`` and one
``usat_user_cum`` row per user and UTC day with a turn, up to nine
``usat_user_signal`` rows per user, and one
``usat_extra`` row per rated or ended turn.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict

from ._satisfaction_signals import IDLE_GAP, WEIGHTS

__all__ = ["TABLES", "index_users"]

#: The sidecar tables this module keeps.
TABLES = ("usat_meta", "usat_feedback", "usat_extra", "usat_session", "usat_user",
          "usat_user_day", "usat_user_cum", "usat_user_signal")  # fmt: skip

# Running totals: a user's sums over their turns on the UTC days up to and
# including ``day``; a row per usat_user_day row.
_CUM_SCHEMA = """
    CREATE TABLE usat_user_cum (
        user_key TEXT NOT NULL,
        day TEXT NOT NULL,
        turns INTEGER NOT NULL,
        score_sum REAL NOT NULL,
        flagged INTEGER NOT NULL,
        PRIMARY KEY (user_key, day)
    ) WITHOUT ROWID
"""
# Fills usat_user_cum from usat_user_day (a new sidecar, or one from before it).
_CUM_FILL = (
    "INSERT INTO usat_user_cum (user_key, day, turns, score_sum, flagged)"
    " SELECT user_key, day, sum(turns) OVER w, total(score_sum) OVER w,"
    " sum(flagged) OVER w FROM usat_user_day"
    " WINDOW w AS (PARTITION BY user_key ORDER BY day)"
)

_SCHEMA = (
    "CREATE TABLE usat_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "INSERT INTO usat_meta (key, value) VALUES ('n', 0)",
    """
    CREATE TABLE usat_feedback (
        id TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        rating INTEGER NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
    "CREATE INDEX usat_feedback_turn ON usat_feedback (conversation_id, created_at)",
    """
    CREATE TABLE usat_extra (
        n INTEGER PRIMARY KEY,
        rating INTEGER,
        ended INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE usat_session (
        session_n INTEGER PRIMARY KEY,
        last_n INTEGER NOT NULL,
        last_at REAL NOT NULL,
        ended INTEGER NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX usat_session_due ON usat_session (ended, last_at)",
    """
    CREATE TABLE usat_user (
        user_key TEXT PRIMARY KEY,
        turns INTEGER NOT NULL,
        score_sum REAL NOT NULL,
        flagged INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE usat_user_day (
        day TEXT NOT NULL,
        user_key TEXT NOT NULL,
        turns INTEGER NOT NULL,
        score_sum REAL NOT NULL,
        flagged INTEGER NOT NULL,
        PRIMARY KEY (day, user_key)
    ) WITHOUT ROWID
    """,
    _CUM_SCHEMA,
    """
    CREATE TABLE usat_user_signal (
        user_key TEXT NOT NULL,
        signal TEXT NOT NULL,
        turns INTEGER NOT NULL,
        PRIMARY KEY (user_key, signal)
    ) WITHOUT ROWID
    """,
)

_DOWN, _UP, _END = WEIGHTS["rating_down"], WEIGHTS["rating_up"], WEIGHTS["ended_after_failure"]  # fmt: skip
# (final score, flagged 0/1, the signal names) of a turn.
Contribution = tuple[float, int, tuple[str, ...]]


def _final(
    penalty: float, signals: str, rating: int | None, ended: int
) -> Contribution:
    """A turn's contribution, as :func:`._satisfaction_report._finish` scores it."""
    names = [name for name, _ in json.loads(signals)]
    total = penalty
    if rating is not None and rating < 0:
        names.append("rating_down")
        total += _DOWN
    elif rating is not None and rating > 0:
        names.append("rating_up")
        total += _UP
    if ended:
        names.append("ended_after_failure")
        total += _END
    flagged = int(any(WEIGHTS[name] > 0 for name in names))
    return max(0.0, min(1.0, 1.0 - total)), flagged, tuple(sorted(set(names)))


class _Delta:
    """Changes to the per-user sums, applied in one go."""

    def __init__(self) -> None:
        self.user: defaultdict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])
        self.day: defaultdict[tuple[str, str], list[float]] = defaultdict(
            lambda: [0, 0.0, 0]
        )
        self.signal: defaultdict[tuple[str, str], int] = defaultdict(int)

    def add(self, user: str, day: str, turn: Contribution, sign: int) -> None:
        score, flagged, names = turn
        for sums in (self.user[user], self.day[(day, user)]):
            sums[0] += sign
            sums[1] += sign * score
            sums[2] += sign * flagged
        for name in names:
            self.signal[(user, name)] += sign

    def apply(self, conn: sqlite3.Connection, *, running: bool = True) -> None:
        """Add the changes to the sums (the running totals too, when *running*)."""
        conn.executemany(
            "INSERT INTO usat_user (user_key, turns, score_sum, flagged)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (user_key) DO UPDATE SET"
            " turns = turns + excluded.turns, score_sum = score_sum + excluded.score_sum,"
            " flagged = flagged + excluded.flagged",
            [(k, int(v[0]), v[1], int(v[2])) for k, v in self.user.items()],
        )
        conn.executemany(
            "INSERT INTO usat_user_day (day, user_key, turns, score_sum, flagged)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (day, user_key) DO UPDATE SET"
            " turns = turns + excluded.turns, score_sum = score_sum + excluded.score_sum,"
            " flagged = flagged + excluded.flagged",
            [(d, u, int(v[0]), v[1], int(v[2])) for (d, u), v in self.day.items()],
        )
        conn.executemany(
            "INSERT INTO usat_user_signal (user_key, signal, turns) VALUES (?, ?, ?)"
            " ON CONFLICT (user_key, signal) DO UPDATE SET turns = turns + excluded.turns",
            [(u, s, c) for (u, s), c in self.signal.items() if c],
        )
        conn.executemany(
            "DELETE FROM usat_user WHERE user_key = ? AND turns <= 0",
            [(k,) for k in self.user],
        )
        conn.executemany(
            "DELETE FROM usat_user_day WHERE day = ? AND user_key = ? AND turns <= 0",
            list(self.day),
        )
        conn.executemany(
            "DELETE FROM usat_user_signal WHERE user_key = ? AND signal = ?"
            " AND turns <= 0",
            list(self.signal),
        )
        if running:
            self._apply_running(conn)

    def _apply_running(self, conn: sqlite3.Connection) -> None:
        """
        Move the running totals of each changed (user, day) and of the user's
        later days; a day new to the user starts from their previous day's.
        """
        changed = [(u, d, v) for (d, u), v in self.day.items() if any(v)]
        conn.executemany(
            "INSERT OR IGNORE INTO usat_user_cum (user_key, day, turns, score_sum,"
            " flagged) SELECT ?1, ?2, coalesce(p.turns, 0), coalesce(p.score_sum, 0.0),"
            " coalesce(p.flagged, 0) FROM (SELECT 1) LEFT JOIN (SELECT turns,"
            " score_sum, flagged FROM usat_user_cum WHERE user_key = ?1 AND day < ?2"
            " ORDER BY day DESC LIMIT 1) p",
            [(u, d) for u, d, _ in changed],
        )
        conn.executemany(
            "UPDATE usat_user_cum SET turns = turns + ?, score_sum = score_sum + ?,"
            " flagged = flagged + ? WHERE user_key = ? AND day >= ?",
            [(int(v[0]), v[1], int(v[2]), u, d) for u, d, v in changed],
        )
        conn.executemany(
            "DELETE FROM usat_user_cum WHERE user_key = ?1 AND day = ?2 AND NOT EXISTS"
            " (SELECT 1 FROM usat_user_day WHERE day = ?2 AND user_key = ?1)",
            [(u, d) for u, d, _ in changed],
        )


_RATING = (
    "(SELECT f.rating FROM usat_feedback f WHERE f.conversation_id = {}"
    " ORDER BY f.created_at DESC LIMIT 1)"
)


class _Turns:
    """Reads and changes the extras of turns already counted."""

    def __init__(self, conn: sqlite3.Connection, delta: _Delta) -> None:
        self.conn = conn
        self.delta = delta

    def change(self, n: int, *, rating: bool = False, ended: int | None = None) -> None:
        """Re-read turn *n*'s rating (*rating*) or set its ended flag, and recount it."""
        row = self.conn.execute(
            "SELECT t.user_key, date(t.started_at, 'unixepoch'), t.penalty, t.signals,"
            " e.rating, coalesce(e.ended, 0), c.id FROM sat_turns t"
            " JOIN store.conversations c ON c.n = t.n"
            " LEFT JOIN usat_extra e ON e.n = t.n WHERE t.n = ?",
            (n,),
        ).fetchone()
        if row is None:
            return
        user, day, penalty, signals, old_rating, old_ended, cid = row
        new_rating = old_rating
        if rating:
            new_rating = self.conn.execute(
                "SELECT " + _RATING.format("?"), (cid,)
            ).fetchone()[0]
            new_rating = new_rating or None
        new_ended = old_ended if ended is None else ended
        if (new_rating, new_ended) == (old_rating, old_ended):
            return
        self.delta.add(user, day, _final(penalty, signals, old_rating, old_ended), -1)
        self.delta.add(user, day, _final(penalty, signals, new_rating, new_ended), 1)
        if new_rating is None and not new_ended:
            self.conn.execute("DELETE FROM usat_extra WHERE n = ?", (n,))
        else:
            self.conn.execute(
                "INSERT OR REPLACE INTO usat_extra (n, rating, ended) VALUES (?, ?, ?)",
                (n, new_rating, new_ended),
            )


def index_users(conn: sqlite3.Connection, *, ratings_changed: bool) -> None:
    """
    Bring the per-user sums level with the turns scored so far (``sat_meta``).

    *conn* is the sidecar inside the refresh's transaction, with the store
    attached as ``store``; when *ratings_changed*, the refresh has diffed
    the ratings into ``temp.new_feedback`` and ``temp.gone_feedback``, and
    ``temp.touched_sessions`` holds the sessions that new turns or ratings
    touched. A sidecar without these tables gets them here, filled from
    every turn scored so far.
    """
    fresh = not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE name = 'usat_meta'"
    ).fetchone()
    if fresh:
        for table in TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO usat_feedback (id, conversation_id, rating, created_at)"
            " SELECT id, conversation_id, rating, created_at FROM store.feedback"
            " WHERE conversation_id IS NOT NULL"
        )
    elif not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE name = 'usat_user_cum'"
    ).fetchone():  # a sidecar from before the running totals
        conn.execute(_CUM_SCHEMA)
        conn.execute(_CUM_FILL)
    # The users table's median latency per user: an ordered walk of the
    # user's turns (the no-user key can hold a twentieth of the store).
    conn.execute(
        "CREATE INDEX IF NOT EXISTS ui_turns_latency ON ui_turns (user_key, latency_ms)"
    )
    cutoff = time.time() - IDLE_GAP
    start = int(
        conn.execute("SELECT value FROM usat_meta WHERE key = 'n'").fetchone()[0]
    )
    end = int(conn.execute("SELECT value FROM sat_meta WHERE key = 'n'").fetchone()[0])
    delta = _Delta()
    turns = _Turns(conn, delta)
    # 1. Ratings that came, went or changed, on turns already counted.
    if ratings_changed and not fresh:
        touched = {
            r[0]
            for r in conn.execute(
                "SELECT conversation_id FROM usat_feedback"
                " WHERE id IN (SELECT id FROM temp.gone_feedback)"
            )
        }
        conn.execute(
            "DELETE FROM usat_feedback WHERE id IN (SELECT id FROM temp.gone_feedback)"
        )
        conn.execute(
            "INSERT OR REPLACE INTO usat_feedback (id, conversation_id, rating,"
            " created_at) SELECT f.id, f.conversation_id, f.rating, f.created_at"
            " FROM store.feedback f WHERE f.id IN (SELECT id FROM temp.new_feedback)"
            " AND f.conversation_id IS NOT NULL"
        )
        touched |= {
            r[0]
            for r in conn.execute(
                "SELECT conversation_id FROM usat_feedback"
                " WHERE id IN (SELECT id FROM temp.new_feedback)"
            )
        }
        for cid in sorted(touched):
            found = conn.execute(
                "SELECT n FROM store.conversations WHERE id = ?", (cid,)
            ).fetchone()
            if found is not None and found[0] <= start:
                turns.change(found[0], rating=True)
    # 2. The turns scored since: their own signals and their rating.
    if end > start:
        rows = conn.execute(
            "SELECT t.n, t.user_key, date(t.started_at, 'unixepoch'), t.penalty,"
            f" t.signals, {_RATING.format('c.id')} FROM sat_turns t"
            " JOIN store.conversations c ON c.n = t.n WHERE t.n > ? AND t.n <= ?",
            (start, end),
        ).fetchall()
        extras = []
        for n, user, day, penalty, signals, rating in rows:
            rating = rating or None
            delta.add(user, day, _final(penalty, signals, rating, 0), 1)
            if rating is not None:
                extras.append((n, rating))
        conn.executemany(
            "INSERT OR REPLACE INTO usat_extra (n, rating, ended) VALUES (?, ?, 0)",
            extras,
        )
    # 3. Sessions whose last turn or last activity moved: is their end still
    # counted, and does their last turn fail?
    if fresh:
        sessions = [
            r[0]
            for r in conn.execute("SELECT session_n FROM sat_sessions WHERE failed")
        ]
    else:
        sessions = [r[0] for r in conn.execute("SELECT n FROM temp.touched_sessions")]
    for session_n in sessions:
        now_row = conn.execute(
            "SELECT s.last_n, s.failed, m.last_at FROM sat_sessions s"
            " JOIN store.sessions m ON m.n = s.session_n WHERE s.session_n = ?",
            (session_n,),
        ).fetchone()
        old = conn.execute(
            "SELECT last_n, ended FROM usat_session WHERE session_n = ?", (session_n,)
        ).fetchone()
        keep = bool(
            old is not None
            and old[1]
            and now_row is not None
            and now_row[1]
            and now_row[0] == old[0]
            and now_row[2] <= cutoff
        )
        if old is not None and old[1] and not keep:
            turns.change(old[0], ended=0)
        if now_row is not None and now_row[1]:
            conn.execute(
                "INSERT OR REPLACE INTO usat_session (session_n, last_n, last_at,"
                " ended) VALUES (?, ?, ?, ?)",
                (session_n, now_row[0], now_row[2], int(keep)),
            )
        else:
            conn.execute("DELETE FROM usat_session WHERE session_n = ?", (session_n,))
    # 4. Sessions that have now been idle long enough: ended.
    for session_n, last_n in conn.execute(
        "SELECT session_n, last_n FROM usat_session WHERE ended = 0 AND last_at <= ?",
        (cutoff,),
    ).fetchall():
        turns.change(last_n, ended=1)
        conn.execute(
            "UPDATE usat_session SET ended = 1 WHERE session_n = ?", (session_n,)
        )
    delta.apply(conn, running=not fresh)
    if fresh:
        conn.execute(_CUM_FILL)
    conn.execute("UPDATE usat_meta SET value = ? WHERE key = 'n'", (end,))
