"""
The one place senders are built: ``configure`` and ``replay`` both call it.

A sender delivers one destination's outbox rows (:class:`~.base.Sender`):
``context`` (:class:`~.context_api.ContextAPIExporter`) and ``otlp``
(:class:`~.otlp.OTLPSender`, or :class:`~.otlp.ProviderSender` over the app's
``TracerProvider``), and ``postgresql``
(:class:`~.postgres.PostgresSender`, a shared PostgreSQL store). The runtime passes the values of its ``Config``, ``replay``
those of the environment; both get the same senders for the same values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from context_trace._store.base import Store

from .base import Sender

__all__ = ["CONTEXT", "OTEL_MISSING", "OTLP", "POSTGRESQL", "build_senders"]

#: The destination names the outbox knows (a row's ``destination`` column).
CONTEXT = "context"
OTLP = "otlp"
POSTGRESQL = "postgresql"

#: Why an ``otlp`` sender cannot be built without the ``otel`` extra.
OTEL_MISSING = "exporter 'otlp' requires OpenTelemetry: install 'context-trace[otel]'"


def build_senders(
    destinations: Iterable[str],
    *,
    transcripts: Store | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    allow_insecure: bool = False,
    otlp_endpoint: str | None = None,
    otlp_headers: Mapping[str, str] | None = None,
    resource: Mapping[str, str] | None = None,
    capture_content: bool = True,
    tracer_provider: Any = None,
    otel_missing: str = OTEL_MISSING,
    store_url: str | None = None,
    host: str | None = None,
) -> dict[str, Sender]:
    """
    One sender per destination, in the order given.

    Args:
        destinations: ``"context"``, ``"otlp"`` and/or ``"postgresql"``.
        transcripts: The store whose session transcripts the Context sender
            sends with a thread's turns; None when the store keeps no turns.
        token: The Context API token (needed for ``"context"``).
        endpoint: The Context API base URL (None: Context's).
        allow_insecure: Allow the token over plain http to a non-loopback host.
        otlp_endpoint: The OTLP/HTTP traces endpoint.
        otlp_headers: Headers of every OTLP request.
        resource: OpenTelemetry resource attributes.
        capture_content: Put messages in the spans.
        tracer_provider: Send through the app's provider instead of OTLP/HTTP.
        otel_missing: The ValueError's text when OpenTelemetry is missing.
        store_url: The PostgreSQL store's URL (needed for ``"postgresql"``).
        host: This host's identity in the PostgreSQL store (None: the
            machine's name).

    Raises:
        ValueError: An unknown destination, ``"context"`` without a token, a
            bad endpoint, ``"otlp"`` without the ``otel`` extra, or
            ``"postgresql"`` without a PostgreSQL URL.
    """
    senders: dict[str, Sender] = {}
    for name in destinations:
        if name == CONTEXT:
            if not token:
                raise ValueError("token is required for the 'context' destination")
            from .context_api import ContextAPIExporter

            kwargs: dict[str, Any] = {}
            if endpoint is not None:
                kwargs["endpoint"] = endpoint
            senders[CONTEXT] = ContextAPIExporter(
                token,
                allow_insecure=allow_insecure,
                transcript_source=(
                    None if transcripts is None else transcripts.session_transcript
                ),
                **kwargs,
            )
        elif name == OTLP:
            senders[OTLP] = _otlp_sender(
                otlp_endpoint,
                otlp_headers,
                resource,
                capture_content,
                tracer_provider,
                otel_missing,
            )
        elif name == POSTGRESQL:
            if not store_url:
                raise ValueError(
                    "store_url is required for the 'postgresql' destination"
                )
            from .postgres import PostgresSender

            senders[POSTGRESQL] = PostgresSender(store_url, host=host)
        else:
            raise ValueError(
                f"destination must be {CONTEXT!r}, {OTLP!r} or {POSTGRESQL!r}, "
                f"got {name!r}"
            )
    return senders


def _otlp_sender(
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    resource: Mapping[str, str] | None,
    capture_content: bool,
    tracer_provider: Any,
    otel_missing: str,
) -> Sender:
    """The ``otlp`` destination's sender: the app's provider, or our OTLP/HTTP."""
    try:
        from . import otlp
    except ImportError as exc:
        raise ValueError(otel_missing) from exc
    if tracer_provider is not None:
        return otlp.ProviderSender(tracer_provider, capture_content=capture_content)
    kwargs: dict[str, Any] = {}
    if endpoint is not None:
        kwargs["endpoint"] = endpoint
    return otlp.OTLPSender(
        headers=headers,
        resource=resource,
        capture_content=capture_content,
        **kwargs,
    )
