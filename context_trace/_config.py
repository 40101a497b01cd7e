"""
Configuration: ``configure()``, environment variables, and the one global state.

Every environment variable context_trace reads is named here. They are read
lazily, at the first use (the first scope, record or ``configure()`` call), and
explicit ``configure()`` arguments win over them. Each ``configure()`` call
starts again from the environment plus the arguments given: it replaces the
previous configuration, flushing and shutting down the previous pipeline.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from langchain_core.tracers.context import run_collector_var, tracing_v2_callback_var

if TYPE_CHECKING:
    from ._exporters.base import Exporter
    from ._pipeline import BatchPipeline, ClosedPipeline, InlinePipeline

__all__ = [
    "ENV_DB",
    "ENV_DISABLED",
    "ENV_ENDPOINT",
    "ENV_FLUSH_INTERVAL",
    "ENV_MAX_QUEUE",
    "ENV_RUN_METADATA",
    "ENV_SAMPLE_RATE",
    "ENV_SERVERLESS",
    "ENV_TOKEN",
    "ENV_TOKEN_ALT",
    "Config",
    "active_config",
    "configure",
    "default_db_path",
    "emit",
    "flush",
    "get_config",
    "log_once",
    "on_outermost_exit",
    "reset",
    "shutdown",
    "stats",
    "wants_run_metadata",
]

_logger = logging.getLogger(__name__)

ENV_TOKEN = "CONTEXT_TOKEN"
ENV_TOKEN_ALT = "GETCONTEXT_TOKEN"
ENV_ENDPOINT = "CONTEXT_ENDPOINT"
ENV_DB = "CONTEXT_TRACE_DB"
ENV_DISABLED = "CONTEXT_TRACE_DISABLED"
ENV_SAMPLE_RATE = "CONTEXT_TRACE_SAMPLE_RATE"
ENV_MAX_QUEUE = "CONTEXT_TRACE_MAX_QUEUE"
ENV_FLUSH_INTERVAL = "CONTEXT_TRACE_FLUSH_INTERVAL"
ENV_SERVERLESS = "CONTEXT_TRACE_SERVERLESS"
ENV_REDACT = "CONTEXT_TRACE_REDACT"
ENV_RUN_METADATA = "CONTEXT_TRACE_RUN_METADATA"
# LangSmith/LangChain switches that turn tracing on from the environment.
_TRACING_ENV = (
    "LANGSMITH_TRACING",
    "LANGSMITH_TRACING_V2",
    "LANGCHAIN_TRACING_V2",
    "LANGCHAIN_TRACING",
)

DEFAULT_ENDPOINT = "https://api.context.ai"
_DEFAULT_MAX_QUEUE = 4096  # a queued turn holds ~5 KB of references: ~20 MB at most
_DEFAULT_FLUSH_INTERVAL = 1.0
_DEFAULT_MAX_BATCH = 512
_DEFAULT_SHUTDOWN_TIMEOUT = 5.0
_DEFAULT_SERVERLESS_TIMEOUT = 2.0
_DEFAULT_OUTBOX_MAX = 100_000

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

Redactor = Callable[[str], str]


def default_db_path() -> Path:
    """``$CONTEXT_TRACE_DB``, else ``~/.context_trace/traces.db``."""
    env = os.environ.get(ENV_DB)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".context_trace" / "traces.db"


@dataclass(frozen=True)
class Config:
    """
    The effective configuration (read it with ``context_trace.get_config()``).

    See :func:`configure` for what each field means.
    """

    token: str | None = field(default=None, repr=False)
    endpoint: str = DEFAULT_ENDPOINT
    db_path: Path = field(default_factory=default_db_path)
    exporter: Exporter | None = None
    sample_rate: float = 1.0
    redact: Redactor | None = None
    enabled: bool = True
    max_queue: int = _DEFAULT_MAX_QUEUE
    flush_interval: float = _DEFAULT_FLUSH_INTERVAL
    max_batch: int = _DEFAULT_MAX_BATCH
    serverless: bool = False
    serverless_timeout: float = _DEFAULT_SERVERLESS_TIMEOUT
    keep_local: bool = False
    allow_insecure: bool = False
    outbox_max: int = _DEFAULT_OUTBOX_MAX
    shutdown_timeout: float = _DEFAULT_SHUTDOWN_TIMEOUT
    run_metadata: bool | str = "auto"
    #: "auto" resolved once from the environment: is LangSmith tracing on?
    env_tracing: bool = False

    def __repr__(self) -> str:
        token = "'***'" if self.token else "None"
        return (
            f"Config(token={token}, endpoint={self.endpoint!r}, db_path={str(self.db_path)!r}, "
            f"exporter={self.exporter!r}, sample_rate={self.sample_rate}, "
            f"enabled={self.enabled}, max_queue={self.max_queue}, "
            f"flush_interval={self.flush_interval}, serverless={self.serverless})"
        )

    def keep_session(self, session_id: str) -> bool:
        """
        Whether *session_id* is sampled in: a pure function of the id.

        Deciding from a hash (not a coin toss) keeps a session whole even when
        its turns are served by different requests or processes.
        """
        rate = self.sample_rate
        if rate >= 1.0:
            return True
        if rate <= 0.0:
            return False
        return zlib.crc32(session_id.encode("utf-8")) / 0xFFFFFFFF < rate

    def keep_turn(self) -> bool:
        """Whether a turn outside any session is sampled in (decided once per turn)."""
        rate = self.sample_rate
        return rate >= 1.0 or (rate > 0.0 and random.random() < rate)


# --------------------------------------------------------------------------- parsing
def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be one of 1/0/true/false/yes/no/on/off, got {raw!r}")


def _env_number(name: str, kind: type[int] | type[float]) -> Any:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a {kind.__name__}, got {raw!r}") from None


def _check_number(
    name: str,
    value: Any,
    *,
    low: float,
    high: float = math.inf,
    integer: bool = False,
    low_open: bool = False,
) -> None:
    ok_type = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type):
        kind = "an int" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    if math.isnan(value) or value < low or value > high or (low_open and value == low):
        if high == math.inf:
            bound = f"greater than {low}" if low_open else f"at least {low}"
        else:
            bound = f"between {low} and {high}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def _resolve_redact(value: Any) -> Redactor | None:
    if value is None or callable(value):
        return cast("Redactor | None", value)
    from ._redact import builtin_redactor

    if isinstance(value, str):
        value = [part for part in (p.strip() for p in value.split(",")) if part]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return builtin_redactor(list(value))
    raise TypeError(
        "redact must be a callable str -> str or a list of built-in pattern names, "
        f"got {type(value).__name__}"
    )


_UNSET: Any = object()


def _build_config(kwargs: Mapping[str, Any]) -> Config:
    """Environment first, then explicit arguments; validate everything."""
    values: dict[str, Any] = {}
    token = os.environ.get(ENV_TOKEN) or os.environ.get(ENV_TOKEN_ALT)
    if token:
        values["token"] = token.strip()
    if os.environ.get(ENV_ENDPOINT):
        values["endpoint"] = os.environ[ENV_ENDPOINT].strip()
    disabled = _env_bool(ENV_DISABLED)
    if disabled is not None:
        values["enabled"] = not disabled
    serverless = _env_bool(ENV_SERVERLESS)
    if serverless is not None:
        values["serverless"] = serverless
    for env, key, kind in (
        (ENV_SAMPLE_RATE, "sample_rate", float),
        (ENV_MAX_QUEUE, "max_queue", int),
        (ENV_FLUSH_INTERVAL, "flush_interval", float),
    ):
        number = _env_number(env, kind)
        if number is not None:
            values[key] = number
    if os.environ.get(ENV_REDACT):
        values["redact"] = os.environ[ENV_REDACT]
    run_metadata = os.environ.get(ENV_RUN_METADATA, "").strip().lower()
    if run_metadata:
        values["run_metadata"] = (
            "auto" if run_metadata == "auto" else _env_bool(ENV_RUN_METADATA)
        )
    values["env_tracing"] = any(
        os.environ.get(name, "").strip().lower() in _TRUE for name in _TRACING_ENV
    )

    values.update({k: v for k, v in kwargs.items() if v is not _UNSET})

    if "token" in values and values["token"] is not None:
        if not isinstance(values["token"], str):
            raise TypeError(
                f"token must be a str, got {type(values['token']).__name__}"
            )
        values["token"] = values["token"].strip() or None
    if "endpoint" in values:
        endpoint = values["endpoint"]
        if not isinstance(endpoint, str) or not endpoint.startswith(
            ("http://", "https://")
        ):
            shown = (
                endpoint.split(":", 1)[0]
                + ":…"  # never echo a URL: it may hold secrets
                if isinstance(endpoint, str)
                else type(endpoint).__name__
            )
            raise ValueError(f"endpoint must be an http(s) URL, got {shown!r}")
        values["endpoint"] = endpoint.rstrip("/")
    if "db_path" in values:
        db = values["db_path"]
        if not isinstance(db, (str, os.PathLike)) or not str(db):
            raise TypeError(f"db_path must be a path, got {db!r}")
        values["db_path"] = Path(db).expanduser()
    if values.get("exporter") is not None:
        from ._exporters.base import Exporter

        if not isinstance(values["exporter"], Exporter):
            raise TypeError(
                "exporter must have export(batch) and shutdown(timeout) methods, "
                f"got {type(values['exporter']).__name__}"
            )
    if "sample_rate" in values:
        _check_number("sample_rate", values["sample_rate"], low=0.0, high=1.0)
    for key in ("enabled", "serverless", "keep_local", "allow_insecure"):
        if key in values and not isinstance(values[key], bool):
            raise TypeError(f"{key} must be a bool, got {type(values[key]).__name__}")
    for key in ("max_queue", "max_batch", "outbox_max"):
        if key in values:
            _check_number(key, values[key], low=1, integer=True)
    for key in ("flush_interval", "serverless_timeout", "shutdown_timeout"):
        if key in values:
            _check_number(key, values[key], low=0.0, low_open=key == "flush_interval")
    if "redact" in values:
        values["redact"] = _resolve_redact(values["redact"])
    if "run_metadata" in values and values["run_metadata"] not in (True, False, "auto"):
        raise ValueError(
            f"run_metadata must be True, False or 'auto', got {values['run_metadata']!r}"
        )
    return Config(**values)


# --------------------------------------------------------------------------- state
class _State:
    """The process-wide state: configuration and the (lazily started) pipeline."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.config: Config | None = None
        self.pipeline: BatchPipeline | InlinePipeline | ClosedPipeline | None = None
        self.logged: set[str] = set()
        #: why the environment's configuration was rejected (see get_config)
        self.config_error: Exception | None = None


