"""
Per-request scopes: who is talking, in which session, with which metadata.

A :class:`Scope` is immutable. Entering ``track_user`` or ``context_session``
builds a new scope from the current one (inner values override, metadata merges)
and *activates* it: three ContextVars are set and their tokens kept so leaving
restores the outer state exactly, whatever happened in between.

- ``_ACTIVE_SCOPE`` holds the scope itself (``current_user()`` and friends).
- ``_ACTIVE_HANDLER`` holds the scope's recording handler. It is registered with
  LangChain's ``register_configure_hook`` so every run configured in this context
  gets the handler, with no ``callbacks=`` passed anywhere.
- LangChain's own ``var_child_runnable_config`` gets ``user_id``/``session_id``
  merged into its metadata, so the app's own handlers and tracers (LangSmith) see
  them on the runs (``run_metadata``, on by default).

ContextVars are copied into asyncio tasks and into LangChain's executor threads
(``batch`` uses ``contextvars.copy_context``), so scopes follow the work there.
Plain threads start with an empty context: :func:`propagate`,
:class:`ContextThreadPoolExecutor` and :func:`instrument_threads` carry it over.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar, Token, copy_context
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar, cast
from uuid import UUID

import wrapt
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers.context import register_configure_hook

from . import _handler, _runtime
from ._log import log_once
from ._record import Feedback, new_id
from ._state import STATE

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from ._handler import RecordingHandler

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

_logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

IdLike = str | int | UUID
IdSource = IdLike | Callable[..., Any] | None

_ACTIVE_SCOPE: ContextVar[Scope | None] = ContextVar(
    "context_trace.active_scope", default=None
)
_ACTIVE_HANDLER: ContextVar[RecordingHandler | None] = ContextVar(
    "context_trace.active_handler", default=None
)
# The tokens of the innermost activation in this context (see Scope.activate).
_TOKENS: ContextVar[list[Any] | None] = ContextVar(
    "context_trace.scope_tokens", default=None
)
# Set by the web integrations for the length of a request (see RequestSession).
_REQUEST_SESSION: ContextVar[RequestSession | None] = ContextVar(
    "context_trace.request_session", default=None
)
# inheritable=True: child runs keep the handler even when they are configured in
# another context (LangChain copies handlers from the parent run manager).
register_configure_hook(_ACTIVE_HANDLER, True)

_RATINGS = (-1, 0, 1)


# --------------------------------------------------------------------------- values
def _check_id(name: str, value: object, *, allow_callable: bool) -> None:
    """Reject bad user/session ids early, naming the parameter."""
    if value is None:
        return
    if isinstance(value, bool) or not (
        isinstance(value, (str, int, UUID)) or (allow_callable and callable(value))
    ):
        expected = (
            "a str, an int, a UUID or a callable"
            if allow_callable
            else "a str, an int or a UUID"
        )
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{name} must not be empty")


def _check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """Turn metadata into ``str -> str`` now, so a bad value fails at the call site."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(
                f"metadata keys must be str, got {type(key).__name__} {_safe_repr(key)}"
            )
        if isinstance(value, str):
            out[key] = value
            continue
        cls: Any = type(value)
        if cls.__str__ is object.__str__ and cls.__repr__ is object.__repr__:
            raise TypeError(
                f"metadata[{key!r}] must be a str or have a meaningful str(), "
                f"got {cls.__name__}"
            )
        try:
            out[key] = str(value)
        except Exception as exc:  # the app's own __str__/__repr__ raised
            raise TypeError(
                f"metadata[{key!r}] must be a str or have a working str(): str() of"
                f" its {cls.__name__} raised {type(exc).__name__}"
            ) from exc
    return out


def _safe_repr(value: object) -> str:
    """``repr(value)``, or a placeholder when the value's own repr raises."""
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - only for an error message
        return f"<{type(value).__name__} whose repr() raised>"


