"""
The outbox's SQL side: queue, lease, settle, bound and count pending records.

All of the outbox's SQL is here: the store's outbox (``sqlite_outbox``) and the
reader's counts call these functions.

Every row names its destination (``context``, ``otlp``): a record queued for
several destinations is one row per destination, and each destination's rows
are claimed, released and failed on their own.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

from context_trace._record import Record

from . import holder as _holder
from .base import DEFAULT_DESTINATION
from .codec import record_from_json, record_to_json
from .connection import insert_rows

# The oldest deliverable outbox rows: due ids from the small index (a top-N sort
# over them), then their payloads by id.
_SELECT_DUE = (
    "SELECT o.id, o.payload FROM outbox o WHERE o.id IN (SELECT id FROM outbox"
    " INDEXED BY outbox_destination_due WHERE destination = ? AND lease_until <= ?"
    " ORDER BY id LIMIT ?) ORDER BY o.id"
)
# DEFAULT_DESTINATION (from .base) is also every row's of a v2 file.
_ADD_TO_COUNTER = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = value + excluded.value"
)


# Row ids per ``IN (...)`` list: one statement leases or deletes a claim's rows
# (measured: a statement per row cost a third of the outbox's CPU per turn).
_IN_CHUNK = 500


def _chunks(row_ids: Sequence[int]) -> list[Sequence[int]]:
    return [row_ids[i : i + _IN_CHUNK] for i in range(0, len(row_ids), _IN_CHUNK)]


def failed_key(destination: str) -> str:
    """The ``meta`` counter of rows failed for *destination* (``failed`` is the total)."""
    return f"failed:{destination}"


def payloads(
    records: Sequence[Record],
    now: float,
    destinations: Sequence[str] = (DEFAULT_DESTINATION,),
) -> list[tuple[str, str, float, str]]:
    """The outbox rows of *records*, serialised once, before any lock is taken."""
    rows: list[tuple[str, str, float, str]] = []
    for r in records:
        payload = record_to_json(r)
        rows.extend((r.id, payload, now, d) for d in destinations)
    return rows


def put(
    conn: sqlite3.Connection,
    rows: Sequence[tuple[str, str, float, str]],
    outbox_max: int,
) -> int:
    """Queue *rows* as pending; return how many of the oldest the bound dropped."""
    insert_rows(
        conn, "INSERT INTO outbox (record_id, payload, created_at, destination)", rows
    )
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


def free_dead_holders(conn: sqlite3.Connection, me: str) -> int:
    """
    Make every row leased or backed off by a process that has died due now.

    A new process's view of the backend starts fresh, so a dead process's
    backoff does not hold it back either. Returns how many rows were freed;
    the caller holds a write transaction.
    """
    holders = [
        str(row[0])
        for row in conn.execute(
            # Two index ranges around this process's own rows, which can be
            # many during an outage: those are never scanned.
            "SELECT DISTINCT holder FROM outbox INDEXED BY outbox_holder"
            " WHERE holder < ? OR holder > ?",
            (me, me),
        )
    ]
    dead = [(h,) for h in holders if not _holder.is_alive(h)]
    if not dead:
        return 0
    before = conn.total_changes
    conn.executemany(
        "UPDATE outbox SET status = 'pending', lease_until = 0, holder = NULL"
        " WHERE holder = ?",
        dead,
    )
    return conn.total_changes - before


def claim(
    conn: sqlite3.Connection,
    limit: int,
    lease_seconds: float,
    me: str,
    destination: str = DEFAULT_DESTINATION,
    decode: Callable[[str], Record] = record_from_json,
) -> tuple[float, list[tuple[int, Record]], int]:
    """
    Lease up to *limit* deliverable rows for *destination*, oldest first, to
    holder *me*; the caller holds a write transaction. *decode* turns a payload
    back into its record (``record_from_json``, or a cache in front of it).

    Returns:
        The lease's end, the ``(row_id, record)`` pairs claimed, and how many
        undecodable rows were deleted and counted as ``failed``.
    """
    now = time.time()
    until = now + lease_seconds
    rows = conn.execute(_SELECT_DUE, (destination, now, limit)).fetchall()
    claimed: list[tuple[int, Record]] = []
    broken: list[tuple[int]] = []
    for row_id, payload in rows:
        try:
            claimed.append((row_id, decode(payload)))
        except ValueError:
            broken.append((row_id,))
    for part in _chunks([row_id for row_id, _ in claimed]):
        conn.execute(
            "UPDATE outbox SET status = 'leased', lease_until = ?, holder = ?,"
            f" attempts = attempts + 1 WHERE id IN ({','.join('?' * len(part))})",
            (until, me, *part),
        )
    if broken:
        conn.executemany("DELETE FROM outbox WHERE id = ?", broken)
        conn.execute(_ADD_TO_COUNTER, ("failed", len(broken)))
        conn.execute(_ADD_TO_COUNTER, (failed_key(destination), len(broken)))
    return until, claimed, len(broken)


def done(conn: sqlite3.Connection, row_ids: Sequence[int]) -> None:
    """Delete delivered rows."""
    for part in _chunks(row_ids):
        conn.execute(
            f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(part))})", part
        )


def release(
    conn: sqlite3.Connection,
    leases: Sequence[tuple[int, float | None]],
    until: float,
    me: str,
) -> None:
    """
    Return ``(row_id, lease)`` rows to pending, deliverable again at *until*.

    The backoff names holder *me*: if this process dies, the next one need not
    wait it out. A row whose lease is no longer the given one (it expired and
    someone else claimed it) is left alone; a None lease matches any.
    """
    conn.executemany(
        "UPDATE outbox SET status = 'pending', lease_until = ?, holder = ?"
        " WHERE id = ? AND (? IS NULL OR lease_until = ?)",
        [(until, me, row_id, token, token) for row_id, token in leases],
    )


def fail(
    conn: sqlite3.Connection,
    leases: Sequence[tuple[int, float | None]],
    destination: str = DEFAULT_DESTINATION,
) -> None:
    """Delete ``(row_id, lease)`` rows for good and count them as ``failed``."""
    before = conn.total_changes
    conn.executemany(
        "DELETE FROM outbox WHERE id = ? AND (? IS NULL OR lease_until = ?)",
        [(row_id, token, token) for row_id, token in leases],
    )
    deleted = conn.total_changes - before
    if deleted:
        conn.execute(_ADD_TO_COUNTER, ("failed", deleted))
        conn.execute(_ADD_TO_COUNTER, (failed_key(destination), deleted))


def reset_backoff(conn: sqlite3.Connection) -> int:
    """Make every pending row due now (leased rows keep their lease); how many."""
    return conn.execute(
        "UPDATE outbox SET lease_until = 0 WHERE status = 'pending'"
    ).rowcount


def outbox_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """The ``pending``, ``leased``, ``dropped`` and ``failed`` counts, in one read."""
    # One snapshot (a read transaction). count(*) runs on the smallest index,
    # and live leases are few: neither reads the payloads. A lease whose holder
    # has died is not "being delivered": it counts as pending.
    in_transaction = conn.in_transaction
    if not in_transaction:
        conn.execute("BEGIN")
    try:
        total, dropped, failed = conn.execute(
            "SELECT (SELECT count(*) FROM outbox),"
            " (SELECT value FROM meta WHERE key = 'dropped'),"
            " (SELECT value FROM meta WHERE key = 'failed')"
        ).fetchone()
        now = time.time()
        try:
            holders = conn.execute(
                "SELECT holder, count(*) FROM outbox WHERE status = 'leased'"
                " AND lease_until > ? GROUP BY holder",
                (now,),
            ).fetchall()
        except sqlite3.OperationalError:
            # A v1 file opened read-only (it is migrated by the next writer):
            # its leases name no holder and run until they expire.
            holders = conn.execute(
                "SELECT NULL, count(*) FROM outbox WHERE status = 'leased'"
                " AND lease_until > ?",
                (now,),
            ).fetchall()
    finally:
        if not in_transaction:
            conn.execute("COMMIT")
    leased = sum(
        int(n) for who, n in holders if who is None or _holder.is_alive(str(who))
    )
    return {
        "pending": int(total) - int(leased),
        "leased": int(leased),
        "dropped": int(dropped or 0),
        "failed": int(failed or 0),
    }


def outbox_destinations(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """
    Per destination: rows ``waiting`` now (pending or leased) and ``failed`` in total.

    Every destination that has rows waiting or ever failed a row is listed; a
    file written before destinations existed (v2) lists its rows as ``context``.
    """
    out: dict[str, dict[str, int]] = {}
    try:
        waiting = conn.execute(
            "SELECT destination, count(*) FROM outbox GROUP BY destination"
        ).fetchall()
    except sqlite3.OperationalError:  # a v2 file opened read-only
        waiting = conn.execute("SELECT 'context', count(*) FROM outbox").fetchall()
    for name, n in waiting:
        if n:
            out[str(name)] = {"waiting": int(n), "failed": 0}
    for key, value in conn.execute(
        "SELECT key, value FROM meta WHERE key LIKE 'failed:%'"
    ):
        name = str(key).split(":", 1)[1]
        out.setdefault(name, {"waiting": 0, "failed": 0})["failed"] = int(value)
    return dict(sorted(out.items()))
