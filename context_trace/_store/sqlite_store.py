"""
The SQLite store: one file, shared by the processes of one machine.

:class:`SQLiteStore` implements :class:`~context_trace._store.base.Store` over
the modules of this package (``writer``, ``ratings``, ``outbox``, ``reader``):
it owns the writer connection, the lock around it, the fork hooks and the
transactions; the SQL stays in those modules.

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
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from context_trace._record import Feedback, Message, Record

from .base import Store, WriteResult
from .codec import scrubbed
from .connection import DEFAULT_BUSY_TIMEOUT, open_writer, transaction
from .reader import SQLiteReader, read_session_messages
from .sqlite_outbox import SQLiteOutbox
from .writer import Rows, SeenCache, Written, prepare, write

if TYPE_CHECKING:
    from .analytics import Analytics

__all__ = ["SQLiteReads", "SQLiteStore"]

_logger = logging.getLogger(__name__)
_T = TypeVar("_T")

_DEFAULT_OUTBOX_MAX = 100_000
_MAX_LOGGED_ERRORS = 64

# Connections inherited across os.fork(). The child must neither use nor close
# them (closing would touch the parent's locks and WAL index), so they are kept
# referenced here until the process exits instead of being garbage collected.
_ABANDONED: list[sqlite3.Connection] = []
_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()

# The stores whose lock the forking thread holds across os.fork(), so that no
# other thread is inside a transaction when the child is made: a child made
# mid-transaction inherits SQLite's in-process lock state ("database is locked"
# for every connection it opens) for a lock no thread of its own will release.
_HELD_ACROSS_FORK: list[SQLiteStore] = []
_FORK_WAIT_SECONDS = 2.0  # a batch commits in milliseconds; never block fork for long


def _before_fork() -> None:
    for store in list(_STORES):
        if store._lock.acquire(timeout=_FORK_WAIT_SECONDS):
            _HELD_ACROSS_FORK.append(store)


def _after_fork_in_parent() -> None:
    while _HELD_ACROSS_FORK:
        _HELD_ACROSS_FORK.pop()._lock.release()


def _after_fork_in_child() -> None:
    _HELD_ACROSS_FORK.clear()
    for store in list(_STORES):
        store.after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


class SQLiteStore:
    """
    A context_trace store in one SQLite file (see :mod:`.base` for the contract).

    One writer connection is opened lazily and shared under a lock, so the
    methods may be called from any thread; nothing touches the file before the
    first operation. After ``os.fork()`` the child opens its own connection. A
    file deleted or replaced while in use is noticed (one ``stat`` per
    operation) and the path reopened.

    Args:
        path: The database file; missing parent directories are created.
        outbox_max: Most pending outbox rows kept; beyond it the oldest are
            dropped and counted.
        busy_timeout: Seconds to wait for another process's write lock.

    Raises:
        ValueError: If *outbox_max* < 1 or *busy_timeout* < 0.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        outbox_max: int = _DEFAULT_OUTBOX_MAX,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        if outbox_max < 1:
            raise ValueError(f"outbox_max must be at least 1, got {outbox_max!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0, got {busy_timeout!r}")
        self._path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        # (device, inode) of the file the connection opened: see _moved().
        self._identity: tuple[int, int] | None = None
        self._pid = os.getpid()
        self._closed = False
        self._logged: set[str] = set()
        # Counts the reopenings after the file was deleted or replaced: the
        # outbox keeps a lease only for rows of the file it was taken in.
        self.generation = 0
        self._seen = SeenCache()
        # The thread inside transaction(), and the seen-sets its writes used
        # (settled when it commits).
        self._owner: int | None = None
        self._touched: list[Written] = []
        self._outbox = SQLiteOutbox(self, outbox_max)
        _STORES.add(self)

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def location(self) -> str:
        """The database file, for messages."""
        return self._path

    @property
    def outbox(self) -> SQLiteOutbox:
        """The durable outbox in this file."""
        return self._outbox

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    # -- lifecycle ---------------------------------------------------------------

    def open(self) -> None:
        """Open (creating if needed) the file now; raise if it cannot be used."""
        with self._locked():
            pass

    def close(self, timeout: float | None = None) -> None:
        """Close the writer connection; later operations raise RuntimeError."""
        self._closed = True
        acquired = self._lock.acquire(
            timeout=-1 if timeout is None else max(timeout, 0)
        )
        if not acquired:
            return
        try:
            self.discard_connection()
        finally:
            self._lock.release()

    def after_fork(self) -> None:
        """In a fork child: fresh lock, and never touch the parent's connection."""
        self._lock = threading.Lock()
        self._owner = None
        self._touched.clear()
        if self._conn is not None:
            _ABANDONED.append(self._conn)
            self._conn = None
        self._pid = os.getpid()
        self._seen.clear()
        self._outbox.forget()

    # -- the connection ----------------------------------------------------------

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
            self._outbox.forget()
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

        One ``stat`` per operation, not per row. A failing ``stat`` other than
        "no such file" (a permission change) keeps the connection: only a
        missing or different file counts.
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
        self.discard_connection()
        self.generation += 1
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

    def discard_connection(self) -> None:
        """Close the connection after an error; the next call reopens and rechecks."""
        conn, self._conn = self._conn, None
        self._identity = None
        self._seen.clear()
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def log_once(self, level: int, message: str) -> None:
        """Log *message* at *level* the first time, at DEBUG when it repeats."""
        if message in self._logged:
            _logger.debug("%s (repeated)", message)
            return
        if len(self._logged) >= _MAX_LOGGED_ERRORS:
            self._logged.clear()
        self._logged.add(message)
        _logger.log(level, "%s", message)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; closed after use once shut down."""
        with self._lock:
            try:
                yield self._connection()
            finally:
                if self._closed:  # close() timed out waiting for this call
                    self.discard_connection()

    # -- transactions ------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """
        One ``BEGIN IMMEDIATE`` transaction that this thread's operations join.

        On failure the seen cache is cleared (it may hold keys of the rolled-
        back writes) and, unless the error is a text encoding one (the caller
        retries with the text cleaned), the connection is dropped.
        """
        if self.in_transaction():
            yield  # joined: the outer block commits
            return
        with self._locked() as conn:
            self._owner = threading.get_ident()
            try:
                with transaction(conn):
                    yield
            except BaseException as exc:
                self._touched.clear()
                self._seen.clear()
                if isinstance(exc, Exception) and not isinstance(
                    exc, UnicodeEncodeError
                ):
                    self.discard_connection()
                raise
            finally:
                self._owner = None
            touched, self._touched = self._touched, []
            for written in touched:
                self._settle(written)

    def run(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run *op* with the connection inside :meth:`transaction` (joined or own)."""
        with self.transaction():
            conn = self._conn
            assert conn is not None  # held by transaction()
            return op(conn)

    def _settle(self, written: Written) -> None:
        """After a commit: settle the seen-sets, report refused ratings."""
        self._seen.settle(written.touched)
        for refused in written.refused:
            self.log_once(
                logging.WARNING,
                "context_trace: a rating of session"
                f" {refused.feedback.session_id!r} was not stored: {refused.reason}",
            )

    # -- operations --------------------------------------------------------------

    def write_rows(self, rows: Rows) -> Written:
        """Store prepared *rows* inside :meth:`transaction` (joined or its own)."""

        def op(conn: sqlite3.Connection) -> Written:
            written = write(conn, rows, self._seen)
            self._touched.append(written)
            return written

        return self.run(op)

    def write(self, records: Sequence[Record]) -> WriteResult:
        """
        Store turns and ratings, idempotently by id (see :mod:`.base`).

        Text SQLite cannot store (a lone surrogate: it keeps UTF-8 only) is
        stored with such characters replaced rather than lost.

        Raises:
            TypeError: If *records* holds something that is not a record.
            OSError, ValueError: If the file cannot be opened.
            RuntimeError: After :meth:`close`.
            sqlite3.Error: If the write fails; nothing of it was stored.
        """
        if not records:
            return WriteResult()
        rows = prepare(records)  # a TypeError before any lock is taken
        try:
            written = self.write_rows(rows)
        except UnicodeEncodeError:
            if self.in_transaction():
                raise  # the caller's transaction is lost: it retries
            written = self.write_rows(prepare(scrubbed(records)))
        return WriteResult(tuple(written.ratings), tuple(written.refused))

    def in_transaction(self) -> bool:
        """Whether this thread is inside :meth:`transaction`."""
        return self._owner == threading.get_ident()

    def read(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run the read *op* on the writer connection (in this thread's transaction)."""
        if self.in_transaction():
            assert self._conn is not None  # held by transaction()
            return op(self._conn)
        with self._locked() as conn:
            return op(conn)

    def session_transcript(self, session_id: str) -> list[Message]:
        """A session's stored messages so far, through the writer connection."""
        return self.read(lambda conn: read_session_messages(conn, session_id))

    def reads(self) -> SQLiteReads:
        """The read models on a read-only connection (``mode=ro``)."""
        return SQLiteReads(self._path)


class SQLiteReads(SQLiteReader):
    """:class:`~.base.Reads` over one SQLite file: the reader plus the dashboard."""

    def __enter__(self) -> SQLiteReads:
        return self

    def ratings(self, session_id: str) -> list[Feedback]:
        """A session's stored ratings, in the order given (the last one wins)."""
        return [
            Feedback(
                id=row[0],
                session_id=row[1],
                user_id=row[2],
                rating=int(row[4]),
                conversation_id=row[3],
                created_at=float(row[5]),
            )
            for row in self._rows(
                "SELECT id, session_id, user_id, conversation_id, rating,"
                " created_at FROM feedback WHERE session_id = ?"
                " ORDER BY created_at, id",
                (session_id,),
            )
        ]

    def dashboard(
        self,
        *,
        now: float | None = None,
        index: str | os.PathLike[str] | None = None,
    ) -> Analytics:
        """
        The dashboard's read models, over this file and its index.

        Args:
            now: Epoch seconds to use as "now" for time ranges (tests).
            index: The dashboard index (default: beside the store; built by
                :class:`.ui_index.UIIndex`).

        Raises:
            FileNotFoundError: If the store does not exist.
            ValueError: If the index has not been built.
        """
        from .analytics import Analytics  # the dashboard's queries: not for writers

        return Analytics(self.path, index, now=now)


if TYPE_CHECKING:

    def _is_a_store(store: SQLiteStore) -> Store:
        """mypy checks here that SQLiteStore has the whole interface."""
        return store
