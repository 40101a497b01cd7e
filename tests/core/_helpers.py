"""Shared pieces of the core tests: chains built from real LangChain runnables."""

from __future__ import annotations

import contextvars
import gc
import inspect
import itertools
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import (
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable

__all__ = [
    "KeepingPipeline",
    "MetadataRecorder",
    "collect",
    "contexts_left_for_the_collector",
    "echo_chain",
    "run_threads",
    "streaming_chain",
]


def echo_chain() -> Runnable[dict[str, Any], str]:
    """``prompt | ParrotFakeChatModel | StrOutputParser``: the answer is the question."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are terse."), ("human", "{question}")]
    )
    return prompt | ParrotFakeChatModel() | StrOutputParser()


def streaming_chain(answer: str) -> Runnable[dict[str, Any], str]:
    """``prompt | GenericFakeChatModel | StrOutputParser``: streams *answer* word by word."""
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    model = GenericFakeChatModel(messages=itertools.repeat(AIMessage(answer)))
    return prompt | model | StrOutputParser()


async def collect(result: Any) -> Any:
    """Finish whatever a decorated callable returned: await it or drain it."""
    if inspect.isawaitable(result):
        return await result
    if hasattr(result, "__anext__"):
        return [item async for item in result]
    if hasattr(result, "__next__"):
        return list(result)
    return result


class MetadataRecorder(BaseCallbackHandler):
    """A plain LangChain callback handler that keeps each run's metadata."""

    def __init__(self) -> None:
        self.chain_metadata: dict[UUID, dict[str, Any]] = {}
        self.model_metadata: dict[UUID, dict[str, Any]] = {}

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.chain_metadata[run_id] = dict(metadata or {})

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.model_metadata[run_id] = dict(metadata or {})


def run_threads(count: int, target: Any) -> None:
    """Run ``target(i)`` in *count* threads started together; re-raise what any raised."""
    # A barrier makes the threads overlap instead of running one after another.
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


class KeepingPipeline:
    """
    A pipeline stand-in that keeps every raw turn the recorder emits, in
    order, and exports nothing (as a busy queue holds them).
    """

    def __init__(self) -> None:
        self.items: list[Any] = []

    def emit(self, item: Any) -> None:
        self.items.append(item)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        return {}


def contexts_left_for_the_collector(work: Callable[[], None]) -> list[str]:
    """
    The contexts and context-variable tokens that *work* left to the garbage
    collector (in reference cycles) rather than freed by reference counting.
    """
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        work()
        gc.collect()
        return [
            type(o).__name__
            for o in gc.garbage
            if isinstance(o, (contextvars.Context, contextvars.Token))
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
