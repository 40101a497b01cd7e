"""
The ``dropin`` row of the overhead benchmark.

``context_trace.ContextCallbackHandler`` passed explicitly in
``config={"callbacks": [handler]}``, the way code migrated from
langchain_community's handler passes it. One handler serves every call, as an
app shares the one it built at start-up. ``benchmarks/overhead.py`` calls these
factories and does the timing; they only build the calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["make_dropin_ainvoke", "make_dropin_invoke"]


def _dropin_config() -> dict[str, Any]:
    from context_trace import ContextCallbackHandler

    # Built once per row, outside the timed calls.
    return {"callbacks": [ContextCallbackHandler()]}


def make_dropin_invoke(chain: Any) -> Callable[[dict[str, Any]], Any]:
    """``inputs -> chain.invoke(inputs)`` with the drop-in handler passed explicitly."""
    config = _dropin_config()

    def invoke(inputs: dict[str, Any]) -> Any:
        return chain.invoke(inputs, config=config)

    return invoke


def make_dropin_ainvoke(chain: Any) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    """``inputs -> chain.ainvoke(inputs)`` (an awaitable), with the drop-in handler."""
    config = _dropin_config()

    def ainvoke(inputs: dict[str, Any]) -> Awaitable[Any]:
        # The coroutine itself: the caller awaits it (no extra wrapper frame).
        call: Awaitable[Any] = chain.ainvoke(inputs, config=config)
        return call

    return ainvoke
