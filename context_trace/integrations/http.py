"""
Outgoing HTTP calls (httpx, requests) carry the user and session as W3C ``baggage``.

Off by default. ``context_trace.configure(propagate_baggage=True)`` hooks every
installed client library; :func:`instrument_httpx` and
:func:`instrument_requests` hook one. See :mod:`context_trace._http` for how.
"""

from __future__ import annotations

from context_trace._http import (
    instrument_httpx,
    instrument_requests,
    uninstrument_httpx,
    uninstrument_requests,
)

__all__ = [
    "instrument_httpx",
    "instrument_requests",
    "uninstrument_httpx",
    "uninstrument_requests",
]
