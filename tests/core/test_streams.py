"""Decorated generators run every step in one context of their own."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import random
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from context_trace import InMemoryExporter, configure, current_user, track_user
from context_trace._activation import ACTIVE
from context_trace.testing import CapturedRecords

from ._helpers import contexts_left_for_the_collector, echo_chain, streaming_chain

CHAIN = echo_chain()

# Set by the generators below; never by the tests' own code.
_MARK: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "test_streams.mark", default=None
)


def _by_user(user: str) -> str:
    return user


class TestSyncGenerators:
    def test_a_scope_the_generator_enters_spans_its_yields(
        self, records: CapturedRecords
    ) -> None:
        """A track_user entered inside a decorated generator holds across its yields."""

        @track_user("outer")
        def answers() -> Iterator[str | None]:
            with track_user("inner"):
                yield current_user()
                CHAIN.invoke({"question": "after the yield"})
                yield current_user()
            yield current_user()

        seen = [(value, current_user()) for value in answers()]

        assert [("inner", None), ("inner", None), ("outer", None)] == seen
        assert ["inner"] == [c.user_id for c in records.conversations]
        assert ACTIVE.get() is None

    def test_nothing_the_generator_sets_leaks_into_the_consumer(self) -> None:
        """A context variable the generator sets is seen by its later steps, not by its consumer."""

        @track_user("setter")
        def steps() -> Iterator[str | None]:
            _MARK.set("set by the generator")
            yield _MARK.get()
            yield _MARK.get()

        seen = [(value, _MARK.get()) for value in steps()]

        assert [("set by the generator", None)] * 2 == seen

    def test_send_throw_and_close_run_in_the_scope(self) -> None:
        """send(), throw() and close() run in the scope, inside the generator's own inner scope."""
        closed_as: list[str | None] = []

        @track_user("sender")
        def echo() -> Iterator[tuple[Any, str | None]]:
            received: Any = None
            with track_user("inner"):
                try:
                    while True:
                        try:
                            received = yield received, current_user()
                        except KeyError as exc:
                            received = exc.args[0]
                finally:
                    closed_as.append(current_user())

        gen = echo()
        first = next(gen)
        sent = gen.send("a")  # type: ignore[attr-defined]
        thrown = gen.throw(KeyError("b"))  # type: ignore[attr-defined]
        between = current_user()
        gen.close()  # type: ignore[attr-defined]

        assert [(None, "inner"), ("a", "inner"), ("b", "inner")] == [
            first,
            sent,
            thrown,
        ]
        assert (None, ["inner"]) == (between, closed_as)
        assert ACTIVE.get() is None

    def test_stepping_itself_raises_what_python_raises(self) -> None:
        """A generator that steps itself from inside its own step gets Python's ValueError."""
        errors: list[BaseException] = []

        @track_user("self-stepper")
        def steps() -> Iterator[int]:
            try:
                next(gen)
            except ValueError as exc:
                errors.append(exc)
            yield 1

        gen = steps()

        assert [1] == list(gen)
        assert ["generator already executing"] == [str(e) for e in errors]

    def test_generators_stepped_from_many_threads_attribute_exact_counts(
        self, records: CapturedRecords
    ) -> None:
        """24 decorated generators, each step pulled by a random one of 8 threads: exact counts per user."""

        @track_user(user_id=_by_user)
        def turns(user: str, i: int) -> Iterator[str | None]:
            CHAIN.invoke({"question": f"<{user}> {i} a"})
            yield current_user()
            with track_user(f"{user}-inner"):
                for n in range(3):
                    CHAIN.invoke({"question": f"<{user}-inner> {i} {n}"})
                    yield current_user()
            CHAIN.invoke({"question": f"<{user}> {i} b"})
            yield current_user()

        gens = [turns(f"u{i % 4}", i) for i in range(24)]
        seen: list[list[str | None]] = [[] for _ in gens]
        order = [i for i in range(24) for _ in range(5)]
        random.Random(11).shuffle(order)
        lock = threading.Lock()
        failures: list[BaseException] = []

        def pull(worker: int) -> None:
            with track_user(f"thread-{worker}"):  # never what the steps see
                while True:
                    with lock:  # one step at a time for each generator
                        if not order:
                            return
                        i = order.pop()
                        try:
                            seen[i].append(next(gens[i]))
                        except BaseException as exc:  # noqa: BLE001 - reported below
                            failures.append(exc)

        threads = [threading.Thread(target=pull, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60.0)

        assert [] == failures
        for i, users in enumerate(seen):
            user = f"u{i % 4}"
            assert [user, *[f"{user}-inner"] * 3, user] == users
        assert all(next(g, "done") == "done" for g in gens)
        assert Counter(
            {**{f"u{k}": 12 for k in range(4)}, **{f"u{k}-inner": 18 for k in range(4)}}
        ) == Counter(c.user_id for c in records.conversations)
        assert [] == [
            c.answer
            for c in records.conversations
            if c.answer is None or f"<{c.user_id}>" not in c.answer
        ]

    def test_a_dropped_generator_finishes_in_its_own_context(self) -> None:
        """A half-read generator dropped unclosed runs its finally in its scope; the consumer's stays."""
        finished_as: list[str | None] = []

        @track_user("dropped")
        def steps() -> Iterator[int]:
            with track_user("inner"):
                try:
                    yield 1
                    yield 2
                finally:
                    finished_as.append(current_user())

        with track_user("consumer"):
            gen = steps()
            next(gen)
            del gen
            gc.collect()
            after = current_user()

        assert (["inner"], "consumer") == (finished_as, after)
        assert ACTIVE.get() is None

    def test_an_abandoned_generator_frees_its_context(self) -> None:
        """A generator closed half-way leaves no context or token for the collector."""

        @track_user("dropper")
        def steps() -> Iterator[int]:
            with track_user("inner"):
                yield 1
                yield 2

        read: list[int] = []

        def work() -> None:
            for _ in range(3):
                gen = steps()
                next(gen)
                gen.close()  # type: ignore[attr-defined]
            read.extend(steps())

        left = contexts_left_for_the_collector(work)

        assert [1, 2] == read
        assert [] == left


class TestAsyncGenerators:
    async def test_a_scope_the_generator_enters_spans_its_yields(
        self, records: CapturedRecords
    ) -> None:
        """A track_user entered inside a decorated async generator holds across its yields."""

        @track_user("outer")
        async def answers() -> AsyncIterator[str | None]:
            with track_user("inner"):
                yield current_user()
                await CHAIN.ainvoke({"question": "after the yield"})
                yield current_user()
            yield current_user()

        seen = [(value, current_user()) async for value in answers()]

        assert [("inner", None), ("inner", None), ("outer", None)] == seen
        assert ["inner"] == [c.user_id for c in records.conversations]
        assert ACTIVE.get() is None

    async def test_nothing_the_generator_sets_leaks_into_the_consumer(self) -> None:
        """A context variable the async generator sets stays out of the consumer's task."""

        @track_user("setter")
        async def steps() -> AsyncIterator[str | None]:
            _MARK.set("set by the generator")
            await asyncio.sleep(0)
            yield _MARK.get()
            yield _MARK.get()

        seen = [(value, _MARK.get()) async for value in steps()]

        assert [("set by the generator", None)] * 2 == seen

    async def test_asend_athrow_and_aclose_run_in_the_scope(self) -> None:
        """asend(), athrow() and aclose() run in the scope, inside the generator's inner scope."""
        closed_as: list[str | None] = []

        @track_user("sender")
        async def echo() -> AsyncIterator[tuple[Any, str | None]]:
            received: Any = None
            with track_user("inner"):
                try:
                    while True:
                        try:
                            await asyncio.sleep(0)
                            received = yield received, current_user()
                        except KeyError as exc:
                            received = exc.args[0]
                finally:
                    await asyncio.sleep(0)
                    closed_as.append(current_user())

        gen = echo()
        first = await gen.__anext__()
        sent = await gen.asend("a")  # type: ignore[attr-defined]
        thrown = await gen.athrow(KeyError("b"))  # type: ignore[attr-defined]
        between = current_user()
        await gen.aclose()  # type: ignore[attr-defined]

        assert [(None, "inner"), ("a", "inner"), ("b", "inner")] == [
            first,
            sent,
            thrown,
        ]
        assert (None, ["inner"]) == (between, closed_as)
        assert ACTIVE.get() is None

    async def test_stepping_itself_raises_what_python_raises(self) -> None:
        """An async generator awaiting its own next step gets Python's RuntimeError."""
        errors: list[BaseException] = []

        @track_user("self-stepper")
        async def steps() -> AsyncIterator[int]:
            try:
                await gen.__anext__()
            except RuntimeError as exc:
                errors.append(exc)
            yield 1

        gen = steps()

        assert [1] == [value async for value in gen]
        assert ["anext(): asynchronous generator is already running"] == [
            str(e) for e in errors
        ]

    async def test_generators_stepped_by_interleaved_tasks_attribute_exact_counts(
        self, records: CapturedRecords
    ) -> None:
        """24 decorated async generators stepped by 8 interleaving tasks: exact counts per user."""

        @track_user(user_id=_by_user)
        async def turns(user: str, i: int) -> AsyncIterator[str | None]:
            await CHAIN.ainvoke({"question": f"<{user}> {i} a"})
            yield current_user()
            with track_user(f"{user}-inner"):
                for n in range(3):
                    await asyncio.sleep(0)
                    await CHAIN.ainvoke({"question": f"<{user}-inner> {i} {n}"})
                    yield current_user()
            await CHAIN.ainvoke({"question": f"<{user}> {i} b"})
            yield current_user()

        gens = [turns(f"u{i % 4}", i) for i in range(24)]
        locks = [asyncio.Lock() for _ in gens]
        seen: list[list[str | None]] = [[] for _ in gens]
        order = [i for i in range(24) for _ in range(5)]
        random.Random(13).shuffle(order)

        async def pull(worker: int) -> None:
            with track_user(f"task-{worker}"):  # never what the steps see
                while order:
                    i = order.pop()
                    async with locks[i]:  # one step at a time for each generator
                        seen[i].append(await gens[i].__anext__())

        await asyncio.gather(*(pull(k) for k in range(8)))

        for i, users in enumerate(seen):
            user = f"u{i % 4}"
            assert [user, *[f"{user}-inner"] * 3, user] == users
        for gen in gens:
            with pytest.raises(StopAsyncIteration):
                await gen.__anext__()
        assert Counter(
            {**{f"u{k}": 12 for k in range(4)}, **{f"u{k}-inner": 18 for k in range(4)}}
        ) == Counter(c.user_id for c in records.conversations)
        assert [] == [
            c.answer
            for c in records.conversations
            if c.answer is None or f"<{c.user_id}>" not in c.answer
        ]

    async def test_cancelling_a_step_reaches_the_generator_in_its_scope(self) -> None:
        """A step cancelled while it awaits raises CancelledError inside the generator, in its scope."""
        cancelled_as: list[str | None] = []
        started = asyncio.Event()

        @track_user("waiter")
        async def steps() -> AsyncIterator[int]:
            with track_user("inner"):
                try:
                    started.set()
                    await asyncio.sleep(60)
                    yield 1
                except asyncio.CancelledError:
                    cancelled_as.append(current_user())
                    raise

        gen = steps()
        task = asyncio.ensure_future(gen.__anext__())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        assert ["inner"] == cancelled_as
        assert current_user() is None


class TestServerlessEnd:
    @pytest.fixture
    def exporter(self) -> InMemoryExporter:
        """serverless=True with an interval no test reaches: only a scope's end exports."""
        exp = InMemoryExporter()
        configure(exporter=exp, serverless=True, flush_interval=60.0)
        return exp

    def test_a_generator_read_to_the_end_exports_its_turn(
        self, exporter: InMemoryExporter
    ) -> None:
        """A decorated generator's end is its scope's end: its turn is exported at once."""

        @track_user("lambda-user")
        def answer() -> Iterator[str]:
            yield CHAIN.invoke({"question": "one"})
            yield "done"

        gen = answer()
        next(gen)
        assert [] == exporter.conversations

        assert ["done"] == list(gen)
        assert ["lambda-user"] == [c.user_id for c in exporter.conversations]

    def test_a_generator_closed_half_way_exports_its_turn(
        self, exporter: InMemoryExporter
    ) -> None:
        """Closing a half-read decorated generator ends its scope: the abandoned turn is exported."""
        chain = streaming_chain("w1 w2 w3 w4")

        @track_user("closer")
        def words() -> Iterator[str]:
            yield from chain.stream({"question": "q"})

        gen = words()
        next(gen)
        next(gen)
        gen.close()  # type: ignore[attr-defined]

        assert [("closer", True)] == [
            (c.user_id, c.stream_abandoned) for c in exporter.conversations
        ]

    async def test_an_async_generator_closed_half_way_exports_its_turn(
        self, exporter: InMemoryExporter
    ) -> None:
        """aclose() on a half-read decorated async generator exports its turn at once."""

        @track_user("acloser")
        async def answers() -> AsyncIterator[str]:
            yield await CHAIN.ainvoke({"question": "one"})
            yield "never"

        gen = answers()
        await gen.__anext__()
        await gen.aclose()  # type: ignore[attr-defined]

        assert ["acloser"] == [c.user_id for c in exporter.conversations]
