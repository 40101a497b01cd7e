"""
The checks of :class:`~context_trace._exporters.context_api.ContextAPIExporter`'s
arguments: a clear error naming the argument, before anything is sent.
"""

from __future__ import annotations

import math
from typing import TypeGuard
from urllib.parse import urlsplit

from .http_policy import (
    is_loopback,
    safe_url,
)


def _check_token(token: object) -> None:
    # The messages never include the value: it is a secret.
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, got {type(token).__name__}")
    if not token:
        raise ValueError("token must not be empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError("token must not contain whitespace or control characters")


def _check_endpoint(endpoint: object, allow_insecure: bool) -> tuple[str, bool]:
    """The normalised endpoint and whether bearer auth may go over plain http."""
    if not isinstance(endpoint, str):
        raise TypeError(f"endpoint must be a str, got {type(endpoint).__name__}")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"endpoint must be an http(s) URL with a host, got {safe_url(endpoint)!r}"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        # Never echo them: credentials in a URL are secrets too.
        raise ValueError(
            "endpoint must not contain credentials, a query or a fragment, "
            f"got {safe_url(endpoint)!r}"
        )
    if parts.scheme == "https":
        return endpoint.rstrip("/"), False
    if not (allow_insecure or is_loopback(parts.hostname)):
        raise ValueError(
            f"endpoint {safe_url(endpoint)!r} uses plain http on a non-loopback host, which would send "
            "the token unencrypted; use https or pass allow_insecure=True"
        )
    return endpoint.rstrip("/"), True


def _is_number(value: object) -> TypeGuard[float]:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _positive(name: str, value: object) -> float:
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _non_negative(name: str, value: object) -> float:
    if not _is_number(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _at_least_one(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value
