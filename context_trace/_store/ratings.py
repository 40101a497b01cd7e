"""
The rating model, applied where a rating is written: one rating per turn.

A :class:`~context_trace._record.Feedback` names a session, and a turn when the
rating call knew one (``Session.rate(turn_id=...)``, or the session's last turn
answered in the same process). In the store's write transaction, after the
batch's turns are inserted:

- **Target.** The named turn, which must belong to the session; else the
  session's last *answered* turn (one with an assistant message) that ended at
  or before the rating was given.
- **Unknown targets are refused, never invented.** A session the store does not
  hold, a turn that is not the session's, or a session with no answered turn
  yet: the rating is not stored, and no session or user row is created for it.
- **Owner.** The rating belongs to the session's user (the user who talked),
  whoever sent the feedback request.
- **The last rating wins.** A turn keeps only its newest rating (by the time it
  was given, then by id): a newer one replaces it, an older one arriving late
  is ignored, and the same rating delivered twice is stored once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from context_trace._record import Feedback

from .base import Refused
from .codec import decode

__all__ = ["Refused", "store_ratings"]

_SESSION = "SELECT n, user_id FROM sessions WHERE id = ?"
_TURN_SESSION = "SELECT session_n FROM conversations WHERE id = ?"
# A session's turns are few: read them newest first and take the first answer.
_ANSWERED = (
    "SELECT id, messages_json FROM conversations"
    " WHERE session_n = ? AND ended_at <= ? ORDER BY ended_at DESC, n DESC"
)
_CURRENT = (
    "SELECT id, created_at FROM feedback WHERE session_id = ? AND conversation_id = ?"
)
_INSERT = (
    "INSERT OR IGNORE INTO feedback (id, session_id, user_id, conversation_id, rating,"
    " created_at) VALUES (?, ?, ?, ?, ?, ?)"
)
# Activity: a rating moves its session's and its user's last activity.
_TOUCH_SESSION = "UPDATE sessions SET last_at = max(last_at, ?) WHERE n = ?"
_TOUCH_USER = "UPDATE users SET last_seen = max(last_seen, ?) WHERE id = ?"
# Counters are recounted from the feedback table rather than incremented, so a
# replaced or re-delivered rating is never counted twice.
_RECOUNT = (
    "UPDATE sessions SET"
    " rating_up = (SELECT count(*) FROM feedback f"
    "  WHERE f.session_id = sessions.id AND f.rating > 0),"
    " rating_down = (SELECT count(*) FROM feedback f"
    "  WHERE f.session_id = sessions.id AND f.rating < 0)"
    " WHERE id = ?"
)


def _answered(conn: sqlite3.Connection, session_n: int, at: float) -> str | None:
    """The session's last turn with an answer that ended by *at*, or None."""
    for turn_id, text in conn.execute(_ANSWERED, (session_n, at)):
        if any(row[0] == "assistant" for row in decode(text)):
            return str(turn_id)
    return None


def _target(
    conn: sqlite3.Connection, feedback: Feedback
) -> tuple[int, str | None, str] | str:
    """``(session number, session user, turn id)``, or why there is none."""
    session = conn.execute(_SESSION, (feedback.session_id,)).fetchone()
    if session is None:
        return "the store holds no such session"
    session_n, user_id = session
    if feedback.conversation_id is not None:
        turn = conn.execute(_TURN_SESSION, (feedback.conversation_id,)).fetchone()
        if turn is None or turn[0] != session_n:
            return f"the session has no turn {feedback.conversation_id!r}"
        return session_n, user_id, feedback.conversation_id
    turn_id = _answered(conn, session_n, feedback.created_at)
    if turn_id is None:
        return "the session had no answered turn when it was rated"
    return session_n, user_id, turn_id


def store_ratings(
    conn: sqlite3.Connection, batch: list[Feedback]
) -> tuple[list[Feedback], list[Refused]]:
    """
    Store *batch* by the rules above; the caller holds the write transaction.

    Returns:
        The ratings as stored (their turn and user resolved; one delivered
        before is included, one older than the turn's stored rating is not),
        and the refused ones.
    """
    kept: list[Feedback] = []
    refused: list[Refused] = []
    rated: set[str] = set()
    for feedback in batch:
        found = _target(conn, feedback)
        if isinstance(found, str):
            refused.append(Refused(feedback, found))
            continue
        session_n, user_id, turn_id = found
        current = conn.execute(_CURRENT, (feedback.session_id, turn_id)).fetchall()
        mine = (feedback.created_at, feedback.id)
        if any((at, rid) > mine for rid, at in current):
            continue  # a newer rating of the turn is stored: this one is past
        kept.append(replace(feedback, conversation_id=turn_id, user_id=user_id))
        if any(rid == feedback.id for rid, _ in current):
            continue  # delivered before
        if current:
            conn.executemany(
                "DELETE FROM feedback WHERE id = ?", [(rid,) for rid, _ in current]
            )
        conn.execute(
            _INSERT,
            (
                feedback.id,
                feedback.session_id,
                user_id,
                turn_id,
                feedback.rating,
                feedback.created_at,
            ),
        )
        conn.execute(_TOUCH_SESSION, (feedback.created_at, session_n))
        if user_id is not None:
            conn.execute(_TOUCH_USER, (feedback.created_at, user_id))
        rated.add(feedback.session_id)
    if rated:
        conn.executemany(_RECOUNT, [(sid,) for sid in rated])
    return kept, refused
