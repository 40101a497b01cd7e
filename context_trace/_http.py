"""
The hooks behind :mod:`context_trace.integrations.http` (public names there).

Outgoing HTTP calls carry the active scope's user and session as W3C ``baggage``.

Off by default: sending a user id out of the process is the app's decision.
Turn it on once at start-up, for every client the process creates:

- ``context_trace.configure(propagate_baggage=True)`` hooks httpx and requests
  (whichever are installed), or
- :func:`instrument_httpx` / :func:`instrument_requests` hook one library.

The hooks wrap ``httpx.Client.send``, ``httpx.AsyncClient.send`` and
``requests.Session.send`` (with wrapt, the way OpenTelemetry's instrumentations
patch): every transport, redirects included, goes through them. Each call reads
the active scope; outside a scope, or in a scope with neither a user nor a
session, the request is sent untouched. The app's own ``baggage`` entries stay
as they are (ours are merged into the same header; an app's own ``user.id`` or
``session.id`` wins). With ``baggage_secret`` configured, the entries are signed
(see :mod:`context_trace._baggage`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
from typing import Any

import wrapt

from . import _baggage

__all__ = [
    "instrument_httpx",
    "instrument_requests",
    "uninstrument_httpx",
    "uninstrument_requests",
]

_logger = logging.getLogger(__name__)

# (module, class, method) of each hook, by library.
_TARGETS = {
    "httpx": (("httpx", "Client", "send"), ("httpx", "AsyncClient", "send")),
    "requests": (("requests", "Session", "send"),),
}
#: Libraries hooked by an explicit instrument_*() call: they send even when
#: configure(propagate_baggage=...) is off.
_EXPLICIT: set[str] = set()
_HOOKED: set[str] = set()
#: (module, class, method) -> (the original attribute, our wrapper of it)
_ORIGINALS: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def _add_baggage(headers: Any, library: str) -> None:
    """Merge the scope's entries into *headers* (httpx or requests); never raises."""
    # No import edge to the scopes and the runtime (they import this module):
    # a scope can only be active once they are loaded.
    scopes = sys.modules.get("context_trace._activation")
    if scopes is None:
        return
    try:
        scope = scopes.current_scope()
        if scope is None:
            return
        config = sys.modules["context_trace._runtime"].active_config()
        if library not in _EXPLICIT and not config.propagate_baggage:
            return
        session = scope.session
        user_id, session_id = scope.user_id, session.id if session else None
        if user_id is None and session_id is None:
            return
        if library == "httpx":
            existing = headers.get_list("baggage")
        else:
            value = headers.get("baggage")
            existing = [value] if value else []
        header = _baggage.outgoing(existing, user_id, session_id, config.baggage_secret)
        if header is not None:
            headers["baggage"] = header
    except Exception:
        _logger.debug("context_trace: could not add baggage", exc_info=True)


def _httpx_send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    request = args[0] if args else kwargs.get("request")
    if request is not None:
        _add_baggage(request.headers, "httpx")
    return wrapped(*args, **kwargs)


def _requests_send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    request = args[0] if args else kwargs.get("request")
    if request is not None:
        _add_baggage(request.headers, "requests")
    return wrapped(*args, **kwargs)


_WRAPPERS = {"httpx": _httpx_send, "requests": _requests_send}


def _hook(library: str) -> None:
    with _LOCK:
        if library in _HOOKED:
            return
        for module, cls, method in _TARGETS[library]:
            owner = getattr(importlib.import_module(module), cls)
            original = owner.__dict__[method]
            wrapt.wrap_function_wrapper(owner, method, _WRAPPERS[library])
            _ORIGINALS[(module, cls, method)] = (original, owner.__dict__[method])
        _HOOKED.add(library)


def _unhook(library: str) -> None:
    with _LOCK:
        _EXPLICIT.discard(library)
        if library not in _HOOKED:
            return
        for module, cls, method in _TARGETS[library]:
            owner = getattr(importlib.import_module(module), cls)
            original, wrapper = _ORIGINALS.pop((module, cls, method))
            if owner.__dict__.get(method) is wrapper:  # not wrapped by others since
                setattr(owner, method, original)
        _HOOKED.discard(library)


def instrument_httpx() -> None:
    """
    Send the scope's user and session as ``baggage`` from every httpx client.

    Covers ``httpx.Client`` and ``httpx.AsyncClient`` (and the module-level
    ``httpx.get`` and friends). Calling it twice does nothing more.

    Raises:
        ModuleNotFoundError: httpx is not installed.

    .. versionadded:: 0.3.0
    """
    _hook("httpx")
    _EXPLICIT.add("httpx")


def instrument_requests() -> None:
    """
    Send the scope's user and session as ``baggage`` from every requests session.

    Covers ``requests.Session`` and the module-level ``requests.get`` and friends.

    Raises:
        ModuleNotFoundError: requests is not installed.

    .. versionadded:: 0.3.0
    """
    _hook("requests")
    _EXPLICIT.add("requests")


def uninstrument_httpx() -> None:
    """Undo :func:`instrument_httpx` (and ``propagate_baggage``'s httpx hook)."""
    _unhook("httpx")


def uninstrument_requests() -> None:
    """Undo :func:`instrument_requests` (and ``propagate_baggage``'s requests hook)."""
    _unhook("requests")


def hook_installed() -> None:
    """``configure(propagate_baggage=True)``: hook every library that is installed."""
    for library in _TARGETS:
        if library not in _HOOKED and importlib.util.find_spec(library) is not None:
            _hook(library)
