"""
The PostgreSQL store's write side: :class:`PostgresStore`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from context_trace._record import Message, Record
from context_trace._store.base import WriteResult

from .connection import _CONNECT_TIMEOUT, check_url, connect, safe_url
from .reads import PostgresReads, _deduplicated, _session_rows, session_messages
from .schema import migrate
from .write import write_batch


class PostgresStore:
    """
    The PostgreSQL store's write side, for the outbox's ``postgresql`` sender.

    A :class:`~context_trace._store.base.ReportStore`: the store interface
    without the outbox, which stays in each host's local SQLite file.

    Construction never touches the server; :meth:`open` (or the first write)
    connects and migrates. One connection, used from the export worker (a
    lock makes other threads wait); after a connection error it is dropped and
    the next call opens a new one.

    Args:
        url: ``postgresql://user:password@host:port/db``.
        host: This host's identity, stored with every turn and rating.
        timeout: Seconds a connection attempt may take.
    """

    def __init__(
        self, url: str, *, host: str, timeout: float = _CONNECT_TIMEOUT
    ) -> None:
        self._url = check_url(url)
        self._host = host
        self._timeout = timeout
        self._conn: Any = None
        self._lock = threading.RLock()
        self._closed = False
        self._owner: int | None = None  # the thread inside transaction()

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r}, host={self._host!r})"

    @property
    def location(self) -> str:
        """The server, for messages: the URL without its password."""
        return safe_url(self._url)

    @property
    def host(self) -> str:
        """This host's identity."""
        return self._host

    def _connection(self) -> Any:
        if self._closed:
            raise RuntimeError("the PostgreSQL store is closed")
        if self._conn is None or self._conn.closed:
            conn = connect(self._url, timeout=self._timeout)
            try:
                migrate(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def open(self) -> None:
        """Connect and bring the schema up to date now."""
        with self._lock:
            self._connection()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """
        One transaction that this thread's :meth:`write` and reads join.

        Commits when the block ends, rolls back if it raises; other threads
        wait for it (the store's lock). A write inside is a savepoint of it.
        """
        if self._owner == threading.get_ident():
            yield  # joined: the outer block commits
            return
        with self._lock:
            conn = self._connection()
            self._owner = threading.get_ident()
            try:
                with conn.transaction():
                    yield
            except BaseException:
                self._drop_if_broken()
                raise
            finally:
                self._owner = None

    def write(self, records: Sequence[Record]) -> WriteResult:
        """
        Store *records* idempotently by id, in one transaction.

        Ratings are stored as given and resolved to their turn when read (the
        ``rated_turns`` view: the turn may come later, from another host), so
        the result never lists ratings as resolved or refused: it is empty.
        """
        with self._lock:
            conn = self._connection()
            try:
                write_batch(conn, records, self._host)
            except BaseException:
                self._drop_if_broken()
                raise
        return WriteResult()

    def session_transcript(self, session_id: str) -> list[Message]:
        """A session's messages in order across its turns, from every host."""
        with self._lock:
            conn = self._connection()
            if self._owner == threading.get_ident():
                # Inside transaction(): read its uncommitted writes, end nothing.
                rows = _session_rows(conn, session_id)
                return [m for turn in _deduplicated(rows) for m in turn]
            return session_messages(conn, session_id)

    def _drop_if_broken(self) -> None:
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken):
            self._conn = None
            conn.close()

    def after_fork(self) -> None:
        """In a fork child: forget the parent's connection (never close it)."""
        self._conn = None
        self._lock = threading.RLock()
        self._owner = None

    def cancel(self) -> None:
        """Cut a statement in progress short (shutdown); never raises."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):  # best effort at shutdown
                conn.cancel_safe(timeout=1.0)

    def close(self, timeout: float | None = None) -> None:
        """Close the connection; later operations raise RuntimeError."""
        locked = self._lock.acquire(
            timeout=-1 if timeout is None else max(timeout, 0.1)
        )
        try:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
        finally:
            if locked:
                self._lock.release()

    def reads(self) -> PostgresReads:
        """The read models, on a read-only connection of their own."""
        return PostgresReads(self._url, timeout=self._timeout)


# -- reading ---------------------------------------------------------------------------
