"""
OpenTelemetry export: the outbox's ``otlp`` destination.

Two senders, both fed by the durable outbox (``outbox.py``) on the export
worker, both built on the mapping of ``genai.py``:

- :class:`OTLPSender` encodes the spans as an OTLP ``ExportTraceServiceRequest``
  (protobuf, written by ``otlp_wire.py``) and POSTs it itself, so the outbox
  decides retries, under the shared HTTP policy (``http_policy.py``): a 2xx
  deletes the rows; 429/502/503/504 and connection errors return them with a
  backoff that honours ``Retry-After`` (the sender's circuit stays open that
  long, so nothing is sent meanwhile); any other status drops them and counts
  them as failed (logged once, with the status, never the headers).
- :class:`ProviderSender` replays the spans through the app's own
  ``TracerProvider`` (``configure(tracer_provider=...)``), so its processors
  and exporters decide where they go.

:class:`OTLPSender` needs only the standard library (the body is written by
``otlp_wire.py``); :class:`ProviderSender` needs the app's OpenTelemetry SDK.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from context_trace._log import log_once
from context_trace._record import Conversation, Record

from .base import Outcome
from .genai import record_spans
from .holdoff import HoldOffSender
from .http_policy import (
    DEFAULT_OTLP_TRACES_ENDPOINT,
    is_transient,
    retry_after_seconds,
    safe_url,
)
from .otlp_wire import encode_spans
from .semconv import SERVICE_NAME

__all__ = [
    "DEFAULT_TRACES_ENDPOINT",
    "OTLPSender",
    "ProviderSender",
    "encode_request",
    "retry_after_seconds",
]

_logger = logging.getLogger(__name__)

DEFAULT_TRACES_ENDPOINT = DEFAULT_OTLP_TRACES_ENDPOINT
_SCOPE_NAME = "context_trace"
_DEFAULT_TIMEOUT = 10.0
_DEFAULT_BACKOFF = 0.5
_MAX_BACKOFF = 30.0

Clock = Callable[[], float]


@functools.cache
def _scope_version() -> str:
    """The installed distribution's version (the package itself imports us)."""
    try:
        return importlib.metadata.version("context-trace")
    except importlib.metadata.PackageNotFoundError:
        return "0"


# -- the request body ----------------------------------------------------------------


def encode_request(
    records: Sequence[Record],
    resource: Mapping[str, str],
    capture_content: bool = True,
) -> bytes:
    """
    The OTLP/HTTP body of *records*: one serialised ``ExportTraceServiceRequest``.

    Args:
        records: Turns and ratings.
        resource: Resource attributes (``service.name`` and the rest).
        capture_content: See :func:`~.genai.record_spans`.
    """
    spans = [
        span for record in records for span in record_spans(record, capture_content)
    ]
    return encode_spans(spans, resource, _SCOPE_NAME, _scope_version())


# -- the OTLP/HTTP sender ------------------------------------------------------------


class OTLPSender(HoldOffSender):
    """
    POST turns as OTLP/HTTP protobuf to a collector or backend; never raises.

    One request per batch the outbox claims. The outbox owns durability and
    retries; this sender reports per record what happened (all records of a
    request share its fate) and holds off while a backoff runs
    (:attr:`cooling_down`), so the outbox leaves the rows on disk meanwhile.

    Args:
        endpoint: The traces URL (``.../v1/traces``).
        headers: Extra request headers (``OTEL_EXPORTER_OTLP_HEADERS``); never logged.
        resource: Resource attributes; ``service.name`` defaults to
            ``unknown_service``.
        capture_content: Put transcripts on the spans.
        timeout: Seconds one request may take.
        backoff: First retry delay in seconds, doubled per consecutive failure
            (at most 30 s) unless the server sends ``Retry-After``. The sender
            holds off (sends nothing) for that long: a circuit breaker that
            opens at the first transient failure.
        jitter: Random spread of each delay, 0.0 to 1.0.
        clock: Monotonic seconds (tests inject one).

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_TRACES_ENDPOINT,
        *,
        headers: Mapping[str, str] | None = None,
        resource: Mapping[str, str] | None = None,
        capture_content: bool = True,
        timeout: float = _DEFAULT_TIMEOUT,
        backoff: float = _DEFAULT_BACKOFF,
        jitter: float = 0.2,
        clock: Clock = time.monotonic,
    ) -> None:
        if not str(endpoint).startswith(("http://", "https://")):
            raise ValueError("endpoint must be an http(s) URL")
        if timeout <= 0:
            raise ValueError(f"timeout must be greater than 0, got {timeout!r}")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be between 0.0 and 1.0, got {jitter!r}")
        self._endpoint = endpoint
        self._headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": f"context-trace/{_scope_version()}",
            **dict(headers or {}),
        }
        self._resource = {SERVICE_NAME: "unknown_service", **dict(resource or {})}
        self._capture = capture_content
        self._timeout = timeout
        super().__init__(backoff, _MAX_BACKOFF, jitter, clock)
        self.requests = 0  #: requests sent (benchmarks read it)

    def __repr__(self) -> str:
        # The headers are left out: they usually hold an API key.
        return f"OTLPSender({safe_url(self._endpoint)!r})"

    @property
    def endpoint(self) -> str:
        """The traces URL."""
        return self._endpoint

    def export_each(self, batch: Sequence[Record]) -> list[Outcome]:
        """Send *batch* in one request; one :class:`Outcome` per record."""
        n = len(batch)
        unsent = self._unsent(n)
        if unsent is not None:
            return unsent
        try:
            body = encode_request(batch, self._resource, self._capture)
        except Exception:  # noqa: BLE001 - a mapping bug must not kill the worker
            log_once(
                _logger,
                "otlp.encode",
                "context_trace: could not encode spans for OTLP; records dropped",
                exc_info=True,
            )
            return [Outcome("failed", attempts=0, detail="encode")] * n
        status, retry_after, detail = self._post(body)
        if status is not None and 200 <= status < 300:
            self._circuit.success()
            return [Outcome("delivered", attempts=1)] * n
        if is_transient(status):
            delay = self._hold_off(retry_after)
            log_once(
                _logger,
                f"otlp.retry.{status}",
                "context_trace: OTLP endpoint %s unavailable (%s); retrying in %.1f s",
                safe_url(self._endpoint),
                detail,
                delay,
            )
            return [Outcome("retry", retry_after=delay, attempts=1, detail=detail)] * n
        self._circuit.success()  # it answered: it is up
        log_once(
            _logger,
            f"otlp.rejected.{status}",
            "context_trace: OTLP endpoint %s rejected spans (%s); records dropped",
            safe_url(self._endpoint),
            detail,
        )
        return [Outcome("failed", attempts=1, detail=detail)] * n

    def _post(self, body: bytes) -> tuple[int | None, float | None, str]:
        """``(HTTP status or None, Retry-After seconds, detail)``; never raises."""
        request = urllib.request.Request(
            self._endpoint, data=body, headers=self._headers, method="POST"
        )
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                response.read()
                return int(response.status), None, f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            retry_after = retry_after_seconds(exc.headers.get("Retry-After"))
            with _suppress():
                exc.read()
            exc.close()
            return int(exc.code), retry_after, f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:  # refused, reset, timeout, bad URL
            return None, None, type(exc).__name__

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop sending; later records come back as ``retry`` (they stay on disk)."""
        self._closed.set()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


