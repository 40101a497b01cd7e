"""
LangGraph's streams report what their consumer received.

``Pregel.stream(stream_mode="messages")`` runs a model's step to its end before
it yields the first token, so the callbacks see every token the model generated,
and a consumer that stops reading after two of them would be recorded with the
whole answer. Here ``Pregel.stream`` and ``Pregel.astream`` are wrapped: a stream
whose modes include ``"messages"`` is returned behind a proxy that keeps a
reference to each item it hands over, in a :class:`~._turn.Received` the root's
turn holds (the handler takes it from :data:`~._turn.RECEIVING` when the root
starts). The converter reads an abandoned turn's answer out of it.

The proxy is the generator itself to everyone else (``isinstance``,
``inspect.isgenerator``, ``close``/``aclose``/``throw`` and every attribute go to
the real generator): it changes neither what is yielded nor what is raised.

Installed once, when the first recorder is built: at once when LangGraph is
imported, else by a post-import hook, so ``import context_trace`` never imports
LangGraph.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import wrapt

from ._log import log_once
from ._turn import RECEIVING, Received

__all__ = ["install", "installed"]

_logger = logging.getLogger(__name__)

_MODULE = "langgraph.pregel"
# LangGraph's configurable keys: a graph run as a task of another (its stream
# mode defaults to "values"), and the internal content-block messages protocol
# (its items are not message chunks).
_TASK_ID = "__pregel_task_id"
_MESSAGES_V2 = "__pregel_stream_messages_v2"

if TYPE_CHECKING:
    _Proxy = wrapt.ObjectProxy[Any]
else:  # wrapt's proxies are generic in its stubs only
    _Proxy = wrapt.ObjectProxy

installed = False  # install() ran (the hook may still be waiting for LangGraph)
_lock = threading.Lock()


def install() -> None:
    """Wrap LangGraph's streams now, or when LangGraph is imported (idempotent)."""
    global installed
    with _lock:
        if installed:
            return
        installed = True
    try:
        # Runs the hook at once when the module is already imported.
        wrapt.register_post_import_hook(_patch, _MODULE)
    except Exception:  # noqa: BLE001 - never raise into the app
        log_once(
            _logger,
            "graph_streams.install",
            "context_trace: could not hook LangGraph's streams",
            exc_info=True,
        )


def _patch(module: Any) -> None:
    """Wrap ``Pregel.stream`` and ``Pregel.astream`` (once per class)."""
    try:
        pregel = getattr(module, "Pregel", None)
        if pregel is None:
            return
        with _lock:
            for name in ("stream", "astream"):
                current = vars(pregel).get(name)
                if current is None or getattr(current, "_self_wrapper", None) is (
                    _wrap_stream
                ):
                    continue  # not defined there, or wrapped already
                wrapt.wrap_function_wrapper(pregel, name, _wrap_stream)
    except Exception:  # noqa: BLE001 - never raise into the app
        log_once(
            _logger,
            "graph_streams.patch",
            "context_trace: could not wrap LangGraph's streams",
            exc_info=True,
        )


def _wrap_stream(
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    stream = wrapped(*args, **kwargs)
    try:
        shape = _messages_shape(instance, args, kwargs)
        if shape is None:
            return stream
        received = Received(shape)
        if hasattr(stream, "__anext__"):
            return _ReceivedAsyncStream(stream, received)
        return _ReceivedStream(stream, received)
    except Exception:  # noqa: BLE001 - never raise into the app
        log_once(
            _logger,
            "graph_streams.wrap",
            "context_trace: could not follow a LangGraph stream",
            exc_info=True,
        )
        return stream


def _messages_shape(
    graph: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> str | None:
    """How the stream's items hold a messages payload; None: no messages mode."""
    config = kwargs.get("config", args[1] if len(args) > 1 else None)
    configurable = config.get("configurable") if isinstance(config, Mapping) else None
    if not isinstance(configurable, Mapping):
        configurable = {}
    mode = kwargs.get("stream_mode")
    if mode is None:  # LangGraph's default: "values" for a graph run as a task
        mode = (
            "values"
            if _TASK_ID in configurable
            else getattr(graph, "stream_mode", "values")
        )
    if isinstance(mode, str):
        if mode != "messages":
            return None
    elif not isinstance(mode, Sequence) or "messages" not in mode:
        return None
    subgraphs = bool(kwargs.get("subgraphs", False))
    if kwargs.get("version", "v1") == "v2":
        return None if configurable.get(_MESSAGES_V2) else "v2"
    # LangGraph tells a list of modes by ``isinstance(stream_mode, list)``; any
    # other sequence yields bare payloads, whatever their mode.
    if isinstance(mode, list):
        return "ns_mode" if subgraphs else "mode"
    return "ns" if subgraphs else "bare"


def _first_step(step: Callable[[], Any], received: Received) -> Any:
    """
    The stream's first step, which starts its root run: the handler takes
    *received* for that root's turn. The ContextVar is reset right after, so no
    later, unrelated run picks it up.
    """
    token = RECEIVING.set(received)
    try:
        return step()
    finally:
        with contextlib.suppress(ValueError):
            RECEIVING.reset(token)


class _ReceivedStream(_Proxy):
    """A sync LangGraph stream that keeps each item it hands its consumer."""

    def __init__(self, wrapped: Any, received: Received) -> None:
        super().__init__(wrapped)
        self._self_received: Received | None = received
        self._self_started = False

    def __iter__(self) -> _ReceivedStream:
        return self

    def _step(self, step: Callable[[], Any]) -> Any:
        received = self._self_received
        if received is None:
            return step()
        if not self._self_started:
            self._self_started = True
            try:
                item = _first_step(step, received)
            finally:
                if not received.taken:  # no turn records this stream
                    self._self_received = received = None
            if received is None:
                return item
        else:
            try:
                item = step()
            except StopIteration:
                # Read to the end: the turn is not abandoned, its items unneeded.
                self._self_received = None
                received.items = []
                raise
        received.items.append(item)
        return item

    def __next__(self) -> Any:
        return self._step(self.__wrapped__.__next__)

    def send(self, value: Any) -> Any:
        return self._step(lambda: self.__wrapped__.send(value))

    def throw(self, *args: Any) -> Any:
        return self._step(lambda: self.__wrapped__.throw(*args))


class _ReceivedAsyncStream(_Proxy):
    """An async LangGraph stream that keeps each item it hands its consumer."""

    def __init__(self, wrapped: Any, received: Received) -> None:
        super().__init__(wrapped)
        self._self_received: Received | None = received
        self._self_started = False

    def __aiter__(self) -> _ReceivedAsyncStream:
        return self

    async def _step(self, step: Callable[[], Any]) -> Any:
        received = self._self_received
        if received is None:
            return await step()
        if not self._self_started:
            self._self_started = True
            token = RECEIVING.set(received)
            try:
                item = await step()
            finally:
                with contextlib.suppress(ValueError):
                    RECEIVING.reset(token)
                if not received.taken:  # no turn records this stream
                    self._self_received = received = None
            if received is None:
                return item
        else:
            try:
                item = await step()
            except StopAsyncIteration:
                # Read to the end: the turn is not abandoned, its items unneeded.
                self._self_received = None
                received.items = []
                raise
        received.items.append(item)
        return item

    async def __anext__(self) -> Any:
        return await self._step(self.__wrapped__.__anext__)

    async def asend(self, value: Any) -> Any:
        return await self._step(lambda: self.__wrapped__.asend(value))

    async def athrow(self, *args: Any) -> Any:
        return await self._step(lambda: self.__wrapped__.athrow(*args))
