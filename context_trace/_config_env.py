"""
The environment ``_config`` reads: every variable's name, and the parsing and
checking of values from the environment and ``configure()``'s arguments (the
OpenTelemetry variables included). No I/O, no process state; the names
other modules use are importable from ``_config``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import unquote

from ._exporters import http_policy
from ._redact import builtin_redactor

ENV_TOKEN = "CONTEXT_TOKEN"
ENV_TOKEN_ALT = "GETCONTEXT_TOKEN"
ENV_ENDPOINT = "CONTEXT_ENDPOINT"
ENV_DB = "CONTEXT_TRACE_DB"
#: A shared PostgreSQL store (``postgresql://...``); the outbox delivers to it.
ENV_STORE = "CONTEXT_TRACE_STORE"
#: This host's identity in a shared store (default: the machine's name).
ENV_HOST = "CONTEXT_TRACE_HOST"
ENV_DISABLED = "CONTEXT_TRACE_DISABLED"
ENV_SAMPLE_RATE = "CONTEXT_TRACE_SAMPLE_RATE"
ENV_MAX_QUEUE = "CONTEXT_TRACE_MAX_QUEUE"
ENV_FLUSH_INTERVAL = "CONTEXT_TRACE_FLUSH_INTERVAL"
ENV_SERVERLESS = "CONTEXT_TRACE_SERVERLESS"
ENV_REDACT = "CONTEXT_TRACE_REDACT"
ENV_RUN_METADATA = "CONTEXT_TRACE_RUN_METADATA"
ENV_EXPORTER = "CONTEXT_TRACE_EXPORTER"
ENV_FLUSH_ON_SIGTERM = "CONTEXT_TRACE_FLUSH_ON_SIGTERM"
# The OpenTelemetry environment (for OTLP export), as the OTel SDK and collectors read it.
ENV_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_OTLP_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
ENV_OTLP_TRACES_HEADERS = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
ENV_OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
ENV_OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
ENV_CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
#: The named exporters ``exporter=`` / ``CONTEXT_TRACE_EXPORTER`` accept.
EXPORTER_NAMES = ("sqlite", "otlp")
DEFAULT_OTLP_TRACES_ENDPOINT = http_policy.DEFAULT_OTLP_TRACES_ENDPOINT
ENV_BACKPRESSURE_TIMEOUT = "CONTEXT_TRACE_BACKPRESSURE_TIMEOUT"
# LangSmith/LangChain switches that turn tracing on from the environment.
_TRACING_ENV = (
    "LANGSMITH_TRACING",
    "LANGSMITH_TRACING_V2",
    "LANGCHAIN_TRACING_V2",
    "LANGCHAIN_TRACING",
)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

Redactor = Callable[[str], str]


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
    if isinstance(value, str):
        value = [part for part in (p.strip() for p in value.split(",")) if part]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return builtin_redactor(list(value))
    raise TypeError(
        "redact must be a callable str -> str or a list of built-in pattern names, "
        f"got {type(value).__name__}"
    )


def _exporter_names(raw: str, source: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip().lower() for p in raw.split(",") if p.strip()))
    if not names or any(n not in EXPORTER_NAMES for n in names):
        raise ValueError(
            f"{source} must be a comma list of {', '.join(EXPORTER_NAMES)}, got {raw!r}"
        )
    return names


def _pairs(raw: str, source: str) -> dict[str, str]:
    """``k=v,k2=v2`` (values percent-decoded), as the OpenTelemetry spec writes it."""
    out: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # Never echo the value: headers hold API keys.
            raise ValueError(f"{source} must be a comma list of key=value pairs")
        out[unquote(key.strip())] = unquote(value.strip())
    return out


def _check_url(value: Any, source: str) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        shown = (
            value.split(":", 1)[0] + ":…"
            if isinstance(value, str)
            else type(value).__name__
        )
        raise ValueError(f"{source} must be an http(s) URL, got {shown!r}")
    return value


def _otlp_environment(values: dict[str, Any]) -> None:
    """
    The OpenTelemetry variables: endpoint, headers, resource, content switch.

    Read only with OTLP export on (an app's own OTel setup is none of our
    business otherwise); an explicit argument wins over its variable.
    """
    explicit = dict(values)
    traces = os.environ.get(ENV_OTLP_TRACES_ENDPOINT, "").strip()
    base = os.environ.get(ENV_OTLP_ENDPOINT, "").strip()
    if traces:
        values["otlp_endpoint"] = _check_url(traces, ENV_OTLP_TRACES_ENDPOINT)
    elif base:
        values["otlp_endpoint"] = (
            _check_url(base, ENV_OTLP_ENDPOINT).rstrip("/") + "/v1/traces"
        )
    headers: dict[str, str] = {}
    for name in (ENV_OTLP_HEADERS, ENV_OTLP_TRACES_HEADERS):
        if os.environ.get(name, "").strip():
            headers.update(_pairs(os.environ[name], name))
    if headers:
        values["otlp_headers"] = headers
    resource: dict[str, str] = {}
    if os.environ.get(ENV_OTEL_RESOURCE_ATTRIBUTES, "").strip():
        resource.update(
            _pairs(
                os.environ[ENV_OTEL_RESOURCE_ATTRIBUTES], ENV_OTEL_RESOURCE_ATTRIBUTES
            )
        )
    service = os.environ.get(ENV_OTEL_SERVICE_NAME, "").strip()
    if service:
        resource["service.name"] = service
    if resource:
        values["resource"] = resource
    capture = _env_bool(ENV_CAPTURE_CONTENT)
    if capture is not None:
        values["capture_content"] = capture
    values.update(
        {
            k: v
            for k, v in explicit.items()
            if k in ("otlp_endpoint", "otlp_headers", "resource", "capture_content")
        }
    )


def otlp_settings() -> dict[str, Any]:
    """
    The OTLP settings from the environment alone (``context-trace replay``).

    Returns:
        ``otlp_endpoint``, ``otlp_headers``, ``resource``, ``capture_content``.

    Raises:
        ValueError: An ``OTEL_*`` variable holds a bad value.
    """
    values: dict[str, Any] = {}
    _otlp_environment(values)
    return {
        "otlp_endpoint": DEFAULT_OTLP_TRACES_ENDPOINT,
        "otlp_headers": {},
        "resource": {},
        "capture_content": True,
        **values,
    }


def _check_otlp(values: dict[str, Any]) -> None:
    """Validate the OTLP arguments and settle ``exporters`` and ``otlp``."""
    exporter = values.get("exporter")
    if isinstance(exporter, str):
        values["exporters"] = _exporter_names(exporter, "exporter")
        values["exporter"] = None
    provider = values.get("tracer_provider")
    values["otlp"] = values.get("exporter") is None and (
        "otlp" in values.get("exporters", ()) or provider is not None
    )
    if "otlp_endpoint" in values:
        values["otlp_endpoint"] = _check_url(values["otlp_endpoint"], "otlp_endpoint")
    if values["otlp"]:
        _otlp_environment(values)
    headers = values.get("otlp_headers")
    if headers is not None and not (
        isinstance(headers, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise TypeError("otlp_headers must be a mapping of str to str")
    if "capture_content" in values and not isinstance(values["capture_content"], bool):
        raise TypeError(
            "capture_content must be a bool, got "
            f"{type(values['capture_content']).__name__}"
        )
    if provider is not None and not hasattr(provider, "get_tracer"):
        raise TypeError(
            "tracer_provider must be an OpenTelemetry TracerProvider, got "
            f"{type(provider).__name__}"
        )
