"""The in-memory exporter: keeps records in a list (tests, ``testing.capture``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from context_trace._record import Conversation, Feedback, Record

from .base import ExportResult

__all__ = ["InMemoryExporter"]


class InMemoryExporter:
    """
    Keep every exported record in memory, in export order.

    Use it in tests, or to inspect what would be sent. Thread-safe.

    .. versionadded:: 0.1.0
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self.shut_down = False

    def export(self, batch: Sequence[Record]) -> ExportResult:
        """Append *batch* to the stored records."""
        with self._lock:
            self._records.extend(batch)
        return ExportResult.success(len(batch))

    def shutdown(self, timeout: float | None = None) -> None:
        """Mark the exporter shut down; the records stay readable."""
        self.shut_down = True

    @property
    def records(self) -> list[Record]:
        """A copy of every record exported so far."""
        with self._lock:
            return list(self._records)

    @property
    def conversations(self) -> list[Conversation]:
        """The exported :class:`Conversation` records."""
        return [r for r in self.records if isinstance(r, Conversation)]

    @property
    def feedback(self) -> list[Feedback]:
        """The exported :class:`Feedback` records."""
        return [r for r in self.records if isinstance(r, Feedback)]

    def clear(self) -> None:
        """Forget every stored record."""
        with self._lock:
            self._records.clear()
