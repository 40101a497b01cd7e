"""
The exporter interface: where finished records go.

An exporter knows nothing about threads or queues. The pipeline
(:mod:`context_trace._pipeline`) calls :meth:`Exporter.export` from its single
worker thread with a batch of records, and :meth:`Exporter.shutdown` once at the
end. Exporters never raise out of ``export``: they return an :class:`ExportResult`
saying how many records were delivered, how many were given up on and how many
retries it took. Retrying transient failures is the exporter's job (as in
OpenTelemetry's OTLP HTTP exporter); the pipeline only counts.

What an exporter can do beyond ``export`` and ``shutdown`` it declares by
having the methods of a capability protocol (:class:`Idle`, :class:`Backlog`,
:class:`Interruptible`, :class:`ForkAware`). The pipeline reads them once, when
it is built (:meth:`Capabilities.of`), never on its hot paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from context_trace._record import Record

__all__ = [
    "Backlog",
    "Capabilities",
    "ExportResult",
    "Exporter",
    "ForkAware",
    "Idle",
    "Interruptible",
    "Outcome",
    "OutcomeStatus",
    "Sender",
]


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
        rejected: Records refused by the rules of what they describe: a
            rating whose session or turn the store does not hold. Neither
            stored nor retried.
    """

    exported: int = 0
    failed: int = 0
    retried: int = 0
    pending: int = 0
    rejected: int = 0

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


@runtime_checkable
class Idle(Protocol):
    """An exporter with work of its own to do between batches (the outbox delivers)."""

    def idle(self) -> ExportResult | None:
        """Do what is due; the pipeline calls it after each drain and each flush."""
        ...


@runtime_checkable
class Backlog(Protocol):
    """An exporter that knows exactly how many records wait for delivery."""

    def pending(self) -> int:
        """Records kept for later now (``stats()["pending"]``)."""
        ...


@runtime_checkable
class Interruptible(Protocol):
    """An exporter whose delivery in progress can be cut short."""

    def interrupt(self) -> None:
        """Stop a delivery now (shutdown with a backend that hangs); never raise."""
        ...


@runtime_checkable
class ForkAware(Protocol):
    """An exporter that must renew state (locks) in a forked child."""

    def after_fork(self) -> None:
        """Called in the child after ``os.fork``."""
        ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    """
    What an exporter declared it can do, resolved once into bound methods.

    Attributes:
        idle: :meth:`Idle.idle`, or None.
        pending: :meth:`Backlog.pending`, or None.
        interrupt: :meth:`Interruptible.interrupt`, or None.
        after_fork: :meth:`ForkAware.after_fork`, or None.
    """

    idle: Callable[[], ExportResult | None] | None = None
    pending: Callable[[], int] | None = None
    interrupt: Callable[[], None] | None = None
    after_fork: Callable[[], None] | None = None

    @classmethod
    def of(cls, exporter: object) -> Capabilities:
        """The capability protocols *exporter* implements (a callable method each)."""
        return cls(
            idle=exporter.idle
            if isinstance(exporter, Idle) and callable(exporter.idle)
            else None,
            pending=exporter.pending
            if isinstance(exporter, Backlog) and callable(exporter.pending)
            else None,
            interrupt=exporter.interrupt
            if isinstance(exporter, Interruptible) and callable(exporter.interrupt)
            else None,
            after_fork=exporter.after_fork
            if isinstance(exporter, ForkAware) and callable(exporter.after_fork)
            else None,
        )


OutcomeStatus = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """
    What happened to one record a sender tried to deliver (``export_each``).

    Attributes:
        status: ``"delivered"``; ``"retry"`` (a transient failure, or not attempted:
            try again later); ``"failed"`` (permanent: sending it again would fail
            the same way).
        retry_after: For ``"retry"``, seconds to wait before trying again (the
            server's ``Retry-After``, the circuit's remaining cool-down, or the next
            backoff delay), else None.
        attempts: Requests made for the record; 0 when it was not attempted (open
            circuit, batch deadline passed, shutdown, earlier record of the same
            session undelivered).
        detail: A short reason, e.g. ``"HTTP 503 on /api/v1/log/conversation/thread"``.

    .. versionadded:: 0.1.0
    """

    status: OutcomeStatus
    retry_after: float | None = None
    attempts: int = 0
    detail: str = ""


@runtime_checkable
class Sender(Protocol):
    """
    What the outbox delivers one destination's rows through: the Context API or OTLP.

    ``export_each`` says what happened to each record, so the outbox can delete,
    release with a backoff, or drop and count each row; it never raises.
    ``cooling_down`` is True while the sender would not send anything (an open
    circuit), so the outbox leaves the rows on disk instead of claiming them.
    """

    @property
    def cooling_down(self) -> bool:
        """True while nothing would be sent (circuit open)."""
        ...

    def export_each(self, batch: Sequence[Record]) -> list[Outcome]:
        """Deliver *batch* in order; one :class:`Outcome` per record; never raise."""
        ...

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop: cut a delivery short and release resources."""
        ...
