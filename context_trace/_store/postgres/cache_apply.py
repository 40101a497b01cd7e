"""
Writing a sync step into the PostgreSQL store's local cache (``cache.py``):
the new turns with each session's history dropped in the session's own order,
the sessions and users rows, the touched sessions' ratings resolved again,
and the cache's cursor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from context_trace._record import Message
from context_trace._store.codec import messages_from_json, messages_json
from context_trace._store.connection import insert_rows
from context_trace._store.ratings import _RECOUNT
from context_trace._store.writer import _strip_history

__all__ = ["STATE", "apply"]

#: The cache's own bookkeeping table (the store's tables are the SQLite store's).
STATE = "pg_cache"
# SQLite parameters per IN (...) list.
_IN_CHUNK = 500


@dataclass(slots=True)
class _Turn:
    """One turn of a session being merged: cached (``n``) or new (``row``)."""

    key: tuple[float, float, str]
    messages: tuple[Message, ...]
    n: int | None = None
    row: tuple[Any, ...] | None = None


def apply(
    db: sqlite3.Connection,
    turns: list[Any],
    ratings: list[Any],
    sessions: list[Any],
    rated: list[Any],
    users: list[Any],
) -> None:
    """
    Write one sync step's rows into the cache *db* (the caller's transaction).

    *turns* and *ratings* are the new rows (``PostgresCache._read``), and
    *sessions*, *rated* and *users* the rows of the sessions and users they
    touch. Turns the cache holds already are skipped; ratings of the touched
    sessions are resolved again; the cursor in ``STATE`` moves past the rows.
    """
    cached = _held(db, [r[1] for r in turns])
    fresh = [r for r in turns if r[1] not in cached]
    new_ids = {r[1] for r in fresh}
    by_session: dict[str, list[tuple[Any, ...]]] = {}
    for row in fresh:
        if row[3] is not None:
            by_session.setdefault(row[3], []).append(row)
    # Sessions: those with turns, cached or new (a rating alone waits for
    # the turn it rates).
    known = _session_numbers(db, [s[0] for s in sessions])
    kept = [s for s in sessions if s[0] in known or s[0] in by_session]
    insert_rows(
        db,
        "INSERT INTO sessions (id, user_id, started_at, last_at)",
        [(s[0], s[1], float(s[2]), float(s[3])) for s in kept],
        " ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id,"
        " started_at = excluded.started_at, last_at = excluded.last_at",
    )
    numbers = _session_numbers(db, [s[0] for s in kept])
    insert_rows(
        db,
        "INSERT INTO users (id, first_seen, last_seen)",
        [(u[0], float(u[1]), float(u[2])) for u in users],
        " ON CONFLICT (id) DO UPDATE SET first_seen = excluded.first_seen,"
        " last_seen = excluded.last_seen",
    )
    # Turns: each session's history dropped in the sessions' own order.
    messages: dict[str, str] = {}
    for sid, rows in by_session.items():
        # A session new to the cache has no cached turns to read back.
        messages.update(_merge(db, known.get(sid), rows))
    insert_rows(
        db,
        "INSERT INTO conversations (session_n, id, user_id, session_id,"
        " started_at, ended_at, latency_ms, model, prompt_tokens,"
        " completion_tokens, total_tokens, error, metadata, messages_json)",
        [
            (
                None if r[3] is None else numbers.get(r[3]),
                r[1], r[2], r[3], float(r[4]), float(r[5]), int(r[6] or 0),
                r[7], r[8], r[9], r[10], r[11], r[12],
                messages.get(r[1], r[13]),
            )
            for r in fresh
        ],
    )  # fmt: skip
    # Ratings: the touched sessions' ratings resolved again, on turns held.
    resolved = [s[0] for s in kept]
    for start in range(0, len(resolved), _IN_CHUNK):
        part = resolved[start : start + _IN_CHUNK]
        db.execute(
            f"DELETE FROM feedback WHERE session_id IN ({','.join('?' * len(part))})",
            part,
        )
    held = set(resolved)
    rated_turns = new_ids | _held(db, [r[3] for r in rated if r[3] not in new_ids])
    insert_rows(
        db,
        "INSERT INTO feedback (id, session_id, user_id, conversation_id, rating,"
        " created_at)",
        [
            (r[0], r[1], r[2], r[3], int(r[4]), float(r[5]))
            for r in rated
            if r[1] in held and r[3] in rated_turns
        ],
    )
    db.executemany(_RECOUNT, [(sid,) for sid in resolved])
    last_turn = turns[-1] if turns else None
    last_rating = ratings[-1] if ratings else None
    updates = []
    if last_turn is not None:
        updates += [(last_turn[0], "turn_txid"), (last_turn[1], "turn_id")]
    if last_rating is not None:
        updates += [(last_rating[0], "rating_txid"), (last_rating[1], "rating_id")]
    db.executemany(f"UPDATE {STATE} SET value = ? WHERE key = ?", updates)


def _held(db: sqlite3.Connection, turn_ids: Sequence[str]) -> set[str]:
    """Those of *turn_ids* the cache holds (one query per 500)."""
    found: set[str] = set()
    for start in range(0, len(turn_ids), _IN_CHUNK):
        part = list(turn_ids[start : start + _IN_CHUNK])
        found.update(
            tid
            for (tid,) in db.execute(
                "SELECT id FROM conversations WHERE id IN"
                f" ({','.join('?' * len(part))})",
                part,
            )
        )
    return found


def _session_numbers(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        part = list(ids[start : start + _IN_CHUNK])
        found.update(
            (sid, int(n))
            for n, sid in db.execute(
                f"SELECT n, id FROM sessions WHERE id IN ({','.join('?' * len(part))})",
                part,
            )
        )
    return found


def _merge(
    db: sqlite3.Connection, session_n: int | None, rows: list[tuple[Any, ...]]
) -> dict[str, str]:
    """
    The new turns' messages (by id), the session's history dropped.

    The session's cached turns and the new ones, in the session's order;
    a cached turn that now follows a new one is stripped again and
    rewritten when that changes it.
    """
    if session_n is None and len(rows) == 1:
        return {}  # a first turn: nothing before it, its text stays as stored
    merged = [
        _Turn((float(r[4]), float(r[5]), r[1]), tuple(messages_from_json(r[13])),
              row=r)
        for r in rows
    ]  # fmt: skip
    if session_n is not None:
        merged += [
            _Turn((start, end, tid), tuple(messages_from_json(text)), n=n)
            for n, tid, start, end, text in db.execute(
                "SELECT n, id, started_at, ended_at, messages_json"
                " FROM conversations WHERE session_n = ?",
                (session_n,),
            )
        ]
    merged.sort(key=lambda t: t.key)
    # A plain set: this seen-set lives for one session of one step, so the
    # writer's compact fingerprints would save no memory and cost time.
    seen: set[tuple[str, str]] = set()
    out: dict[str, str] = {}
    for turn in merged:
        kept = _strip_history(turn.messages, seen)
        if len(kept) == len(turn.messages):
            continue  # unchanged: the stored text stays
        if turn.row is not None:
            out[turn.key[2]] = messages_json(kept)
        else:
            db.execute(
                "UPDATE conversations SET messages_json = ? WHERE n = ?",
                (messages_json(kept), turn.n),
            )
    return out