def _being_decorated(value: Any, frame: FrameType | None) -> bool:
    """
    Whether *value* is a function the calling code is decorating right now.

    ``@track_user`` without parentheses hands the decorated function to
    ``track_user`` as its first argument, where a resolver is allowed. A
    resolver is a function that already has its name (or a lambda); the
    function under a decorator was just made by the code calling us (its code
    is one of that code's constants) and is not bound to its name yet.
    """
    if isinstance(value, (classmethod, staticmethod)):
        return True  # a bare decorator above @classmethod/@staticmethod
    name = getattr(value, "__name__", None)
    if frame is None or not isinstance(name, str) or name == "<lambda>":
        return False
    try:
        code = getattr(inspect.unwrap(value), "__code__", None)
        if code is None or code not in frame.f_code.co_consts:
            return False
        return frame.f_locals.get(name) is not value
    except Exception:  # noqa: BLE001 - a heuristic must never break the app
        return False


def _caller() -> FrameType | None:
    """The frame that called ``track_user``/``context_session`` (None if unknown)."""
    try:
        return sys._getframe(2)
    except (AttributeError, ValueError):  # not CPython, or no such frame
        return None


def _check_source(
    factory: str, name: str, value: object, frame: FrameType | None, bare: bool
) -> None:
    """
    Reject what can never work as a resolver, when the decorator is made.

    *bare* is set for the first positional parameter, the one a decorator
    applied without parentheses fills with the decorated function.
    """
    if not callable(value) and not isinstance(value, classmethod):
        return
    if bare and _being_decorated(value, frame):
        inner: Any = getattr(value, "__func__", value)
        fn = f"{getattr(inner, '__qualname__', type(inner).__name__)}()"
        if factory == "track_user":
            raise TypeError(
                "track_user needs a user id or a resolver: write"
                " @track_user(user_id=lambda user_id: user_id) (with parentheses,"
                ' naming the parameter that holds the id) or @track_user("alice")'
                f" above {fn}; @track_user alone passes {fn} itself as the user id"
            )
        raise TypeError(
            "context_session is called to make the decorator: write"
            f" @context_session() above {fn} (a new session per call), or"
            " @context_session(session_id=lambda session_id: session_id) to take"
            f" the id from an argument; @context_session alone passes {fn} itself"
            " as the session id"
        )
    if isinstance(value, (classmethod, staticmethod)):
        raise TypeError(
            f"{name} must be a str, an int or a callable, got {type(value).__name__}"
        )
    target = inspect.unwrap(cast("Callable[..., Any]", value))
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        raise TypeError(
            f"{name} resolver {_qualname(target)} is async: {factory}() calls"
            " resolvers synchronously, so it must return the id itself"
        )
    if inspect.isgeneratorfunction(target):
        raise TypeError(
            f"{name} resolver {_qualname(target)} is a generator function:"
            " it must return the id itself"
        )


def _warn_literal_parameter(
    name: str, source: IdSource, target: Callable[..., Any]
) -> None:
    """Warn when a literal id is the name of one of the decorated function's parameters."""
    if not isinstance(source, str) or not source.isidentifier():
        return
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return
    param = parameters.get(source)
    if param is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
        return
    warnings.warn(
        f"{name}={source!r} on {_qualname(target)}() is a literal id: every call is"
        f" recorded with {name} {source!r}, not the value of its {source!r}"
        f" argument. To use the argument, write {name}=lambda {source}: {source}",
        UserWarning,
        stacklevel=3,
    )


