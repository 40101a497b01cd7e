"""
``track_user`` and ``context_session``: decorators and context managers that open scopes.

Each use of a :class:`ScopeFactory` builds a fresh scope (resolving ids from
the decorated function's arguments when given resolvers), activates it for the
call or the ``with`` block, and leaves it with :func:`~._activation.leave`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import wrapt

from . import _runtime
from ._activation import (
    ACTIVE,
    REQUEST_SESSION,
    SCOPE,
    Scope,
    build_scope,
    current_scope,
    leave,
)
from ._log import log_once
from ._record import new_id
from ._resolvers import (
    IdSource,
    caller,
    check_id,
    check_metadata,
    check_source,
    make_resolver,
    normalize_id,
    qualname,
    warn_literal_parameter,
)
from ._sessions import Session
from ._streams import ScopedAsyncIterator, wrap_result

__all__ = ["ScopeFactory", "context_session", "open_scope", "track_user"]

_logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class ScopeFactory:
    """
    What :func:`track_user` and :func:`context_session` return.

    A decorator (def, async def, generators, methods, classmethods,
    staticmethods) and a context manager (``with`` / ``async with``). Each use
    builds a fresh :class:`Scope`, so one factory can be shared across threads
    and tasks.
    """

    __slots__ = ("_metadata", "_new_session", "_session_id", "_user_id")

    def __init__(
        self,
        user_id: IdSource,
        session_id: IdSource,
        metadata: dict[str, str],
        new_session: bool,
    ) -> None:
        self._user_id = user_id
        self._session_id = session_id
        self._metadata = metadata
        self._new_session = new_session

    # -- building a scope ----------------------------------------------------
    def _open(self, resolve: Callable[[IdSource, str], Any] | None = None) -> Scope:
        source = self._user_id
        # A plain str (the usual ``track_user("id")``) is the id: no call.
        user_id = (
            source if type(source) is str else self._value(source, "user_id", resolve)
        )
        session: Session | None = None
        if self._new_session:
            session_id = (
                self._value(self._session_id, "session_id", resolve) or new_id()
            )
            outer = current_scope()
            session = Session(
                session_id,
                user_id if user_id is not None else (outer.user_id if outer else None),
                self._metadata,
                sampled=_runtime.active_config().keep_session(session_id),
            )
            request = REQUEST_SESSION.get()
            if request is not None:
                request.id = session_id
        return build_scope(user_id, session, self._metadata)

    @staticmethod
    def _value(
        source: IdSource, name: str, resolve: Callable[[IdSource, str], Any] | None
    ) -> str | None:
        if source is None:
            return None
        if callable(source):
            if resolve is None:
                raise TypeError(
                    f"{name} is a callable: use this as a decorator, not a context manager"
                )
            return normalize_id(name, resolve(source, name))
        return str(source)

    # -- context manager -----------------------------------------------------
    def __enter__(self) -> Any:
        scope = self._open()
        scope.activate()
        return scope.session if self._new_session else scope

    def __exit__(self, *exc: object) -> None:
        frame = ACTIVE.get()
        if frame is not None:
            leave(frame[SCOPE])

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)

    # -- decorator -----------------------------------------------------------
    def __call__(self, func: F) -> F:
        target_any: Any = func
        if not callable(target_any) and not isinstance(
            target_any, (classmethod, staticmethod)
        ):
            raise TypeError(
                f"track_user/context_session decorate a callable, got {type(func).__name__}"
            )
        target = (
            func.__func__ if isinstance(func, (classmethod, staticmethod)) else func
        )
        warn_literal_parameter("user_id", self._user_id, target)
        warn_literal_parameter("session_id", self._session_id, target)
        resolvers = {
            name: make_resolver(name, source, target)
            for name, source in (
                ("user_id", self._user_id),
                ("session_id", self._session_id),
            )
            if callable(source)
        }
        factory = self
        fn_name = qualname(target)
        log_key = f"resolver:{fn_name}:{id(target)}"

        def open_for(
            instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Scope:
            def resolve(source: IdSource, name: str) -> Any:
                # A resolver that raises or returns something that is not an id
                # gives no id, as None does: the request runs and its turns are
                # recorded (an outer scope's user kept, else with no user). Logged
                # once per function and id at WARNING, at DEBUG afterwards: one
                # broken route must not hide another.
                try:
                    value = resolvers[name](args, kwargs, instance)
                except Exception:  # noqa: BLE001 - a failing resolver must not break the app
                    log_once(
                        _logger,
                        f"{log_key}:{name}",
                        "context_trace: the %s resolver of %s() raised; the call"
                        " is recorded with no %s",
                        name,
                        fn_name,
                        name,
                        exc_info=True,
                    )
                    return None
                try:
                    return normalize_id(name, value)
                except TypeError:
                    log_once(
                        _logger,
                        f"{log_key}:{name}",
                        "context_trace: the %s resolver of %s() returned %s, which"
                        " is not an id (a str, an int or a UUID); the call is"
                        " recorded with no %s",
                        name,
                        fn_name,
                        type(value).__name__,
                        name,
                    )
                    return None

            try:
                return factory._open(resolve)
            except Exception:  # noqa: BLE001 - must not break the app
                log_once(
                    _logger,
                    log_key,
                    "context_trace: could not open the scope of %s(); running it"
                    " unattributed",
                    fn_name,
                    exc_info=True,
                )
                # Unscoped: the caller's state as it is (the outer scope, if any).
                # With no outer scope nothing is recorded, as for any code outside
                # a scope; a fresh anonymous recorder would record it as user None.
                if ACTIVE.get() is None:
                    return Scope(None, None, {}, None)
                return build_scope(None, None, {}, inherit=True)

        if inspect.isasyncgenfunction(target):

            def asyncgen_wrapper(
                wrapped: Any, instance: Any, args: Any, kwargs: Any
            ) -> Any:
                scope = open_for(instance, args, kwargs)
                with scope:
                    gen = wrapped(*args, **kwargs)
                return ScopedAsyncIterator(scope, gen)

            wrapper: Callable[..., Any] = asyncgen_wrapper
        elif inspect.iscoroutinefunction(target):

            async def async_wrapper(
                wrapped: Any, instance: Any, args: Any, kwargs: Any
            ) -> Any:
                scope = open_for(instance, args, kwargs)
                scope.activate()
                try:
                    return wrap_result(scope, await wrapped(*args, **kwargs))
                finally:
                    leave(scope)

            wrapper = async_wrapper
        else:

            def sync_wrapper(
                wrapped: Any, instance: Any, args: Any, kwargs: Any
            ) -> Any:
                scope = open_for(instance, args, kwargs)
                scope.activate()
                try:
                    return wrap_result(scope, wrapped(*args, **kwargs))
                finally:
                    leave(scope)

            wrapper = sync_wrapper
        return cast(F, wrapt.decorator(wrapper)(func))


def track_user(
    user_id: IdSource,
    *,
    session_id: IdSource = None,
    metadata: Mapping[str, Any] | None = None,
) -> ScopeFactory:
    """
    Attribute every LangChain run inside to *user_id*.

    Use it as a decorator on a request handler, or as ``with``/``async with``
    around chain calls. Nested scopes override the user and session and merge
    metadata; leaving restores the outer state.

    Args:
        user_id: A non-empty str, an int or a ``uuid.UUID`` (kept as its
            canonical string), or a resolver: a callable that receives, by
            name, the decorated function's arguments it declares (all of them
            if it takes ``**kwargs``; ``self`` only if it names it) and returns
            the id. A resolver returning None means "no user for this
            request": the turn is recorded with no user (an outer scope's
            user, if there is one, is kept). A resolver that raises or returns
            something that is not an id is treated the same way, and logged
            once per function with the parameter and the type it returned.
        session_id: Put the turns in this session (same forms as *user_id*).
        metadata: Extra ``str -> str`` details attached to every turn.

    Returns:
        A decorator that is also a (sync and async) context manager. As a
        context manager it yields the :class:`Scope`, or the :class:`Session`
        when *session_id* is given.

    Raises:
        TypeError: *user_id*, *session_id* or *metadata* has the wrong type, a
            resolver is async, or the decorator was written without
            parentheses (``@track_user``).
        ValueError: an id is an empty string.

    .. versionadded:: 0.1.0
    """
    if (
        type(user_id) is str
        and session_id is None
        and metadata is None
        and user_id.strip()
    ):
        # The usual request-path call, already valid: the checks below would
        # answer "fine" in ~1.5 µs.
        return ScopeFactory(user_id, None, {}, new_session=False)
    if user_id is None:
        raise TypeError(
            "track_user() user_id must be a non-empty str, an int, a UUID or a"
            " callable,"
            " got None (for a request with no user, pass a callable that returns None)"
        )
    check_source("track_user", "user_id", user_id, caller(), bare=True)
    check_source("track_user", "session_id", session_id, None, bare=False)
    check_id("user_id", user_id, allow_callable=True)
    check_id("session_id", session_id, allow_callable=True)
    meta = check_metadata(metadata)
    if session_id is not None:
        return ScopeFactory(user_id, session_id, meta, new_session=True)
    return ScopeFactory(user_id, None, meta, new_session=False)


def context_session(
    session_id: IdSource = None,
    *,
    user_id: IdSource = None,
    metadata: Mapping[str, Any] | None = None,
) -> ScopeFactory:
    """
    Group every turn inside into one conversation thread.

    ``with context_session() as s:`` yields a :class:`Session`; ``s.rate(1)``
    rates its last answer. As a decorator, every call opens its own session.

    Args:
        session_id: The thread's id (str, int, UUID, or a callable like
            *user_id* of :func:`track_user`). A new 32-hex-character id when
            None (and when a resolver gives no id).
        user_id: The user, when not already set by an outer :func:`track_user`.
        metadata: Extra ``str -> str`` details attached to every turn.

    Raises:
        TypeError: an argument has the wrong type, a resolver is async, or the
            decorator was written without parentheses (``@context_session``).
        ValueError: an id is an empty string.

    .. versionadded:: 0.1.0
    """
    check_source("context_session", "session_id", session_id, caller(), bare=True)
    check_source("context_session", "user_id", user_id, None, bare=False)
    check_id("session_id", session_id, allow_callable=True)
    check_id("user_id", user_id, allow_callable=True)
    meta = check_metadata(metadata)
    return ScopeFactory(user_id, session_id, meta, new_session=True)


def open_scope(
    user_id: str | None, session_id: str | None, metadata: Mapping[str, str]
) -> Scope:
    """
    Build (not activate) a scope from already-resolved values (integrations).

    A *session_id* opens a :class:`Session` with that id; None keeps the outer
    session, if any: what ``track_user(user_id, session_id=..., metadata=...)``
    does on entry, without validating again.
    """
    factory = ScopeFactory(
        user_id, session_id, dict(metadata), new_session=session_id is not None
    )
    return factory._open()
