"""
Flask integration: one context_trace scope per request.

``ContextTrace(app)`` wraps ``app.wsgi_app`` (Flask's documented middleware
hook) in :class:`~context_trace.integrations.ContextTraceWSGIMiddleware`, which
does the per-request work, and registers one ``before_request`` function.

How the resolvers and streaming fit together:

- ``wsgi_app`` runs *outside* Flask's request context, so the middleware reads
  the ``X-User-Id`` / ``X-Session-Id`` defaults from the WSGI environ and opens
  the request's scope before Flask does anything. A field with a resolver of
  your own is left out there.
- Your resolvers run in the ``before_request`` function, inside the request
  context, so they can use ``flask.request``, ``flask.g`` and flask-login's
  ``current_user``. It activates a refined scope (your values override the
  header ones) for the rest of the request, in the same context the middleware
  activated its own, so the middleware restores both once ``wsgi_app`` returns.
  It runs after the ``before_request`` functions registered before
  :meth:`ContextTrace.init_app`, so set up authentication first if your
  resolver reads what it stores on ``g``.
- Streamed bodies run after ``wsgi_app`` has returned, often on another thread.
  The middleware returns a body that runs every chunk and ``close()`` in a
  context of its own where the request's (refined) scope is active (entered
  once per body, not once per chunk), so a generator that calls
  ``chain.stream`` (with or without ``stream_with_context``) is attributed.
  A view's own ``@track_user`` scope ends when the view returns: to attribute
  a stream to the view's user, decorate the generator function itself.

Pushing a second request context from the middleware to run the resolvers
would also work, but it would open the session twice and run before every
``before_request`` function, so ``g`` would still be empty.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Mapping
from typing import Any

try:
    import flask
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "context_trace.integrations.flask requires Flask; "
        "install 'context-trace[flask]'"
    ) from exc

from context_trace._baggage import BaggageTrust
from context_trace._integration_api import normalize_id

from ._wsgi import (
    ENVIRON_KEY,
    USER_HEADER,
    ContextTraceWSGIMiddleware,
    RequestScope,
    check_baggage_trust,
    check_metadata_source,
    check_source,
    resolve_metadata,
)

__all__ = ["ContextTrace"]

_logger = logging.getLogger(__name__)

_EXTENSION_KEY = "context_trace"


def _no_value(environ: object) -> None:
    """Leaves a field to the ``before_request`` resolver."""
    return None


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or spec-less module in sys.modules
        return False


def _login_user_id() -> str | None:
    """flask-login's authenticated user id, when the app uses flask-login."""
    if getattr(flask.current_app, "login_manager", None) is None:
        return None
    user = importlib.import_module("flask_login").current_user
    if user is None or not user.is_authenticated:
        return None
    return normalize_id("user_id", user.get_id())


class ContextTrace:
    """
    The Flask extension: attribute every LangChain run of a request to its user.

    Use ``ContextTrace(app)``, or ``ext = ContextTrace()`` and later
    ``ext.init_app(app)`` in an app factory. Views can still narrow the scope
    per route with ``@track_user(user_id=lambda user_id: user_id)``.

    When the request has a session id, its turns go into a
    :class:`~context_trace.Session` with that id, and the id is echoed in the
    ``X-Session-Id`` response header.

    Args:
        app: The Flask app to set up now, or None to call :meth:`init_app` later.
        user_id: A callable with no arguments, run in the request context (it may
            use ``flask.request``), returning the user id (str, int or None).
            Default: the ``X-User-Id`` header, else flask-login's
            ``current_user.get_id()`` for an authenticated user when flask-login
            is installed.
        session_id: The same for the session id. Default: the ``X-Session-Id``
            header.
        metadata: ``str -> str`` metadata for every turn, or a callable with no
            arguments returning it (run in the request context).
        accept_baggage: Read the user and session from the request's W3C
            ``baggage`` entries (``user.id``, ``session.id``) when the sender
            is trusted (see :class:`~context_trace.integrations.BaggageTrust`;
            the peer is ``REMOTE_ADDR``). Default None: baggage is not read.
            Your resolvers (and flask-login) win over baggage, which wins over
            the ``X-User-Id`` / ``X-Session-Id`` headers.

    Raises:
        TypeError: a resolver is not callable, *metadata* is neither a
            mapping of str nor a callable, or *accept_baggage* is not a
            ``BaggageTrust``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        user_id: Callable[[], Any] | None = None,
        session_id: Callable[[], Any] | None = None,
        metadata: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        accept_baggage: BaggageTrust | None = None,
    ) -> None:
        check_source("user_id", user_id)
        check_source("session_id", session_id)
        self._baggage = check_baggage_trust(accept_baggage)
        self._user_id = user_id
        self._session_id = session_id
        self._metadata = check_metadata_source(metadata)
        self._login = _module_available("flask_login")
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """
        Wrap *app*'s ``wsgi_app`` and register the resolver hook.

        Calling it again for the same app does nothing.

        Args:
            app: The Flask application.

        Raises:
            TypeError: *app* is not a Flask app.
            RuntimeError: another :class:`ContextTrace` is already set up on *app*.

        .. versionadded:: 0.1.0
        """
        if not isinstance(app, flask.Flask):
            raise TypeError(f"app must be a flask.Flask, got {type(app).__name__}")
        existing = app.extensions.get(_EXTENSION_KEY)
        if existing is self:
            return
        if existing is not None or isinstance(app.wsgi_app, ContextTraceWSGIMiddleware):
            raise RuntimeError("context_trace is already set up on this Flask app")
        # First: Flask refuses new hooks once the app has served a request, and
        # then wsgi_app must stay as it is.
        app.before_request(self._before_request)
        app.wsgi_app = ContextTraceWSGIMiddleware(  # type: ignore[method-assign]
            app.wsgi_app,
            user_id=_no_value if self._user_id is not None else None,
            session_id=_no_value if self._session_id is not None else None,
            metadata=None if callable(self._metadata) else self._metadata,
            accept_baggage=self._baggage,
        )
        app.extensions[_EXTENSION_KEY] = self

    def _before_request(self) -> None:
        request = flask.request.environ.get(ENVIRON_KEY)
        if not isinstance(request, RequestScope):
            return  # not served through our middleware (e.g. a test request context)
        try:
            user_id: str | None = None
            if self._user_id is not None:
                user_id = normalize_id("user_id", self._user_id())
            elif self._login and not flask.request.headers.get(USER_HEADER, "").strip():
                user_id = _login_user_id()
            session_id: str | None = None
            if self._session_id is not None:
                session_id = normalize_id("session_id", self._session_id())
            metadata = (
                resolve_metadata(self._metadata()) if callable(self._metadata) else None
            )
            request.refine(user_id, session_id, metadata)
        except Exception:  # noqa: BLE001 - a failing resolver must not fail the request
            request.fail("the Flask before_request hook")