def normalize_id(name: str, value: object) -> str | None:
    """
    Normalise a resolved id (from a resolver callable or a header) to str or None.

    A str is stripped (blank is None), an int is its decimal text and a UUID its
    canonical form (``str(uuid)``: lowercase, hyphenated).

    Raises:
        TypeError: the value is neither None, a str, an int nor a UUID.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, UUID)):
        raise TypeError(
            f"{name} resolver returned {type(value).__name__},"
            " expected a str, an int or a UUID"
        )
    text = str(value).strip()
    return text or None


# --------------------------------------------------------------------------- session
class Session:
    """
    One conversation thread: every turn recorded inside it shares ``id``.

    Created by :func:`context_session`; read it with :func:`current_session`.

    Attributes:
        id: The session id (generated as 32 hex characters when not given).
        user_id: The user the session was opened for, if any.
        metadata: ``str -> str`` metadata attached to every turn in the session.
        ratings: Ratings given with :meth:`rate`, oldest first.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "id",
        "last_trace_id",
        "last_turn_id",
        "metadata",
        "ratings",
        "sampled",
        "user_id",
    )

    def __init__(
        self,
        id: str,
        user_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        *,
        sampled: bool = True,
    ) -> None:
        self.id = id
        self.user_id = user_id
        self.metadata: dict[str, str] = dict(metadata or {})
        self.ratings: list[int] = []
        self.sampled = sampled
        #: id of the last turn this session answered in this process (set by the
        #: recorder when a turn ends without an error): what ``rate`` targets
        self.last_turn_id: str | None = None
        #: that turn's OpenTelemetry trace, when it ran inside the app's
        self.last_trace_id: str | None = None

    def rate(self, rating: int, *, turn_id: str | None = None) -> None:
        """
        Rate one answer of the session: -1 (bad), 0 (neutral) or +1 (good).

        Call it where the user gives feedback: in the same request, or from a
        separate feedback endpoint that opens the session by its id. It only
        queues the rating, never waits for the store. The rating targets
        *turn_id* when given, else the session's last answered turn at the
        time of the call; it belongs to the session's user, and the last
        rating of a turn wins. Where it is written, a rating whose session or
        turn the store does not hold is not stored: it is counted in
        ``stats()["rejected"]`` and logged once, naming the session.

        Args:
            rating: -1, 0 or 1.
            turn_id: The turn to rate (``Session.last_turn_id`` in the request
                that ran it, or a ``conversation_id`` read back from the store).

        Raises:
            ValueError: if *rating* is not -1, 0 or 1, or *turn_id* is empty.
            TypeError: if *turn_id* is not a str.
        """
        # type() rather than isinstance(): True and 1.0 compare equal to 1.
        if type(rating) is not int or rating not in _RATINGS:
            raise ValueError(f"rating must be -1, 0 or 1, got {rating!r}")
        if turn_id is not None:
            if not isinstance(turn_id, str):
                raise TypeError(
                    f"turn_id must be a str (a turn's id), got {type(turn_id).__name__}"
                )
            if not turn_id.strip():
                raise ValueError("turn_id must not be empty")
        self.ratings.append(int(rating))
        if not self.sampled or not _runtime.active_config().enabled:
            return
        scope = _ACTIVE_SCOPE.get()
        user_id = scope.user_id if scope is not None and scope.user_id else self.user_id
        # The last answered turn this process saw in this session object, if
        # any; else the store finds it where the rating is written.
        explicit = turn_id is not None
        _runtime.emit(
            Feedback(
                id=new_id(),
                session_id=self.id,
                user_id=user_id,
                rating=int(rating),
                conversation_id=turn_id if explicit else self.last_turn_id,
                trace_id=None if explicit else self.last_trace_id,
            )
        )

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, user_id={self.user_id!r})"


