"""
The runtime: the process-wide state built from a :class:`~._config.Config`.

It owns the exporter and the pipeline and wires them together (the pipeline is
handed the converter's ``convert``; neither imports the other), and it is where
``configure()``, ``emit()``, ``flush()``, ``shutdown()`` and ``stats()`` live.
Scopes and the handler call into it; nothing it imports calls back.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from langchain_core.tracers.context import run_collector_var, tracing_v2_callback_var

from . import _http, _sigterm
from ._config import UNSET, Config, Redactor, build_config
from ._convert import reset_header_sessions
from ._exporters.base import Exporter
from ._log import log_once
from ._pipeline import STAT_KEYS, BatchPipeline, ClosedPipeline, InlinePipeline
from ._runtime_build import _build_exporter, _new_pipeline
from ._runtime_build import preparer as preparer
from ._state import STATE

__all__ = [
    "active_config",
    "configure",
    "current_trace_parent",
    "emit",
    "flush",
    "get_config",
    "install_pipeline",
    "on_outermost_exit",
    "reset",
    "shutdown",
    "stats",
    "wants_run_metadata",
]

_logger = logging.getLogger(__name__)

AnyPipeline = BatchPipeline | InlinePipeline | ClosedPipeline


# The process state (configuration, pipeline, claims, counters): see ``_state``.
_STATE = STATE


def active_config() -> Config:
    """
    The configuration scopes and the recorder use; never raises.

    If the environment holds a bad value (``CONTEXT_TRACE_SAMPLE_RATE=50%``),
    recording is switched off and the problem logged once at ERROR, instead of
    every request raising from its ``track_user``. :func:`get_config` and
    :func:`configure` still raise it.
    """
    config = _STATE.config
    if config is None:
        with _STATE.lock:
            if _STATE.config is None:
                try:
                    _STATE.config = build_config({})
                    _STATE.config_error = None
                except (TypeError, ValueError) as exc:
                    _logger.error(
                        "context_trace: invalid configuration in the environment, "
                        "recording is off: %s",
                        exc,
                    )
                    _STATE.config_error = exc
                    _STATE.config = Config(enabled=False)
            config = _STATE.config
    return config


def get_config() -> Config:
    """
    The effective configuration (environment plus ``configure()`` arguments).

    Raises:
        TypeError, ValueError: an environment variable holds a bad value (then
            recording is off until it is fixed or ``configure()`` is called).

    .. versionadded:: 0.1.0
    """
    config = active_config()
    error = _STATE.config_error
    if error is not None:
        raise type(error)(str(error))
    return config


def current_trace_parent() -> tuple[int, int] | None:
    """
    ``(trace id, span id)`` of the OpenTelemetry span current now, if any.

    The handler calls it as a turn starts, only with OTLP export on: one
    context read on the request path.
    """
    trace = _otel_trace()
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    return (context.trace_id, context.span_id) if context.is_valid else None


@functools.cache
def _otel_trace() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


def _flush_at_sigterm(timeout: float) -> None:
    """
    SIGTERM's flush (see ``_sigterm``): shut the pipeline down within *timeout*.

    Runs in the signal handler on the main thread; it takes no lock that thread
    could hold (``_STATE.lock`` included), and every wait in ``shutdown`` is
    bounded, so the process ends in time even when an export hangs.
    """
    pipeline = _STATE.pipeline
    if pipeline is None or pipeline.shutdown(timeout):
        return
    if isinstance(pipeline, BatchPipeline):  # the others never keep a queue
        _logger.warning(
            "context_trace: SIGTERM: %d turns were not exported within"
            " shutdown_timeout (%s s) and are lost",
            pipeline.queued(),
            timeout,
        )


def _sigterm_timeout() -> float:
    return active_config().shutdown_timeout


def _handle_sigterm(config: Config) -> None:
    """Take SIGTERM (only from its default disposition) or give it back."""
    if config.enabled and config.flush_on_sigterm:
        _sigterm.install(_flush_at_sigterm, _sigterm_timeout)
    else:
        _sigterm.uninstall()


def _pipeline() -> AnyPipeline:
    pipeline = _STATE.pipeline
    if pipeline is None:
        with _STATE.lock:
            if _STATE.pipeline is None:
                config = active_config()
                try:
                    _STATE.pipeline = _new_pipeline(config, _build_exporter(config))
                    # The first turn: on the main thread, a script's usual case,
                    # SIGTERM can be taken now if configure() never ran.
                    _handle_sigterm(config)
                except (TypeError, ValueError, OSError) as exc:
                    # E.g. CONTEXT_ENDPOINT with plain http to a remote host. Build
                    # once, not per turn: drop and count until reconfigured.
                    _logger.error(
                        "context_trace: cannot export, recording is off: %s", exc
                    )
                    _STATE.pipeline = ClosedPipeline(str(exc))
            pipeline = _STATE.pipeline
    return pipeline


def emit(item: Any) -> None:
    """Hand a finished turn or record to the pipeline. Never blocks, never raises."""
    try:
        _pipeline().emit(item)
    except Exception:  # noqa: BLE001 - nothing may raise into the app
        log_once(
            _logger, "emit", "context_trace: could not enqueue a record", exc_info=True
        )


def wants_run_metadata() -> bool:
    """
    Whether scopes should put user_id/session_id into LangChain run metadata.

    Always with ``run_metadata=True`` (the default), so the app's own handlers see
    who a run is for. With ``run_metadata="auto"`` only when something known reads
    run metadata: LangSmith tracing switched on in the environment, a
    ``tracing_v2_enabled()`` block, or ``collect_runs()``. Propagating metadata
    through every child run costs LangChain a few microseconds per run (see the
    README's "Performance"), which "auto" saves when nobody looks.
    """
    config = active_config()
    mode = config.run_metadata
    if mode != "auto":
        return bool(mode)
    if config.env_tracing:
        return True
    return (
        tracing_v2_callback_var.get() is not None or run_collector_var.get() is not None
    )


def on_outermost_exit() -> None:
    """Called when the outermost scope of a context exits (serverless flush)."""
    config = _STATE.config
    if config is not None and config.serverless and _STATE.pipeline is not None:
        _STATE.pipeline.flush(config.serverless_timeout)


def configure(
    *,
    token: str | None = UNSET,
    endpoint: str = UNSET,
    db_path: str | os.PathLike[str] = UNSET,
    exporter: Exporter | str | None = UNSET,
    sample_rate: float = UNSET,
    redact: Redactor | Sequence[str] | str | None = UNSET,
    enabled: bool = UNSET,
    max_queue: int = UNSET,
    flush_interval: float = UNSET,
    max_batch: int = UNSET,
    serverless: bool = UNSET,
    serverless_timeout: float = UNSET,
    keep_local: bool = UNSET,
    allow_insecure: bool = UNSET,
    outbox_max: int = UNSET,
    shutdown_timeout: float = UNSET,
    run_metadata: bool | str = UNSET,
    otlp_endpoint: str = UNSET,
    otlp_headers: Mapping[str, str] = UNSET,
    tracer_provider: Any = UNSET,
    capture_content: bool = UNSET,
    backpressure_timeout: float = UNSET,
    flush_on_sigterm: bool = UNSET,
    propagate_baggage: bool = UNSET,
    baggage_secret: str | None = UNSET,
    prices: Mapping[str, Mapping[str, float]] | None = UNSET,
    store: str | None = UNSET,
    host: str | None = UNSET,
) -> Config:
    """
    Configure context_trace; call once at start-up (optional: defaults work).

    Arguments left out come from the environment, else the defaults. Calling it
    again replaces the configuration: the previous pipeline is flushed and shut
    down first.

    Args:
        token: Context API token (env ``CONTEXT_TOKEN`` or ``GETCONTEXT_TOKEN``).
            With a token, turns go to the Context API through a durable local
            outbox; without one, to the local SQLite store.
        endpoint: Context API base URL (env ``CONTEXT_ENDPOINT``).
        db_path: The SQLite file (env ``CONTEXT_TRACE_DB``; default
            ``~/.context_trace/traces.db``).
        exporter: An explicit exporter instance (overrides token and db_path), or
            named exporters: ``"sqlite"`` (the local store), ``"otlp"``
            (OpenTelemetry, needs ``context-trace[otel]``) or both,
            ``"sqlite,otlp"`` (env ``CONTEXT_TRACE_EXPORTER``). A token adds
            the Context API beside them.
        sample_rate: Fraction of sessions (and of turns outside sessions) to
            record, 0.0 to 1.0 (env ``CONTEXT_TRACE_SAMPLE_RATE``).
        redact: A ``str -> str`` callable applied to every text before it leaves
            the process, or a list of built-in patterns: ``"email"``,
            ``"phone"``, ``"card"`` (env ``CONTEXT_TRACE_REDACT``, comma list).
        enabled: False makes every scope a cheap no-op (env
            ``CONTEXT_TRACE_DISABLED=1``).
        max_queue: Records held in memory before new ones are dropped (env
            ``CONTEXT_TRACE_MAX_QUEUE``).
        flush_interval: Seconds between background exports (env
            ``CONTEXT_TRACE_FLUSH_INTERVAL``).
        max_batch: Records per export call.
        serverless: Flush synchronously when the outermost scope exits, for
            runtimes that freeze background threads (env ``CONTEXT_TRACE_SERVERLESS``).
        serverless_timeout: Seconds that flush may take.
        keep_local: With a token, also keep delivered turns in the local store.
        allow_insecure: Allow a token over plain http to a non-loopback endpoint.
        outbox_max: Undelivered records the outbox keeps before dropping the oldest.
        shutdown_timeout: Seconds the exit-time flush may take.
        run_metadata: Put user_id/session_id into every LangChain run's metadata,
            so the app's own callback handlers and tracers see them: True (default),
            False, or "auto" (only while LangSmith tracing or ``collect_runs()`` is
            active, which saves LangChain's metadata propagation on every run).
            Env ``CONTEXT_TRACE_RUN_METADATA``.
        otlp_endpoint: The OTLP/HTTP traces URL (env
            ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or
            ``OTEL_EXPORTER_OTLP_ENDPOINT`` plus ``/v1/traces``; default
            ``http://localhost:4318/v1/traces``).
        otlp_headers: Request headers for it (env ``OTEL_EXPORTER_OTLP_HEADERS``).
        tracer_provider: Send the spans through the app's OpenTelemetry
            ``TracerProvider`` instead (turns OTLP export on).
        capture_content: Put transcripts on the spans (default True; env
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
        backpressure_timeout: Seconds a finished turn may wait for room when the
            queue is at its high-water mark (256 turns), so an
            overloaded worker catches up instead of dropping; 0 never waits
            (env ``CONTEXT_TRACE_BACKPRESSURE_TIMEOUT``).
        flush_on_sigterm: When SIGTERM has Python's default disposition (no
            handler of the app's own), handle it: export what is queued (within
            ``shutdown_timeout``), then end the process by SIGTERM as before.
            Taken on the main thread at ``configure()`` or the first recorded
            turn; an app's own handler is never replaced. Default True (env
            ``CONTEXT_TRACE_FLUSH_ON_SIGTERM=0`` turns it off).

        propagate_baggage: Outgoing requests made with httpx (sync and async
            clients) or requests inside a scope carry its user and session as
            W3C ``baggage`` entries (``user.id``, ``session.id``). Default
            False: sending a user id out of the process is the app's decision.
            Turning it on hooks the installed client libraries.
        baggage_secret: Sign those entries with HMAC-SHA256 under this shared
            secret, for receivers that accept signed baggage (env
            ``CONTEXT_TRACE_BAGGAGE_SECRET``). Never logged nor shown.
        prices: Price overrides for the cost figures, per model name
            (case-insensitive), in dollars per million tokens:
            ``{"my-llama": {"input": 0.2, "output": 0.6}}``, optionally with
            ``cache_read``, ``cache_write`` and ``reasoning``. They override
            the ``genai-prices`` list or add models it lacks; costs are worked
            out when read (``context_trace.analytics.pricing``), so nothing
            recorded changes.
        store: A shared PostgreSQL store, ``"postgresql://user:password@host/db"``
            (env ``CONTEXT_TRACE_STORE``; needs ``context-trace[postgres]``).
            Turns go to this host's durable outbox (the ``db_path`` file) first;
            the export worker delivers them in batches, so the app never waits
            on PostgreSQL. ``configure`` connects once (a few seconds at most)
            and creates or migrates the schema; the password is never shown.
        host: This host's identity in the shared store (env
            ``CONTEXT_TRACE_HOST``; default: the machine's name).

    Returns:
        The effective :class:`Config`.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range, or *baggage_secret* is empty;
            with *store*, the server refused the password, has no such
            database, or is unreachable (the message says which, and never
            shows the password).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.3.0 *store* and *host*: a shared PostgreSQL store.
    """
    kwargs = dict(locals())
    config = build_config(kwargs)
    # With a token the exporter is built (and its endpoint checked) now, before
    # anything changes: a rejected configuration leaves the previous one in place.
    start_now = config.enabled and (
        ((config.token or config.otlp or config.store) and config.exporter is None)
        or hasattr(config.exporter, "idle")
    )
    if start_now and config.store and config.exporter is None:
        # A fast check (short connect timeout) that says which of wrong
        # password, unknown database or unreachable host it is, and creates or
        # migrates the schema, before anything changes.
        from ._store.postgres import check

        check(config.store)
    pipeline = _new_pipeline(config, _build_exporter(config)) if start_now else None
    with _STATE.lock:
        old = _STATE.pipeline
        _STATE.pipeline = pipeline
        _STATE.config = config
        _STATE.config_error = None
    if old is not None:
        old.shutdown(config.shutdown_timeout)
    _handle_sigterm(config)
    if config.propagate_baggage:
        _http.hook_installed()
    return config


def flush(timeout: float | None = None) -> bool:
    """
    Block until every turn recorded before the call is exported or given up.

    Call it at the end of scripts and in tests; web apps rarely need it.

    Args:
        timeout: Seconds to wait; None waits as long as it takes.

    Returns:
        True if everything was handled in time.

    .. versionadded:: 0.1.0
    """
    pipeline = _STATE.pipeline
    return True if pipeline is None else pipeline.flush(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """
    Flush, then stop the background worker and close the exporter.

    Safe to call twice. A later recording starts a new pipeline.

    Args:
        timeout: Seconds the flush and close may take (default: ``shutdown_timeout``).

    Returns:
        True if everything was exported in time.

    .. versionadded:: 0.1.0
    """
    with _STATE.lock:
        pipeline, _STATE.pipeline = _STATE.pipeline, None
    if pipeline is None:
        return True
    return pipeline.shutdown(
        active_config().shutdown_timeout if timeout is None else timeout
    )


def stats() -> dict[str, int]:
    """
    Export counters of the current pipeline.

    Returns:
        ``enqueued``, ``exported``, ``dropped``, ``failed`` (records given
        up on), ``skipped`` (runs that were not conversations), ``retried``,
        ``pending`` (kept in the outbox for later), ``queued`` (in memory now),
        ``waited`` (turns that waited for room at the high-water mark),
        ``waited_ms`` (their total wait), ``rejected`` (ratings not stored
        because the store holds no such session or turn), and, since 0.3.0,
        the process's baggage counters: ``baggage_sent`` (outgoing requests
        given the user/session entries), ``baggage_not_sent`` (left out: the
        W3C limits would be exceeded), ``baggage_accepted`` and
        ``baggage_rejected`` (incoming entries trusted / ignored).

    .. versionadded:: 0.1.0
    """
    pipeline = _STATE.pipeline
    counters = dict.fromkeys(STAT_KEYS, 0) if pipeline is None else pipeline.stats()
    counters.update(STATE.baggage.snapshot())
    return counters


def reset() -> None:
    """
    Forget the process state (tests): shut down, drop it all, re-read the env.

    The pipeline is shut down, SIGTERM's handler given back, and the
    :data:`~._state.STATE` cleared (configuration, run claims, counters,
    log-once keys), as are the converter's per-session system prompts.
    """
    shutdown(1.0)
    _sigterm.uninstall()
    STATE.clear()
    reset_header_sessions()


def _replace_config(**changes: Any) -> Config:
    """Swap fields of the current config without touching the pipeline (testing)."""
    with _STATE.lock:
        _STATE.config = replace(get_config(), **changes)
        return _STATE.config


def install_pipeline(pipeline: AnyPipeline) -> AnyPipeline | None:
    """Make *pipeline* the current one and return the previous (``testing.capture``)."""
    with _STATE.lock:
        previous, _STATE.pipeline = _STATE.pipeline, pipeline
    return previous


def restore_pipeline(pipeline: AnyPipeline, previous: AnyPipeline | None) -> None:
    """Undo :func:`install_pipeline` if *pipeline* is still the current one."""
    with _STATE.lock:
        if _STATE.pipeline is pipeline:
            _STATE.pipeline = previous
