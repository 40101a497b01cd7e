"""
What the runtime (``_runtime``) builds from a :class:`~._config.Config`: the
exporter its configuration names, and the batching pipeline around it, handed
the converter (:func:`preparer`). Called when a pipeline is built, never per turn.
"""

from __future__ import annotations

import functools

from ._config import Config, Redactor
from ._convert import convert
from ._exporters.base import Exporter
from ._pipeline import BatchPipeline, Prepare


def preparer(redact: Redactor | None) -> Prepare:
    """The converter bound to *redact*: what a pipeline runs on its worker."""
    return functools.partial(convert, redact=redact)


def _build_exporter(config: Config) -> Exporter:
    if config.exporter is not None:
        return config.exporter
    from ._exporters.sqlite import SQLiteExporter

    if not config.token and not config.otlp and not config.store:
        return SQLiteExporter(
            config.db_path, keep_local=True, outbox_max=config.outbox_max
        )
    from ._exporters.outbox import OutboxExporter
    from ._exporters.senders import CONTEXT, OTLP, POSTGRESQL, build_senders

    # The local report tables: when "sqlite" is named (sqlite,otlp), with
    # keep_local, or when nothing is named and there is no token nor shared
    # store (the default).
    keep_local = config.keep_local or (
        "sqlite" in config.exporters
        if config.exporters
        else not config.token and not config.store
    )
    store = SQLiteExporter(
        config.db_path, keep_local=keep_local, outbox_max=config.outbox_max
    )
    destinations = (
        ([CONTEXT] if config.token else [])
        + ([OTLP] if config.otlp else [])
        + ([POSTGRESQL] if config.store else [])
    )
    senders = build_senders(
        destinations,
        # Only a store that keeps delivered turns knows a session's transcript.
        transcripts=store.store if keep_local else None,
        token=config.token,
        endpoint=config.endpoint,
        allow_insecure=config.allow_insecure,
        otlp_endpoint=config.otlp_endpoint,
        otlp_headers=config.otlp_headers,
        resource=config.resource,
        capture_content=config.capture_content,
        tracer_provider=config.tracer_provider,
        store_url=config.store,
        host=config.host,
    )
    if destinations == [POSTGRESQL]:
        # One transaction per claim: 1,024 rows deliver ~25% faster than
        # the HTTP senders' 256 (benchmarks/postgres.py).
        return OutboxExporter(store, senders=senders, claim_size=1024)
    return OutboxExporter(store, senders=senders)


def _new_pipeline(config: Config, exporter: Exporter) -> BatchPipeline:
    pipeline = BatchPipeline(
        exporter,
        prepare=preparer(config.redact),
        max_queue=config.max_queue,
        max_batch=config.max_batch,
        flush_interval=config.flush_interval,
        shutdown_timeout=config.shutdown_timeout,
        backpressure_timeout=config.backpressure_timeout,
    )
    if hasattr(exporter, "idle"):
        # An outbox may hold rows from an earlier process: deliver now.
        pipeline.start()
    return pipeline
