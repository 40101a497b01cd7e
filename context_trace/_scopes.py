"""
Per-request scopes: who is talking, in which session, with which metadata.

The names of the scope API, gathered from the modules that hold them, one
concern each:

- ``_activation``: the ContextVars, :class:`Scope` and its activation, the one
  ``leave`` operation (which owns the serverless flush), the accessors;
- ``_sessions``: :class:`Session` and its ratings;
- ``_resolvers``: checking ids and metadata, binding resolvers to parameters;
- ``_decorators``: :func:`track_user`, :func:`context_session`, :func:`open_scope`;
- ``_streams``: generators and streamed responses that keep their scope;
- ``_threads``: :func:`propagate`, :class:`ContextThreadPoolExecutor`,
  :func:`instrument_threads`.

The package's lazy names resolve here; integrations use ``_integration_api``.
"""

from __future__ import annotations

from ._activation import (
    RequestSession,
    Scope,
    current_handler,
    current_scope,
    current_session,
    current_user,
    headers,
    runnable_config,
)
from ._decorators import context_session, open_scope, track_user
from ._resolvers import normalize_id
from ._sessions import Session
from ._threads import (
    ContextThreadPoolExecutor,
    instrument_threads,
    propagate,
    uninstrument_threads,
)

__all__ = [
    "ContextThreadPoolExecutor",
    "RequestSession",
    "Scope",
    "Session",
    "context_session",
    "current_handler",
    "current_scope",
    "current_session",
    "current_user",
    "headers",
    "instrument_threads",
    "normalize_id",
    "open_scope",
    "propagate",
    "runnable_config",
    "track_user",
    "uninstrument_threads",
]
