"""
Satisfaction in the dashboard's sidecar index (see ``_satisfaction``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from ._satisfaction_report import Report, TurnScore, _check_gap, _finish
from ._satisfaction_signals import (
    _FAILED,
    IDLE_GAP,
    WEIGHTS,
    Signal,
    _decode,
    sentiment_available,
    turn_signals,
)

# --------------------------------------------------------------------------- the sidecar
# The dashboard's index (``_store/ui_index.py``) calls :func:`index_chunk` in
# each refresh, inside its transaction, with the store attached as ``store``.
# A turn's own signals are computed once, when it is indexed, against the
# turns of its session indexed before it; ratings and "the session ended" are
# added when read (:func:`analyze_index`), since they change with time.
_SIDECAR = (
    "CREATE TABLE IF NOT EXISTS sat_meta (key TEXT PRIMARY KEY, value)",
    "INSERT INTO sat_meta (key, value) VALUES ('n', 0) ON CONFLICT DO NOTHING",
    # One row per turn: its position in its session and its own signals
    # (JSON [[name, reason], ...]); the per-user index serves the user pages.
    """
    CREATE TABLE IF NOT EXISTS sat_turns (
        n INTEGER PRIMARY KEY,
        user_key TEXT NOT NULL,
        session_n INTEGER,
        started_at REAL NOT NULL,
        model TEXT,
        position INTEGER NOT NULL,
        penalty REAL NOT NULL,
        signals TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS sat_turns_user ON sat_turns (user_key, n)",
    "CREATE INDEX IF NOT EXISTS sat_turns_session ON sat_turns (session_n, n)",
    # Per user: turns and the sum of their scores from their own signals (the
    # users table's column adds the ratings and ended sessions when read).
    """
    CREATE TABLE IF NOT EXISTS sat_users (
        user_key TEXT PRIMARY KEY,
        turns INTEGER NOT NULL,
        score_sum REAL NOT NULL
    ) WITHOUT ROWID
    """,
    # Per session: its last turn, and whether that turn failed or did not answer.
    """
    CREATE TABLE IF NOT EXISTS sat_sessions (
        session_n INTEGER PRIMARY KEY,
        last_n INTEGER NOT NULL,
        failed INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS sat_sessions_failed ON sat_sessions (last_n)"
    " WHERE failed",
)
# The users table's satisfaction, per user key, as :meth:`Group.score` of
# :func:`analyze_index` computes it for all time: the stored per-turn base
# scores, corrected for the turns a rating or an ended session changes.
# Parameters: the time before which a session has ended. The sidecar is
# attached as ``ui``, the store as ``main`` (the dashboard's connection).
USER_SCORES_SQL = f"""
WITH ended AS (
    SELECT s.last_n AS n FROM ui.sat_sessions s JOIN main.sessions m
    ON m.n = s.session_n WHERE s.failed AND m.last_at <= ?
), rated AS (
    SELECT c.n AS n, f.rating AS rating, max(f.created_at) FROM main.feedback f
    JOIN main.conversations c ON c.id = f.conversation_id WHERE f.rating != 0
    GROUP BY c.n
), delta AS (
    SELECT t.user_key, sum(
        max(0.0, min(1.0, 1.0 - t.penalty
            - (CASE WHEN e.n IS NOT NULL
               THEN {WEIGHTS["ended_after_failure"]!r} ELSE 0.0 END)
            - coalesce(CASE WHEN r.rating < 0 THEN {WEIGHTS["rating_down"]!r}
               WHEN r.rating > 0 THEN {WEIGHTS["rating_up"]!r} END, 0.0)))
        - max(0.0, min(1.0, 1.0 - t.penalty))) AS d
    FROM (SELECT n FROM ended UNION SELECT n FROM rated) k
    JOIN ui.sat_turns t ON t.n = k.n
    LEFT JOIN ended e ON e.n = k.n
    LEFT JOIN rated r ON r.n = k.n
    GROUP BY t.user_key
)
SELECT u.user_key AS user_key,
    (u.score_sum + coalesce(d.d, 0.0)) / u.turns AS score
FROM ui.sat_users u LEFT JOIN delta d ON d.user_key = u.user_key
"""


def index_chunk(conn: sqlite3.Connection, end: int) -> None:
    """
    Score the store's turns numbered up to *end* that the sidecar has not yet.

    *conn* is the sidecar, inside a transaction, with the store attached as
    ``store``; the tables it creates are its own (``sat_*``).
    """
    for statement in _SIDECAR:
        conn.execute(statement)
    start = int(
        conn.execute("SELECT value FROM sat_meta WHERE key = 'n'").fetchone()[0]
    )
    if end <= start:
        return
    rows = conn.execute(
        "SELECT n, coalesce(user_id, ''), session_n, started_at, model, error,"
        " metadata, messages_json FROM store.conversations"
        " WHERE n > ? AND n <= ? ORDER BY n",
        (start, end),
    ).fetchall()
    last: dict[int, tuple[int, str | None]] = {}  # session_n -> (position, question)
    out = []
    for n, user, session_n, started, model, error, meta, messages in rows:
        question, answer, abandoned = _decode(meta, messages)
        earlier: str | None = None
        position = 1
        if session_n is not None:
            known = last.get(session_n)
            if known is None:
                position = (
                    1
                    + conn.execute(
                        "SELECT count(*) FROM store.conversations"
                        " WHERE session_n = ? AND n < ?",
                        (session_n, n),
                    ).fetchone()[0]
                )
                for (text,) in conn.execute(
                    "SELECT messages_json FROM store.conversations"
                    " WHERE session_n = ? AND n < ? ORDER BY n DESC LIMIT 20",
                    (session_n, n),
                ):
                    said = _decode(None, text)[0]
                    if said.strip():
                        earlier = said
                        break
            else:
                position, earlier = known[0] + 1, known[1]
            kept = question if question.strip() else earlier
            last[session_n] = (position, kept)
        signals = turn_signals(
            question, answer, error=error, abandoned=abandoned, previous=earlier
        )
        out.append(
            (
                n,
                user,
                session_n,
                started,
                model,
                position,
                sum(s.weight for s in signals),
                json.dumps([[s.name, s.reason] for s in signals], ensure_ascii=False),
            )
        )
    conn.executemany(
        "INSERT OR REPLACE INTO sat_turns VALUES (?, ?, ?, ?, ?, ?, ?, ?)", out
    )
    conn.executemany(
        "INSERT INTO sat_users (user_key, turns, score_sum) VALUES (?, 1, ?)"
        " ON CONFLICT (user_key) DO UPDATE SET turns = turns + 1,"
        " score_sum = score_sum + excluded.score_sum",
        [(row[1], max(0.0, min(1.0, 1.0 - row[6]))) for row in out],
    )
    conn.executemany(
        "INSERT INTO sat_sessions (session_n, last_n, failed) VALUES (?, ?, ?)"
        " ON CONFLICT (session_n) DO UPDATE SET last_n = excluded.last_n,"
        " failed = excluded.failed",
        [
            (row[2], row[0], any(x[0] in _FAILED for x in json.loads(row[7])))
            for row in out
            if row[2] is not None
        ],
    )
    conn.execute("UPDATE sat_meta SET value = ? WHERE key = 'n'", (end,))


def analyze_index(
    conn: sqlite3.Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    user: str | None = None,
    session: str | None = None,
    now: float | None = None,
    idle_gap: float = IDLE_GAP,
    index: str = "main",
    store: str = "store",
) -> Report:
    """
    A :class:`Report` from the dashboard's sidecar (see :func:`index_chunk`).

    *conn* holds the sidecar as schema *index* and the store as schema
    *store* (the sidecar's own connection: ``main`` and ``store``; the
    dashboard's queries: ``ui`` and ``main``). *since* and *until* bound the
    turns' start times, *user* keeps one user's turns ('' for turns without a
    user), *session* one session's turns.
    """
    _check_gap(idle_gap)
    for schema in (index, store):
        if schema not in ("main", "store", "ui"):
            raise ValueError(f"unknown schema {schema!r}")
    has = conn.execute(
        f"SELECT 1 FROM {index}.sqlite_master WHERE name = 'sat_turns'"
    ).fetchone()
    if not has:
        return Report([], sentiment_available())
    where: list[str] = []
    params: list[Any] = []
    if since is not None:
        where.append("t.started_at >= ?")
        params.append(since)
    if until is not None:
        where.append("t.started_at < ?")
        params.append(until)
    if user is not None:
        where.append("t.user_key = ?")
        params.append(user)
    if session is not None:
        where.append(f"t.session_n = (SELECT n FROM {store}.sessions WHERE id = ?)")
        params.append(session)
    sql = (
        "SELECT c.id, nullif(t.user_key, ''), s.id, t.position, t.started_at,"
        f" t.model, t.signals, s.last_at FROM {index}.sat_turns t"
        f" JOIN {store}.conversations c ON c.n = t.n"
        f" LEFT JOIN {store}.sessions s ON s.n = t.session_n"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY t.n"
    )
    turns: list[TurnScore] = []
    session_last: dict[str, float] = {}
    for cid, uid, sid, position, started, model, signals, last_at in conn.execute(
        sql, params
    ):
        parsed = [Signal(name, reason) for name, reason in json.loads(signals)]
        turns.append(TurnScore(cid, uid, sid, position, started, model, "", parsed))
        if sid is not None:
            session_last[sid] = last_at
    ratings = {
        cid: rating
        for cid, rating in conn.execute(
            f"SELECT conversation_id, rating FROM {store}.feedback"
            " WHERE conversation_id IS NOT NULL ORDER BY created_at"
        )
    }
    return Report(
        _finish(
            turns, ratings, session_last, time.time() if now is None else now, idle_gap
        ),
        sentiment_available(),
    )
