"""
The store interface: what every context_trace store does, whatever its database.

A store keeps the report tables (users, sessions, turns, ratings), the durable
outbox of records still to be delivered to remote destinations, and answers the
reads of the CLI, the dashboard and the senders. Two implementations:
:class:`~context_trace._store.sqlite_store.SQLiteStore` (one file, several
processes on one machine) is a :class:`Store`;
:class:`~context_trace._store.postgres.PostgresStore` (several servers) is a
:class:`ReportStore`, the same interface without the outbox, since it is a
destination that each server's local outbox delivers to. Everything
above the store (the SQLite exporter, the outbox exporter, the senders, the CLI
and the dashboard) uses only the names of this module, so a store is swapped by
building another one.

The interface is a set of :class:`typing.Protocol` classes rather than an ABC:
a store is checked structurally (by mypy, and by the shared contract suite in
``tests/store/``), it needs no import of this module to implement it, and the
read models it returns are plain frozen values. No SQL appears here: search,
upsert ("store once by id") and leasing are *operations*, and each store writes
them in its own dialect.

Rules every store keeps:

- **Connections and locking are the store's.** Methods may be called from any
  thread. A store is usable after ``os.fork()`` once :meth:`Store.after_fork`
  ran in the child (stores register it themselves with
  :func:`os.register_at_fork`); the child never uses the parent's connections.
- **Writes are idempotent by record id.** A turn or rating written twice is
  stored once; the second write changes nothing.
- **One transaction per call**, unless the call runs inside
  :meth:`Store.transaction` on the same thread: then it joins that transaction,
  and all of it commits or none of it does.
- **Ratings rate one turn** (see :mod:`context_trace._store.ratings`): the
  named turn, else the session's last answered turn at the rating's time; a
  rating whose session or turn is unknown is never shown, never invented. A
  :class:`Store` resolves them where they are written (and refuses the unknown
  ones, :class:`WriteResult`); a :class:`ReportStore` that several hosts write
  to (PostgreSQL) receives a rating possibly before the turn it rates, so it
  stores ratings as given and resolves them by the same rules when read.
- **History once.** A session's turns read back without the leading history a
  prompt re-sent: SQLite strips it when writing (turns arrive in order),
  PostgreSQL when reading (turns arrive from several hosts in any order).
- **Errors.** ``open`` and every operation raise :class:`OSError` or
  :class:`ValueError` when the store cannot be opened (a bad path or DSN, not a
  context_trace store, written by a newer version), :class:`RuntimeError` after
  :meth:`Store.close`, and the database driver's own error when a statement
  fails (nothing of that call is kept). Exporters turn these into results; the
  store itself never swallows them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from context_trace._record import Feedback, Message, Record

if TYPE_CHECKING:
    from datetime import date

    from .analytics import Overview, Page, SessionView, UserRow
    from .models import (
        DayStats,
        SessionSummary,
        StoredConversation,
        Transcript,
        UserSummary,
    )
    from .retention import Retention, WeekCount
    from .segments import Comparison, Segment

__all__ = [
    "DEFAULT_DESTINATION",
    "Dashboard",
    "Outbox",
    "Reads",
    "Refused",
    "ReportStore",
    "Store",
    "WriteResult",
]

#: The destination of outbox rows queued without one.
DEFAULT_DESTINATION = "context"


class Refused(NamedTuple):
    """A rating that was not stored, and why (for the one warning per session)."""

    feedback: Feedback
    reason: str


@dataclass(frozen=True, slots=True)
class WriteResult:
    """
    What :meth:`Store.write` stored.

    Attributes:
        ratings: The ratings as stored: their turn and their session's user
            resolved (a rating delivered again is listed again, stored once).
        refused: The ratings not stored, with the reason.
    """

    ratings: tuple[Feedback, ...] = ()
    refused: tuple[Refused, ...] = ()

    def as_stored(self, records: Sequence[Record]) -> list[Record]:
        """*records* with each rating as it was stored, the refused ones left out."""
        if not self.ratings and not self.refused:
            return list(records)
        stored = {feedback.id: feedback for feedback in self.ratings}
        out: list[Record] = []
        for record in records:
            if isinstance(record, Feedback):
                if record.id in stored:
                    out.append(stored[record.id])
            else:
                out.append(record)
        return out


@runtime_checkable
class Outbox(Protocol):
    """
    The durable outbox: records queued per destination until delivered.

    Every queued record is one row per destination (``"context"``, ``"otlp"``),
    delivered, retried and counted on its own. Rows are *leased* before
    delivery, so processes sharing a store never send the same row while the
    lease runs; a lease whose holder process died is free at once, one that ran
    out is free again. Row ids are integers, unique in the store.
    """

    def put(
        self,
        records: Sequence[Record],
        destinations: Sequence[str] = (DEFAULT_DESTINATION,),
        *,
        keep_local: bool = False,
    ) -> int:
        """
        Queue *records* for each of *destinations*, durably, in one transaction.

        With *keep_local* the records are also written to the report tables in
        the same transaction (as :meth:`Store.write`), and ratings are queued as
        stored (resolved), the refused ones neither stored nor queued. When more
        rows are pending than the store's bound, the oldest pending rows are
        deleted and counted as ``dropped``.

        Returns:
            The number of ratings refused (0 without *keep_local*).
        """
        ...

    def claim(
        self, limit: int, lease_seconds: float, destination: str = DEFAULT_DESTINATION
    ) -> list[tuple[int, Record]]:
        """
        Lease up to *limit* deliverable rows of *destination*, oldest first.

        A row is deliverable when pending and its backoff has passed, or when
        its lease expired or its holder died. Each claim counts one attempt. A
        row whose payload cannot be decoded is deleted and counted as failed.

        Returns:
            ``(row_id, record)`` pairs for :meth:`done`, :meth:`release`,
            :meth:`fail`.
        """
        ...

    def done(self, row_ids: Iterable[int]) -> None:
        """
        Delete delivered rows (the report tables keep their copy).

        Rows claimed from a store that has since been replaced are left alone.
        """
        ...

    def release(self, row_ids: Iterable[int], retry_after: float) -> None:
        """
        Return leased rows to pending, deliverable again after *retry_after* s.

        A row whose lease this process no longer holds (it expired and another
        process claimed it) is left alone.
        """
        ...

    def fail(
        self, row_ids: Iterable[int], destination: str = DEFAULT_DESTINATION
    ) -> None:
        """
        Delete rows for good and count them as ``failed`` (and per destination).

        Like :meth:`release`, a row leased meanwhile by someone else is left alone.
        """
        ...

    def counts(self) -> dict[str, int]:
        """``pending``, ``leased``, ``dropped`` and ``failed``, in one snapshot."""
        ...

    def destinations(self) -> dict[str, dict[str, int]]:
        """Per destination: rows ``waiting`` now and ``failed`` in total."""
        ...

    def reset_backoff(self) -> int:
        """
        Make every pending row deliverable now (``context-trace replay``).

        Rows leased by a live process keep their lease.

        Returns:
            The number of rows made due.
        """
        ...


@runtime_checkable
class Reads(Protocol):
    """
    The read models of a store: one entry point for the CLI and the dashboard.

    Reads never create or change a store. An instance is used from one thread
    and closed after use (it is a context manager). The values returned are the
    frozen read models of :mod:`context_trace._store.models` (CLI) and
    :mod:`context_trace._store.analytics` (dashboard).
    """

    def __enter__(self) -> Reads: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def close(self) -> None:
        """Release the connection; safe to call twice."""
        ...

    def users(
        self, sort: str = "last_seen", limit: int | None = None
    ) -> list[UserSummary]:
        """Per-user totals (the no-user row last), ordered by *sort*."""
        ...

    def sessions(
        self, user_id: str | None = None, limit: int = 50
    ) -> list[SessionSummary]:
        """Sessions, most recently active first."""
        ...

    def transcript(self, id: str) -> Transcript | None:
        """The transcript of a session or of one turn, by id."""
        ...

    def session_messages(self, session_id: str) -> list[Message]:
        """A session's messages in order across its turns."""
        ...

    def conversation(self, id: str) -> StoredConversation | None:
        """One stored turn by id."""
        ...

    def session_turns(self, session_id: str) -> list[StoredConversation]:
        """A session's turns in order."""
        ...

    def conversations(self, since: float | None = None) -> Iterator[StoredConversation]:
        """Every turn (started at or after *since*), oldest first, streamed."""
        ...

    def ratings(self, session_id: str) -> list[Feedback]:
        """A session's stored ratings, in the order given (the last one wins)."""
        ...

    def daily_stats(self) -> list[DayStats]:
        """Per-UTC-day totals."""
        ...

    def outbox_counts(self) -> dict[str, int]:
        """As :meth:`Outbox.counts`, read-only."""
        ...

    def outbox_destinations(self) -> dict[str, dict[str, int]]:
        """As :meth:`Outbox.destinations`, read-only."""
        ...

    def dashboard(self, *, now: float | None = None, prices: Any = None) -> Dashboard:
        """
        The dashboard's read models over this store (and its index, if any).

        Args:
            now: Epoch seconds to use as "now" for time ranges (tests).
            prices: Price overrides (or a pricer) for the cost figures.

        Raises:
            ValueError: If the store needs an index for these reads and it has
                not been built.
        """
        ...


