"""
The SQLite store's outbox: :class:`~.base.Outbox` over ``outbox.py``'s SQL.

It runs every operation in a transaction of its
:class:`~.sqlite_store.SQLiteStore` (joining the caller's, if any) and keeps
what this process knows of its rows: the leases it holds, and the records it
queued lately (a claim soon after the put skips decoding them again).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from context_trace._record import Record

from . import holder, outbox
from .base import DEFAULT_DESTINATION, WriteResult
from .codec import record_from_json, scrubbed
from .writer import prepare

if TYPE_CHECKING:
    from .sqlite_store import SQLiteStore

__all__ = ["SQLiteOutbox"]

_logger = logging.getLogger(__name__)

# Records this process queued lately, by payload text: a claim soon after the
# put (the worker's usual rhythm) skips decoding them again, which was a quarter
# of the OTLP export path's time. The text is the whole record (the codec round-
# trips exactly), so a hit is the same record. A few claims' worth.
_RECENT_PAYLOADS = 2048


class SQLiteOutbox:
    """
    The outbox table of one :class:`~.sqlite_store.SQLiteStore`.

    Args:
        store: The store whose file and transactions it uses.
        outbox_max: Most pending rows kept; beyond it the oldest are dropped.
    """

    def __init__(self, store: SQLiteStore, outbox_max: int) -> None:
        self._store = store
        self._max = outbox_max
        self._warned_full = False
        # row id -> (lease_until, file generation) of the rows this process
        # claimed; release/fail only touch a row while it still carries that
        # lease (see release), and none of them touches a row of a file that
        # was deleted or replaced since (the store's generation counts the
        # reopenings: a new file numbers its rows from 1 again).
        self._leases: dict[int, tuple[float, int]] = {}
        self._recent: OrderedDict[str, Record] = OrderedDict()

    def forget(self) -> None:
        """Drop this process's leases and cached payloads (a fork child's start)."""
        self._leases.clear()
        self._recent.clear()

    # -- put -----------------------------------------------------------------------

    def put(
        self,
        records: Sequence[Record],
        destinations: Sequence[str] = (DEFAULT_DESTINATION,),
        *,
        keep_local: bool = False,
    ) -> int:
        """Queue *records* per destination; see :meth:`.base.Outbox.put`."""
        if not records:
            return 0
        try:
            refused, dropped = self._put(records, destinations, keep_local)
        except UnicodeEncodeError:
            if self._store.in_transaction():
                raise  # the caller's transaction is lost: it retries
            # A lone surrogate (SQLite stores UTF-8 only): queue the batch with
            # such characters replaced rather than lose it.
            refused, dropped = self._put(scrubbed(records), destinations, keep_local)
        if dropped:
            message = (
                f"context_trace: outbox at {self._store.location} holds more than"
                f" {self._max} pending records; dropped the oldest"
            )
            if self._warned_full:
                _logger.debug("%s (%d records)", message, dropped)
            else:
                self._warned_full = True
                _logger.warning("%s (%d records)", message, dropped)
        return refused

    def _put(
        self, records: Sequence[Record], destinations: Sequence[str], keep_local: bool
    ) -> tuple[int, int]:
        now = time.time()
        rows = prepare(records) if keep_local else None
        store = self._store
        with store.transaction():
            final: Sequence[Record] = records
            refused = 0
            if rows is not None:
                # With the report tables, ratings leave as stored: their turn
                # and user resolved, the refused ones not at all.
                written = store.write_rows(rows)
                refused = len(written.refused)
                final = WriteResult(
                    tuple(written.ratings), tuple(written.refused)
                ).as_stored(records)
            payloads = outbox.payloads(final, now, destinations)
            if destinations:
                step = len(destinations)
                for record, row in zip(final, payloads[::step], strict=True):
                    self._remember(row[1], record)
            dropped = store.run(lambda conn: outbox.put(conn, payloads, self._max))
        return refused, dropped

    def _remember(self, payload: str, record: Record) -> None:
        recent = self._recent
        recent[payload] = record
        if len(recent) > _RECENT_PAYLOADS:
            recent.popitem(last=False)

    def _decode(self, payload: str) -> Record:
        record = self._recent.get(payload)
        return record if record is not None else record_from_json(payload)

    # -- leases --------------------------------------------------------------------

    def claim(
        self,
        limit: int,
        lease_seconds: float,
        destination: str = DEFAULT_DESTINATION,
    ) -> list[tuple[int, Record]]:
        """Lease due rows of *destination*; see :meth:`.base.Outbox.claim`."""
        if limit <= 0:
            return []
        me = holder.current()
        store = self._store

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
            return claim, store.generation

        (until, claimed, broken), generation = store.run(op)
        if broken:
            _logger.warning(
                "context_trace: dropped %d undecodable outbox rows in %s",
                broken,
                store.location,
            )
        for row_id, _ in claimed:
            self._leases[row_id] = (until, generation)
        return claimed

    def _lease_params(
        self, row_ids: Iterable[int]
    ) -> list[tuple[int, float | None, int]]:
        """``(row_id, lease or None, generation)``; an unknown id is of the file now."""
        generation = self._store.generation
        params: list[tuple[int, float | None, int]] = []
        for row_id in row_ids:
            lease = self._leases.pop(row_id, None)
            params.append(
                (row_id, None, generation) if lease is None else (row_id, *lease)
            )
        return params

    def _in_this_file(
        self, params: Sequence[tuple[int, float | None, int]]
    ) -> list[tuple[int, float | None]]:
        """
        The leases of rows in the file open now; call inside a transaction.

        A row claimed from a file that has since been deleted or replaced is not
        this file's row of the same number: it is left alone.
        """
        now = self._store.generation
        return [(r, lease) for r, lease, gen in params if gen == now]

    def done(self, row_ids: Iterable[int]) -> None:
        """Delete delivered rows (the report tables keep their copy)."""
        params = self._lease_params(row_ids)
        if params:
            self._store.run(
                lambda conn: outbox.done(
                    conn, [r for r, _ in self._in_this_file(params)]
                )
            )

    def release(self, row_ids: Iterable[int], retry_after: float) -> None:
        """
        Return claimed rows to pending, deliverable again after *retry_after*.

        A row whose lease this process no longer holds (it expired and another
        process claimed it) is left alone.
        """
        params = self._lease_params(row_ids)
        if not params:
            return
        until = time.time() + retry_after
        me = holder.current()
        self._store.run(
            lambda conn: outbox.release(conn, self._in_this_file(params), until, me)
        )

    def fail(
        self, row_ids: Iterable[int], destination: str = DEFAULT_DESTINATION
    ) -> None:
        """Delete rows for good and count them as ``failed`` (leased elsewhere: left)."""
        params = self._lease_params(row_ids)
        if not params:
            return
        self._store.run(
            lambda conn: outbox.fail(conn, self._in_this_file(params), destination)
        )

    # -- counts --------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """``pending``, ``leased``, ``dropped`` and ``failed`` (see ``reader``)."""
        return self._store.read(outbox.outbox_counts)

    def destinations(self) -> dict[str, dict[str, int]]:
        """Per destination: ``waiting`` and ``failed`` rows."""
        return self._store.read(outbox.outbox_destinations)

    def reset_backoff(self) -> int:
        """Make every pending row due now; leased rows keep their lease."""
        return self._store.run(outbox.reset_backoff)
