"""Memory stays flat: a long-lived scope keeps no per-turn state after turns end."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.runnables import Runnable, RunnableLambda

from context_trace import (
    RecordingHandler,
    _handler,
    _turn,
    current_handler,
    flush,
    track_user,
)
from context_trace.testing import CapturedRecords

from ._helpers import KeepingPipeline, streaming_chain

TURNS = 5_000
# Failing and abandoned turns: fewer (each costs more); any leak would show as
# a non-zero count all the same.
SHORT_TURNS = 1_000


class Boom(Exception):
    """A failing step."""


def _live_turns() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, _turn.Turn))


def _fail(_: Any) -> str:
    raise Boom("x")


class TestLongLivedScope:
    def test_5000_turns_leave_no_state(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """5,000 turns through one handler: no active turn, no claim, no live Turn."""
        with track_user("long-lived"):
            handler = current_handler()
            for i in range(TURNS):
                chain.invoke({"question": f"q{i}"})
            assert handler is not None
            assert handler.active_turns == 0
            assert len(_handler._CLAIMED) == 0

        assert len(records.conversations) == TURNS
        assert _live_turns() == 0

    def test_failing_turns_leave_no_state(self, records: CapturedRecords) -> None:
        """Turns that raise are recorded and leave nothing behind."""
        chain = ParrotFakeChatModel() | RunnableLambda(_fail)
        with track_user("failing"):
            handler = current_handler()
            for i in range(SHORT_TURNS):
                with pytest.raises(Boom):
                    chain.invoke(f"q{i}")
            assert handler is not None
            assert handler.active_turns == 0
            assert len(_handler._CLAIMED) == 0

        assert len([c for c in records.conversations if c.error]) == SHORT_TURNS
        assert _live_turns() == 0

    def test_abandoned_streams_leave_no_state(self, records: CapturedRecords) -> None:
        """Streams read half-way, then closed or dropped, leave nothing behind."""
        chain = streaming_chain("one two three four")
        with track_user("abandoning"):
            handler = current_handler()
            for i in range(SHORT_TURNS):
                stream = chain.stream({"question": f"q{i}"})
                next(stream)
                next(stream)
                if i % 2:
                    stream.close()
                del stream  # the other half is finalised by refcounting
            assert handler is not None
            assert handler.active_turns == 0
            assert len(_handler._CLAIMED) == 0

        assert len(records.conversations) == SHORT_TURNS
        assert _live_turns() == 0

    def test_async_turns_leave_no_state(self, records: CapturedRecords) -> None:
        """Thousands of concurrent async turns on one handler leave nothing behind."""
        chain = streaming_chain("a b")
        handlers: list[RecordingHandler | None] = []

        async def main() -> None:
            async with track_user("async-long"):
                handlers.append(current_handler())
                await asyncio.gather(
                    *(chain.ainvoke({"question": str(i)}) for i in range(1_000))
                )

        asyncio.run(main())

        assert handlers[0] is not None
        assert handlers[0].active_turns == 0
        assert len(_handler._CLAIMED) == 0
        assert len(records.conversations) == 1_000
        assert _live_turns() == 0

    def test_decorated_calls_leave_no_state(self, records: CapturedRecords) -> None:
        """Each decorated call's scope and handler are freed after the call."""

        @track_user(lambda user: user)
        def handle(user: str) -> RecordingHandler | None:
            ParrotFakeChatModel().invoke("hi")
            return current_handler()

        for i in range(500):
            handle(f"u{i}")
        gc.collect()

        live = [o for o in gc.get_objects() if isinstance(o, RecordingHandler)]

        assert len(records.conversations) == 500
        assert live == []


def _kept_alive(roots: list[Any], older: set[int]) -> int:
    """
    The tracked objects *roots* keep alive that are not in *older* (object ids).

    A walk of the references from *roots* that stops at the older objects: those
    the roots share with the rest of the process, not their own. Objects that
    something else allocated meanwhile (another thread, a cache filling) are not
    reachable from the roots, so they are not counted.
    """
    seen: set[int] = set()
    todo = list(roots)
    count = 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen or id(obj) in older:
            continue
        seen.add(id(obj))
        if gc.is_tracked(obj):
            count += 1
        todo.extend(gc.get_referents(obj))
    return count


class TestQueuedTurns:
    def test_a_queued_turn_keeps_few_objects_alive(
        self, chain: Runnable[dict[str, Any], str]
    ) -> None:
        """
        A finished turn waiting for the worker keeps at most 16 tracked objects.

        Each counts towards the cyclic collector's thresholds while it waits, and
        those kept past a young collection are promoted (full collections cost
        ~70 ms against a bare chain's none). It was 27: the whole LLMResult, the
        scope and its handler (a cycle), the run-id list and an empty tags list.
        The count is exact: the objects reachable from the queued turns alone
        (objects allocated beside them, here a list per turn, do not count).
        """
        from context_trace import _runtime

        state = _runtime._STATE
        keep = KeepingPipeline()
        with track_user("warm"):
            chain.invoke({"question": "warm up"})
        flush()
        with state.lock:
            previous, state.pipeline = state.pipeline, keep  # type: ignore[assignment]
        noise: list[list[int]] = []
        try:
            for i in range(20):
                with track_user("u1"):
                    chain.invoke({"question": f"warm {i}"})
            rounds = []
            for r in range(2):
                gc.collect()
                older = gc.get_objects()  # held: their ids stay theirs
                start = len(keep.items)
                for i in range(200):
                    with track_user("u1"):
                        chain.invoke({"question": f"q{r}-{i}"})
                    noise.append([i])  # tracked and alive, but not a turn's
                gc.collect()
                kept = _kept_alive(keep.items[start:], {id(o) for o in older})
                rounds.append(kept / 200)
                del older
        finally:
            with state.lock:
                state.pipeline = previous

        assert 420 == len(keep.items)
        assert 400 == len(noise)
        assert rounds[0] == rounds[1]
        assert rounds[0] <= 16

    def test_a_result_with_several_generations_is_kept_whole(self) -> None:
        """One generation is kept light; several (n > 1) keep the LLMResult itself."""
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, LLMResult

        one = LLMResult(generations=[[ChatGeneration(message=AIMessage("a"))]])
        two = LLMResult(
            generations=[
                [
                    ChatGeneration(message=AIMessage("a")),
                    ChatGeneration(message=AIMessage("b")),
                ]
            ]
        )

        light = _turn.light_result(one)
        assert isinstance(light, _turn.ModelResult)
        assert light.message is one.generations[0][0].message
        assert [[light]] == light.generations
        assert _turn.light_result(two) is two
