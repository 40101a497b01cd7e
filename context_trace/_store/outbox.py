"""The outbox's SQL side: queue, lease, settle, bound and count pending records."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from context_trace._record import Record

from .codec import record_from_json, record_to_json
from .connection import insert_rows

# The oldest deliverable outbox rows: due ids from the small index (a top-N sort
# over them), then their payloads by id.
_SELECT_DUE = (
    "SELECT o.id, o.payload FROM outbox o WHERE o.id IN (SELECT id FROM outbox"
    " INDEXED BY outbox_due WHERE lease_until <= ? ORDER BY id LIMIT ?)"
    " ORDER BY o.id"
)
_ADD_TO_COUNTER = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = value + excluded.value"
)


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """The ``pending``, ``leased``, ``dropped`` and ``failed`` counts, in one read."""
    # One statement, so one snapshot. count(*) runs on the smallest index, and
    # live leases are few: neither reads the payloads.
    total, leased, dropped, failed = conn.execute(
        "SELECT (SELECT count(*) FROM outbox),"
        " (SELECT count(*) FROM outbox WHERE status = 'leased' AND lease_until > ?),"
        " (SELECT value FROM meta WHERE key = 'dropped'),"
        " (SELECT value FROM meta WHERE key = 'failed')",
        (time.time(),),
    ).fetchone()
    return {
        "pending": int(total) - int(leased),
        "leased": int(leased),
        "dropped": int(dropped or 0),
        "failed": int(failed or 0),
    }


def payloads(records: Sequence[Record], now: float) -> list[tuple[str, str, float]]:
    """The outbox rows of *records*, serialised before any lock is taken."""
    return [(r.id, record_to_json(r), now) for r in records]


def put(
    conn: sqlite3.Connection, rows: Sequence[tuple[str, str, float]], outbox_max: int
) -> int:
    """Queue *rows* as pending; return how many of the oldest the bound dropped."""
    insert_rows(conn, "INSERT INTO outbox (record_id, payload, created_at)", rows)
    return enforce_bound(conn, outbox_max)


def enforce_bound(conn: sqlite3.Connection, outbox_max: int) -> int:
    """Delete the oldest pending rows beyond *outbox_max*; return how many."""
    # Row ids only grow, so max - min + 1 bounds the row count from above in
    # two index lookups; only past the bound are pending rows counted (on
    # the small outbox_status index, not the payload pages).
    low = conn.execute("SELECT min(id) FROM outbox").fetchone()[0]
    high = conn.execute("SELECT max(id) FROM outbox").fetchone()[0]
    if low is None or high - low + 1 <= outbox_max:
        return 0
    pending = conn.execute(
        "SELECT count(*) FROM outbox WHERE status = 'pending'"
    ).fetchone()[0]
    excess = int(pending) - outbox_max
    if excess <= 0:
        return 0
    conn.execute(
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
        " WHERE status = 'pending' ORDER BY id LIMIT ?)",
        (excess,),
    )
    conn.execute(_ADD_TO_COUNTER, ("dropped", excess))
    return excess


def claim(
    conn: sqlite3.Connection, limit: int, lease_seconds: float
) -> tuple[float, list[tuple[int, Record]], int]:
    """
    Lease up to *limit* deliverable rows, oldest first; the caller holds a write
    transaction.

    Returns:
        The lease's end, the ``(row_id, record)`` pairs claimed, and how many
        undecodable rows were deleted and counted as ``failed``.
    """
    now = time.time()
    until = now + lease_seconds
    rows = conn.execute(_SELECT_DUE, (now, limit)).fetchall()
    claimed: list[tuple[int, Record]] = []
    broken: list[tuple[int]] = []
    for row_id, payload in rows:
        try:
            claimed.append((row_id, record_from_json(payload)))
        except ValueError:
            broken.append((row_id,))
    conn.executemany(
        "UPDATE outbox SET status = 'leased', lease_until = ?,"
        " attempts = attempts + 1 WHERE id = ?",
        [(until, row_id) for row_id, _ in claimed],
    )
    if broken:
        conn.executemany("DELETE FROM outbox WHERE id = ?", broken)
        conn.execute(_ADD_TO_COUNTER, ("failed", len(broken)))
    return until, claimed, len(broken)


def done(conn: sqlite3.Connection, row_ids: Sequence[int]) -> None:
    """Delete delivered rows."""
    conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in row_ids])


def release(
    conn: sqlite3.Connection,
    leases: Sequence[tuple[int, float | None]],
    until: float,
) -> None:
    """
    Return ``(row_id, lease)`` rows to pending, deliverable again at *until*.

    A row whose lease is no longer the given one (it expired and someone else
    claimed it) is left alone; a None lease matches any.
    """
    conn.executemany(
        "UPDATE outbox SET status = 'pending', lease_until = ?"
        " WHERE id = ? AND (? IS NULL OR lease_until = ?)",
        [(until, row_id, token, token) for row_id, token in leases],
    )


def fail(conn: sqlite3.Connection, leases: Sequence[tuple[int, float | None]]) -> None:
    """Delete ``(row_id, lease)`` rows for good and count them as ``failed``."""
    before = conn.total_changes
    conn.executemany(
        "DELETE FROM outbox WHERE id = ? AND (? IS NULL OR lease_until = ?)",
        [(row_id, token, token) for row_id, token in leases],
    )
    deleted = conn.total_changes - before
    if deleted:
        conn.execute(_ADD_TO_COUNTER, ("failed", deleted))