_STATE = _State()


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
                    _STATE.config = _build_config({})
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


def _build_exporter(config: Config) -> Exporter:
    if config.exporter is not None:
        return config.exporter
    from ._exporters.sqlite import SQLiteExporter

    if not config.token:
        return SQLiteExporter(
            config.db_path, keep_local=True, outbox_max=config.outbox_max
        )
    from ._exporters.context_api import ContextAPIExporter
    from ._exporters.outbox import OutboxExporter

    store = SQLiteExporter(
        config.db_path, keep_local=config.keep_local, outbox_max=config.outbox_max
    )
    remote = ContextAPIExporter(
        config.token,
        endpoint=config.endpoint,
        allow_insecure=config.allow_insecure,
        # Only a store that keeps delivered turns knows a session's transcript.
        transcript_source=store.session_messages if config.keep_local else None,
    )
    return OutboxExporter(store, remote)


def _new_pipeline(config: Config, exporter: Exporter) -> BatchPipeline:
    from ._pipeline import BatchPipeline

    pipeline = BatchPipeline(
        exporter,
        max_queue=config.max_queue,
        max_batch=config.max_batch,
        flush_interval=config.flush_interval,
        redact=config.redact,
        shutdown_timeout=config.shutdown_timeout,
    )
    if hasattr(exporter, "idle"):
        # An outbox may hold rows from an earlier process: deliver now.
        pipeline.start()
    return pipeline


