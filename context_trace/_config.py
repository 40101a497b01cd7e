"""
Configuration: the frozen :class:`Config` value and its parsing from arguments and
the environment (no I/O, no process state).

Every environment variable context_trace reads is named in ``_config_env``,
with the parsing of values; the names other modules use are importable from
here (the baggage
secret's name comes from ``_baggage.py``, which reads it for ``BaggageTrust``). ``_runtime.py``
holds the process-wide state built from a ``Config`` (the pipeline, the
exporter, ``configure()``, ``flush()``); this module knows nothing of it.
"""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._baggage import ENV_BAGGAGE_SECRET, check_secret
from ._config_env import (
    _TRACING_ENV,
    _TRUE,
    DEFAULT_OTLP_TRACES_ENDPOINT,
    ENV_BACKPRESSURE_TIMEOUT,
    ENV_DB,
    ENV_DISABLED,
    ENV_ENDPOINT,
    ENV_EXPORTER,
    ENV_FLUSH_INTERVAL,
    ENV_FLUSH_ON_SIGTERM,
    ENV_HOST,
    ENV_MAX_QUEUE,
    ENV_REDACT,
    ENV_RUN_METADATA,
    ENV_SAMPLE_RATE,
    ENV_SERVERLESS,
    ENV_STORE,
    ENV_TOKEN,
    ENV_TOKEN_ALT,
    Redactor,
    _check_number,
    _check_otlp,
    _env_bool,
    _env_number,
    _exporter_names,
    _resolve_redact,
)
from ._config_env import otlp_settings as otlp_settings
from ._exporters import http_policy
from ._exporters.base import Exporter

__all__ = [
    "DEFAULT_ENDPOINT",
    "ENV_BACKPRESSURE_TIMEOUT",
    "ENV_BAGGAGE_SECRET",
    "ENV_DB",
    "ENV_DISABLED",
    "ENV_ENDPOINT",
    "ENV_EXPORTER",
    "ENV_FLUSH_INTERVAL",
    "ENV_FLUSH_ON_SIGTERM",
    "ENV_HOST",
    "ENV_MAX_QUEUE",
    "ENV_REDACT",
    "ENV_RUN_METADATA",
    "ENV_SAMPLE_RATE",
    "ENV_SERVERLESS",
    "ENV_STORE",
    "ENV_TOKEN",
    "ENV_TOKEN_ALT",
    "UNSET",
    "Config",
    "Redactor",
    "build_config",
    "default_db_path",
]


