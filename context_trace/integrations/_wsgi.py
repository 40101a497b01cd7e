"""
Per-request scopes for web frameworks, independent of any framework.

:class:`ContextTraceWSGIMiddleware` opens one :class:`~context_trace.Scope` per
request, the way Sentry's ``SentryWsgiMiddleware`` opens an isolation scope:

1. Resolve the user, the session and metadata from the request (callables given
   by the app, else the ``X-User-Id`` / ``X-Session-Id`` headers).
2. Activate the scope around the call into the app, so every LangChain run the
   view starts is attributed to it.
3. Return the app's body wrapped in :class:`_ScopedBody`, which runs every
   ``next()`` and ``close()`` in a context of its own where the scope is
   active. Streamed bodies (generators that call ``chain.stream``) run after
   the app has returned, possibly on another thread of the server, and are
   still attributed.

Framework hooks refine the scope while the request runs: the middleware leaves a
:class:`RequestScope` in the WSGI environ (``environ[ENVIRON_KEY]``); a hook that
runs inside the framework's request context (Flask's ``before_request``, see
:mod:`context_trace.integrations.flask`) calls :meth:`RequestScope.refine`, and
the refined scope is the one the rest of the request and its body run in.

The helpers here (header parsing, the resolver error path)
are shared with the ASGI middleware.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from context_trace._baggage import BaggageTrust
from context_trace._integration_api import (
    RequestSession,
    Scope,
    begin_request,
    check_metadata,
    end_request,
    in_request,
    leave,
    normalize_id,
    open_scope,
    reset_request_session,
    set_request_session,
)
from context_trace._log import log_once

if TYPE_CHECKING:
    from types import TracebackType

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "ENVIRON_KEY",
    "SESSION_HEADER",
    "USER_HEADER",
    "ContextTraceWSGIMiddleware",
    "RequestScope",
    "check_baggage_trust",
    "check_metadata_source",
    "check_source",
    "log_resolver_error",
    "resolve_metadata",
    "safe_header_value",
]

_logger = logging.getLogger(__name__)

USER_HEADER = "X-User-Id"
SESSION_HEADER = "X-Session-Id"
#: Where the middleware leaves the request's :class:`RequestScope` in the environ.
ENVIRON_KEY = "context_trace.request_scope"

_USER_ENVIRON = "HTTP_X_USER_ID"
_SESSION_ENVIRON = "HTTP_X_SESSION_ID"

MetadataSource = Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None


# --------------------------------------------------------------------------- helpers
def check_source(name: str, value: object) -> None:
    """Reject a user/session resolver that is neither None nor callable."""
    if value is not None and not callable(value):
        raise TypeError(
            f"{name} must be a callable or None, got {type(value).__name__}"
        )


def check_baggage_trust(value: object) -> BaggageTrust | None:
    """Reject an ``accept_baggage`` that is neither None nor a :class:`BaggageTrust`."""
    if value is not None and not isinstance(value, BaggageTrust):
        raise TypeError(
            "accept_baggage must be a context_trace.integrations.BaggageTrust or "
            f"None, got {type(value).__name__}"
        )
    return value


def check_metadata_source(value: object) -> MetadataSource:
    """Validate metadata now when it is a mapping; callables are checked per request."""
    if value is None or callable(value):
        return value
    return check_metadata(value)  # type: ignore[arg-type]


def resolve_metadata(value: object) -> dict[str, str]:
    """Turn a resolver's result into ``str -> str`` metadata (TypeError when bad)."""
    return check_metadata(value)  # type: ignore[arg-type]


def safe_header_value(value: str) -> bool:
    """Whether *value* can go into a response header as is (no CR/LF, ASCII)."""
    return value.isascii() and value.isprintable()


def log_resolver_error(where: str) -> None:
    """Log a failing resolver once at WARNING (DEBUG afterwards)."""
    log_once(
        _logger,
        f"integrations.resolver.{where}",
        "context_trace: could not resolve the user/session in %s; serving the "
        "request without them",
        where,
        exc_info=True,
    )