def _pipeline() -> BatchPipeline | InlinePipeline | ClosedPipeline:
    pipeline = _STATE.pipeline
    if pipeline is None:
        with _STATE.lock:
            if _STATE.pipeline is None:
                config = active_config()
                try:
                    _STATE.pipeline = _new_pipeline(config, _build_exporter(config))
                except (TypeError, ValueError, OSError) as exc:
                    # E.g. CONTEXT_ENDPOINT with plain http to a remote host. Build
                    # once, not per turn: drop and count until reconfigured.
                    from ._pipeline import ClosedPipeline

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


def log_once(
    logger: logging.Logger, key: str, msg: str, *args: Any, exc_info: bool = False
) -> None:
    """Log *msg* at WARNING the first time *key* is seen, at DEBUG afterwards."""
    level = logging.DEBUG if key in _STATE.logged else logging.WARNING
    _STATE.logged.add(key)
    logger.log(level, msg, *args, exc_info=exc_info)


def wants_run_metadata() -> bool:
    """
    Whether scopes should put user_id/session_id into LangChain run metadata.

    With ``run_metadata="auto"`` (the default) only when something reads run
    metadata: LangSmith tracing switched on in the environment, a
    ``tracing_v2_enabled()`` block, or ``collect_runs()``. Propagating metadata
    through every child run costs LangChain a few microseconds per run, so it
    is not paid when nobody looks.
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
    token: str | None = _UNSET,
    endpoint: str = _UNSET,
    db_path: str | os.PathLike[str] = _UNSET,
    exporter: Exporter | None = _UNSET,
    sample_rate: float = _UNSET,
    redact: Redactor | Sequence[str] | str | None = _UNSET,
    enabled: bool = _UNSET,
    max_queue: int = _UNSET,
    flush_interval: float = _UNSET,
    max_batch: int = _UNSET,
    serverless: bool = _UNSET,
    serverless_timeout: float = _UNSET,
    keep_local: bool = _UNSET,
    allow_insecure: bool = _UNSET,
    outbox_max: int = _UNSET,
    shutdown_timeout: float = _UNSET,
    run_metadata: bool | str = _UNSET,
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
        exporter: An explicit exporter instance; overrides token and db_path.
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
        run_metadata: Put user_id/session_id into every LangChain run's metadata:
            True, False, or "auto" (default; only while LangSmith tracing or
            ``collect_runs()`` is active). Env ``CONTEXT_TRACE_RUN_METADATA``.

    Returns:
        The effective :class:`Config`.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range.

    .. versionadded:: 0.1.0
    """
    kwargs = dict(locals())
    config = _build_config(kwargs)
    # With a token the exporter is built (and its endpoint checked) now, before
    # anything changes: a rejected configuration leaves the previous one in place.
    start_now = config.enabled and (
        (config.token and config.exporter is None) or hasattr(config.exporter, "idle")
    )
    pipeline = _new_pipeline(config, _build_exporter(config)) if start_now else None
    with _STATE.lock:
        old = _STATE.pipeline
        _STATE.pipeline = pipeline
        _STATE.config = config
        _STATE.config_error = None
    if old is not None:
        old.shutdown(config.shutdown_timeout)
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
        ``enqueued``, ``exported``, ``dropped``, ``failed``, ``retried``,
        ``pending`` (kept in the outbox for later) and ``queued`` (in memory now).

    .. versionadded:: 0.1.0
    """
    pipeline = _STATE.pipeline
    if pipeline is None:
        from ._pipeline import STAT_KEYS

        return dict.fromkeys(STAT_KEYS, 0)
    return pipeline.stats()


def reset() -> None:
    """Forget configuration and pipeline (tests): shut down, drop state, re-read env."""
    shutdown(1.0)
    with _STATE.lock:
        _STATE.config = None
        _STATE.config_error = None
        _STATE.logged.clear()
    from ._convert import reset_header_sessions

    reset_header_sessions()


def _replace_config(**changes: Any) -> Config:
    """Swap fields of the current config without touching the pipeline (testing)."""
    with _STATE.lock:
        _STATE.config = replace(get_config(), **changes)
        return _STATE.config
