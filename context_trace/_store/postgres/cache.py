"""
The dashboard's local cache of a PostgreSQL store: a SQLite file in the
store's own format, filled incrementally from PostgreSQL.

``context-trace ui --store postgresql://…`` and the analytics commands
(``topics``, ``unhappy``, ``retention``, ``compare``, ``cost``) read this file
exactly as they read a local store: the dashboard's index
(:mod:`context_trace._store.ui_index`), the topic index and every query run on
it unchanged, so the pages, the JSON API and the reports are the same by
construction, full-text search is SQLite's FTS5, and a page costs what it costs
on SQLite.

How the copy stays exact and incremental (:meth:`PostgresCache.sync` reads a
step, ``cache_apply.apply`` writes it):

- **Which rows are new.** Every turn and rating row records the id of the
  transaction that inserted it (``txid``, migration 2). One sync step reads,
  in one REPEATABLE READ snapshot, the rows after the cache's cursor on
  ``(txid, id)`` whose transaction id lies below the snapshot's ``xmin`` (the
  oldest transaction still running): every transaction below it has ended, so
  no row can appear there later and each row is read exactly once, whatever
  order the hosts' transactions committed in. Rows are inserted by id, once.
- **Sessions across hosts.** A session's turns are ordered by start time, end
  time, then id, and the history each prompt re-sent is dropped by the rule
  :meth:`PostgresReads.session_transcript` applies
  (``writer._strip_history``). A turn that arrives late and sorts before turns
  already cached makes the later turns' re-sent history redundant: their
  stored messages are stripped again (the derived indexes keep the text they
  indexed first).
- **Ratings.** For every session a new turn or rating touched, its ratings are
  resolved again as the store's ``rated_turns`` view resolves them (the named
  turn, else the last answered turn that ended by then; the newest rating of a
  turn wins), so a rating that arrived before or after its turn lands on it.
- **Sessions and users** rows are copied from the store's aggregates.

The cache belongs to one store: it records the store's creation time and is
emptied when the URL names another store (or one restored from a dump).
The PostgreSQL role needs only SELECT on the store's tables.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from context_trace._store.connection import open_writer, transaction
from context_trace._store.ui_index import UIIndex

from .cache_apply import STATE, apply
from .connection import (
    _CONNECT_TIMEOUT,
    StoreUnavailable,
    _psycopg,
    check_url,
    connect,
    safe_url,
)
from .schema import _applied

__all__ = ["CACHE_CHUNK", "PostgresCache", "SyncedIndex", "default_cache_path"]

_logger = logging.getLogger(__name__)

#: Rows (turns, and ratings) one sync step copies at most.
CACHE_CHUNK = 5000
# The first schema version with the ``txid`` columns.
_NEEDS_VERSION = 2
# Seconds between two syncs started by dashboard requests once level.
_SYNC_INTERVAL = 1.0

_TURNS = (
    "SELECT txid::text, id, user_id, session_id, started_at, ended_at, latency_ms,"
    " model, prompt_tokens, completion_tokens, total_tokens, error, metadata,"
    " messages FROM turns WHERE (txid, id) > (%s::xid8, %s) AND txid < %s::xid8"
    " ORDER BY txid, id LIMIT %s"
)
_RATINGS = (
    "SELECT txid::text, id, session_id FROM ratings"
    " WHERE (txid, id) > (%s::xid8, %s) AND txid < %s::xid8"
    " ORDER BY txid, id LIMIT %s"
)
# The ``rated_turns`` view (migration 1) for some sessions: the filter sits
# inside, where the ratings_session index serves it.
_RATED = (
    "SELECT DISTINCT ON (t.id) r.id, r.session_id, s.user_id, t.id, r.rating,"
    " r.created_at FROM ratings r JOIN sessions s ON s.id = r.session_id"
    " JOIN LATERAL (SELECT c.id FROM turns c WHERE c.session_id = r.session_id"
    " AND (CASE WHEN r.conversation_id IS NOT NULL THEN c.id = r.conversation_id"
    " ELSE c.answered AND c.ended_at <= r.created_at END)"
    " ORDER BY c.ended_at DESC, c.started_at DESC, c.id DESC LIMIT 1) t ON true"
    " WHERE r.session_id = ANY(%s)"
    " ORDER BY t.id, r.created_at DESC, r.id DESC"
)
_SESSIONS = "SELECT id, user_id, started_at, last_at FROM sessions WHERE id = ANY(%s)"
_USERS = "SELECT id, first_seen, last_seen FROM users WHERE id = ANY(%s)"


def default_cache_path(url: str) -> Path:
    """
    Where the dashboard keeps its cache of the store at *url*.

    A file in the user's cache directory (``$XDG_CACHE_HOME/context-trace``,
    default ``~/.cache``) named by the database and a hash of the server, port
    and database: never by the user name or the password, so every role
    reading one store shares one cache.
    """
    parts = urlsplit(check_url(url))
    database = unquote(parts.path.lstrip("/")) or "postgres"
    where = f"{parts.hostname or ''}:{parts.port or 5432}/{database}"
    digest = hashlib.sha256(where.encode()).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in database)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "context-trace" / f"postgres-{safe[:40]}-{digest}.db"


class PostgresCache:
    """
    A local SQLite copy of a PostgreSQL store, brought level in bounded steps.

    Args:
        url: The store (a read-only role is enough).
        path: The cache file (default: :func:`default_cache_path`).
        timeout: Seconds a connection attempt may take.

    Raises:
        StoreUnavailable: The server cannot be used (which problem it is), or
            it holds no store yet.
        OSError: The cache file cannot be created.
    """

    def __init__(
        self,
        url: str,
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = _CONNECT_TIMEOUT,
    ) -> None:
        self._url = check_url(url)
        self._timeout = timeout
        self.path = Path(path) if path is not None else default_cache_path(url)
        self._lock = threading.Lock()
        self._closed = False
        self._pg: Any = None
        identity = self._identity(self._connection())
        self._db = self._open_cache(identity)

    def __repr__(self) -> str:
        return f"PostgresCache({self.location!r}, path={str(self.path)!r})"

    @property
    def location(self) -> str:
        """The store, for messages: its URL without the password."""
        return safe_url(self._url)

    # -- connections ---------------------------------------------------------------
    def _connection(self) -> Any:
        if self._pg is None or self._pg.closed or self._pg.broken:
            psycopg = _psycopg()
            conn = connect(self._url, timeout=self._timeout, read_only=True)
            try:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                applied = _applied(conn)
                if applied is None:
                    raise StoreUnavailable(
                        "unknown database",
                        f"the PostgreSQL database at {self.location} holds no "
                        "context_trace store yet (a writer creates it on its "
                        "first start)",
                    )
                if max(applied) < _NEEDS_VERSION:
                    raise StoreUnavailable(
                        "newer schema",
                        f"the PostgreSQL store at {self.location} has schema "
                        f"version {max(applied)}; the dashboard needs version "
                        f"{_NEEDS_VERSION}, which a writer of this context-trace "
                        "applies when it starts",
                    )
                conn.rollback()
            except BaseException:
                conn.close()
                raise
            self._pg = conn
        return self._pg

    @staticmethod
    def _identity(conn: Any) -> str:
        """The store's identity (when its schema was created) and current xmin."""
        try:
            row = conn.execute(
                "SELECT (SELECT extract(epoch FROM applied_at)::text FROM schema_migrations"
                " WHERE version = 1), pg_snapshot_xmin(pg_current_snapshot())::text"
            ).fetchone()
        finally:
            conn.rollback()
        return f"{row[0]}|{row[1]}"

    def _open_cache(self, identity: str) -> sqlite3.Connection:
        created, xmin = identity.split("|")
        db = open_writer(str(self.path), 30.0)
        try:
            db.execute("PRAGMA cache_size = -65536")
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {STATE}"
                " (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            state = dict(db.execute(f"SELECT key, value FROM {STATE}").fetchall())
            if state.get("store") not in (None, created) or (
                "turn_txid" in state
                and max(int(state["turn_txid"]), int(state["rating_txid"])) > int(xmin)
            ):
                # Another store under this URL (recreated, or restored from a
                # dump, whose transaction ids start again): start over.
                db.close()
                for suffix in ("", "-wal", "-shm"):
                    Path(str(self.path) + suffix).unlink(missing_ok=True)
                return self._open_cache(identity)
            if "store" not in state:
                with transaction(db):
                    db.executemany(
                        f"INSERT INTO {STATE} (key, value) VALUES (?, ?)",
                        [("store", created), ("turn_txid", "0"), ("turn_id", ""),
                         ("rating_txid", "0"), ("rating_id", "")],
                    )  # fmt: skip
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        """Close both connections; safe to call twice."""
        with self._lock:
            self._closed = True
            if self._pg is not None:
                self._pg.close()
            self._db.close()

    def __enter__(self) -> PostgresCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- syncing -------------------------------------------------------------------
    def pending(self) -> int:
        """Turns the store holds that the cache does not yet (for progress)."""
        with self._lock:
            state = self._state()
            conn = self._connection()
            try:
                row = conn.execute(
                    "SELECT count(*) FROM turns WHERE (txid, id) > (%s::xid8, %s)",
                    (state["turn_txid"], state["turn_id"]),
                ).fetchone()
            finally:
                conn.rollback()
            return int(row[0])

    def counts(self) -> int:
        """Turns in the cache."""
        with self._lock:
            return int(
                self._db.execute("SELECT count(*) FROM conversations").fetchone()[0]
            )

    def _state(self) -> dict[str, str]:
        return dict(self._db.execute(f"SELECT key, value FROM {STATE}").fetchall())

    def build(self, progress: Callable[[int], None] | None = None) -> None:
        """Bring the cache level with the store; *progress* gets the turns copied."""
        copied = 0
        while True:
            level, added = self._sync(50_000)
            copied += added
            if level:
                return
            if progress is not None:
                progress(copied)

    def sync(self, max_rows: int = CACHE_CHUNK) -> bool:
        """
        Copy up to *max_rows* new turns and ratings; True if now level.

        One snapshot of the store, one transaction on the cache: a reader of
        the cache never sees half a step.
        """
        return self._sync(max_rows)[0]

    def _sync(self, max_rows: int) -> tuple[bool, int]:
        with self._lock:
            if self._closed:
                return True, 0
            state = self._state()
            conn = self._connection()
            try:
                read = self._read(conn, state, max_rows)
            except BaseException:
                if not conn.closed and not conn.broken:
                    conn.rollback()
                else:
                    self._pg = None
                raise
            conn.rollback()
            turns, ratings = read[0], read[1]
            if turns or ratings:
                with transaction(self._db):
                    apply(self._db, *read)
            return len(turns) < max_rows and len(ratings) < max_rows, len(turns)

    def _read(
        self, conn: Any, state: dict[str, str], max_rows: int
    ) -> tuple[list[Any], list[Any], list[Any], list[Any], list[Any]]:
        """The new rows, and the rows of the sessions and users they touch."""
        (hi,) = conn.execute(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"
        ).fetchone()
        turns = conn.execute(
            _TURNS, (state["turn_txid"], state["turn_id"], hi, max_rows)
        ).fetchall()
        ratings = conn.execute(
            _RATINGS, (state["rating_txid"], state["rating_id"], hi, max_rows)
        ).fetchall()
        if not turns and not ratings:
            return [], [], [], [], []
        touched = sorted(
            {r[3] for r in turns if r[3] is not None} | {r[2] for r in ratings}
        )
        sessions = conn.execute(_SESSIONS, (touched,)).fetchall()
        rated = conn.execute(_RATED, (touched,)).fetchall()
        user_ids = {r[2] for r in turns if r[2] is not None}
        user_ids |= {r[1] for r in sessions if r[1] is not None}
        users = conn.execute(_USERS, (sorted(user_ids),)).fetchall()
        return turns, ratings, sessions, rated, users


