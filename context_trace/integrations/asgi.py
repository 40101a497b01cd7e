"""
ASGI integration (Starlette, FastAPI): one context_trace scope per HTTP request.

:class:`ContextTraceMiddleware` is a pure ASGI middleware (not Starlette's
``BaseHTTPMiddleware``, which runs the endpoint in another task). It activates
the request's scope around ``await self.app(...)``: streamed bodies are sent
inside that await, and Starlette's ``StreamingResponse`` iterates them in tasks
and threads that copy the context, so every chunk is attributed.

``websocket`` and other non-``http`` scopes pass straight through. The
``lifespan`` scope passes through too, except that before the app's
``lifespan.shutdown.complete`` (or ``.failed``) reaches the server, queued
records are flushed (bounded by ``shutdown_timeout``). uvicorn re-raises
SIGTERM once its graceful shutdown is done, so ``atexit`` hooks never run
there; this flush is what gets the last turns out. An app that does not speak
the lifespan protocol gets no such flush: call ``context_trace.flush()`` from
its own shutdown code.

Starlette is optional: with it installed, resolvers receive a
``starlette.requests.Request``; without it, the raw ASGI scope dict.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from context_trace._baggage import BaggageTrust
from context_trace._integration_api import (
    RequestSession,
    Scope,
    active_config,
    begin_request,
    end_request,
    flush,
    in_request,
    leave,
    normalize_id,
    open_scope,
    reset_request_session,
    set_request_session,
)

from ._wsgi import (
    check_baggage_trust,
    check_metadata_source,
    check_source,
    log_resolver_error,
    resolve_metadata,
    safe_header_value,
)

__all__ = ["ContextTraceMiddleware"]

_logger = logging.getLogger(__name__)

ASGIScope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, Receive, Send], Awaitable[None]]

_USER_HEADER = b"x-user-id"
_SESSION_HEADER = b"x-session-id"
_BAGGAGE_HEADER = b"baggage"
_SHUTDOWN_DONE = ("lifespan.shutdown.complete", "lifespan.shutdown.failed")

_request_class: Any
try:
    from starlette.requests import Request as _request_class
except ImportError:  # pragma: no cover - exercised without the extra
    _request_class = None


def _header(scope: ASGIScope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _call(resolver: Callable[[Any], Any], request: Any) -> Any:
    value = resolver(request)
    if inspect.isawaitable(value):
        value = await value
    return value


def _flush_at_shutdown() -> None:
    timeout = active_config().shutdown_timeout
    try:
        done = flush(timeout)
    except Exception:
        _logger.warning("context_trace: flush at shutdown failed", exc_info=True)
        return
    if not done:
        _logger.warning(
            "context_trace: records were still queued after %.1f s at shutdown; "
            "see context_trace.stats()",
            timeout,
        )


class ContextTraceMiddleware:
    """
    ASGI middleware that attributes every LangChain run of a request to its user.

    Add it with ``app.add_middleware(ContextTraceMiddleware)`` (Starlette,
    FastAPI) or wrap any ASGI app: ``app = ContextTraceMiddleware(app)``.
    Endpoints can still narrow the scope with ``@track_user(...)``; FastAPI
    keeps reading their signatures (path, query, body and ``Depends``
    parameters).

    Each HTTP request runs in a fresh scope (a request with no identity still
    gets one; its turns are recorded without a user). A resolver that raises
    is logged once and the request is served the same way. When the scope has
    a session, its id is echoed in the ``X-Session-Id`` response header.

    Resolvers run before routing: ``request.path_params`` is still empty and
    the body cannot be read. Use ``@track_user`` on the endpoint to attribute
    by a path parameter. An endpoint's ``@track_user`` scope ends when the
    endpoint returns, so the body of a ``StreamingResponse`` it returns runs in
    the request's scope; decorate the generator itself to attribute the stream
    to the endpoint's user.

    Args:
        app: The ASGI application to wrap.
        user_id: A callable receiving a ``starlette.requests.Request`` (the ASGI
            scope dict when Starlette is not installed) and returning the user
            id (str, int or None), or an awaitable of it. Default: the
            ``X-User-Id`` header.
        session_id: The same for the session id; a session id puts the
            request's turns in a :class:`~context_trace.Session` with that id.
            Default: the ``X-Session-Id`` header.
        metadata: ``str -> str`` metadata for every turn of the request, or a
            callable receiving the request and returning it (or an awaitable).
        accept_baggage: Read the user and session from the request's W3C
            ``baggage`` entries (``user.id``, ``session.id``) when the sender
            is trusted (see :class:`~context_trace.integrations.BaggageTrust`;
            the peer is the ASGI ``client`` address). Default None: baggage is
            not read. A resolver of yours wins over baggage, which wins over
            the ``X-User-Id`` / ``X-Session-Id`` headers.

    Raises:
        TypeError: *user_id* or *session_id* is not callable, *metadata* is
            neither a mapping of str nor a callable, or *accept_baggage* is not
            a ``BaggageTrust``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        user_id: Callable[[Any], Any] | None = None,
        session_id: Callable[[Any], Any] | None = None,
        metadata: Mapping[str, Any] | Callable[[Any], Any] | None = None,
        accept_baggage: BaggageTrust | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI callable, got {type(app).__name__}")
        check_source("user_id", user_id)
        check_source("session_id", session_id)
        self._baggage = check_baggage_trust(accept_baggage)
        self.app = app
        self._user_id = user_id
        self._session_id = session_id
        self._metadata = check_metadata_source(metadata)

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if kind != "http" or in_request():
            await self.app(scope, receive, send)
            return
        # Every session the request opens (its own, an endpoint's) is noted
        # here; the response header names the last one.
        session = RequestSession()
        request_session = set_request_session(session)
        try:
            ct_scope = await self._open_scope(scope)
            if ct_scope is None:
                await self.app(scope, receive, send)
                return
            if ct_scope.session is None:
                session.id = None  # a failed resolver: served without a session
            request_mark = begin_request()
            ct_scope.activate()
            try:
                await self.app(scope, receive, self._session_send(send, session))
            finally:
                leave(ct_scope)
                end_request(request_mark)
        finally:
            reset_request_session(request_session)

    async def _open_scope(self, scope: ASGIScope) -> Scope | None:
        try:
            return await self._resolve(scope)
        except Exception:  # noqa: BLE001 - a failing resolver must not fail the request
            log_resolver_error("the ASGI middleware")
        try:
            return open_scope(None, None, {})
        except Exception:
            _logger.debug("context_trace: serving the request unscoped", exc_info=True)
            return None

    async def _resolve(self, scope: ASGIScope) -> Scope:
        request: Any = scope
        if _request_class is not None and (
            self._user_id is not None
            or self._session_id is not None
            or callable(self._metadata)
        ):
            request = _request_class(scope)
        baggage_user = baggage_session = None
        if self._baggage is not None:
            client = scope.get("client")
            baggage_user, baggage_session = self._baggage.read(
                [
                    value.decode("latin-1")
                    for key, value in scope.get("headers") or ()
                    if key.lower() == _BAGGAGE_HEADER
                ],
                str(client[0]) if client else None,
            )
        if self._user_id is not None:
            user_id = normalize_id("user_id", await _call(self._user_id, request))
        else:
            user_id = baggage_user or normalize_id(
                "user_id", _header(scope, _USER_HEADER)
            )
        if self._session_id is not None:
            session_id = normalize_id(
                "session_id", await _call(self._session_id, request)
            )
        else:
            session_id = baggage_session or normalize_id(
                "session_id", _header(scope, _SESSION_HEADER)
            )
        if callable(self._metadata):
            metadata = resolve_metadata(await _call(self._metadata, request))
        else:
            metadata = dict(self._metadata or {})
        return open_scope(user_id, session_id, metadata)

    @staticmethod
    def _session_send(send: Send, session: RequestSession) -> Send:
        """Add ``X-Session-Id``: the session the request used last, when it starts."""

        async def send_with_session(message: Message) -> None:
            session_id = session.id
            if (
                message.get("type") == "http.response.start"
                and session_id is not None
                and safe_header_value(session_id)
            ):
                headers = list(message.get("headers") or ())
                if not any(key.lower() == _SESSION_HEADER for key, _ in headers):
                    headers.append((_SESSION_HEADER, session_id.encode("ascii")))
                    message = {**message, "headers": headers}
            await send(message)

        return send_with_session

    @staticmethod
    def _lifespan_send(send: Send) -> Send:
        async def send_after_flush(message: Message) -> None:
            if message.get("type") in _SHUTDOWN_DONE:
                # Blocks the loop for at most shutdown_timeout: the server has
                # stopped serving requests by now, and this works on any event
                # loop (asyncio or trio) without a thread.
                _flush_at_shutdown()
            await send(message)

        return send_after_flush
