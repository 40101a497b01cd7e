"""
The durable outbox: remote senders (the Context API, OTLP) behind a local SQLite queue.

When a remote destination is configured (a Context token, OTLP export), every
batch is first written to the local SQLite file (one transaction, one row per
record and destination), and only then delivered, each destination through its
own sender (:class:`~.base.Sender`). A row is
deleted after a 2xx, returned to the queue with a backoff after a transient
failure, and deleted and counted after a permanent one. So an outage, an exit
or a crash loses nothing that reached the disk: undelivered rows are retried
while the process lives (the pipeline calls :meth:`OutboxExporter.idle` every
``flush_interval``), and picked up by the next process that opens the same
file, or by ``context-trace replay``.

Rows are leased (the store's ``outbox.claim``) before delivery, so several
processes sharing one file (gunicorn workers) never send the same row at the
same time. No peer SDK keeps undelivered telemetry across a crash; this is the
piece that does.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from context_trace import _config
from context_trace._record import Record

from .base import ExportResult, Outcome, Sender
from .http_policy import DEFAULT_CONTEXT_ENDPOINT
from .senders import CONTEXT, OTLP, POSTGRESQL, build_senders
from .sqlite import SQLiteExporter, StoreExporter

__all__ = ["OutboxExporter", "replay"]

_logger = logging.getLogger(__name__)

_DEFAULT_CLAIM = 256
# A lease must outlive one delivery attempt (the remote's per-batch deadline,
# 60 s by default), or another process could claim rows still being sent.
_DEFAULT_LEASE = 120.0
# How long a failed row waits on disk before any process may try it again. The
# remote's circuit breaker already stops this process from hammering a failing
# backend; the cap keeps a restarted process (or another worker sharing the
# file) from waiting out a long cool-down that an earlier process chose.
_MAX_ROW_BACKOFF = 5.0

Progress = Callable[[int, int], None]


class OutboxExporter:
    """
    Write every batch to the local store, then deliver it to each destination.

    Args:
        store: The SQLite store holding the outbox (and, with *keep_local*,
            the report tables the CLI reads).
        remote: The Context API exporter (destination ``"context"``).
        senders: More destinations by name (``{"otlp": OTLPSender(...)}``).
        claim_size: Rows delivered per attempt.
        lease_seconds: How long claimed rows stay reserved for this process;
            longer than the remote exporter's *deadline*.

    Raises:
        ValueError: no destination, or *claim_size* < 1.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 *senders*: several destinations, one outbox.
    """

    def __init__(
        self,
        store: StoreExporter,
        remote: Sender | None = None,
        *,
        senders: Mapping[str, Sender] | None = None,
        claim_size: int = _DEFAULT_CLAIM,
        lease_seconds: float = _DEFAULT_LEASE,
    ) -> None:
        if claim_size < 1:
            raise ValueError(f"claim_size must be at least 1, got {claim_size}")
        named: dict[str, Sender] = {}
        if remote is not None:
            named[CONTEXT] = remote
        named.update(senders or {})
        if not named:
            raise ValueError("OutboxExporter needs at least one destination")
        self._store = store
        # Every outbox operation goes to the store itself; the exporter only
        # says whether queued records are kept in the report tables too.
        self._outbox = store.store.outbox
        self._keep_local = store.keep_local
        self._senders = named
        self._destinations = tuple(named)
        self._claim_size = claim_size
        self._lease = lease_seconds
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"OutboxExporter(store={self._store!r}, senders={self._senders!r})"

    @property
    def store(self) -> StoreExporter:
        """The local store's exporter (its ``store`` holds the outbox)."""
        return self._store

    @property
    def remote(self) -> Any:
        """The Context API exporter, else the first destination's sender."""
        return self._senders.get(CONTEXT) or next(iter(self._senders.values()))

    @property
    def senders(self) -> Mapping[str, Sender]:
        """The destinations by name."""
        return dict(self._senders)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        _logger.log(level, message, *args, exc_info=level == logging.WARNING)

    def export(self, batch: Sequence[Record]) -> ExportResult:
        """
        Write *batch* to the outbox; delivery happens in :meth:`idle`.

        Persisting never waits for the backend, so during an outage or with a slow
        backend new turns still reach the disk at SQLite speed.
        """
        if self._closed:
            # Shut down with the worker still busy (its timeout ran out): these
            # records never reached the disk; count them, don't send half-closed.
            return ExportResult.failure(len(batch))
        try:
            refused = self._outbox.put(
                batch, self._destinations, keep_local=self._keep_local
            )
        except Exception:  # noqa: BLE001 - fall back to sending directly
            self._warn_once(
                "put",
                "context_trace: cannot write the outbox at %s; sending without a local copy",
                self._store.store.location,
            )
            outcomes: list[Outcome] = []
            for sender in self._senders.values():
                outcomes.extend(sender.export_each(batch))
            return ExportResult(
                exported=sum(1 for o in outcomes if o.status == "delivered"),
                failed=sum(1 for o in outcomes if o.status != "delivered"),
                retried=sum(max(0, o.attempts - 1) for o in outcomes),
            )
        return ExportResult(rejected=refused)

    def idle(self) -> ExportResult:
        """Deliver rows that are due (the pipeline calls it after each drain and flush)."""
        return self.deliver()

    def interrupt(self) -> None:
        """Cut a delivery short (shutdown with a backend that hangs): rows stay on disk."""
        for sender in self._senders.values():
            sender.shutdown(0.0)

    def pending(self) -> int:
        """Rows waiting in the outbox now (pending or being delivered)."""
        counts = self._outbox.counts()
        return int(counts.get("pending", 0)) + int(counts.get("leased", 0))

    def deliver(
        self, limit: int | None = None, progress: Progress | None = None
    ) -> ExportResult:
        """
        Deliver due rows until none is left, one fails transiently, or *limit* is hit.

        Args:
            limit: Most rows to attempt; None for all that are due.
            progress: Called with ``(delivered so far, attempted so far)``.

        Returns:
            What happened: exported, failed (permanently), retried, and pending
            (rows returned to the queue for a later attempt).
        """
        total = ExportResult()
        with self._lock:
            for name in self._destinations:
                left = None if limit is None else limit - total_attempted(total)
                if left is not None and left <= 0:
                    break
                result = self._deliver_one(name, self._senders[name], left, progress)
                total = ExportResult(
                    exported=total.exported + result.exported,
                    failed=total.failed + result.failed,
                    retried=total.retried + result.retried,
                    pending=total.pending + result.pending,
                )
        return total

    def _deliver_one(
        self,
        destination: str,
        sender: Sender,
        limit: int | None,
        progress: Progress | None,
    ) -> ExportResult:
        """:meth:`deliver` for one destination's rows; call with the lock held."""
        exported = failed = retried = pending = attempted = 0
        while (limit is None or attempted < limit) and not self._closed:
            if sender.cooling_down:
                break  # the backend keeps failing: leave the rows for later
            size = (
                self._claim_size
                if limit is None
                else min(self._claim_size, limit - attempted)
            )
            try:
                rows = self._outbox.claim(size, self._lease, destination)
            except Exception:  # noqa: BLE001 - the store failing must not kill the worker
                self._warn_once(
                    "claim",
                    "context_trace: cannot read the outbox at %s",
                    self._store.store.location,
                )
                break
            if not rows:
                break
            attempted += len(rows)
            outcomes = sender.export_each([record for _, record in rows])
            done: list[int] = []
            gone: list[int] = []
            retry: list[int] = []
            backoff = 0.0
            for (row_id, _), outcome in zip(rows, outcomes, strict=True):
                retried += max(0, outcome.attempts - 1)
                if outcome.status == "delivered":
                    done.append(row_id)
                elif outcome.status == "failed":
                    gone.append(row_id)
                else:
                    retry.append(row_id)
                    backoff = max(
                        backoff, min(outcome.retry_after or 1.0, _MAX_ROW_BACKOFF)
                    )
            try:
                if done:
                    self._outbox.done(done)
                if gone:
                    self._outbox.fail(gone, destination)
                if retry:
                    self._outbox.release(retry, backoff)
            except Exception:  # noqa: BLE001 - rows stay leased and come back later
                self._warn_once(
                    "mark",
                    "context_trace: cannot update the outbox at %s",
                    self._store.store.location,
                )
            exported += len(done)
            failed += len(gone)
            pending += len(retry)
            if progress is not None:
                progress(exported, attempted)
            if retry:
                break  # the backend is struggling: back off instead of hammering it
        return ExportResult(
            exported=exported, failed=failed, retried=retried, pending=pending
        )

    def after_fork(self) -> None:
        """Called in a forked child: fresh locks, and senders' own connections."""
        self._lock = threading.Lock()
        for sender in self._senders.values():
            renew = getattr(sender, "after_fork", None)
            if callable(renew):
                renew()  # the PostgreSQL sender: never share the parent's socket

    def shutdown(self, timeout: float | None = None) -> None:
        """Close the senders and the store; undelivered rows stay on disk."""
        self._closed = True
        try:
            for sender in self._senders.values():
                sender.shutdown(timeout)
        finally:
            # Wait (bounded) for a delivery in progress to finish marking its rows.
            locked = self._lock.acquire(
                timeout=-1 if timeout is None else max(timeout, 0.5)
            )
            try:
                self._store.shutdown(timeout)
            finally:
                if locked:
                    self._lock.release()


