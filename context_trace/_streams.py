"""
Stream wrappers: a generator (or streamed web response) keeps its scope for every step.

A decorated function that returns a generator, or a Flask/Starlette streaming
response, hands its body to code that iterates it later, outside the
function's scope. These wrappers run every step in one context of the
stream's own (a copy of the context that takes the first step, with the
scope activated once), as LangChain runs a stream's steps and as a task runs
a coroutine's, and :func:`~._activation.leave` once when the stream ends.
Entering the scope around each step instead would cost more per step and
would undo, after every ``yield``, a scope the generator entered itself.
"""

from __future__ import annotations

import contextvars
import inspect
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any, TypeVar, cast

from ._activation import Scope, leave

__all__ = ["ScopedAsyncIterator", "ScopedIterator", "wrap_result"]

T = TypeVar("T")


def _start(scope: Scope) -> contextvars.Context:
    """A stream's own context: a copy of the current one, with *scope* active in it."""
    context = contextvars.copy_context()
    context.run(scope.activate)
    return context


@types.coroutine
def _run_in(context: contextvars.Context, step: Any) -> Generator[Any, Any, Any]:
    """
    Await *step* (an async generator's ``asend``/``athrow``/``aclose``) in *context*.

    What ``asyncio.Task`` does for a task's coroutine, for one step: every
    ``send``/``throw`` into it runs in *context*, and what it yields (a future,
    or another event loop's trap) goes up to the awaiting task unchanged, so
    the task, its cancellation and its event loop stay the consumer's.
    """
    run = context.run
    send = step.send
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            signal = run(send, value) if error is None else run(step.throw, error)
        except StopIteration as stop:
            return stop.value
        try:
            value = yield signal
            error = None
        except GeneratorExit:
            run(step.close)
            raise
        except BaseException as exc:  # noqa: BLE001 - thrown into the step, as a task does
            error = exc
            value = None


class ScopedIterator(Iterator[T]):
    """
    Run every step of a sync generator in one context of its own, *scope* active.

    The context is a copy of the one that takes the first step, with the scope
    activated once; every ``next``/``send``/``throw``/``close`` runs in it, on
    whichever thread calls them. A scope (or any context variable) the
    generator sets therefore spans its yields, as its locals do, and nothing
    it sets leaks into its consumer. When the generator ends (exhausted,
    closed, or an exception left it), the scope's tokens are reset in that
    context, so it is freed by reference counting, and :func:`leave` runs once
    in the consumer's context (the serverless flush). A generator dropped
    half-read is closed in its own context when the wrapper is collected.
    """

    __slots__ = ("_context", "_it", "_scope")

    def __init__(self, scope: Scope, it: types.GeneratorType[T, Any, Any]) -> None:
        self._scope = scope
        self._it = it
        self._context: contextvars.Context | None = None

    def __iter__(self) -> ScopedIterator[T]:
        return self

    def _step(self, op: Callable[..., Any], *args: Any) -> Any:
        it = self._it
        if it.gi_running:
            # The generator steps itself: Python's own ValueError, not the
            # RuntimeError of a context entered twice.
            return op(*args)
        context = self._context
        if context is None:
            if it.gi_frame is None:  # finished: nothing runs any more
                return op(*args)
            context = self._context = _start(self._scope)
        try:
            return context.run(op, *args)
        except BaseException:
            if it.gi_frame is None:
                self._end(context)
            raise

    def _end(self, context: contextvars.Context) -> None:
        """The generator is over: free its context and leave the scope (once)."""
        if self._context is context:
            self._context = None
            context.run(self._scope.deactivate)
            leave()  # the stream's turn is over

    def __next__(self) -> T:
        return cast(T, self._step(self._it.__next__))

    def send(self, value: Any) -> T:
        return cast(T, self._step(self._it.send, value))

    def throw(self, *args: Any) -> T:
        return cast(T, self._step(self._it.throw, *args))

    def close(self) -> None:
        self._step(self._it.close)
        context = self._context
        if context is not None:
            self._end(context)

    def __del__(self) -> None:
        # Dropped half-read: close the generator in its own context, or its
        # finally blocks (an inner scope's exit among them) would run in
        # whichever context the collector happens to run in and restore that
        # one's outer state. No leave(): no flush from inside a finalizer.
        context = self._context
        if context is not None:
            self._context = None
            try:
                context.run(self._it.close)
            finally:
                context.run(self._scope.deactivate)


class ScopedAsyncIterator(AsyncIterator[T]):
    """
    Run every step of an async generator in one context of its own, *scope* active.

    As :class:`ScopedIterator`, for ``__anext__``/``asend``/``athrow``/``aclose``:
    each step's awaitable is driven by :func:`_run_in`, so the step runs in the
    generator's context inside the consumer's task (no task per step).
    """

    __slots__ = ("_context", "_it", "_scope")

    def __init__(self, scope: Scope, it: types.AsyncGeneratorType[T, Any]) -> None:
        self._scope = scope
        self._it = it
        self._context: contextvars.Context | None = None

    def __aiter__(self) -> ScopedAsyncIterator[T]:
        return self

    async def _step(self, step: Any) -> Any:
        it = self._it
        if it.ag_running:
            # The generator awaits its own next step: Python's RuntimeError.
            return await step
        context = self._context
        if context is None:
            if it.ag_frame is None:  # finished: nothing runs any more
                return await step
            context = self._context = _start(self._scope)
        try:
            return await _run_in(context, step)
        except BaseException:
            if it.ag_frame is None:
                self._end(context)
            raise

    def _end(self, context: contextvars.Context) -> None:
        """The generator is over: free its context and leave the scope (once)."""
        if self._context is context:
            self._context = None
            context.run(self._scope.deactivate)
            leave()  # the stream's turn is over

    def __anext__(self) -> Awaitable[T]:
        return cast(Awaitable[T], self._step(self._it.__anext__()))

    def asend(self, value: Any) -> Awaitable[T]:
        return cast(Awaitable[T], self._step(self._it.asend(value)))

    def athrow(self, *args: Any) -> Awaitable[T]:
        return cast(Awaitable[T], self._step(self._it.athrow(*args)))

    async def aclose(self) -> None:
        await self._step(self._it.aclose())
        context = self._context
        if context is not None:
            self._end(context)


def wrap_result(scope: Scope, result: Any) -> Any:
    """
    A returned generator keeps the scope for every later step.

    So does the body of a streamed web response a decorated view returns: a
    Flask/Werkzeug ``Response`` over a generator (``is_streamed``, body in
    ``.response``) or a Starlette ``StreamingResponse`` (``.body_iterator``). The
    server iterates those after the view returned, outside the view's scope.
    """
    if inspect.isgenerator(result):
        return ScopedIterator(scope, result)
    if inspect.isasyncgen(result):
        return ScopedAsyncIterator(scope, result)
    body = getattr(result, "body_iterator", None)
    if body is not None and inspect.isasyncgen(body):
        result.body_iterator = ScopedAsyncIterator(scope, body)
    elif getattr(result, "is_streamed", False):
        body = getattr(result, "response", None)
        if inspect.isgenerator(body):
            result.response = ScopedIterator(scope, body)
    return result
