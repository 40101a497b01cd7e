"""
The SQLite exporter: a thin exporter over a :class:`~context_trace._store.sqlite_store.SQLiteStore`.

:class:`SQLiteExporter` writes one file (see :mod:`context_trace._store`):
``export`` stores batches in the report tables through the store's ``write``,
and the ``outbox_*`` methods are the store's outbox, for records that still have
to reach a remote sink. The store owns the connection, its lock, the fork hooks
and the transactions; this module turns its errors into export results and log
lines. :class:`~context_trace._store.reader.SQLiteReader` opens the same file
read-only for the ``context-trace`` CLI and for tests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from context_trace._record import Message, Record
from context_trace._store.base import DEFAULT_DESTINATION, Store
from context_trace._store.connection import DEFAULT_BUSY_TIMEOUT
from context_trace._store.sqlite_store import SQLiteStore

from .base import ExportResult

__all__ = ["SQLiteExporter", "StoreExporter"]

_logger = logging.getLogger(__name__)

_DEFAULT_OUTBOX_MAX = 100_000
_DEFAULT_LEASE_SECONDS = 60.0
_MAX_LOGGED_ERRORS = 64


class StoreExporter:
    """
    An exporter over any :class:`~context_trace._store.base.Store`.

    ``export`` writes through :meth:`Store.write`; the ``outbox_*`` methods are
    the store's outbox (what :class:`~.outbox.OutboxExporter` delivers from),
    and :meth:`session_messages` its transcripts. Errors become export results
    and one log line per distinct problem; nothing raises into the pipeline.

    Args:
        store: The store to write.
        keep_local: Also store records passed to :meth:`outbox_put` in the report
            tables, so the CLI sees them.
    """

    def __init__(self, store: Store, *, keep_local: bool = True) -> None:
        self._store = store
        self._keep_local = keep_local
        self._logged: set[str] = set()

    @property
    def store(self) -> Store:
        """The store this exporter writes (connections, outbox, reads)."""
        return self._store

    @property
    def keep_local(self) -> bool:
        """Whether records queued in the outbox are also kept in the report tables."""
        return self._keep_local

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._store.location!r})"

    def _log_once(self, level: int, message: str) -> None:
        """Log *message* at *level* the first time, at DEBUG when it repeats."""
        if message in self._logged:
            _logger.debug("%s (repeated)", message)
            return
        if len(self._logged) >= _MAX_LOGGED_ERRORS:
            self._logged.clear()
        self._logged.add(message)
        _logger.log(level, "%s", message)

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
        self._store.open()

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
        store = self._store
        try:
            written = store.write(batch)
        except TypeError as exc:
            self._log_once(
                logging.ERROR,
                f"context_trace: cannot store batch in {store.location}: {exc!r}",
            )
            return ExportResult.failure(n)
        except RuntimeError as exc:
            self._log_once(logging.WARNING, f"context_trace: {exc}; records dropped")
            return ExportResult.failure(n)
        except (OSError, ValueError) as exc:
            self._log_once(logging.ERROR, f"context_trace: {exc}")
            return ExportResult.failure(n)
        except Exception as exc:  # noqa: BLE001 - export must never raise
            self._log_once(
                logging.ERROR,
                f"context_trace: writing to SQLite store at {store.location}"
                f" failed: {type(exc).__name__}: {exc}",
            )
            return ExportResult.failure(n)
        refused = len(written.refused)
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
        self._store.close(timeout)

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
        return self._store.session_transcript(session_id)

    # -- durable outbox ----------------------------------------------------------

    def outbox_put(
        self,
        batch: Sequence[Record],
        destinations: Sequence[str] = (DEFAULT_DESTINATION,),
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
        return self._store.outbox.put(batch, destinations, keep_local=self._keep_local)

    def outbox_claim(
        self,
        limit: int,
        lease_seconds: float = _DEFAULT_LEASE_SECONDS,
        destination: str = DEFAULT_DESTINATION,
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
        return self._store.outbox.claim(limit, lease_seconds, destination)

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
        self._store.outbox.done(row_ids)

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
        self._store.outbox.release(row_ids, retry_after)

    def outbox_fail(
        self,
        row_ids: Iterable[int],
        destination: str = DEFAULT_DESTINATION,
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
        self._store.outbox.fail(row_ids, destination)

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
        return self._store.outbox.counts()

    def outbox_destinations(self) -> dict[str, dict[str, int]]:
        """
        The outbox per destination: ``waiting`` and ``failed`` rows of each.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the read fails.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.2.0
        """
        return self._store.outbox.destinations()


class SQLiteExporter(StoreExporter):
    """
    Store records in a local SQLite file; also the Context API exporter's outbox.

    Use it as the default exporter (``context-trace`` reads the file), or give it
    to the Context API exporter as a durable outbox. Nothing touches the file
    until the first ``export`` or ``outbox_*`` call, so construction never fails
    on a bad path: ``export`` then logs one ERROR line naming the path and counts
    the batches as failed. Call :meth:`check` to surface the problem as an
    exception instead.

    It is a :class:`StoreExporter` over a
    :class:`~context_trace._store.sqlite_store.SQLiteStore`: one writer
    connection, opened lazily and shared under a lock, so the methods may be
    called from any thread. After ``os.fork()`` the child opens its own
    connection. Several processes may write the same file.

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
        store = SQLiteStore(path, outbox_max=outbox_max, busy_timeout=busy_timeout)
        super().__init__(store, keep_local=keep_local)
        self._sqlite = store

    @property
    def store(self) -> SQLiteStore:
        """The SQLite store this exporter writes."""
        return self._sqlite

    @property
    def path(self) -> str:
        """The database file this exporter writes."""
        return self._sqlite.path
