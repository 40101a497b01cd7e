"""
What the integrations (WSGI, Flask, ASGI, Celery) may use of the scopes and the runtime.

The integrations import only these names, never another module's private
ones, so the scope modules can change inside without breaking them:

- building and entering scopes: :func:`open_scope`, :class:`Scope` (its
  ``activate``/``deactivate``), :func:`current_scope`, :func:`activation`;
- leaving: :func:`leave`, the one operation that ends a scope and, when it
  was the context's outermost, runs the serverless flush;
- the request's state: :class:`RequestSession` (the session a request used
  last, for its ``X-Session-Id``) and the middleware's own "in a request" mark;
- checking what the app hands over: :func:`normalize_id`, :func:`check_metadata`;
- the process: :func:`active_config`, :func:`flush`, :func:`shutdown` and
  :func:`count_celery` (its counters live in the process state).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

from ._activation import (
    ACTIVE,
    REQUEST_SESSION,
    RequestSession,
    Scope,
    current_scope,
    leave,
)
from ._decorators import open_scope
from ._resolvers import check_metadata, normalize_id
from ._runtime import active_config, flush, shutdown
from ._state import STATE

__all__ = [
    "RequestSession",
    "Scope",
    "activation",
    "active_config",
    "begin_request",
    "celery_counts",
    "check_metadata",
    "count_celery",
    "current_scope",
    "end_request",
    "flush",
    "in_request",
    "leave",
    "normalize_id",
    "open_scope",
    "reset_request_session",
    "set_request_session",
    "shutdown",
]

# Set while a context_trace middleware is handling a request in this context. A
# second middleware on the same request (the app wrapped twice, or a WSGI app
# mounted inside an ASGI app that has ours) passes the request straight through.
_IN_REQUEST: ContextVar[bool] = ContextVar(
    "context_trace.integrations.in_request", default=False
)


def activation() -> Any:
    """
    An opaque marker of the innermost scope activation in this context (None: none).

    Two markers are the same object exactly when no scope was activated or
    left in between: the Celery integration compares them to close the scopes
    a task left open.
    """
    return ACTIVE.get()


def in_request() -> bool:
    """Whether one of our middlewares is already handling a request in this context."""
    return _IN_REQUEST.get()


def begin_request() -> Token[bool]:
    """Mark this context as inside a middleware's request; pair with :func:`end_request`."""
    return _IN_REQUEST.set(True)


def end_request(token: Token[bool]) -> None:
    """Undo the matching :func:`begin_request`."""
    _IN_REQUEST.reset(token)


def set_request_session(session: RequestSession) -> Token[RequestSession | None]:
    """Make *session* the one every session opened in this request writes its id to."""
    return REQUEST_SESSION.set(session)


def reset_request_session(token: Token[RequestSession | None]) -> None:
    """Undo the matching :func:`set_request_session`."""
    REQUEST_SESSION.reset(token)


def count_celery(key: str) -> None:
    """Count one Celery event (``sent``, ``not_sent``, ``received``, ``ignored``)."""
    STATE.celery.add(key)


def celery_counts() -> dict[str, int]:
    """This process's Celery counters."""
    return STATE.celery.snapshot()
