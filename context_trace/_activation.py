"""
Scope state and activation: the ContextVars, :class:`Scope`, and leaving.

A :class:`Scope` is immutable. Entering ``track_user`` or ``context_session``
builds a new scope from the current one (:func:`build_scope`: inner values
override, metadata merges) and *activates* it: three ContextVars are set, and
leaving restores the outer state exactly, whatever happened in between.

- ``ACTIVE`` holds the activation's *frame*, one immutable tuple
  ``(scope, handler_token, config_token, outer_frame)``: the scope itself
  (``current_user()`` and friends, ``frame[SCOPE]``) and what leaving needs to
  restore this context's outer state. The frame is made per activation, so a
  scope active in several threads or tasks at once restores each one's own.
- ``ACTIVE_HANDLER`` holds the scope's recording handler. It is registered with
  LangChain's ``register_configure_hook`` so every run configured in this context
  gets the handler, with no ``callbacks=`` passed anywhere.
- LangChain's own ``var_child_runnable_config`` gets ``user_id``/``session_id``
  merged into its metadata, so the app's own handlers and tracers (LangSmith) see
  them on the runs (``run_metadata``, on by default).

:func:`leave` is the one way out of a scope: it deactivates it and, when it
was the context's outermost, runs the serverless flush.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers.context import register_configure_hook

from . import _handler, _runtime

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from ._handler import RecordingHandler
    from ._sessions import Session

__all__ = [
    "ACTIVE",
    "ACTIVE_HANDLER",
    "REQUEST_SESSION",
    "SCOPE",
    "RequestSession",
    "Scope",
    "build_scope",
    "current_handler",
    "current_scope",
    "current_session",
    "current_user",
    "headers",
    "leave",
    "runnable_config",
]

_logger = logging.getLogger(__name__)

# The innermost activation's frame in this context: (scope, handler token,
# config token, outer frame); see Scope.activate. One variable set once and
# restored once per scope: a ContextVar write is the scope's largest cost.
Frame = tuple[Any, ...]
ACTIVE: ContextVar[Frame | None] = ContextVar("context_trace.active", default=None)
#: the index of the scope in a frame (``ACTIVE.get()[SCOPE]``)
SCOPE = 0
ACTIVE_HANDLER: ContextVar[RecordingHandler | None] = ContextVar(
    "context_trace.active_handler", default=None
)
# Set by the web integrations for the length of a request (see RequestSession).
REQUEST_SESSION: ContextVar[RequestSession | None] = ContextVar(
    "context_trace.request_session", default=None
)
# inheritable=True: child runs keep the handler even when they are configured in
# another context (LangChain copies handlers from the parent run manager).
register_configure_hook(ACTIVE_HANDLER, True)


class RequestSession:
    """
    The session a web request put its turns in last, for its ``X-Session-Id``.

    A web integration makes one per request and sets it in ``REQUEST_SESSION``
    around the app; every session opened in that request (the one from the
    request's header or resolver, a route's own ``context_session`` or
    ``track_user(session_id=...)``) writes its id here when it is opened. The
    object is shared, not copied, with the threads and tasks the request's
    context is copied into (a sync endpoint in a thread pool), so the response
    header names the session the route actually used, even after the route's
    own scope has ended.
    """

    __slots__ = ("id",)

    def __init__(self) -> None:
        self.id: str | None = None


class Scope:
    """
    The immutable attribution state of one context: user, session, metadata.

    ``handler`` is the recording handler LangChain runs get inside this scope, or
    None when recording is off (disabled, or sampled out).
    """

    __slots__ = ("handler", "metadata", "session", "user_id")

    def __init__(
        self,
        user_id: str | None,
        session: Session | None,
        metadata: Mapping[str, str],
        handler: RecordingHandler | None,
    ) -> None:
        self.user_id = user_id
        self.session = session
        self.metadata = metadata
        self.handler = handler

    @property
    def session_id(self) -> str | None:
        """The session's id, if the scope is inside a session."""
        return self.session.id if self.session is not None else None

    def _run_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.user_id is not None:
            out["user_id"] = self.user_id
        if self.session is not None:
            out["session_id"] = self.session.id
        return out

    def activate(self) -> None:
        """Make this scope current in this context; pair with :meth:`deactivate`."""
        config_token: Token[Any] | None = None
        mode = _runtime.active_config().run_metadata
        # _runtime.wants_run_metadata(), inlined for the default (True): two calls.
        if mode is True or (mode is not False and _runtime.wants_run_metadata()):
            # Merged into LangChain's inherited config so every run's metadata (the
            # app's own handlers, LangSmith and other tracers) carries
            # user_id/session_id. LangChain pays for propagating metadata through
            # every child run; run_metadata="auto" or False saves that.
            # No typing.cast here: on the request path it is a function call.
            parent = var_child_runnable_config.get()
            config: RunnableConfig
            if parent:
                metadata = {**(parent.get("metadata") or {}), **self._run_metadata()}
                config = {**parent, "metadata": metadata}
            elif self.session is None and self.user_id is not None:
                # The usual outermost scope, a user and nothing to merge:
                # self._run_metadata(), inlined (a call).
                config = {"metadata": {"user_id": self.user_id}}
            else:
                config = {"metadata": self._run_metadata()}
            config_token = var_child_runnable_config.set(config)
        # The tokens live in the context's frame, not on the scope: one Scope may be
        # active in several threads or tasks at once (a shared stream, a shared
        # factory), and each context must restore its own outer state.
        ACTIVE.set((self, ACTIVE_HANDLER.set(self.handler), config_token, ACTIVE.get()))

    def deactivate(self) -> None:
        """Restore the state from before the matching :meth:`activate` in this context."""
        frame = ACTIVE.get()
        if frame is None:
            _logger.debug(
                "context_trace: deactivate() without activate() in this context"
            )
            return
        _, handler_token, config_token, outer = frame
        try:
            # First: a token from another context raises here, before anything
            # in this context changed.
            ACTIVE_HANDLER.reset(handler_token)
            if config_token is not None:
                var_child_runnable_config.reset(config_token)
            ACTIVE.set(outer)
        except (ValueError, RuntimeError):
            # A token from another context (a generator finished elsewhere): never
            # raise into the app; the context it belonged to is gone anyway.
            _logger.debug(
                "context_trace: could not restore the outer scope", exc_info=True
            )

    def __enter__(self) -> Scope:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()