DEFAULT_ENDPOINT = http_policy.DEFAULT_CONTEXT_ENDPOINT
_DEFAULT_MAX_QUEUE = 4096  # a queued turn holds ~5 KB of references: ~20 MB at most
_DEFAULT_FLUSH_INTERVAL = 1.0
_DEFAULT_MAX_BATCH = 512
_DEFAULT_SHUTDOWN_TIMEOUT = 5.0
_DEFAULT_SERVERLESS_TIMEOUT = 2.0
_DEFAULT_OUTBOX_MAX = 100_000
# Seconds an emit at the queue's high-water mark waits for the worker (see
# _pipeline.py): long enough for the worker to take a batch when app threads
# hold the GIL, short enough to stay invisible next to a real model call.
_DEFAULT_BACKPRESSURE_TIMEOUT = 0.1


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
    run_metadata: bool | str = True
    backpressure_timeout: float = _DEFAULT_BACKPRESSURE_TIMEOUT
    flush_on_sigterm: bool = True
    #: "auto" resolved once from the environment: is LangSmith tracing on?
    env_tracing: bool = False
    #: named exporters (``exporter="sqlite,otlp"``); empty: the default choice
    exporters: tuple[str, ...] = ()
    #: OTLP export on (``otlp`` named, or a tracer provider given)
    otlp: bool = False
    otlp_endpoint: str = DEFAULT_OTLP_TRACES_ENDPOINT
    otlp_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    resource: Mapping[str, str] = field(default_factory=dict)
    capture_content: bool = True
    tracer_provider: Any = None
    #: outgoing httpx/requests calls carry the user and session as baggage
    propagate_baggage: bool = False
    #: signs outgoing baggage entries (and is never shown)
    baggage_secret: str | None = field(default=None, repr=False)
    #: price overrides per model, dollars per million tokens (read-time cost)
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: a shared PostgreSQL store's URL (shown only without its password)
    store: str | None = field(default=None, repr=False)
    #: this host's identity in the shared store (None: the machine's name)
    host: str | None = None

    def __repr__(self) -> str:
        token = "'***'" if self.token else "None"
        return (
            f"Config(token={token}, endpoint={self.endpoint!r}, db_path={str(self.db_path)!r}, "
            f"exporter={self.exporter!r}, sample_rate={self.sample_rate}, "
            f"enabled={self.enabled}, max_queue={self.max_queue}, "
            f"flush_interval={self.flush_interval}, serverless={self.serverless}, "
            f"exporters={self.exporters!r}, otlp={self.otlp}"
            + (f", store={http_policy.safe_url(self.store)!r}" if self.store else "")
            + ")"
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


#: "not passed": configure() arguments left out come from the environment.
UNSET: Any = object()


def build_config(kwargs: Mapping[str, Any]) -> Config:
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
    flush_on_sigterm = _env_bool(ENV_FLUSH_ON_SIGTERM)
    if flush_on_sigterm is not None:
        values["flush_on_sigterm"] = flush_on_sigterm
    for env, key, kind in (
        (ENV_SAMPLE_RATE, "sample_rate", float),
        (ENV_MAX_QUEUE, "max_queue", int),
        (ENV_FLUSH_INTERVAL, "flush_interval", float),
        (ENV_BACKPRESSURE_TIMEOUT, "backpressure_timeout", float),
    ):
        number = _env_number(env, kind)
        if number is not None:
            values[key] = number
    if os.environ.get(ENV_BAGGAGE_SECRET):
        values["baggage_secret"] = os.environ[ENV_BAGGAGE_SECRET]
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
    if os.environ.get(ENV_STORE, "").strip():
        values["store"] = os.environ[ENV_STORE].strip()
    if os.environ.get(ENV_HOST, "").strip():
        values["host"] = os.environ[ENV_HOST].strip()
    if os.environ.get(ENV_EXPORTER, "").strip():
        values["exporters"] = _exporter_names(os.environ[ENV_EXPORTER], ENV_EXPORTER)

    values.update({k: v for k, v in kwargs.items() if v is not UNSET})

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
    _check_otlp(values)
    if values.get("store") is not None:
        store = values["store"]
        if not isinstance(store, str) or not store.startswith(
            ("postgresql://", "postgres://")
        ):
            shown = (
                store.split(":", 1)[0] + ":…"  # never echo a URL: it holds a password
                if isinstance(store, str)
                else type(store).__name__
            )
            raise ValueError(
                "store must be a postgresql:// URL (e.g. "
                f"'postgresql://user:password@host:5432/db'), got {shown!r}"
            )
    if values.get("host") is not None and (
        not isinstance(values["host"], str) or not values["host"].strip()
    ):
        raise ValueError(f"host must be a non-empty str, got {values['host']!r}")
    if values.get("exporter") is not None and not isinstance(
        values["exporter"], Exporter
    ):
        raise TypeError(
            "exporter must have export(batch) and shutdown(timeout) methods, "
            f"got {type(values['exporter']).__name__}"
        )
    if "sample_rate" in values:
        _check_number("sample_rate", values["sample_rate"], low=0.0, high=1.0)
    for key in (
        "enabled",
        "serverless",
        "keep_local",
        "allow_insecure",
        "flush_on_sigterm",
        "propagate_baggage",
    ):
        if key in values and not isinstance(values[key], bool):
            raise TypeError(f"{key} must be a bool, got {type(values[key]).__name__}")
    for key in ("max_queue", "max_batch", "outbox_max"):
        if key in values:
            _check_number(key, values[key], low=1, integer=True)
    for key in (
        "flush_interval",
        "serverless_timeout",
        "shutdown_timeout",
        "backpressure_timeout",
    ):
        if key in values:
            _check_number(key, values[key], low=0.0, low_open=key == "flush_interval")
    if "baggage_secret" in values:
        values["baggage_secret"] = check_secret(
            "baggage_secret", values["baggage_secret"]
        )
    if "redact" in values:
        values["redact"] = _resolve_redact(values["redact"])
    if "prices" in values:
        from context_trace.analytics.pricing import check_prices

        values["prices"] = check_prices(values["prices"] or {}, "prices")
    run_metadata = values.get("run_metadata", "auto")
    # isinstance, not membership: 1 == True and 0.0 == False would pass "in".
    if not (isinstance(run_metadata, bool) or run_metadata == "auto"):
        raise ValueError(
            f"run_metadata must be True, False or 'auto', got {values['run_metadata']!r}"
        )
    return Config(**values)