class RequestSession:
    """
    The session a web request put its turns in last, for its ``X-Session-Id``.

    A web integration makes one per request and sets it in ``_REQUEST_SESSION``
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


# --------------------------------------------------------------------------- scope
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
        if _runtime.wants_run_metadata():
            # Merged into LangChain's inherited config so every run's metadata (the
            # app's own handlers, LangSmith and other tracers) carries
            # user_id/session_id. LangChain pays for propagating metadata through
            # every child run; run_metadata="auto" or False saves that.
            parent = var_child_runnable_config.get()
            metadata = {
                **((parent or {}).get("metadata") or {}),
                **self._run_metadata(),
            }
            config = cast("RunnableConfig", {**(parent or {}), "metadata": metadata})
            config_token = var_child_runnable_config.set(config)
        # The tokens live in a ContextVar, not on the scope: one Scope may be active
        # in several threads or tasks at once (a shared stream, a shared factory),
        # and each context must restore its own outer state.
        entry: list[Any] = [
            _ACTIVE_SCOPE.set(self),
            _ACTIVE_HANDLER.set(self.handler),
            config_token,
            None,
        ]
        entry[3] = _TOKENS.set(entry)

    def deactivate(self) -> None:
        """Restore the state from before the matching :meth:`activate` in this context."""
        entry = _TOKENS.get()
        if entry is None:
            _logger.debug(
                "context_trace: deactivate() without activate() in this context"
            )
            return
        scope_token, handler_token, config_token, own_token = entry
        try:
            _TOKENS.reset(own_token)
            if config_token is not None:
                var_child_runnable_config.reset(config_token)
            _ACTIVE_HANDLER.reset(handler_token)
            _ACTIVE_SCOPE.reset(scope_token)
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
    if _ACTIVE_SCOPE.get() is None:
        _runtime.on_outermost_exit()


def _build_scope(
    user_id: str | None,
    session: Session | None,
    metadata: Mapping[str, str],
    *,
    inherit: bool = True,
) -> Scope:
    """A scope derived from the current one: given values override, metadata merges."""
    outer = _ACTIVE_SCOPE.get() if inherit else None
    if outer is not None:
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


# --------------------------------------------------------------------------- wrappers
class _ScopedIterator(Iterator[T]):
    """Re-enter *scope* for every step (and ``close``) of a sync iterator."""

    __slots__ = ("_it", "_scope")

    def __init__(self, scope: Scope, it: Iterator[T]) -> None:
        self._scope = scope
        self._it = it

    def __iter__(self) -> _ScopedIterator[T]:
        return self

    def __next__(self) -> T:
        try:
            with self._scope:
                return next(self._it)
        except StopIteration:
            leave()  # the stream's turn is over
            raise

    def send(self, value: Any) -> T:
        with self._scope:
            return cast(T, self._it.send(value))  # type: ignore[attr-defined]

    def throw(self, *args: Any) -> T:
        with self._scope:
            return cast(T, self._it.throw(*args))  # type: ignore[attr-defined]

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            with self._scope:
                close()


class _ScopedAsyncIterator(AsyncIterator[T]):
    """Re-enter *scope* for every step (and ``aclose``) of an async iterator."""

    __slots__ = ("_it", "_scope")

    def __init__(self, scope: Scope, it: AsyncIterator[T]) -> None:
        self._scope = scope
        self._it = it

    def __aiter__(self) -> _ScopedAsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            with self._scope:
                return await self._it.__anext__()
        except StopAsyncIteration:
            leave()  # the stream's turn is over
            raise

    async def asend(self, value: Any) -> T:
        with self._scope:
            return cast(T, await self._it.asend(value))  # type: ignore[attr-defined]

    async def athrow(self, *args: Any) -> T:
        with self._scope:
            return cast(T, await self._it.athrow(*args))  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        aclose = getattr(self._it, "aclose", None)
        if aclose is not None:
            with self._scope:
                await aclose()


def _wrap_result(scope: Scope, result: Any) -> Any:
    """
    A returned generator keeps the scope for every later step.

    So does the body of a streamed web response a decorated view returns: a
    Flask/Werkzeug ``Response`` over a generator (``is_streamed``, body in
    ``.response``) or a Starlette ``StreamingResponse`` (``.body_iterator``). The
    server iterates those after the view returned, outside the view's scope.
    """
    if inspect.isgenerator(result):
        return _ScopedIterator(scope, result)
    if inspect.isasyncgen(result):
        return _ScopedAsyncIterator(scope, result)
    body = getattr(result, "body_iterator", None)
    if body is not None and inspect.isasyncgen(body):
        result.body_iterator = _ScopedAsyncIterator(scope, body)
    elif getattr(result, "is_streamed", False):
        body = getattr(result, "response", None)
        if inspect.isgenerator(body):
            result.response = _ScopedIterator(scope, body)
    return result


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or repr(obj)
    return f"{module}.{name}" if module else name


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _make_resolver(
    name: str, source: Callable[..., Any], wrapped: Callable[..., Any]
) -> Callable[[tuple[Any, ...], dict[str, Any], Any], Any]:
    """
    Bind *source* to the decorated function's parameters, by name.

    Every call is bound to *wrapped*'s signature with its defaults applied, so
    the resolver gets the parameters it declares by name, however the caller
    passed them (positionally or by keyword), and all of them when it takes
    ``**kwargs``. ``self``/``cls`` only when the resolver names them. What can
    be checked without a call is checked now: a resolver naming a parameter the
    function lacks, or one it can never be given, is a TypeError at decoration.
    """
    fn_name, src_name = _qualname(wrapped), _qualname(source)
    try:
        source_sig = inspect.signature(source)
        target_sig = inspect.signature(wrapped)
    except (TypeError, ValueError):  # no signature (some builtins): pass it as is
        return lambda args, kwargs, instance: source(*args, **kwargs)
    target = target_sig.parameters
    target_takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in target.values())
    var_names = {
        p.name for p in target.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    source_takes_kwargs = False
    wanted: list[str] = []
    for p in source_sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            source_takes_kwargs = True
        elif p.kind is p.POSITIONAL_ONLY and p.default is p.empty:
            raise TypeError(
                f"{name} resolver {src_name} for {fn_name}() has positional-only"
                f" parameter {p.name!r}: resolvers are called with the function's"
                " arguments by name"
            )
        elif p.kind in _NAMED:
            if p.name not in target and not target_takes_kwargs:
                raise TypeError(
                    f"{name} resolver {src_name} takes parameter {p.name!r}, which"
                    f" {fn_name}() does not have (it takes"
                    f" {', '.join(target) or 'no parameters'})"
                )
            wanted.append(p.name)
    # Bound methods come in through wrapt without self/cls in args.
    names = list(target)
    drop_first = bool(names) and names[0] in ("self", "cls")
    implicit = {names[0]} if drop_first else set()

    def resolve(args: tuple[Any, ...], kwargs: dict[str, Any], instance: Any) -> Any:
        call_args = (instance, *args) if drop_first and instance is not None else args
        bound = target_sig.bind(*call_args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        for var in var_names & values.keys():
            if target[var].kind is inspect.Parameter.VAR_KEYWORD:
                values = {**values, **values[var]}
        if source_takes_kwargs:
            given = {
                k: v
                for k, v in values.items()
                if k not in var_names and (k not in implicit or k in wanted)
            }
            return source(**given)
        return source(**{n: values[n] for n in wanted if n in values})

    return resolve


class _ScopeFactory:
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
        user_id = self._value(self._user_id, "user_id", resolve)
        session: Session | None = None
        if self._new_session:
            session_id = (
                self._value(self._session_id, "session_id", resolve) or new_id()
            )
            outer = _ACTIVE_SCOPE.get()
            session = Session(
                session_id,
                user_id if user_id is not None else (outer.user_id if outer else None),
                self._metadata,
                sampled=_runtime.active_config().keep_session(session_id),
            )
            request = _REQUEST_SESSION.get()
            if request is not None:
                request.id = session_id
        return _build_scope(user_id, session, self._metadata)

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
        scope = _ACTIVE_SCOPE.get()
        if scope is not None:
            leave(scope)

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
        _warn_literal_parameter("user_id", self._user_id, target)
        _warn_literal_parameter("session_id", self._session_id, target)
        resolvers = {
            name: _make_resolver(name, source, target)
            for name, source in (
                ("user_id", self._user_id),
                ("session_id", self._session_id),
            )
            if callable(source)
        }
        factory = self
        fn_name = _qualname(target)
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
                if _ACTIVE_SCOPE.get() is None:
                    return Scope(None, None, {}, None)
                return _build_scope(None, None, {}, inherit=True)

        if inspect.isasyncgenfunction(target):

            def asyncgen_wrapper(
                wrapped: Any, instance: Any, args: Any, kwargs: Any
            ) -> Any:
                scope = open_for(instance, args, kwargs)
                with scope:
                    gen = wrapped(*args, **kwargs)
                return _ScopedAsyncIterator(scope, gen)

            wrapper: Callable[..., Any] = asyncgen_wrapper
        elif inspect.iscoroutinefunction(target):

            async def async_wrapper(
                wrapped: Any, instance: Any, args: Any, kwargs: Any
            ) -> Any:
                scope = open_for(instance, args, kwargs)
                scope.activate()
                try:
                    return _wrap_result(scope, await wrapped(*args, **kwargs))
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
                    return _wrap_result(scope, wrapped(*args, **kwargs))
                finally:
                    leave(scope)

            wrapper = sync_wrapper
        return cast(F, wrapt.decorator(wrapper)(func))


def track_user(
    user_id: IdSource,
    *,
    session_id: IdSource = None,
    metadata: Mapping[str, Any] | None = None,
) -> _ScopeFactory:
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
    if user_id is None:
        raise TypeError(
            "track_user() user_id must be a non-empty str, an int, a UUID or a"
            " callable,"
            " got None (for a request with no user, pass a callable that returns None)"
        )
    _check_source("track_user", "user_id", user_id, _caller(), bare=True)
    _check_source("track_user", "session_id", session_id, None, bare=False)
    _check_id("user_id", user_id, allow_callable=True)
    _check_id("session_id", session_id, allow_callable=True)
    meta = _check_metadata(metadata)
    if session_id is not None:
        return _ScopeFactory(user_id, session_id, meta, new_session=True)
    return _ScopeFactory(user_id, None, meta, new_session=False)


def context_session(
    session_id: IdSource = None,
    *,
    user_id: IdSource = None,
    metadata: Mapping[str, Any] | None = None,
) -> _ScopeFactory:
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
    _check_source("context_session", "session_id", session_id, _caller(), bare=True)
    _check_source("context_session", "user_id", user_id, None, bare=False)
    _check_id("session_id", session_id, allow_callable=True)
    _check_id("user_id", user_id, allow_callable=True)
    meta = _check_metadata(metadata)
    return _ScopeFactory(user_id, session_id, meta, new_session=True)


def open_scope(
    user_id: str | None, session_id: str | None, metadata: Mapping[str, str]
) -> Scope:
    """
    Build (not activate) a scope from already-resolved values (integrations).

    A *session_id* opens a :class:`Session` with that id; None keeps the outer
    session, if any: what ``track_user(user_id, session_id=..., metadata=...)``
    does on entry, without validating again.
    """
    factory = _ScopeFactory(
        user_id, session_id, dict(metadata), new_session=session_id is not None
    )
    return factory._open()


# --------------------------------------------------------------------------- accessors
def current_scope() -> Scope | None:
    """The active :class:`Scope`, or None outside every scope."""
    return _ACTIVE_SCOPE.get()


def current_user() -> str | None:
    """
    The user id of the active scope, or None.

    .. versionadded:: 0.1.0
    """
    scope = _ACTIVE_SCOPE.get()
    return scope.user_id if scope is not None else None


def current_session() -> Session | None:
    """
    The active :class:`Session`, or None outside every session.

    .. versionadded:: 0.1.0
    """
    scope = _ACTIVE_SCOPE.get()
    return scope.session if scope is not None else None


def current_handler() -> RecordingHandler | None:
    """
    The recording callback handler of the active scope, or None.

    Pass it yourself only where LangChain cannot see the context (it normally
    picks it up on its own).

    .. versionadded:: 0.1.0
    """
    return _ACTIVE_HANDLER.get()


def runnable_config() -> RunnableConfig:
    """
    A ``RunnableConfig`` carrying the active scope, for code that passes configs.

    It holds the scope's handler in ``callbacks`` and ``user_id``/``session_id``
    in ``metadata``. Outside a scope it is empty.

    .. versionadded:: 0.1.0
    """
    from langchain_core.runnables import RunnableConfig

    scope = _ACTIVE_SCOPE.get()
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
    scope = _ACTIVE_SCOPE.get()
    out: dict[str, str] = {}
    if scope is None:
        return out
    if scope.user_id is not None:
        out["X-User-Id"] = scope.user_id
    if scope.session is not None:
        out["X-Session-Id"] = scope.session.id
    return out


# --------------------------------------------------------------------------- threads
def propagate(fn: Callable[..., T]) -> Callable[..., T]:
    """
    Wrap *fn* to run in a copy of the current context (scope included).

    Use it for work you hand to a plain thread or a pool you don't control:
    ``threading.Thread(target=propagate(work)).start()``.

    .. versionadded:: 0.1.0
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    ctx = copy_context()

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        # A fresh copy per call: one context may not be entered twice at once.
        return ctx.copy().run(fn, *args, **kwargs)

    return run


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """
    A ``ThreadPoolExecutor`` whose tasks run in the submitter's context.

    Drop-in for ``concurrent.futures.ThreadPoolExecutor``: ``submit`` and ``map``
    carry the active scope into the worker threads.

    .. versionadded:: 0.1.0
    """

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        ctx = copy_context()
        return super().submit(ctx.run, fn, *args, **kwargs)


