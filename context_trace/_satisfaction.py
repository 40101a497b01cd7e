"""
Satisfaction: implicit signals per turn, scores, and the unhappy users.

Read-side only: everything here reads a store (or the dashboard's sidecar
index) after the fact; nothing runs on the recording path, and ``import
context_trace`` never imports this module. The rules are written out in
README's "Satisfaction" section; the constants below are those rules.

A turn's *signals* come from its own record and the turn before it in its
session (:func:`turn_signals`); two more come from outside the turn and are
added when a report is built (:func:`analyze`): its rating (explicit), and
"the session ended right after a failure or a non-answer", which depends on
how long ago the session's last activity was.

Negative sentiment uses VADER (``vaderSentiment``, the ``analytics`` extra),
whose lexicon ships inside its wheel: nothing is downloaded. Without it the
frustration phrases still apply, and :func:`sentiment_available` says so.

The code is in four modules: the rules and signals (``_satisfaction_signals``),
the read models (``_satisfaction_report``), the dashboard's sidecar
(``_satisfaction_index``) and, here, :func:`analyze` over a store; every name
is importable from here.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._satisfaction_index import USER_SCORES_SQL as USER_SCORES_SQL
from ._satisfaction_index import analyze_index as analyze_index
from ._satisfaction_index import index_chunk as index_chunk
from ._satisfaction_report import Group, Report, TurnScore, _check_gap, _finish
from ._satisfaction_signals import (
    IDLE_GAP,
    MIN_TURNS,
    NEUTRAL_WORDS,
    REPHRASE_THRESHOLD,
    SENTIMENT_THRESHOLD,
    WEIGHTS,
    Signal,
    _decode,
    content_words,
    similarity,
    turn_signals,
)
from ._satisfaction_signals import sentiment_available as sentiment_available
from ._store.connection import read_uri

__all__ = [
    "IDLE_GAP",
    "MIN_TURNS",
    "NEUTRAL_WORDS",
    "REPHRASE_THRESHOLD",
    "SENTIMENT_THRESHOLD",
    "WEIGHTS",
    "Group",
    "Report",
    "Signal",
    "TurnScore",
    "analyze",
    "content_words",
    "similarity",
    "turn_signals",
]

# --------------------------------------------------------------------------- the store
_TURNS_SQL = (
    "SELECT c.id, c.user_id, c.session_id, c.session_n, c.started_at, c.model,"
    " c.error, c.metadata, c.messages_json FROM conversations c"
)


def _rows(conn: sqlite3.Connection, since: float | None) -> Iterator[tuple[Any, ...]]:
    """Every turn in session, then commit, order (turns without a session last)."""
    where = " WHERE c.started_at >= ?" if since is not None else ""
    order = " ORDER BY c.session_n IS NULL, c.session_n, c.n"
    yield from conn.execute(
        _TURNS_SQL + where + order, () if since is None else (since,)
    )


def _score_rows(rows: Iterable[tuple[Any, ...]]) -> list[TurnScore]:
    """The turns' own signals; *rows* in session, then commit, order."""
    turns: list[TurnScore] = []
    previous: tuple[str | None, str | None] = (None, None)  # (session, its question)
    position = 0
    for cid, user, session, _sn, started, model, error, meta, messages in rows:
        question, answer, abandoned = _decode(meta, messages)
        if session is None or session != previous[0]:
            position, earlier = 0, None
        else:
            earlier = previous[1]
        position += 1
        signals = turn_signals(
            question, answer, error=error, abandoned=abandoned, previous=earlier
        )
        turns.append(
            TurnScore(cid, user, session, position, started, model, question, signals)
        )
        if session is not None:
            kept = previous[1] if session == previous[0] else None
            previous = (session, question if question.strip() else kept)
    return turns


def analyze(
    store: str | Path,
    *,
    since: float | None = None,
    now: float | None = None,
    idle_gap: float = IDLE_GAP,
) -> Report:
    """
    Score every turn of *store* (read-only), and group them.

    Args:
        store: The SQLite store.
        since: Only turns started at or after this time (epoch seconds).
        now: The present, for "the session ended" (default: the clock).
        idle_gap: Seconds of inactivity after which a session has ended.

    Raises:
        FileNotFoundError: If *store* does not exist.
        ValueError: If *idle_gap* is negative, or *store* is not a store.
    """
    _check_gap(idle_gap)
    path = Path(store)
    if not path.is_file():
        raise FileNotFoundError(f"no context_trace database at {path}")
    conn = sqlite3.connect(read_uri(path), uri=True, timeout=10.0)
    try:
        try:
            ratings = {
                cid: rating
                for cid, rating in conn.execute(
                    "SELECT conversation_id, rating FROM feedback"
                    " WHERE conversation_id IS NOT NULL ORDER BY created_at"
                )
            }
            session_last = dict(conn.execute("SELECT id, last_at FROM sessions"))
            turns = _finish(
                _score_rows(_rows(conn, since)),
                ratings,
                session_last,
                time.time() if now is None else now,
                idle_gap,
            )
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{path} is not a context_trace store: {exc}") from None
    finally:
        conn.close()
    return Report(turns, sentiment_available())
