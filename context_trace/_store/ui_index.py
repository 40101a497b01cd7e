"""
The dashboard's index: a sidecar SQLite file that ``context-trace ui`` owns.

The store stays exactly as the writer makes it (no triggers, no extra
indexes), so recording pays nothing for the dashboard. Everything the
dashboard needs to answer fast lives in a separate file, by default
``<store>.ui-index`` next to the store (see :func:`default_index_path`):

- summary tables (``ui_*``): totals per user, per day, per user and day, the
  users active each ISO week and calendar month, a latency histogram per day,
  and the models seen;
- segments (``ui_segment_*``): each turn's metadata values (plan, tenant,
  variant, model...) with the turn's measures, and the users who had them;
- token sums per model for the cost figures (``ui_cost_*``, see :mod:`.cost`);
- per-user lists of turn and session numbers (``ui_turns``, ``ui_sessions``),
  which stand in for the per-user indexes the store does without;
- ``conversations_fts``, an FTS5 index over the messages' text.

:class:`UIIndex` fills it incrementally from the store, opened read-only
(``mode=ro``). Conversations are append-only and numbered in commit order
(``n``, the INTEGER PRIMARY KEY), so a watermark on ``n`` finds the new ones;
sessions likewise by their ``n``, plus the sessions that new turns or ratings
touched (their ``last_at`` and user change). Ratings are one row per turn, a
newer rating replacing the older row, with no row number: when their count or
times change, the rows that left are counted out and the new ones in, by id.
Each :meth:`UIIndex.refresh` handles a bounded chunk in one transaction on the
sidecar, so readers never see half a chunk and a caller never waits long.

The tables are in :mod:`.ui_index_schema`, the refresh's statements in
:mod:`.ui_index_sql`.

Turns with no user are counted under the user key ``''`` (user ids are never
empty: :func:`context_trace._scopes.normalize_id` rejects blank ids).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import tzinfo
from pathlib import Path
from typing import Any

from . import retention_index as _ret
from .connection import read_uri
from .cost import COST_SCHEMA, COST_TABLES, apply_cost_chunk
from .cost_index import FILL_HOUR, FILL_USER_DAY
from .cost_priced import PRICED_TABLES, price_costs
from .overview_hours import index_hours
from .overview_window import first_days, index_window
from .ui_index_schema import (
    _ACTIVITY_SCHEMA,
    _APPLICATION_ID,
    _SCHEMA,
    _SEGMENT_SCHEMA,
    _SUFFIX,
    FTS_TOKENIZE,
    INDEX_VERSION,
    LATENCY_BUCKETS_PER_DECADE,
    REQUEST_CHUNK,
    SEGMENT_VALUE_MAX,
    WEEK_SQL,
)
from .ui_index_sql import (
    _APPLY_CHUNK,
    _APPLY_FEEDBACK,
    _APPLY_SESSIONS,
    _CHUNK,
    _DIFF_FEEDBACK,
    _FEEDBACK_PRINT,
    _FILL_ACTIVITY,
    RATED_SCHEMA,
    SEGMENT_WEEK1_SCHEMA,
    USER_DAY_INDEXES,
    _apply_segments,
    _segment_rows,
    rated_segment_rows,
    segment_week1,
)

__all__ = [
    "FTS_TOKENIZE",
    "INDEX_VERSION",
    "LATENCY_BUCKETS_PER_DECADE",
    "REQUEST_CHUNK",
    "SEGMENT_VALUE_MAX",
    "WEEK_SQL",
    "UIIndex",
    "default_index_path",
]


def default_index_path(store: str | os.PathLike[str]) -> Path:
    """
    Where the dashboard keeps its index for *store*.

    ``<store>.ui-index`` next to the store when that directory is writable,
    else a file named after the store's absolute path in the user's cache
    directory (``$XDG_CACHE_HOME/context-trace``, default ``~/.cache``).
    """
    path = Path(store).absolute()
    beside = path.with_name(path.name + _SUFFIX)
    if os.access(beside if beside.exists() else path.parent, os.W_OK):
        return beside
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return cache / "context-trace" / f"{path.name}-{digest}{_SUFFIX}"


class UIIndex:
    """
    Keeps the dashboard's sidecar index in step with a store; thread-safe.

    Args:
        store: The context_trace store, only ever read (``mode=ro``).
        path: The sidecar file (default: :func:`default_index_path`); created
            if missing, rebuilt if it belongs to another store or version.
        zones: Time zones whose retention aggregates the index keeps from now
            on besides UTC's (see :mod:`.retention_index`); a zone new to the
            index is filled from the turns indexed so far.
        clock: Epoch seconds "now" (default ``time.time``): the days the
            dashboard's ranges start on, whose top users (see
            :mod:`.overview_window`) and users' cost bounds (see
            :mod:`.cost_user_bounds`) the index keeps.

    Raises:
        FileNotFoundError: If *store* does not exist.
        ValueError: If *store* is not a context_trace store.
        OSError: If the sidecar cannot be created.
    """

    def __init__(
        self,
        store: str | os.PathLike[str],
        path: str | os.PathLike[str] | None = None,
        zones: Iterable[tzinfo | None] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not os.path.exists(store):
            raise FileNotFoundError(f"no context_trace database at {store}")
        self.store = Path(store)
        self.path = Path(path) if path is not None else default_index_path(store)
        self._lock = threading.Lock()
        self._seen_version: int | None = None
        self._seen_day = ""
        self._caught_up = False
        self._closed = False
        self._pricer: Any = None
        self._clock = clock
        self._first_days: dict[int, str] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                self.path.absolute().as_uri(),
                uri=True,
                timeout=30.0,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise OSError(
                f"cannot create the dashboard index {self.path}: {exc}"
            ) from None
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA temp_store = MEMORY")
            self._conn.execute("ATTACH DATABASE ? AS store", (read_uri(self.store),))
            tables = {
                r[0]
                for r in self._conn.execute(
                    "SELECT name FROM store.sqlite_master WHERE type = 'table'"
                )
            }
            if not {"conversations", "sessions", "feedback"} <= tables:
                raise ValueError(f"{store} is not a context_trace store")
            self._prepare()
            self.keep_zones(zones)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        """Close the sidecar connection (waits for a refresh in progress)."""
        with self._lock:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> UIIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _prepare(self) -> None:
        """Create the sidecar's schema, or start over if it is not this store's."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            fresh = not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'meta'"
            ).fetchone()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            first = conn.execute(
                "SELECT id FROM store.conversations ORDER BY n LIMIT 1"
            ).fetchone()
            last_n = conn.execute(
                "SELECT coalesce(max(n), 0) FROM store.conversations"
            ).fetchone()[0]
            stale = fresh or version != INDEX_VERSION
            if not stale:
                meta = self._meta()
                known = meta["store_first"]
                # Another store under this name (a new file, or one emptied):
                # its first turn or its numbering differs from what we indexed.
                stale = meta["conversation_n"] > last_n or (
                    known is not None and (first is None or first[0] != known)
                )
            if stale:
                for kind, name in conn.execute(
                    "SELECT type, name FROM sqlite_master WHERE type IN"
                    " ('table', 'view') AND name NOT LIKE 'sqlite_%'"
                    " AND name NOT LIKE 'conversations_fts_%'"
                ).fetchall():
                    conn.execute(f'DROP {kind.upper()} IF EXISTS "{name}"')
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {_APPLICATION_ID:d}")
                conn.execute(f"PRAGMA user_version = {INDEX_VERSION:d}")
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'ui_cohort_week'"
            ).fetchone():
                for statement in (*_ACTIVITY_SCHEMA, *_FILL_ACTIVITY):
                    conn.execute(statement)
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'ui_segment_turn'"
            ).fetchone():
                # Up to the turns indexed so far; later chunks add theirs.
                done = conn.execute(
                    "SELECT value FROM meta WHERE key = 'conversation_n'"
                ).fetchone()[0]
                for statement in _SEGMENT_SCHEMA:
                    conn.execute(statement)
                for statement in _apply_segments("0", str(int(done))):
                    conn.execute(statement)
            cost_tables = {t for (t,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name IN (" + ", ".join(f"'{t}'" for t in COST_TABLES) + ")"
            )}  # fmt: skip
            missing = set(COST_TABLES) - cost_tables
            if cost_tables and missing <= {"ui_cost_user_day", "ui_cost_hour"}:
                # An index from before the per-user, per-day or the per-hour
                # sums (the last cost tables): from the turns' rows it has,
                # not from the store.
                for table, fill in (("ui_cost_user_day", FILL_USER_DAY),
                                    ("ui_cost_hour", FILL_HOUR)):  # fmt: skip
                    if table in missing:
                        conn.execute(COST_SCHEMA[COST_TABLES.index(table)])
                        conn.execute(fill)
            if conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                " AND name IN (" + ", ".join(f"'{t}'" for t in COST_TABLES) + ")"
            ).fetchone()[0] < len(COST_TABLES):
                # The turns' tokens per model (see .cost): up to the turns
                # indexed so far, as for the segments; all of them anew if
                # one is missing.
                done = conn.execute(
                    "SELECT value FROM meta WHERE key = 'conversation_n'"
                ).fetchone()[0]
                for table in (*COST_TABLES, *PRICED_TABLES):
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in COST_SCHEMA:
                    conn.execute(statement)
                for statement in apply_cost_chunk(_segment_rows("?1", "?2")):
                    conn.execute(statement, (0, int(done)) if "?1" in statement else ())
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'ui_rated_segment'"
            ).fetchone():
                # The ratings counted so far, by segment value; refreshes
                # keep it with ui_feedback.
                for statement in RATED_SCHEMA:
                    conn.execute(statement)
                conn.execute(rated_segment_rows("SELECT id FROM main.ui_feedback"))
            for statement in USER_DAY_INDEXES:
                conn.execute(statement)
            if not conn.execute(
                "SELECT 1 FROM pragma_table_info('ui_segment_user')"
                " WHERE name = 'week1'"
            ).fetchone():
                for statement in SEGMENT_WEEK1_SCHEMA:
                    conn.execute(statement)
                conn.execute(segment_week1(None))
            if not _ret.has_zone(conn, "UTC"):
                # Retention per segment value (see .retention_index): up to
                # the turns indexed so far, as for the segments.
                for statement in _ret.RET_SCHEMA:
                    conn.execute(statement)
                self._fill_zone("UTC")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _fill_zone(self, name: str) -> None:
        """Count the turns indexed so far into the zone *name*'s retention tables."""
        conn = self._conn
        done = int(self._meta()["conversation_n"])
        turns = (
            "(SELECT coalesce(user_id, '') AS user_key, started_at"
            " FROM store.conversations WHERE n > ?1 AND n <= ?2)"
        )
        segments = f"({_segment_rows('?1', '?2')})"
        if name == "UTC":
            step = 100_000
            for first in range(0, done, step):
                last = min(done, first + step)
                _ret.apply_chunk(conn, turns, segments, (first, last), ["UTC"])
        else:
            _ret.add_zone(conn, name, done, turns, segments)

    def keep_zones(self, zones: Iterable[tzinfo | None]) -> None:
        """Keep retention aggregates for *zones* too (see :mod:`.retention_index`)."""
        names = {_ret.zone_name(tz) for tz in zones} - {None, "UTC"}
        missing = [
            n for n in sorted(n for n in names if n) if not _ret.has_zone(self._conn, n)
        ]
        if not missing:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for name in missing:
                    self._fill_zone(name)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _meta(self) -> dict[str, Any]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def set_pricer(self, pricer: Any) -> None:
        """
        Keep each user's and session's cost priced with *pricer* (a
        :class:`~context_trace.analytics.pricing.Pricer`; None: stop), from the
        next :meth:`refresh` on: see :mod:`.cost_priced`.
        """
        with self._lock:
            self._pricer = pricer
            self._caught_up = False

    def refresh(self, max_rows: int = 5000) -> bool:
        """
        Index up to *max_rows* new conversations, and the ratings that changed.

        One transaction on the sidecar; returns at once when the store has not
        changed, nor the UTC day (see *clock*), since the last call that caught up.

        Returns:
            True if the index is now level with the store (as of this call),
            or if the index has been closed.
        """
        with self._lock:
            if self._closed:
                return True
            conn = self._conn
            changed = conn.execute("PRAGMA store.data_version").fetchone()[0]
            # A new UTC day moves the ranges' first days: the overview's top
            # users (.overview_window) and the cost bounds (.cost_user_bounds).
            now = self._clock()
            day = time.strftime("%Y-%m-%d", time.gmtime(now))
            days = first_days(now)
            if (
                self._caught_up
                and changed == self._seen_version
                and day == self._seen_day
                and days == self._first_days
            ):
                return True
            conn.execute("BEGIN IMMEDIATE")
            try:
                caught_up = self._step(max_rows, now)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                for table in (
                    "chunk",
                    "new_feedback",
                    "gone_feedback",
                    "touched_sessions",
                    "touched_keys",
                    "segment_chunk",
                    "new_weeks",
                    "moved",
                    "cost_chunk",
                    *_ret.RET_TEMP_TABLES,
                ):
                    conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
            self._seen_version, self._seen_day = changed, day
            self._caught_up = caught_up
            self._first_days = days
            return caught_up

    def _step(self, max_rows: int, now: float) -> bool:
        conn = self._conn
        meta = self._meta()
        start = int(meta["conversation_n"])
        session_start = int(meta["session_n"])
        counted = meta["feedback"]
        last_n, last_session = conn.execute(
            "SELECT (SELECT coalesce(max(n), 0) FROM store.conversations),"
            " (SELECT coalesce(max(n), 0) FROM store.sessions)"
        ).fetchone()
        end = min(last_n, start + max_rows)
        session_end = min(last_session, session_start + max_rows)
        conn.execute("CREATE TEMP TABLE touched_sessions (n INTEGER PRIMARY KEY)")
        conn.execute("CREATE TEMP TABLE touched_keys (user_key TEXT PRIMARY KEY)")
        if end > start:
            conn.execute(_CHUNK, (start, end))
            for statement in _APPLY_CHUNK:
                conn.execute(statement, (start, end) if "?1" in statement else ())
            for statement in _apply_segments("?1", "?2"):
                if statement.startswith("DROP TABLE temp.segment_chunk"):
                    _ret.apply_chunk(conn, "temp.chunk", "temp.segment_chunk")
                conn.execute(statement, (start, end) if "?1" in statement else ())
            conn.execute(segment_week1("SELECT user_key FROM temp.chunk"))
            for statement in apply_cost_chunk(_segment_rows("?1", "?2")):
                conn.execute(statement, (start, end) if "?1" in statement else ())
            if meta["store_first"] is None:
                conn.execute(
                    "UPDATE meta SET value = (SELECT id FROM store.conversations"
                    " ORDER BY n LIMIT 1) WHERE key = 'store_first'"
                )
        conn.execute(
            "INSERT INTO touched_sessions (n) SELECT n FROM store.sessions"
            " WHERE n > ? AND n <= ? ON CONFLICT (n) DO NOTHING",
            (session_start, session_end),
        )
        from context_trace import _satisfaction  # its own tables, sat_*

        _satisfaction.index_chunk(conn, end)
        ratings = "{}:{!r}".format(*conn.execute(_FEEDBACK_PRINT).fetchone())
        if ratings != counted:
            for statement in (*_DIFF_FEEDBACK, *_APPLY_FEEDBACK):
                conn.execute(statement)
        for statement in _APPLY_SESSIONS:
            conn.execute(statement)
        from context_trace import _satisfaction_users  # its own tables, usat_*

        _satisfaction_users.index_users(conn, ratings_changed=ratings != counted)
        index_hours(conn, start, end)
        index_window(conn, start, end, now)
        if self._pricer is not None:
            price_costs(conn, self._pricer, end, now)
        conn.executemany(
            "UPDATE meta SET value = ? WHERE key = ?",
            [(end, "conversation_n"), (session_end, "session_n"),
             (ratings, "feedback")],
        )  # fmt: skip
        return bool(end == last_n and session_end == last_session)

    def build(self, progress: Callable[[int, int], None] | None = None) -> None:
        """
        Bring the index level with the store, in chunks.

        Args:
            progress: Called after each chunk with (turns indexed, turns in the store).
        """
        while not self.refresh(max_rows=50_000):
            if progress is not None:
                done, total = self.counts()
                progress(done, total)

    def counts(self) -> tuple[int, int]:
        """(turns indexed, turns in the store)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT (SELECT value FROM meta WHERE key = 'conversation_n'),"
                " (SELECT coalesce(max(n), 0) FROM store.conversations)"
            ).fetchone()
        return int(row[0]), int(row[1])