class SyncedIndex(UIIndex):
    """
    The dashboard's index over a :class:`PostgresCache`: each refresh first
    copies what the store has new (at most once a second once level), then
    indexes it. A store that stops answering is logged once; the dashboard
    serves what the cache holds meanwhile.
    """

    def __init__(
        self,
        cache: PostgresCache,
        path: str | os.PathLike[str] | None = None,
        *,
        sync_interval: float = _SYNC_INTERVAL,
    ) -> None:
        super().__init__(cache.path, path)
        self.cache = cache
        self._interval = sync_interval
        self._next_sync = 0.0
        self._sync_failed = False

    def refresh(self, max_rows: int = 5000) -> bool:
        """Copy up to *max_rows* new rows from the store, then index them."""
        level = True
        now = time.monotonic()
        if now >= self._next_sync:
            try:
                level = self.cache.sync(max_rows)
                self._sync_failed = False
            except Exception as exc:  # noqa: BLE001 - serve the cache as is
                if not self._sync_failed:
                    self._sync_failed = True
                    _logger.warning(
                        "context-trace ui: cannot read the PostgreSQL store at %s"
                        " (showing the cache as it is): %s",
                        self.cache.location,
                        _safe_error(exc, self.cache),
                    )
            if level:
                self._next_sync = now + self._interval
        return super().refresh(max_rows) and level

    def close(self) -> None:
        """Close the index and the cache."""
        super().close()
        self.cache.close()


def _safe_error(exc: BaseException, cache: PostgresCache) -> str:
    """*exc* in one line, the store's password masked if it were ever in it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    password = urlsplit(cache._url).password
    if password:
        text = text.replace(password, "***")
        text = text.replace(unquote(password), "***")
    return text