@runtime_checkable
class Dashboard(Protocol):
    """
    The dashboard's read models: pages, overview, retention, segments, search.

    Full-text search (``search=``) is an operation: each store matches words
    with its own engine (SQLite's FTS5, PostgreSQL's ``tsvector``).
    """

    def close(self) -> None: ...

    def overview(self, range_: str = "7d", segment: Segment = ()) -> Overview: ...

    def segments(self, top: int = 20) -> dict[str, list[Any]]: ...

    def compare(self, a: Segment, b: Segment, range_: str = "all") -> Comparison: ...

    def retention(self, *, weeks: int = 8, since: date | None = None) -> Retention: ...

    def user_activity(
        self, user_id: str | None, weeks: int = 26
    ) -> tuple[WeekCount, ...]: ...

    def users(
        self,
        *,
        search: str = "",
        sort: str = "last_seen",
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
        range_: str = "all",
        segment: Segment = (),
    ) -> Page: ...

    def user(self, user_id: str | None) -> UserRow | None: ...

    def sessions(
        self, user_id: str | None, *, before: float | None = None, limit: int = 50
    ) -> Page: ...

    def session(self, session_id: str) -> SessionView | None: ...

    def models(self) -> list[str]: ...

    def conversations(
        self,
        *,
        search: str = "",
        user_id: str | None = None,
        anonymous: bool = False,
        rating: str | None = None,
        errors_only: bool = False,
        tool_errors_only: bool = False,
        model: str | None = None,
        range_: str = "all",
        before: int | None = None,
        limit: int = 50,
        topic: str | None = None,
        segment: Segment = (),
    ) -> Page: ...

    def satisfaction(
        self,
        range_: str = "all",
        user_id: str | None = None,
        session_id: str | None = None,
    ) -> Any: ...


