"""
Checking what ``track_user``/``context_session`` are given, and binding resolvers.

Ids and metadata are checked when the scope factory is made, naming the
parameter; a resolver (a callable giving the id) is checked when the decorator
is applied and bound to the decorated function's parameters by name
(:func:`make_resolver`).
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, cast
from uuid import UUID

__all__ = [
    "IdLike",
    "IdSource",
    "caller",
    "check_id",
    "check_metadata",
    "check_source",
    "make_resolver",
    "normalize_id",
    "qualname",
    "warn_literal_parameter",
]

IdLike = str | int | UUID
IdSource = IdLike | Callable[..., Any] | None


def check_id(name: str, value: object, *, allow_callable: bool) -> None:
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


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
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


def caller() -> FrameType | None:
    """The frame that called ``track_user``/``context_session`` (None if unknown)."""
    try:
        return sys._getframe(2)
    except (AttributeError, ValueError):  # not CPython, or no such frame
        return None


def check_source(
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
            f"{name} resolver {qualname(target)} is async: {factory}() calls"
            " resolvers synchronously, so it must return the id itself"
        )
    if inspect.isgeneratorfunction(target):
        raise TypeError(
            f"{name} resolver {qualname(target)} is a generator function:"
            " it must return the id itself"
        )


def warn_literal_parameter(
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
        f"{name}={source!r} on {qualname(target)}() is a literal id: every call is"
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


def qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or repr(obj)
    return f"{module}.{name}" if module else name


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def make_resolver(
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
    fn_name, src_name = qualname(wrapped), qualname(source)
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
