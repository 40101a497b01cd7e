"""
Carrying the scope into threads: :func:`propagate`, :class:`ContextThreadPoolExecutor`, :func:`instrument_threads`.

ContextVars are copied into asyncio tasks and into LangChain's executor threads
(``batch`` uses ``contextvars.copy_context``), so scopes follow the work there.
Plain threads start with an empty context: these carry it over.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from typing import Any, TypeVar

from ._activation import ACTIVE
from ._state import STATE

__all__ = [
    "ContextThreadPoolExecutor",
    "instrument_threads",
    "propagate",
    "uninstrument_threads",
]

T = TypeVar("T")


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
            if ACTIVE.get() is not None and hasattr(self, "run"):
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