@runtime_checkable
class ReportStore(Protocol):
    """
    The report tables' side of a store: connections, locking, fork hooks,
    transactions, writes and reads; no outbox.

    What a *destination* store implements: the PostgreSQL store that several
    servers share is written by each server's outbox sender, and each server
    keeps its outbox in a local SQLite file, so the shared store holds no
    outbox of its own. A :class:`Store` is a report store with an outbox.

    Construction never touches the database: the first operation (or
    :meth:`open`) does, so an exporter built over a bad location still
    constructs and reports the problem when it exports.
    """

    @property
    def location(self) -> str:
        """Where the store is, for messages: a file path, a DSN without password."""
        ...

    def open(self) -> None:
        """
        Open (creating if needed) the store now; raise if it cannot be used.

        Raises:
            OSError, ValueError: See the module's errors.
            RuntimeError: After :meth:`close`.
        """
        ...

    def close(self, timeout: float | None = None) -> None:
        """
        Close the store's connections; later operations raise RuntimeError.

        Safe to call twice. *timeout* bounds the wait for a running operation
        (None waits); if it passes, that operation closes when it ends.
        """
        ...

    def after_fork(self) -> None:
        """In a fork child: forget the parent's connections, leases and caches."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """
        One write transaction that the store's operations on this thread join.

        Commits when the block ends, rolls back if it raises. The store's
        other threads wait for it (their writes do not interleave with it);
        SQLite makes other processes wait too, PostgreSQL lets other hosts
        write concurrently (their rows are other turns, or the same turns
        stored once).
        """
        ...

    def write(self, records: Sequence[Record]) -> WriteResult:
        """
        Store turns and ratings in the report tables, idempotently by id.

        Turns of a session read back without leading history already stored
        for the session (by this or another writer). Ratings are resolved
        (module rules): here, listed in the result, or when read (a store
        fed by several hosts, whose result then lists none).
        """
        ...

    def session_transcript(self, session_id: str) -> list[Message]:
        """
        A session's stored messages so far, in order across its turns.

        For the senders (the Context API sends a thread's transcript); read
        through the writer's connection, so it sees this process's last commit.
        Empty for an unknown session.
        """
        ...

    def reads(self) -> Reads:
        """
        The read models, on a read-only connection of their own.

        Raises:
            FileNotFoundError: If the store does not exist.
            OSError, ValueError: If it cannot be read.
        """
        ...


@runtime_checkable
class Store(ReportStore, Protocol):
    """
    A context_trace store: the report tables (:class:`ReportStore`) and the
    durable outbox of the records still to deliver.

    The local SQLite file is one: every app process writes its turns (and
    queues them for remote destinations) there.
    """

    @property
    def outbox(self) -> Outbox:
        """The durable outbox of this store."""
        ...
