"""
The pipelines without a thread, and what every pipeline shares.

:class:`InlinePipeline` converts and exports on the caller's thread (tests);
:class:`ClosedPipeline` drops and counts when no exporter could be built. The
counters' names (:data:`STAT_KEYS`) and the *prepare* contract (:data:`Prepare`)
are here too; ``_pipeline`` has the batching pipeline and re-exports them all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._exporters.base import Exporter
from ._record import Conversation, Feedback, Record

# The logger of the module these came from: its records keep their name.
_logger = logging.getLogger("context_trace._pipeline")

#: The counters ``stats()`` reports, in order.
STAT_KEYS = (
    "enqueued",
    "exported",
    "dropped",
    "failed",
    "skipped",
    "retried",
    "pending",
    "queued",
    "waited",
    "waited_ms",
    "rejected",
)

#: Converts queued items (raw turns, records) into records; runs on the worker.
#: It returns the records, or ``(records, failed)``: then the items that neither
#: gave a record nor failed are counted as skipped (runs that were not
#: conversations). With a plain list, every item without a record counts as failed.
Prepare = Callable[[Sequence[Any]], list[Record] | tuple[list[Record], int]]


def records_only(items: Sequence[Any]) -> list[Record]:
    """The default *prepare*: keep the items that are records already."""
    return [item for item in items if isinstance(item, (Conversation, Feedback))]


def _counted(
    items: Sequence[Any], prepared: list[Record] | tuple[list[Record], int]
) -> tuple[list[Record], int, int]:
    """``(records, failed, skipped)`` from what a *prepare* returned for *items*."""
    if isinstance(prepared, tuple):
        records, failed = prepared
        return records, failed, max(0, len(items) - len(records) - failed)
    return prepared, len(items) - len(prepared), 0


class InlinePipeline:
    """
    A pipeline with no thread: ``emit`` converts and exports at once.

    ``context_trace.testing.capture()`` uses it so tests see records the moment
    a turn ends, with no flush and no timing. Not for production: the export
    runs on the caller's thread.
    """

    def __init__(self, exporter: Exporter, *, prepare: Prepare | None = None) -> None:
        self._exporter = exporter
        self._prepare = prepare if prepare is not None else records_only
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(STAT_KEYS, 0)

    def emit(self, item: Any) -> None:
        """Convert and export *item* now; never raises."""
        with self._lock:  # keeps session de-duplication ordered across threads
            self._counts["enqueued"] += 1
            try:
                records, failed, skipped = _counted([item], self._prepare([item]))
                result = self._exporter.export(records)
            except Exception:
                _logger.warning("context_trace: inline export failed", exc_info=True)
                self._counts["failed"] += 1
                return
            self._counts["exported"] += result.exported
            self._counts["failed"] += result.failed + failed
            self._counts["skipped"] += skipped
            self._counts["rejected"] += result.rejected

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing is ever queued: always True."""
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Close the exporter."""
        self._exporter.shutdown(timeout)
        return True

    def stats(self) -> dict[str, int]:
        """Same counters as :meth:`BatchPipeline.stats`."""
        with self._lock:
            return dict(self._counts)

    @property
    def exporter(self) -> Exporter:
        """The exporter records go to."""
        return self._exporter


class ClosedPipeline:
    """
    Stands in when no exporter could be built: drops and counts, never raises.

    Built once (not per turn) when the configuration names an exporter that
    cannot work, e.g. a plain-http endpoint on a remote host; the reason was
    logged once. ``configure()`` replaces it.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self._lock = threading.Lock()
        self._dropped = 0

    def emit(self, item: Any) -> None:
        """Count *item* as dropped."""
        with self._lock:
            self._dropped += 1

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing to flush: always True."""
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Nothing to close: always True."""
        return True

    def stats(self) -> dict[str, int]:
        """Same counters as :meth:`BatchPipeline.stats`; only ``dropped`` moves."""
        with self._lock:
            return {
                **dict.fromkeys(STAT_KEYS, 0),
                "enqueued": self._dropped,
                "dropped": self._dropped,
            }
