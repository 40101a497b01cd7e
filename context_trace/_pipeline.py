"""
The background export pipeline: a bounded queue and one worker thread.

Shaped like OpenTelemetry's ``BatchSpanProcessor``. The recorder calls
:meth:`BatchPipeline.emit` with a finished turn and returns at once; the
``context-trace-exporter`` thread turns queued turns into records (text
extraction, session de-duplication, redaction: everything that costs anything)
and hands them to the exporter in batches.

Threading model:

- ``emit`` runs on the app's threads and never raises. It appends to a
  ``collections.deque`` (append and popleft are atomic in CPython) and, once
  ``_WAKE_AT`` items wait, sets the worker's wake-up Event: waking early keeps
  the queue, and so the memory a worker's turns hold, short.
- Overload policy (``_pipeline_overload``): at a high-water mark the emitting
  thread waits, bounded, for the worker to make room, then queues the item
  or, with the queue full, drops it and counts it.
- The worker sleeps on that Event with ``flush_interval`` as timeout, so records
  wait at most that long. It exports with ``_export_lock`` held, the only place
  that pops from the queue, so draining is ordered. After taking each chunk it
  bumps ``_progress`` and, if an emitter waits, notifies ``_room``.
- ``flush`` appends a marker to the queue and waits for the worker to reach it:
  since the queue is FIFO, everything emitted before the call has then been
  exported (or given up on). No counters need to be read across threads.
- ``shutdown`` stops accepting records, wakes the worker, waits for it to drain
  (bounded), then closes the exporter with the time left.
- Fork and exit (``_pipeline_process``): a forked child starts with an empty
  queue and no thread; the process's exit, ``multiprocessing``'s included,
  shuts the pipeline down (bounded).
- The thread runs in an empty ``contextvars.Context``: no user scope is active
  there, so nothing the exporter does is ever recorded.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections import deque
from typing import Any

from . import _pipeline_process
from ._exporters.base import Capabilities, Exporter, ExportResult
from ._pipeline_inline import STAT_KEYS, Prepare, _counted, records_only
from ._pipeline_inline import ClosedPipeline as ClosedPipeline
from ._pipeline_inline import InlinePipeline as InlinePipeline
from ._pipeline_overload import (
    DEFAULT_BACKPRESSURE_TIMEOUT,
    HIGH_WATER,
    drop,
    make_room,
)
from ._record import Record
from ._sigterm import block_process_signals

__all__ = ["STAT_KEYS", "BatchPipeline", "ClosedPipeline", "InlinePipeline", "Prepare"]

_logger = logging.getLogger(__name__)

_THREAD_NAME = "context-trace-exporter"


# Queued items that wake the worker before its interval (or max_batch, if
# smaller). Measured: waking at 512 let ~1,000 turns (~5 MB of LangChain
# objects) pile up behind a busy app thread, and RSS keeps that high-water mark;
# at 64 the queue stays short and batches still grow under load.
_WAKE_AT = 64


class _Marker:
    """A flush marker: the worker sets ``done`` when it reaches it."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class BatchPipeline:
    """
    A bounded queue drained by one daemon thread into an :class:`Exporter`.

    Args:
        exporter: Where batches go.
        max_queue: Items held before new ones are dropped.
        max_batch: Items per ``export`` call.
        flush_interval: Seconds the worker waits between exports at most.
        prepare: Turns queued items into records on the worker thread (the
            runtime hands in the converter); by default items are records
            already and pass through.
        shutdown_timeout: Seconds the ``atexit`` flush may take.
        backpressure_timeout: Seconds an ``emit`` at the high-water mark waits
            for the worker to make room before queueing (or, with the queue
            full, dropping) the item; 0 never waits.
    """

    def __init__(
        self,
        exporter: Exporter,
        *,
        max_queue: int = 4096,
        max_batch: int = 512,
        flush_interval: float = 1.0,
        prepare: Prepare | None = None,
        shutdown_timeout: float = 5.0,
        backpressure_timeout: float = DEFAULT_BACKPRESSURE_TIMEOUT,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if flush_interval <= 0:
            raise ValueError(
                f"flush_interval must be greater than 0, got {flush_interval}"
            )
        if not backpressure_timeout >= 0:
            raise ValueError(
                f"backpressure_timeout must be at least 0, got {backpressure_timeout}"
            )
        self._exporter = exporter
        # What the exporter can do beyond export/shutdown, read once here.
        self._capabilities = Capabilities.of(exporter)
        self._prepare = prepare if prepare is not None else records_only
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._wake_at = min(_WAKE_AT, max_batch)
        self._high_water = min(max_queue, HIGH_WATER)
        self._backpressure_timeout = backpressure_timeout
        self._flush_interval = flush_interval
        self._shutdown_timeout = shutdown_timeout
        self._closed = False
        # counters: written by the worker only, except _dropped (under _drop_lock)
        self._taken = 0
        self._exported = 0
        self._failed = 0
        self._skipped = 0
        self._rejected = 0
        self._retried = 0
        self._pending = 0
        self._dropped = 0
        # back-pressure counters, under _room's lock
        self._waited = 0
        self._waited_ns = 0
        self._init_runtime()
        self._finalizer: Any = None
        _pipeline_process.attach(self)

    def _init_runtime(self) -> None:
        """Everything a forked child must not share with its parent."""
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._export_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        # Emitters at the high-water mark wait here; the worker notifies after
        # taking a chunk. _progress counts chunks taken; _stalled_at is its
        # value when a wait timed out with nothing taken (-1: not stalled).
        self._room = threading.Condition(threading.Lock())
        self._waiters = 0
        self._progress = 0
        self._stalled_at = -1
        self._thread: threading.Thread | None = None
        self._worker_done = False
        self._pid = os.getpid()

    def start(self) -> None:
        """Start the worker now (it otherwise starts on the first ``emit``)."""
        if self._thread is None and not self._closed:
            self._start()

    # ------------------------------------------------------------------ hot path
    def emit(self, item: Any) -> None:
        """
        Queue *item* for export; never raises.

        Returns at once unless the queue is at its high-water mark: then it
        waits (at most ``backpressure_timeout``) for the worker to make room.
        """
        queue = self._queue
        if self._closed:
            drop(self)
            return
        if len(queue) >= self._high_water and not make_room(self):
            drop(self)
            return
        queue.append(item)
        if self._thread is None:
            self._start()
        if len(queue) >= self._wake_at and not self._wake.is_set():
            self._wake.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            # An empty Context: the worker never sees (or records under) a user scope.
            thread = threading.Thread(
                target=contextvars.Context().run,
                args=(self._run,),
                name=_THREAD_NAME,
                daemon=True,
            )
            thread.start()
            self._thread = thread

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        block_process_signals()  # a signal sent to the process wakes its main thread
        while True:
            # Sleep until a full batch is waiting, a flush/shutdown asks, or the
            # interval passes; then export whatever is queued.
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            self._drain()
            if self._stopping:
                # Last round: persist what is queued, then one delivery pass (an
                # outbox keeps the rest on disk for the next process).
                self._drain()
                self._idle()
                # A flush() racing this exit may have queued a marker after the
                # drain above: from here on flush() drains on its own thread, and
                # one more drain releases anything queued before the flag.
                self._worker_done = True
                self._drain()
                return
            self._idle()

    def _idle(self) -> None:
        """Let an exporter with a backlog (the outbox) deliver what is due."""
        with self._export_lock:
            self._idle_locked()

    def _idle_locked(self) -> None:
        idle = self._capabilities.idle
        if idle is not None:
            try:
                result = idle()
            except Exception:
                _logger.warning("context_trace: exporter idle() failed", exc_info=True)
                return
            if isinstance(result, ExportResult):
                self._exported += result.exported
                self._failed += result.failed
                self._retried += result.retried

    def _drain(self) -> None:
        """
        Export everything queued now, in batches; release flush markers in order.

        Items leave the queue a chunk (``_wake_at`` items) at a time and are
        converted to records at once; the records go to the exporter once
        ``max_batch`` are taken (one transaction per batch, as before). So an
        emitter waiting at the high-water mark gets room within one chunk's
        conversion, not after a whole batch's write (a 512-turn batch takes
        0.3-0.5 s against one busy app thread), and what waits in memory is
        the lighter converted record rather than the turn's LangChain objects.
        """
        with self._export_lock:
            queue = self._queue
            chunk_size = self._wake_at
            while queue:
                records: list[Record] = []
                taken = 0
                marker: _Marker | None = None
                while queue and taken < self._max_batch and marker is None:
                    limit = min(chunk_size, self._max_batch - taken)
                    chunk, marker = self._take(limit)
                    self._progress += 1
                    if self._waiters:  # emitters wait at the high-water mark
                        with self._room:
                            self._room.notify_all()
                    if chunk:
                        taken += len(chunk)
                        records.extend(self._convert(chunk))
                    del chunk  # the turns are free once converted
                if records:
                    self._export(records)
                if marker is not None:
                    # flush(): what came before is exported; an outbox also gets
                    # one delivery pass, so flush() means "sent" when the backend is up.
                    self._idle_locked()
                    marker.done.set()

    def _take(self, limit: int) -> tuple[list[Any], _Marker | None]:
        """Up to *limit* items off the queue, stopping after a flush marker."""
        queue = self._queue
        chunk: list[Any] = []
        while queue and len(chunk) < limit:
            item = queue.popleft()
            if isinstance(item, _Marker):
                return chunk, item
            chunk.append(item)
        return chunk, None

    def _convert(self, items: list[Any]) -> list[Record]:
        """
        The records for *items*; those that cannot be converted are counted
        failed, runs that were not conversations skipped.
        """
        self._taken += len(items)
        try:
            records, failed, skipped = _counted(items, self._prepare(items))
        except Exception:
            self._failed += len(items)
            _logger.warning(
                "context_trace: could not convert %d records", len(items), exc_info=True
            )
            return []
        self._failed += failed
        self._skipped += skipped
        return records

    def _export(self, records: list[Record]) -> None:
        raw: Any
        try:
            raw = self._exporter.export(records)
        except Exception:
            _logger.warning("context_trace: exporter raised", exc_info=True)
            raw = ExportResult.failure(len(records))
        # A user exporter that returns nothing is taken to have succeeded.
        result = (
            raw if isinstance(raw, ExportResult) else ExportResult.success(len(records))
        )
        self._exported += result.exported
        self._failed += result.failed
        self._retried += result.retried
        self._pending += result.pending
        self._rejected += result.rejected

    # ------------------------------------------------------------------ control
    def flush(self, timeout: float | None = None) -> bool:
        """
        Wait until everything emitted before this call is exported or given up.

        Args:
            timeout: Seconds to wait; None waits as long as it takes.

        Returns:
            True if the worker got through in time.
        """
        if self._thread is None or not self._thread.is_alive():
            if not self._queue:
                return True
            if self._thread is None and not self._closed:
                self._start()
            else:
                # No worker (shut down, or died): drain on this thread.
                self._drain()
                return not self._queue
        if threading.current_thread() is self._thread:
            self._drain()
            return True
        marker = _Marker()
        self._queue.append(marker)
        self._wake.set()
        if self._worker_done:  # the worker exited (shutdown) after the check above
            self._drain()
        return marker.done.wait(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """
        Stop accepting records, export what is queued, close the exporter.

        Safe to call twice; the second call returns True at once.

        Args:
            timeout: Seconds for draining and closing together; None waits.

        Returns:
            True if the queue was drained in time.
        """
        if self._closed:
            return True
        self._closed = True
        # Emitters waiting for room drop at once. Bounded: shutdown also runs in
        # the SIGTERM handler, on a main thread that may hold this lock itself.
        if self._room.acquire(timeout=0.1):
            try:
                self._room.notify_all()
            finally:
                self._room.release()
        _pipeline_process.detach(self)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            # Most of the budget for a normal drain; the rest, if the worker is
            # stuck in a delivery (a backend that hangs or keeps failing), for
            # persisting what is queued after cutting that delivery short.
            thread.join(None if timeout is None else timeout * 0.7)
            interrupt = self._capabilities.interrupt
            if thread.is_alive() and interrupt is not None:
                interrupt()
                left = (
                    None if deadline is None else max(0.0, deadline - time.monotonic())
                )
                thread.join(left)
        elif self._queue:
            self._drain()
        drained = not self._queue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self._exporter.shutdown(remaining)
        except Exception:
            _logger.warning("context_trace: exporter shutdown failed", exc_info=True)
        return drained

    def _at_exit(self) -> None:
        if self._pid == os.getpid():
            self.shutdown(self._shutdown_timeout)

    def queued(self) -> int:
        """Items waiting in memory now (no I/O, no lock: safe in a signal handler)."""
        return sum(1 for item in list(self._queue) if not isinstance(item, _Marker))

    def stats(self) -> dict[str, int]:
        """
        Counters: enqueued, exported, dropped, failed, skipped (runs that were
        not conversations), retried, pending, queued, waited (emits that waited
        for room), waited_ms (their total wait) and rejected (ratings whose
        session or turn the store does not hold).
        """
        queued = self.queued()
        pending = self._pending
        backlog = self._capabilities.pending
        if backlog is not None:  # an outbox knows its backlog exactly
            try:
                pending = int(backlog())
            except Exception:
                _logger.debug(
                    "context_trace: could not read the outbox backlog", exc_info=True
                )
        return {
            "enqueued": self._taken + queued,
            "exported": self._exported,
            "dropped": self._dropped,
            "failed": self._failed,
            "skipped": self._skipped,
            "retried": self._retried,
            "pending": pending,
            "queued": queued,
            "waited": self._waited,
            "waited_ms": self._waited_ns // 1_000_000,
            "rejected": self._rejected,
        }

    @property
    def exporter(self) -> Exporter:
        """The exporter batches go to."""
        return self._exporter
