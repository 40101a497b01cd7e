"""
One request of :class:`~.context_api.ContextAPIExporter` and how it failed.

:func:`attempt` makes the request through the official client with the given
timeouts and sorts its failure: transient (connection errors, timeouts, HTTP
429, 502, 503 and 504, see ``http_policy.is_transient``) or permanent, with the
server's ``Retry-After`` when it sent one. The retry loop, the deadline and the
circuit breaker stay in the exporter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from .http_policy import is_transient, retry_after_seconds

__all__ = ["Attempt", "attempt"]

# The exporter's logger: these records keep the name they always had.
_logger = logging.getLogger("context_trace._exporters.context_api")


class Attempt:
    """The result of one failed request: why, and whether to try again."""

    __slots__ = ("detail", "retry_after", "status", "transient")

    def __init__(
        self,
        detail: str,
        *,
        transient: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.detail = detail
        self.transient = transient
        self.status = status
        self.retry_after = retry_after


def attempt(
    send: Callable[[dict[str, Any]], object],
    *,
    connect_timeout: float,
    read_timeout: float,
    insecure: bool,
    scrub: Callable[[str], str],
) -> Attempt | None:
    """
    One request through *send*; None on success.

    *insecure* lets azure-core's bearer policy send the token over plain http
    (the exporter allows it only for loopback endpoints or with
    ``allow_insecure``). *scrub* removes the token from logged text.
    """
    options: dict[str, Any] = {
        "connection_timeout": max(0.001, connect_timeout),
        "read_timeout": max(0.001, read_timeout),
    }
    if insecure:
        options["enforce_https"] = False
    try:
        send(options)
    except HttpResponseError as exc:
        status = exc.status_code
        if status is not None and 200 <= status < 300:
            return None  # delivered; only reading the answer failed
        if status is None:
            return Attempt(f"invalid response ({type(exc).__name__})", transient=True)
        return Attempt(
            f"HTTP {status}",
            transient=is_transient(status),
            status=status,
            retry_after=_retry_after(exc),
        )
    except (ServiceRequestError, ServiceResponseError) as exc:
        # Connection refused/reset, DNS, connect and read timeouts.
        _logger.debug("context_trace: request failed: %s", scrub(str(exc)))
        kind = "timeout" if "Timeout" in type(exc).__name__ else "connection error"
        return Attempt(f"{kind} ({type(exc).__name__})", transient=True)
    except AzureError as exc:
        _logger.debug("context_trace: request failed: %s", scrub(str(exc)))
        return Attempt(f"client error ({type(exc).__name__})", transient=False)
    return None


def _retry_after(exc: HttpResponseError) -> float | None:
    """Seconds from the response's ``Retry-After`` header, if any."""
    headers = getattr(exc.response, "headers", None)
    return retry_after_seconds(
        headers.get("Retry-After") if headers is not None else None
    )