_original_start: Callable[..., Any] | None = None
_original_submit: Callable[..., Any] | None = None
_instrument_lock = threading.Lock()


def instrument_threads() -> None:
    """
    Make every ``Thread.start`` and ``ThreadPoolExecutor.submit`` carry the scope.

    For apps whose thread pools live in libraries they don't control. Opt-in and
    process-wide; undo with :func:`uninstrument_threads`. Calling it twice is safe.

    Every executor task runs in the context of the code that submitted it. A
    plain thread started inside a scope keeps that scope for its whole life:
    right for per-request worker threads, wrong for a long-lived background
    thread a library starts lazily during a request (start such threads outside
    any scope).

    .. versionadded:: 0.1.0
    """
    global _original_start, _original_submit
    with _instrument_lock:
        if _original_start is not None:
            return
        _original_start = threading.Thread.start
        _original_submit = ThreadPoolExecutor.submit
        original_start = _original_start
        original_submit = _original_submit

        def start(self: threading.Thread) -> None:
            if _ACTIVE_SCOPE.get() is not None and hasattr(self, "run"):
                ctx = copy_context()
                run = self.run
                self.run = lambda: ctx.run(run)  # type: ignore[method-assign]
            original_start(self)

        def submit(
            self: ThreadPoolExecutor,
            fn: Callable[..., Any],
            /,
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            if isinstance(self, ContextThreadPoolExecutor):
                return original_submit(self, fn, *args, **kwargs)
            # Always the submitter's context, scoped or not: a pool's worker
            # threads may have started inside some request's scope, and a task
            # submitted outside any scope must not run in that one.
            return original_submit(self, copy_context().run, fn, *args, **kwargs)

        threading.Thread.start = start  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = submit  # type: ignore[method-assign,assignment]
        STATE.undo["threads"] = uninstrument_threads


def uninstrument_threads() -> None:
    """
    Undo :func:`instrument_threads`. Safe to call when not instrumented.

    .. versionadded:: 0.1.0
    """
    global _original_start, _original_submit
    with _instrument_lock:
        if _original_start is None:
            return
        threading.Thread.start = _original_start  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = _original_submit  # type: ignore[assignment,method-assign]
        _original_start = _original_submit = None
        STATE.undo.pop("threads", None)