def leave(scope: Scope | None = None) -> None:
    """
    Leave *scope* (deactivate it in this context), or just note that a scope ended.

    The one way out of a scope: when no scope is left active in this context,
    the context's outermost scope is over and its turns are flushed now in
    serverless mode (``serverless=True``), before the runtime can freeze.
    """
    if scope is not None:
        scope.deactivate()
    if ACTIVE.get() is None:
        _runtime.on_outermost_exit()


def build_scope(
    user_id: str | None,
    session: Session | None,
    metadata: Mapping[str, str],
    *,
    inherit: bool = True,
) -> Scope:
    """A scope derived from the current one: given values override, metadata merges."""
    frame = ACTIVE.get() if inherit else None
    if frame is not None:
        outer: Scope = frame[SCOPE]
        if user_id is None:
            user_id = outer.user_id
        if session is None:
            session = outer.session
        if outer.metadata:
            metadata = {**outer.metadata, **metadata}
    if session is not None and session.metadata:
        metadata = {**session.metadata, **metadata}
    scope = Scope(user_id, session, metadata, None)
    if _runtime.active_config().enabled and (session is None or session.sampled):
        # A cycle (scope.handler.scope is scope): re-entering handler.scope must
        # record again. Turns copy the scope's attribution instead of holding it,
        # so the pair is young garbage once the request's block ends.
        scope.handler = _handler.RecordingHandler(scope)
    return scope


def current_scope() -> Scope | None:
    """The active :class:`Scope`, or None outside every scope."""
    frame = ACTIVE.get()
    return frame[SCOPE] if frame is not None else None


def current_user() -> str | None:
    """
    The user id of the active scope, or None.

    .. versionadded:: 0.1.0
    """
    frame = ACTIVE.get()
    return frame[SCOPE].user_id if frame is not None else None


def current_session() -> Session | None:
    """
    The active :class:`Session`, or None outside every session.

    .. versionadded:: 0.1.0
    """
    frame = ACTIVE.get()
    return frame[SCOPE].session if frame is not None else None


def current_handler() -> RecordingHandler | None:
    """
    The recording callback handler of the active scope, or None.

    Pass it yourself only where LangChain cannot see the context (it normally
    picks it up on its own).

    .. versionadded:: 0.1.0
    """
    return ACTIVE_HANDLER.get()


def runnable_config() -> RunnableConfig:
    """
    A ``RunnableConfig`` carrying the active scope, for code that passes configs.

    It holds the scope's handler in ``callbacks`` and ``user_id``/``session_id``
    in ``metadata``. Outside a scope it is empty.

    .. versionadded:: 0.1.0
    """
    from langchain_core.runnables import RunnableConfig

    scope = current_scope()
    config = RunnableConfig()
    if scope is None:
        return config
    config["metadata"] = scope._run_metadata()
    if scope.handler is not None:
        config["callbacks"] = [scope.handler]
    return config


def headers() -> dict[str, str]:
    """
    ``X-User-Id``/``X-Session-Id`` headers for the active scope (only those set).

    Send them to downstream services that use context_trace's integrations, so
    their turns are attributed to the same user and session.

    .. versionadded:: 0.1.0
    """
    scope = current_scope()
    out: dict[str, str] = {}
    if scope is None:
        return out
    if scope.user_id is not None:
        out["X-User-Id"] = scope.user_id
    if scope.session is not None:
        out["X-Session-Id"] = scope.session.id
    return out