# --------------------------------------------------------------------------- request
class RequestScope:
    """
    The scope state of one request: the scopes it activated and the current one.

    The middleware creates it, activates the first scope and, when the app has
    returned, deactivates everything in the same context (tokens must be reset
    where they were set). :attr:`scope` stays readable for the response body.
    """

    __slots__ = ("_active", "scope", "session")

    def __init__(self) -> None:
        #: The scope the rest of the request (and its body) runs in, or None.
        self.scope: Scope | None = None
        #: The session the request used last (its header's, or one its view
        #: opened); set as the request session while the app runs (see the middleware).
        self.session = RequestSession()
        self._active: list[Scope] = []

    def enter(self, scope: Scope) -> None:
        """Activate *scope* in this context and make it the request's scope."""
        scope.activate()
        self._active.append(scope)
        self.scope = scope

    def release(self) -> None:
        """Deactivate every scope :meth:`enter` activated, newest first."""
        while self._active:
            self._active.pop().deactivate()

    def refine(
        self,
        user_id: str | None = None,
        session_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """
        Narrow the request's scope with values resolved later in the request.

        Given values override the current scope's, metadata merges. A session id
        equal to the current session's keeps that :class:`Session` object (one
        session, one de-duplication state).
        """
        current = self.scope
        if current is not None and session_id == current.session_id:
            session_id = None
        if user_id is None and session_id is None and not metadata:
            return
        self.enter(open_scope(user_id, session_id, metadata or {}))

    def fail(self, where: str) -> None:
        """A resolver raised: log it, serve the rest of the request anonymously."""
        log_resolver_error(where)
        self.release()
        self.scope = None
        self.session.id = None  # served without the session it may have opened
        try:
            self.enter(open_scope(None, None, {}))
        except Exception:
            _logger.debug("context_trace: serving the request unscoped", exc_info=True)

    def start_response(self, start_response: StartResponse) -> StartResponse:
        """
        Wrap *start_response* to name the request's session in ``X-Session-Id``.

        The session named is the last one the request opened, which may be a
        view's own ``context_session`` that has ended by the time Flask starts
        the response.
        """

        def start(
            status: str,
            headers: list[tuple[str, str]],
            exc_info: tuple[type[BaseException], BaseException, TracebackType]
            | tuple[None, None, None]
            | None = None,
        ) -> Callable[[bytes], object]:
            session_id = self.session.id
            if (
                session_id is not None
                and safe_header_value(session_id)
                and not any(k.lower() == "x-session-id" for k, _ in headers)
            ):
                headers = [*headers, (SESSION_HEADER, session_id)]
            return start_response(status, headers, exc_info)

        return start


class _ScopedBody:
    """
    A WSGI response body that runs every step inside the request's scope.

    Servers may iterate the body on another thread than the one that called the
    app (Sentry's ``_ScopedResponse`` notes the same), so the scope cannot be
    held by the calling thread. The body runs in a context of its own instead:
    a copy of the context of the thread that pulls its first chunk, with the
    request's scope activated once. Every ``next()`` and ``close()`` runs in it,
    on whichever thread calls them, the way LangChain runs a stream's steps.
    A scope (or any context variable) the body's generator sets therefore
    spans its yields, and nothing it sets leaks into the server's thread.
    """

    __slots__ = ("_body", "_context", "_it", "_scope")

    def __init__(self, scope: Scope, body: Iterable[bytes]) -> None:
        self._scope = scope
        self._body = body
        self._it: Iterator[bytes] | None = None
        self._context: contextvars.Context | None = None

    def __iter__(self) -> _ScopedBody:
        return self

    def _start(self) -> contextvars.Context:
        """The body's context, with the scope active in it (once per body)."""
        context = contextvars.copy_context()
        context.run(self._scope.activate)
        self._context = context
        return context

    def __next__(self) -> bytes:
        context = self._context
        if context is None:
            context = self._start()
        it = self._it
        if it is None:
            it = self._it = context.run(iter, self._body)
        return context.run(next, it)

    def close(self) -> None:
        context = self._context
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                if context is None:
                    context = self._start()
                context.run(close)
        finally:
            if context is not None:
                # The scope's tokens live in the context they were set in, which
                # holds them: a cycle the garbage collector would have to find.
                # Resetting them frees the context now.
                self._context = None
                context.run(self._scope.deactivate)
            leave()  # the request is over


# --------------------------------------------------------------------------- middleware
class ContextTraceWSGIMiddleware:
    """
    WSGI middleware that attributes every LangChain run of a request to its user.

    Use it for WSGI frameworks without a dedicated integration (Django, Bottle,
    Falcon): ``application = ContextTraceWSGIMiddleware(application)``. For
    Flask use :class:`context_trace.flask.ContextTrace`.

    Each request runs in a fresh scope. A request with no identity still gets
    one (its turns are recorded without a user); a resolver that raises is
    logged once and the request is served the same way. When the scope has a
    session, its id is echoed in the ``X-Session-Id`` response header (unless
    the app sets that header itself).

    Args:
        app: The WSGI application to wrap.
        user_id: A callable receiving the WSGI ``environ`` and returning the
            user id (str, int or None). Default: the ``X-User-Id`` header.
        session_id: The same for the session id; a session id puts the
            request's turns in a :class:`~context_trace.Session` with that id.
            Default: the ``X-Session-Id`` header.
        metadata: ``str -> str`` metadata for every turn of the request, or a
            callable receiving the ``environ`` and returning it.

    Raises:
        TypeError: *user_id* or *session_id* is not callable, or *metadata* is
            neither a mapping of str nor a callable.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        user_id: Callable[[WSGIEnvironment], Any] | None = None,
        session_id: Callable[[WSGIEnvironment], Any] | None = None,
        metadata: MetadataSource = None,
        accept_baggage: BaggageTrust | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI callable, got {type(app).__name__}")
        check_source("user_id", user_id)
        check_source("session_id", session_id)
        self._baggage = check_baggage_trust(accept_baggage)
        self.app = app
        self._user_id = user_id
        self._session_id = session_id
        self._metadata = check_metadata_source(metadata)

    def _open(self, environ: WSGIEnvironment) -> Scope:
        baggage_user = baggage_session = None
        if self._baggage is not None:
            raw = environ.get("HTTP_BAGGAGE")
            baggage_user, baggage_session = self._baggage.read(
                [raw] if raw else [], environ.get("REMOTE_ADDR")
            )
        if self._user_id is not None:
            user_id = normalize_id("user_id", self._user_id(environ))
        else:
            user_id = baggage_user or normalize_id(
                "user_id", environ.get(_USER_ENVIRON)
            )
        if self._session_id is not None:
            session_id = normalize_id("session_id", self._session_id(environ))
        else:
            session_id = baggage_session or normalize_id(
                "session_id", environ.get(_SESSION_ENVIRON)
            )
        metadata: Mapping[str, str]
        if callable(self._metadata):
            metadata = resolve_metadata(self._metadata(environ))
        else:
            metadata = self._metadata or {}
        return open_scope(user_id, session_id, metadata)

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if in_request():
            return self.app(environ, start_response)
        request = RequestScope()
        environ[ENVIRON_KEY] = request
        request_mark = begin_request()
        request_session = set_request_session(request.session)
        try:
            try:
                scope = self._open(environ)
            except Exception:  # noqa: BLE001 - a failing resolver must not fail the request
                request.fail("the WSGI middleware")
            else:
                request.enter(scope)
            try:
                body = self.app(environ, request.start_response(start_response))
            finally:
                # The app has returned (or raised): restore this context now, in
                # the context that activated the scopes. The body runs in the
                # final scope on its own.
                request.release()
        except BaseException:
            leave()  # the request is over
            raise
        finally:
            reset_request_session(request_session)
            end_request(request_mark)
        final = request.scope
        file_wrapper = environ.get("wsgi.file_wrapper")
        if final is None or (
            isinstance(file_wrapper, type) and isinstance(body, file_wrapper)
        ):
            # Files sent with the server's file wrapper keep their fast path.
            leave()  # the request is over
            return body
        return _ScopedBody(final, body)
