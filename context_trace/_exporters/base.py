"""
The exporter interface: where finished records go.

An exporter knows nothing about threads or queues. The pipeline
(:mod:`context_trace._pipeline`) calls :meth:`Exporter.export` from its single
worker thread with a batch of records, and :meth:`Exporter.shutdown` once at the
end. Exporters never raise out of ``export``: they return an :class:`ExportResult`
saying how many records were delivered, how many were given up on and how many
retries it took. Retrying transient failures is the exporter's job (as in
OpenTelemetry's OTLP HTTP exporter); the pipeline only counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from context_trace._record import Record

__all__ = ["ExportResult", "Exporter"]


@dataclass(frozen=True, slots=True)
class ExportResult:
    """
    What one :meth:`Exporter.export` call achieved.

    Attributes:
        exported: Records delivered (or durably stored).
        failed: Records given up on (permanent error, or retries exhausted).
        retried: Retry attempts made while exporting the batch.
        pending: Records kept for a later attempt (e.g. in a durable outbox);
            neither delivered nor lost.
    """

    exported: int = 0
    failed: int = 0
    retried: int = 0
    pending: int = 0

    @classmethod
    def success(cls, n: int, retried: int = 0) -> ExportResult:
        """All *n* records were delivered."""
        return cls(exported=n, retried=retried)

    @classmethod
    def failure(cls, n: int, retried: int = 0) -> ExportResult:
        """All *n* records were given up on."""
        return cls(failed=n, retried=retried)


@runtime_checkable
class Exporter(Protocol):
    """Something that delivers batches of records somewhere."""

    def export(self, batch: Sequence[Record]) -> ExportResult:
        """Deliver *batch*; never raise. Called from one thread at a time."""
        ...

    def shutdown(self, timeout: float | None = None) -> None:
        """Release resources; called once, after the last ``export``."""
        ...
