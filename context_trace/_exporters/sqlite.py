"""
The SQLite exporter: a thin exporter over the store's writer and outbox.

:class:`SQLiteExporter` writes one file (see :mod:`context_trace._store`):
``export`` stores batches in the report tables through the writer, and the
``outbox_*`` methods keep records that still have to reach a remote sink.
:class:`~context_trace._store.reader.SQLiteReader` opens the same file read-only
for the ``context-trace`` CLI and for tests.

Several processes (gunicorn workers, a CLI) may use the file at once: it runs in
WAL mode with a busy timeout, every write is one ``BEGIN IMMEDIATE`` transaction,
and every write is idempotent by record id, so a record delivered twice is stored
once. Only the standard library's :mod:`sqlite3` is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from context_trace._record import Feedback, Message, Record
from context_trace._store import holder, outbox
from context_trace._store.codec import record_from_json, scrubbed
from context_trace._store.connection import (
    DEFAULT_BUSY_TIMEOUT,
    open_writer,
    transaction,
)
from context_trace._store.reader import (
    outbox_counts,
    outbox_destinations,
    read_session_messages,
)
from context_trace._store.writer import Rows, SeenCache, Written, prepare, write

from .base import ExportResult

__all__ = ["SQLiteExporter"]

_logger = logging.getLogger(__name__)
_T = TypeVar("_T")

_DEFAULT_OUTBOX_MAX = 100_000
_DEFAULT_LEASE_SECONDS = 60.0
_MAX_LOGGED_ERRORS = 64
# Records this process queued lately, by payload text: a claim soon after the
# put (the worker's usual rhythm) skips decoding them again, which was a quarter
# of the OTLP export path's time. The text is the whole record (the codec round-
# trips exactly), so a hit is the same record. A few claims' worth.
_RECENT_PAYLOADS = 2048

# Connections inherited across os.fork(). The child must neither use nor close
# them (closing would touch the parent's locks and WAL index), so they are kept
# referenced here until the process exits instead of being garbage collected.
_ABANDONED: list[sqlite3.Connection] = []
_WRITERS: weakref.WeakSet[SQLiteExporter] = weakref.WeakSet()


# The writers whose lock the forking thread holds across os.fork(), so that no
# other thread is inside a transaction when the child is made: a child made
# mid-transaction inherits SQLite's in-process lock state ("database is locked"
# for every connection it opens) for a lock no thread of its own will release.
_HELD_ACROSS_FORK: list[SQLiteExporter] = []
_FORK_WAIT_SECONDS = 2.0  # a batch commits in milliseconds; never block fork for long


def _before_fork() -> None:
    for writer in list(_WRITERS):
        if writer._lock.acquire(timeout=_FORK_WAIT_SECONDS):
            _HELD_ACROSS_FORK.append(writer)


def _after_fork_in_parent() -> None:
    while _HELD_ACROSS_FORK:
        _HELD_ACROSS_FORK.pop()._lock.release()


def _after_fork_in_child() -> None:
    _HELD_ACROSS_FORK.clear()
    for writer in list(_WRITERS):
        writer._forget_parent_state()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def _nothing(conn: sqlite3.Connection, written: Written) -> None:
    return None


def _as_stored(records: Sequence[Record], written: Written) -> list[Record]:
    """*records* with each rating as it was stored, the refused ones left out."""
    if not written.ratings and not written.refused:
        return list(records)
    stored = {feedback.id: feedback for feedback in written.ratings}
    out: list[Record] = []
    for record in records:
        if isinstance(record, Feedback):
            if record.id in stored:
                out.append(stored[record.id])
        else:
            out.append(record)
    return out


# --- the exporter ----------------------------------------------------------------


class SQLiteExporter:
    """
    Store records in a local SQLite file; also the Context API exporter's outbox.

    Use it as the default exporter (``context-trace`` reads the file), or give it
    to the Context API exporter as a durable outbox. Nothing touches the file
    until the first ``export`` or ``outbox_*`` call, so construction never fails
    on a bad path: ``export`` then logs one ERROR line naming the path and counts
    the batches as failed. Call :meth:`check` to surface the problem as an
    exception instead.

    One writer connection is opened lazily and shared under a lock, so the
    methods may be called from any thread. After ``os.fork()`` the child opens
    its own connection. Several processes may write the same file.

    Read the file with :class:`SQLiteReader`.

    Args:
        path: The database file; missing parent directories are created.
        keep_local: Also store records passed to :meth:`outbox_put` in the report
            tables, so the CLI sees them.
        outbox_max: Most pending outbox rows kept; beyond it the oldest are
            dropped and counted.
        busy_timeout: Seconds to wait for another process's write lock.

    Raises:
        ValueError: If *outbox_max* < 1 or *busy_timeout* < 0.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        keep_local: bool = True,
        outbox_max: int = _DEFAULT_OUTBOX_MAX,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        if outbox_max < 1:
            raise ValueError(f"outbox_max must be at least 1, got {outbox_max!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0, got {busy_timeout!r}")
        self._path = os.fspath(path)
        self._keep_local = keep_local
        self._outbox_max = outbox_max
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        # (device, inode) of the file the connection opened: see _moved().
        self._identity: tuple[int, int] | None = None
        self._pid = os.getpid()
        self._closed = False
        self._logged: set[str] = set()
        self._warned_full = False
        # row id -> (lease_until, file generation) of the rows this instance
        # claimed; release/fail only touch a row while it still carries that
        # lease (see outbox_release), and none of them touches a row of a file
        # that was deleted or replaced since (_generation counts the reopenings:
        # a new file numbers its rows from 1 again).
        self._leases: dict[int, tuple[float, int]] = {}
        self._generation = 0
        self._seen = SeenCache()
        self._recent: OrderedDict[str, Record] = OrderedDict()
        _WRITERS.add(self)

    @property
    def path(self) -> str:
        """The database file this exporter writes."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteExporter({self._path!r})"

    # -- connection management -------------------------------------------------

    def _forget_parent_state(self) -> None:
        """In a fork child: fresh lock, and never touch the parent's connection."""
        self._lock = threading.Lock()
        if self._conn is not None:
            _ABANDONED.append(self._conn)
            self._conn = None
        self._pid = os.getpid()
        self._leases.clear()
        self._seen.clear()
        self._recent.clear()

    def _connection(self) -> sqlite3.Connection:
        """The writer connection, opened on first use; call with the lock held."""
        if self._closed:
            raise RuntimeError(f"SQLite store at {self._path} is shut down")
        if self._pid != os.getpid():
            # Fallback for forks the at-fork hook did not see (e.g. os.fork
            # called through a C extension): a connection must not cross fork.
            if self._conn is not None:
                _ABANDONED.append(self._conn)
                self._conn = None
            self._pid = os.getpid()
            self._leases.clear()
        if self._conn is not None and self._moved():
            # Writes would go on "succeeding" into the unlinked file and be lost
            # with it; the store at the path is the one the CLI reads.
            self._drop_moved_connection()
        if self._conn is None:
            # A new connection may see a different file (replaced, restored):
            # start with no cached seen-sets.
            self._seen.clear()
            self._conn = open_writer(self._path, self._busy_timeout)
            self._identity = self._file_identity()
        return self._conn

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file at the path now; None if there is none."""
        if self._path == ":memory:" or not self._path:
            return None
        try:
            info = os.stat(self._path)
        except OSError:
            return None
        return (info.st_dev, info.st_ino)

    def _moved(self) -> bool:
        """
        Whether the file at the path is no longer the one the connection has open.

        One ``stat`` per batch (each export or outbox call), not per row. A
        failing ``stat`` other than "no such file" (a permission change) keeps
        the connection: only a missing or different file counts.
        """
        if self._identity is None:
            return False
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return (info.st_dev, info.st_ino) != self._identity

    def _drop_moved_connection(self) -> None:
        """
        Close a connection whose file was deleted or replaced, leaving no WAL.

        SQLite closing such a connection neither checkpoints nor deletes its WAL
        and shared-memory files (they are named after the path, and the file has
        moved), so the next connection at that path would replay this store's
        pages over the new file. A ``TRUNCATE`` checkpoint first empties the WAL
        into the old file.
        """
        conn = self._conn
        undelivered = 0
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                (undelivered,) = conn.execute("SELECT count(*) FROM outbox").fetchone()
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        self._discard_connection()
        self._generation += 1
        lost = (
            f"; {undelivered} undelivered outbox records in it are lost"
            if undelivered
            else ""
        )
        _logger.warning(
            "context_trace: the SQLite store at %s was deleted or replaced while"
            " in use; reopening the path (a deleted store is created again,"
            " empty)%s",
            self._path,
            lost,
        )

    def _discard_connection(self) -> None:
        """Close the connection after an error; the next call reopens and rechecks."""
        conn, self._conn = self._conn, None
        self._identity = None
        self._seen.clear()
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _log_once(self, level: int, message: str) -> None:
        """Log *message* at *level* the first time, at DEBUG when it repeats."""
        if message in self._logged:
            _logger.debug("%s (repeated)", message)
            return
        if len(self._logged) >= _MAX_LOGGED_ERRORS:
            self._logged.clear()
        self._logged.add(message)
        _logger.log(level, "%s", message)

    def _commit(
        self,
        conn: sqlite3.Connection,
        rows: Rows,
        also: Callable[[sqlite3.Connection, Written], _T],
    ) -> tuple[Written, _T]:
        """
        Store *rows* and run *also* in one transaction; call with the lock held.

        Returns:
            What the write did (the seen-sets to settle, the ratings stored and
            refused), and what *also* returned. On failure the seen cache is
            cleared: it may hold keys of the rolled-back batch.
        """
        try:
            with transaction(conn):
                written = write(conn, rows, self._seen)
                return written, also(conn, written)
        except BaseException:
            self._seen.clear()
            raise

    def _settle(self, written: Written) -> int:
        """After a commit: settle the seen-sets, report refused ratings; their count."""
        self._seen.settle(written.touched)
        for refused in written.refused:
            self._log_once(
                logging.WARNING,
                "context_trace: a rating of session"
                f" {refused.feedback.session_id!r} was not stored: {refused.reason}",
            )
        return len(written.refused)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; closed after use once shut down."""
        with self._lock:
            try:
                yield self._connection()
            finally:
                if self._closed:  # shutdown() timed out waiting for this call
                    self._discard_connection()

    def check(self) -> None:
        """
        Open (creating if needed) the store now and raise if it cannot be used.

        The CLI calls it to report a bad path in one line; ``export`` never raises.

        Raises:
            OSError: If the file or its directory cannot be created or opened.
            ValueError: If the file is corrupt, not a context_trace store, or
                written by a newer context_trace.
            RuntimeError: If the exporter was shut down.

        .. versionadded:: 0.1.0
        """
        with self._locked():
            pass

    # -- Exporter protocol -----------------------------------------------------

    def export(self, batch: Sequence[Record]) -> ExportResult:
        """
        Store *batch* in one transaction; never raises.

        Re-delivered records are stored once. Session turns lose leading history
        that another writer already stored for the session. Ratings follow the
        rating model (:mod:`context_trace._store.ratings`): one whose session or
        turn the store does not hold is not stored, is counted as ``rejected``
        and logged once per session.

        Args:
            batch: The records to store.

        Returns:
            The records stored (``exported``) and refused (``rejected``), or
            ``ExportResult.failure(n)`` when the store cannot be opened or
            written (logged once per distinct error).

        .. versionadded:: 0.1.0
        """
        n = len(batch)
        if n == 0:
            return ExportResult.success(0)
        try:
            rows = prepare(batch)
        except Exception as exc:  # noqa: BLE001 - export must never raise
            self._log_once(
                logging.ERROR,
                f"context_trace: cannot store batch in {self._path}: {exc!r}",
            )
            return ExportResult.failure(n)
        with self._lock:
            try:
                conn = self._connection()
            except RuntimeError as exc:
                self._log_once(
                    logging.WARNING, f"context_trace: {exc}; records dropped"
                )
                return ExportResult.failure(n)
            except (OSError, ValueError) as exc:
                self._log_once(logging.ERROR, f"context_trace: {exc}")
                return ExportResult.failure(n)
            try:
                try:
                    written = self._commit(conn, rows, _nothing)[0]
                except UnicodeEncodeError:
                    # A lone surrogate somewhere (SQLite stores UTF-8 only): store
                    # the batch with such characters replaced rather than lose it.
                    rows = prepare(scrubbed(batch))
                    written = self._commit(conn, rows, _nothing)[0]
                refused = self._settle(written)
            except Exception as exc:  # noqa: BLE001 - export must never raise
                self._discard_connection()
                self._log_once(
                    logging.ERROR,
                    f"context_trace: writing to SQLite store at {self._path}"
                    f" failed: {type(exc).__name__}: {exc}",
                )
                return ExportResult.failure(n)
            finally:
                if self._closed:  # shutdown() timed out waiting for this export
                    self._discard_connection()
        return ExportResult(exported=n - refused, rejected=refused)

    def shutdown(self, timeout: float | None = None) -> None:
        """
        Close the writer connection; later exports fail without raising.

        Safe to call more than once.

        Args:
            timeout: Seconds to wait for a running export to finish; None waits.
                If it passes, the export closes the connection when it ends.

        .. versionadded:: 0.1.0
        """
        self._closed = True
        acquired = self._lock.acquire(
            timeout=-1 if timeout is None else max(timeout, 0)
        )
        if not acquired:
            return
        try:
            self._discard_connection()
        finally:
            self._lock.release()

    # -- reads through the writer ------------------------------------------------

    def session_messages(self, session_id: str) -> list[Message]:
        """
        The stored transcript of a session so far, through the writer connection.

        The Context API exporter uses it to send a thread's transcript.

        Args:
            session_id: The session.

        Returns:
            Its messages in order across its turns; empty for an unknown session.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the read fails.

        .. versionadded:: 0.1.0
        """
        with self._locked() as conn:
            return read_session_messages(conn, session_id)

    # -- durable outbox ----------------------------------------------------------

    def _write_op(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run *op* in one write transaction; drop the connection on error."""
        with self._locked() as conn:
            try:
                with transaction(conn):
                    return op(conn)
            except sqlite3.Error:
                self._discard_connection()
                raise

    def outbox_put(
        self,
        batch: Sequence[Record],
        destinations: Sequence[str] = (outbox.DEFAULT_DESTINATION,),
    ) -> int:
        """
        Durably queue *batch* for delivery, in one transaction.

        Each record becomes a pending row per destination (``"context"``,
        ``"otlp"``), delivered, retried and counted on its own. With ``keep_local`` the records are
        also stored in the report tables. When more than ``outbox_max`` rows are
        pending, the oldest pending rows are deleted and counted as ``dropped``.

        Args:
            batch: The records to queue.
            destinations: Where each record goes; one row per destination.

        Returns:
            The ratings refused (with ``keep_local``: their session or turn is
            not in the store); they are neither stored nor queued.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            TypeError: If *batch* holds something that is not a record.
            sqlite3.Error: If the write fails; nothing was queued.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.1.0
        """
        if not batch:
            return 0
        now = time.time()

        def queue(
            records: Sequence[Record],
        ) -> Callable[[sqlite3.Connection, Written], int]:
            def put(conn: sqlite3.Connection, written: Written) -> int:
                # With the report tables, ratings leave as stored: their turn
                # and user resolved, the refused ones not at all.
                final = _as_stored(records, written) if self._keep_local else records
                payloads = outbox.payloads(final, now, destinations)
                if destinations:
                    step = len(destinations)
                    for record, row in zip(final, payloads[::step], strict=True):
                        self._remember(row[1], record)
                return outbox.put(conn, payloads, self._outbox_max)

            return put

        rows = prepare(batch if self._keep_local else ())
        with self._locked() as conn:
            try:
                try:
                    written, dropped = self._commit(conn, rows, queue(batch))
                except UnicodeEncodeError:
                    clean = scrubbed(batch)  # see export()
                    rows = prepare(clean if self._keep_local else ())
                    written, dropped = self._commit(conn, rows, queue(clean))
                refused = self._settle(written)
            except sqlite3.Error:
                self._discard_connection()
                raise
        if dropped:
            message = (
                f"context_trace: outbox at {self._path} holds more than"
                f" {self._outbox_max} pending records; dropped the oldest"
            )
            if self._warned_full:
                _logger.debug("%s (%d records)", message, dropped)
            else:
                self._warned_full = True
                _logger.warning("%s (%d records)", message, dropped)
        return refused

    def _remember(self, payload: str, record: Record) -> None:
        recent = self._recent
        recent[payload] = record
        if len(recent) > _RECENT_PAYLOADS:
            recent.popitem(last=False)

    def _decode(self, payload: str) -> Record:
        record = self._recent.get(payload)
        return record if record is not None else record_from_json(payload)

    def outbox_claim(
        self,
        limit: int,
        lease_seconds: float = _DEFAULT_LEASE_SECONDS,
        destination: str = outbox.DEFAULT_DESTINATION,
    ) -> list[tuple[int, Record]]:
        """
        Lease up to *limit* deliverable rows for *destination*, oldest first, to
        this process.

        A row is deliverable when it is pending and its backoff has passed, or
        when an earlier lease expired (its holder crashed or hung). The lease is
        taken under ``BEGIN IMMEDIATE``, so two processes never claim the same
        row while the lease runs. Each claim counts one attempt. A row whose
        payload cannot be decoded is deleted and counted as ``failed``.

        Args:
            limit: Most rows to claim.
            lease_seconds: How long the rows stay reserved for this process.
            destination: Whose rows (``"context"``, ``"otlp"``).

        Returns:
            ``(row_id, record)`` pairs; pass the row ids to :meth:`outbox_done`,
            :meth:`outbox_release` or :meth:`outbox_fail`.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the claim fails; nothing was leased.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.1.0
        """
        if limit <= 0:
            return []

        me = holder.current()

        def op(
            conn: sqlite3.Connection,
        ) -> tuple[tuple[float, list[tuple[int, Record]], int], int]:
            # Leases and backoffs of processes that exited (SIGKILL, a fork child)
            # are free at once. Looked for on every claim: an index range that
            # skips this process's own rows, and a /proc read per other holder.
            freed = outbox.free_dead_holders(conn, me)
            if freed:
                _logger.info(
                    "context_trace: %d outbox rows held by processes that exited"
                    " are due again",
                    freed,
                )
            claim = outbox.claim(
                conn, limit, lease_seconds, me, destination, self._decode
            )
            return claim, self._generation

        (until, claimed, broken), generation = self._write_op(op)
        if broken:
            _logger.warning(
                "context_trace: dropped %d undecodable outbox rows in %s",
                broken,
                self._path,
            )
        for row_id, _ in claimed:
            self._leases[row_id] = (until, generation)
        return claimed

    def _lease_params(
        self, row_ids: Iterable[int]
    ) -> list[tuple[int, float | None, int]]:
        """``(row_id, lease or None, generation)``; an unknown id is of the file now."""
        params: list[tuple[int, float | None, int]] = []
        for row_id in row_ids:
            lease = self._leases.pop(row_id, None)
            params.append(
                (row_id, None, self._generation) if lease is None else (row_id, *lease)
            )
        return params

    def _in_this_file(
        self, params: Sequence[tuple[int, float | None, int]]
    ) -> list[tuple[int, float | None]]:
        """
        The leases of rows in the file open now; call inside a write op.

        A row claimed from a file that has since been deleted or replaced is not
        this file's row of the same number: it is left alone.
        """
        return [(r, lease) for r, lease, gen in params if gen == self._generation]

    def outbox_done(self, row_ids: Iterable[int]) -> None:
        """
        Delete delivered rows (the report tables keep their copy with keep_local).

        Args:
            row_ids: Row ids from :meth:`outbox_claim`.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the delete fails.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.1.0
        """
        params = self._lease_params(row_ids)
        if params:
            self._write_op(
                lambda conn: outbox.done(
                    conn, [r for r, _ in self._in_this_file(params)]
                )
            )

    def outbox_release(self, row_ids: Iterable[int], retry_after: float) -> None:
        """
        Return claimed rows to pending, deliverable again after *retry_after*.

        Use it after a transient failure (backoff). A row whose lease this
        instance no longer holds (it expired and another process claimed it) is
        left alone.

        Args:
            row_ids: Row ids from :meth:`outbox_claim`.
            retry_after: Seconds before the rows may be claimed again.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the update fails.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.1.0
        """
        params = self._lease_params(row_ids)
        if not params:
            return
        until = time.time() + retry_after
        me = holder.current()
        self._write_op(
            lambda conn: outbox.release(conn, self._in_this_file(params), until, me)
        )

    def outbox_fail(
        self,
        row_ids: Iterable[int],
        destination: str = outbox.DEFAULT_DESTINATION,
    ) -> None:
        """
        Give up on rows for good: delete them and count them as ``failed``.

        Like :meth:`outbox_release`, a row leased meanwhile by someone else is
        left alone.

        Args:
            row_ids: Row ids from :meth:`outbox_claim`.
            destination: The destination they were claimed for (its own
                ``failed`` count goes up too).

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the delete fails.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.1.0
        """
        params = self._lease_params(row_ids)
        if not params:
            return
        self._write_op(
            lambda conn: outbox.fail(conn, self._in_this_file(params), destination)
        )

    def outbox_counts(self) -> dict[str, int]:
        """
        Outbox state: ``pending``, ``leased``, ``dropped`` and ``failed``.

        ``pending`` rows wait for delivery (including rows in backoff and rows
        whose lease expired); ``leased`` rows are being delivered right now;
        ``dropped`` and ``failed`` are totals since the file was created.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the read fails.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.1.0
        """
        with self._locked() as conn:
            return outbox_counts(conn)

    def outbox_destinations(self) -> dict[str, dict[str, int]]:
        """
        The outbox per destination: ``waiting`` and ``failed`` rows of each.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the read fails.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.2.0
        """
        with self._locked() as conn:
            return outbox_destinations(conn)