# -- through the app's tracer provider -------------------------------------------------


class ProviderSender:
    """
    Replay turns as spans through the app's ``TracerProvider``; never raises.

    The spans get the runs' real times and the provider's own ids; the
    provider's processors and exporters take them from there. A rating is tied
    to the rated turn's root span when that turn went through this sender in
    this process (the last 10,000 are remembered), else it starts a trace of
    its own with the same session attributes.

    .. versionadded:: 0.2.0
    """

    _REMEMBER = 10_000

    def __init__(self, tracer_provider: Any, *, capture_content: bool = True) -> None:
        if not hasattr(tracer_provider, "get_tracer"):
            raise TypeError(
                "tracer_provider must be an OpenTelemetry TracerProvider, got "
                f"{type(tracer_provider).__name__}"
            )
        self._tracer = tracer_provider.get_tracer(_SCOPE_NAME, _scope_version())
        self._capture = capture_content
        self._roots: OrderedDict[int, Any] = OrderedDict()
        self._closed = False

    def __repr__(self) -> str:
        return "ProviderSender()"

    @property
    def cooling_down(self) -> bool:
        """Never: the provider's own exporter handles its backend."""
        return False

    def export_each(self, batch: Sequence[Record]) -> list[Outcome]:
        """Start and end every record's spans through the provider."""
        if self._closed:
            return [Outcome("retry", retry_after=0.0, detail="shut down")] * len(batch)
        out: list[Outcome] = []
        for record in batch:
            try:
                self._replay(record)
                out.append(Outcome("delivered", attempts=1))
            except Exception:  # noqa: BLE001 - never raise into the worker
                log_once(
                    _logger,
                    "otlp.provider",
                    "context_trace: could not replay spans through the tracer provider",
                    exc_info=True,
                )
                out.append(Outcome("failed", attempts=1))
        return out

    def _replay(self, record: Record) -> None:
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            Status,
            StatusCode,
            TraceFlags,
        )

        spans = record_spans(record, self._capture)
        made: dict[int, Any] = {}
        root = spans[0]
        for data in spans:
            parent_ctx = Context()
            parent = made.get(data.parent_id) if data.parent_id is not None else None
            if parent is not None:
                parent_ctx = trace.set_span_in_context(parent, Context())
            elif data is root and data.parent_id is not None:
                remembered = self._roots.get(data.parent_id)
                if remembered is not None:  # a rating of a turn sent here
                    parent_ctx = trace.set_span_in_context(remembered, Context())
                elif isinstance(record, Conversation) and record.trace_id:
                    # The app's request span, current when the turn started.
                    context = SpanContext(
                        trace_id=data.trace_id,
                        span_id=data.parent_id,
                        is_remote=False,
                        trace_flags=TraceFlags(TraceFlags.SAMPLED),
                    )
                    parent_ctx = trace.set_span_in_context(
                        NonRecordingSpan(context), Context()
                    )
            span = self._tracer.start_span(
                data.name,
                context=parent_ctx,
                kind=SpanKind.CLIENT if data.client else SpanKind.INTERNAL,
                attributes=data.all_attributes(),
                start_time=data.start_ns,
            )
            for name, at, attributes in data.events:
                span.add_event(name, attributes, timestamp=at)
            if data.error is not None:
                span.set_status(Status(StatusCode.ERROR, data.error[1]))
            made[data.span_id] = span
        for data in reversed(spans):
            made[data.span_id].end(end_time=data.end_ns)
        if isinstance(record, Conversation):
            self._roots[root.span_id] = made[root.span_id]
            if len(self._roots) > self._REMEMBER:
                self._roots.popitem(last=False)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop replaying; the provider itself belongs to the app."""
        self._closed = True