def total_attempted(result: ExportResult) -> int:
    """Rows a delivery pass attempted (the sum of its outcomes)."""
    return result.exported + result.failed + result.pending


def replay(
    db_path: str | os.PathLike[str] | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    *,
    progress: Progress | None = None,
    allow_insecure: bool = False,
    store: str | None = None,
) -> tuple[int, int, int]:
    """
    Deliver the outbox of *db_path* now (``context-trace replay``).

    Each destination with rows waiting is delivered: the Context API's with
    *token*, OTLP's to the endpoint the ``OTEL_EXPORTER_OTLP_*`` variables name
    (needs ``context-trace[otel]``).

    Args:
        db_path: The SQLite file (default: the configured one).
        token: Context API token (default: ``CONTEXT_TOKEN``/``GETCONTEXT_TOKEN``).
        endpoint: Context API base URL (default: ``CONTEXT_ENDPOINT`` or Context's).
        progress: Called with ``(delivered, attempted)`` after each chunk.
        allow_insecure: Allow a token over plain http to a non-loopback host.
        store: The PostgreSQL store's URL, for the ``postgresql`` rows
            (default: ``CONTEXT_TRACE_STORE``).

    Returns:
        ``(delivered, failed, pending)``: pending rows stay for a later attempt.

    Raises:
        ValueError: Context API rows wait and there is no token; a bad endpoint
            or OTEL_* variable.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 Delivers every destination's rows (OTLP too).
    .. versionchanged:: 0.3.0 And a PostgreSQL store's (*store*).
    """
    store_url = store or os.environ.get(_config.ENV_STORE, "").strip() or None
    path = Path(db_path) if db_path is not None else _config.default_db_path()
    token = (
        token
        or os.environ.get(_config.ENV_TOKEN)
        or os.environ.get(_config.ENV_TOKEN_ALT)
    )
    endpoint = (
        endpoint or os.environ.get(_config.ENV_ENDPOINT) or DEFAULT_CONTEXT_ENDPOINT
    )
    local = SQLiteExporter(path, keep_local=False)
    try:
        local.check()
        box = local.store.outbox
        waiting = {name for name, row in box.destinations().items() if row["waiting"]}
        if POSTGRESQL in waiting and store_url is None:
            raise ValueError(
                "the outbox holds rows for a PostgreSQL store: pass store= "
                f"or set {_config.ENV_STORE}"
            )
        # Nothing waiting: the Context API is the destination checked, unless a
        # PostgreSQL store is named.
        wants_context = CONTEXT in waiting or (not waiting and store_url is None)
        if wants_context and not token:
            raise ValueError(
                "token is required to replay the outbox (set CONTEXT_TOKEN)"
            )
        wanted = [CONTEXT] if wants_context else []
        otlp: dict[str, Any] = {}
        if OTLP in waiting:
            wanted.append(OTLP)
            otlp = _config.otlp_settings()
        if POSTGRESQL in waiting:
            wanted.append(POSTGRESQL)
        senders = build_senders(
            wanted,
            transcripts=local.store,
            token=token,
            endpoint=endpoint,
            allow_insecure=allow_insecure,
            otel_missing=(
                "the outbox holds OTLP rows: install 'context-trace[otel]'"
                " to replay them"
            ),
            store_url=store_url,
            host=os.environ.get(_config.ENV_HOST) or None,
            **otlp,
        )
        outbox = OutboxExporter(local, senders=senders)
        # An explicit replay means "now": forget the backoff of waiting rows (rows
        # leased by a live process keep their lease).
        box.reset_backoff()
        result = outbox.deliver(progress=progress)
        for sender in senders.values():
            sender.shutdown(5.0)
        return result.exported, result.failed, box.counts()["pending"]
    finally:
        local.shutdown()
