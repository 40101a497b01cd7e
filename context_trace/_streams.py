"""
Stream wrappers: a generator (or streamed web response) keeps its scope for every step.

A decorated function that returns a generator, or a Flask/Starlette streaming
response, hands its body to code that iterates it later, outside the
function's scope; these wrappers re-enter the scope around every step and
:func:`~._activation.leave` when the stream ends.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar, cast

from ._activation import Scope, leave

__all__ = ["ScopedAsyncIterator", "ScopedIterator", "wrap_result"]

T = TypeVar("T")


class ScopedIterator(Iterator[T]):
    """Re-enter *scope* for every step (and ``close``) of a sync iterator."""

    __slots__ = ("_it", "_scope")

    def __init__(self, scope: Scope, it: Iterator[T]) -> None:
        self._scope = scope
        self._it = it

    def __iter__(self) -> ScopedIterator[T]:
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


class ScopedAsyncIterator(AsyncIterator[T]):
    """Re-enter *scope* for every step (and ``aclose``) of an async iterator."""

    __slots__ = ("_it", "_scope")

    def __init__(self, scope: Scope, it: AsyncIterator[T]) -> None:
        self._scope = scope
        self._it = it

    def __aiter__(self) -> ScopedAsyncIterator[T]:
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
