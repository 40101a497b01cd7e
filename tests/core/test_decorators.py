"""``track_user`` / ``context_session`` as decorators: every kind of callable."""

from __future__ import annotations

import asyncio
import gc
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from context_trace import (
    RecordingHandler,
    _handler,
    context_session,
    current_handler,
    current_session,
    current_user,
    track_user,
)
from context_trace.testing import CapturedRecords

from ._helpers import collect, echo_chain, streaming_chain

CHAIN = echo_chain()

KINDS = [
    "function",
    "coroutine function",
    "generator function",
    "async generator function",
    "method",
    "async method",
    "generator method",
    "async generator method",
    "classmethod",
    "classmethod (decorator outside)",
    "staticmethod",
    "staticmethod (decorator outside)",
]


def _by_user_id(user_id: str) -> str:
    return user_id


BY_USER_ID = track_user(user_id=_by_user_id)


def build(kind: str, decorator: Callable[[Any], Any] | None) -> Callable[..., Any]:
    """
    A callable of *kind* taking ``(user_id, text)``, as the caller accesses it.

    Each one reports ``[current_user(), answer, current_user()]`` (returned,
    yielded one by one, or awaited), so the scope is checked before and after
    the model call and after every ``yield``.
    """

    def deco(func: Any) -> Any:
        return decorator(func) if decorator is not None else func

    if kind == "function":

        @deco
        def function(user_id: str, text: str) -> list[Any]:
            return [current_user(), CHAIN.invoke({"question": text}), current_user()]

        return function
    if kind == "coroutine function":

        @deco
        async def coroutine(user_id: str, text: str) -> list[Any]:
            answer = await CHAIN.ainvoke({"question": text})
            return [current_user(), answer, current_user()]

        return coroutine
    if kind == "generator function":

        @deco
        def generator(user_id: str, text: str) -> Iterator[Any]:
            yield current_user()
            yield CHAIN.invoke({"question": text})
            yield current_user()

        return generator
    if kind == "async generator function":

        @deco
        async def async_generator(user_id: str, text: str) -> AsyncIterator[Any]:
            yield current_user()
            yield await CHAIN.ainvoke({"question": text})
            yield current_user()

        return async_generator
    if kind == "method":

        class Bot:
            @deco
            def reply(self, user_id: str, text: str) -> list[Any]:
                answer = CHAIN.invoke({"question": text})
                return [current_user(), answer, current_user()]

        return Bot().reply
    if kind == "async method":

        class AsyncBot:
            @deco
            async def reply(self, user_id: str, text: str) -> list[Any]:
                answer = await CHAIN.ainvoke({"question": text})
                return [current_user(), answer, current_user()]

        return AsyncBot().reply
    if kind == "generator method":

        class StreamingBot:
            @deco
            def reply(self, user_id: str, text: str) -> Iterator[Any]:
                yield current_user()
                yield CHAIN.invoke({"question": text})
                yield current_user()

        return StreamingBot().reply
    if kind == "async generator method":

        class AsyncStreamingBot:
            @deco
            async def reply(self, user_id: str, text: str) -> AsyncIterator[Any]:
                yield current_user()
                yield await CHAIN.ainvoke({"question": text})
                yield current_user()

        return AsyncStreamingBot().reply
    if kind == "classmethod":

        class ClassBot:
            @classmethod
            @deco
            def reply(cls, user_id: str, text: str) -> list[Any]:
                answer = CHAIN.invoke({"question": text})
                return [current_user(), answer, current_user()]

        return ClassBot.reply
    if kind == "classmethod (decorator outside)":

        class OuterClassBot:
            @deco
            @classmethod
            def reply(cls, user_id: str, text: str) -> list[Any]:
                answer = CHAIN.invoke({"question": text})
                return [current_user(), answer, current_user()]

        return OuterClassBot.reply
    if kind == "staticmethod":

        class StaticBot:
            @staticmethod
            @deco
            def reply(user_id: str, text: str) -> list[Any]:
                answer = CHAIN.invoke({"question": text})
                return [current_user(), answer, current_user()]

        return StaticBot.reply
    if kind == "staticmethod (decorator outside)":

        class OuterStaticBot:
            @deco
            @staticmethod
            def reply(user_id: str, text: str) -> list[Any]:
                answer = CHAIN.invoke({"question": text})
                return [current_user(), answer, current_user()]

        return OuterStaticBot().reply
    raise AssertionError(kind)


class TestEveryKind:
    @pytest.mark.parametrize("kind", KINDS)
    async def test_scope_active_inside_and_turn_recorded(
        self, kind: str, records: CapturedRecords
    ) -> None:
        """Inside the call the user is set, the turn is attributed, and it is unset after."""
        func = build(kind, BY_USER_ID)

        observed = await collect(func("alice", f"hello from {kind}"))

        assert ["alice", f"hello from {kind}", "alice"] == observed
        assert current_user() is None
        assert [("alice", f"hello from {kind}")] == [
            (c.user_id, c.answer) for c in records.conversations
        ]

    @pytest.mark.parametrize("kind", KINDS)
    async def test_keyword_arguments_resolve_the_user(
        self, kind: str, records: CapturedRecords
    ) -> None:
        """The resolver finds ``user_id`` when the caller passes it by keyword."""
        func = build(kind, BY_USER_ID)

        observed = await collect(func(text="kw", user_id="bob"))

        assert observed == ["bob", "kw", "bob"]
        assert [c.user_id for c in records.conversations] == ["bob"]

    @pytest.mark.parametrize("kind", KINDS)
    def test_signature_preserved(self, kind: str) -> None:
        """``inspect.signature`` of the decorated callable equals the original's."""
        assert inspect.signature(build(kind, None)) == inspect.signature(
            build(kind, BY_USER_ID)
        )

    @pytest.mark.parametrize("kind", KINDS)
    def test_function_kind_preserved(self, kind: str) -> None:
        """``iscoroutinefunction`` / ``isgeneratorfunction`` / ``isasyncgenfunction`` agree."""
        original, decorated = build(kind, None), build(kind, BY_USER_ID)
        checks = (
            inspect.iscoroutinefunction,
            inspect.isgeneratorfunction,
            inspect.isasyncgenfunction,
        )

        assert [check(original) for check in checks] == [
            check(decorated) for check in checks
        ]

    @pytest.mark.parametrize("kind", KINDS)
    def test_name_and_doc_preserved(self, kind: str) -> None:
        """The decorated callable keeps ``__name__``, ``__qualname__`` and ``__doc__``."""
        original, decorated = build(kind, None), build(kind, BY_USER_ID)

        assert (original.__name__, original.__doc__) == (
            decorated.__name__,
            decorated.__doc__,
        )
        assert original.__qualname__ == decorated.__qualname__

    @pytest.mark.parametrize("kind", KINDS)
    async def test_failing_resolver_records_the_call_with_no_user(
        self, kind: str, records: CapturedRecords
    ) -> None:
        """A call whose resolver raises still runs, and its turn is recorded with no user."""

        def bad(user_id: str) -> str:
            raise LookupError(user_id)

        func = build(kind, track_user(bad))

        observed = await collect(func("carol", "hi"))

        assert observed == [None, "hi", None]
        assert current_user() is None
        assert [None] == [c.user_id for c in records.conversations]

    @pytest.mark.parametrize("kind", KINDS)
    async def test_failing_resolver_keeps_the_outer_scope(
        self, kind: str, records: CapturedRecords
    ) -> None:
        """Inside an outer scope, a call whose resolver raises stays with the outer user."""

        def bad(user_id: str) -> str:
            raise LookupError(user_id)

        func = build(kind, track_user(bad))

        async with track_user("outer"):
            observed = await collect(func("carol", "hi"))

        assert observed == ["outer", "hi", "outer"]
        assert [c.user_id for c in records.conversations] == ["outer"]


class TestResolvers:
    def test_resolver_with_the_full_signature(self, records: CapturedRecords) -> None:
        """A resolver taking the same parameters gets the call's arguments as is."""

        @track_user(lambda user_id, text, lang="en": f"{user_id}:{lang}")
        def chat(user_id: str, text: str, lang: str = "en") -> str | None:
            return current_user()

        assert (chat("u1", "x"), chat("u1", "x", lang="fr")) == ("u1:en", "u1:fr")

    def test_resolver_naming_one_parameter(self) -> None:
        """``lambda user_id: user_id`` on ``def chat(user_id, text)`` gets only user_id."""

        @track_user(user_id=lambda user_id: user_id)
        def chat(user_id: str, text: str) -> str | None:
            return current_user()

        assert (chat("u1", "x"), chat(text="x", user_id="u2")) == ("u1", "u2")

    def test_resolver_sees_defaults(self) -> None:
        """A resolver naming a defaulted parameter gets the default when omitted."""

        @track_user(lambda tenant: f"tenant-{tenant}")
        def chat(text: str, tenant: str = "acme") -> str | None:
            return current_user()

        assert (
            chat("x"),
            chat("x", tenant="other"),
        ) == ("tenant-acme", "tenant-other")

    def test_resolver_on_method_receives_self(self) -> None:
        """A method's resolver may name ``self`` to read instance state."""

        class Handler:
            def __init__(self, owner: str) -> None:
                self.owner = owner

            @track_user(lambda self: self.owner)
            def handle(self, text: str) -> str | None:
                return current_user()

        assert (Handler("ann").handle("x"), Handler("ben").handle("x")) == (
            "ann",
            "ben",
        )

    def test_resolver_reads_kwargs_catch_all(self) -> None:
        """A parameter that arrives through ``**kwargs`` can be named by the resolver."""

        @track_user(lambda user: user)
        def chat(text: str, **kwargs: Any) -> str | None:
            return current_user()

        assert chat("x", user="kw-user") == "kw-user"

    def test_int_from_resolver_becomes_str(self) -> None:
        """A resolver may return an int id; the scope holds its str."""

        @track_user(lambda account: account)
        def chat(account: int) -> str | None:
            return current_user()

        assert chat(42) == "42"

    def test_session_id_resolver(self, records: CapturedRecords) -> None:
        """``context_session(session_id=callable)`` opens the session the call names."""

        @context_session(session_id=lambda conversation: conversation, user_id="u")
        def chat(conversation: str, text: str) -> str:
            session = current_session()
            assert session is not None
            return CHAIN.invoke({"question": text})

        chat("thread-1", "a")
        chat("thread-2", "b")
        chat("thread-1", "c")

        assert [(c.user_id, c.session_id) for c in records.conversations] == [
            ("u", "thread-1"),
            ("u", "thread-2"),
            ("u", "thread-1"),
        ]

    def test_session_decorator_opens_a_new_session_per_call(self) -> None:
        """``@context_session()`` gives every call its own generated session id."""

        @context_session()
        def chat() -> str:
            session = current_session()
            assert session is not None
            return session.id

        first, second = chat(), chat()

        assert first != second
        assert (len(first), len(second)) == (32, 32)


class TestGenerators:
    def test_scope_only_active_while_the_generator_runs(self) -> None:
        """Between steps the caller's state is back; each step runs in the scope."""

        @track_user("gen-user")
        def numbers() -> Iterator[str | None]:
            for _ in range(3):
                yield current_user()

        seen = [(value, current_user()) for value in numbers()]

        assert seen == [("gen-user", None)] * 3

    async def test_async_generator_steps_run_in_the_scope(self) -> None:
        """Every ``__anext__`` of a decorated async generator runs in the scope."""

        @track_user("agen-user")
        async def numbers() -> AsyncIterator[str | None]:
            for _ in range(3):
                yield current_user()

        seen = [(value, current_user()) async for value in numbers()]

        assert seen == [("agen-user", None)] * 3

    def test_send_and_throw_run_in_the_scope(self) -> None:
        """``send()`` and ``throw()`` on a decorated generator also run in the scope."""

        @track_user("sender")
        def echo() -> Iterator[tuple[Any, str | None]]:
            received: Any = None
            while True:
                try:
                    received = yield received, current_user()
                except KeyError as exc:
                    received = exc.args[0]

        gen = echo()
        next(gen)

        assert [
            gen.send("a"),  # type: ignore[attr-defined]
            gen.throw(KeyError("b")),  # type: ignore[attr-defined]
        ] == [("a", "sender"), ("b", "sender")]
        assert current_user() is None
        gen.close()  # type: ignore[attr-defined]

    def test_stream_inside_generator_is_attributed(
        self, records: CapturedRecords
    ) -> None:
        """``chain.stream`` consumed inside a decorated generator records for the user."""
        chain = streaming_chain("one two three")

        @track_user("streamer")
        def words(question: str) -> Iterator[tuple[str | None, str]]:
            for chunk in chain.stream({"question": question}):
                yield current_user(), chunk

        chunks = list(words("count"))

        assert len(chunks) == 5
        assert {"streamer"} == {user for user, _ in chunks}
        assert "".join(chunk for _, chunk in chunks) == "one two three"
        assert [(c.user_id, c.answer) for c in records.conversations] == [
            ("streamer", "one two three")
        ]

    async def test_astream_inside_async_generator_is_attributed(
        self, records: CapturedRecords
    ) -> None:
        """``chain.astream`` consumed inside a decorated async generator is attributed."""
        chain = streaming_chain("four five")
        users = []

        @track_user("astreamer")
        async def words(question: str) -> AsyncIterator[str]:
            async for chunk in chain.astream({"question": question}):
                users.append(current_user())
                yield chunk

        text = "".join([chunk async for chunk in words("count")])

        assert text == "four five"
        assert users == ["astreamer"] * 3
        assert [(c.user_id, c.answer) for c in records.conversations] == [
            ("astreamer", "four five")
        ]

    def test_returned_stream_consumed_outside_scope(
        self, records: CapturedRecords
    ) -> None:
        """A plain def returning ``chain.stream(...)`` is attributed when drained later."""
        chain = streaming_chain("streamed later on")

        @track_user(lambda user_id: user_id)
        def answer_stream(user_id: str, question: str) -> Iterator[str]:
            return chain.stream({"question": question})

        stream = answer_stream("late-reader", "q")
        assert current_user() is None

        text = "".join(stream)

        assert text == "streamed later on"
        assert [(c.user_id, c.answer) for c in records.conversations] == [
            ("late-reader", "streamed later on")
        ]

    async def test_returned_astream_consumed_outside_scope(
        self, records: CapturedRecords
    ) -> None:
        """A plain def returning ``chain.astream(...)`` is attributed when drained later."""
        chain = streaming_chain("async later on")

        @track_user(lambda user_id: user_id)
        def answer_stream(user_id: str, question: str) -> AsyncIterator[str]:
            return chain.astream({"question": question})

        stream = answer_stream("late-async", "q")
        assert current_user() is None

        text = "".join([chunk async for chunk in stream])

        assert text == "async later on"
        assert [(c.user_id, c.answer) for c in records.conversations] == [
            ("late-async", "async later on")
        ]

    async def test_coroutine_returning_a_generator(
        self, records: CapturedRecords
    ) -> None:
        """An async def that returns a sync stream keeps the scope for its steps too."""
        chain = streaming_chain("from a coroutine")

        @track_user("coro-gen")
        async def answer_stream(question: str) -> Iterator[str]:
            return chain.stream({"question": question})

        stream = await answer_stream("q")

        assert "".join(stream) == "from a coroutine"
        assert [c.user_id for c in records.conversations] == ["coro-gen"]


class TestAbandonedStreams:
    def test_close_of_returned_stream(self, records: CapturedRecords) -> None:
        """``close()`` on a half-read returned stream ends it and releases the turn."""
        chain = streaming_chain("a b c d e f")
        handlers: list[RecordingHandler | None] = []

        @track_user("closer")
        def answer_stream(question: str) -> Iterator[str]:
            handlers.append(current_handler())
            return chain.stream({"question": question})

        stream = answer_stream("q")
        next(stream)
        next(stream)
        assert handlers[0] is not None
        assert handlers[0].active_turns > 0

        stream.close()  # type: ignore[attr-defined]

        assert handlers[0].active_turns == 0
        assert len(_handler._CLAIMED) == 0
        with pytest.raises(StopIteration):
            next(stream)
        assert [c.user_id for c in records.conversations] == ["closer"]

    def test_break_then_close_decorated_generator(self) -> None:
        """Breaking out of a decorated generator's stream and closing it frees the turn."""
        chain = streaming_chain("w1 w2 w3 w4 w5 w6")
        handlers: list[RecordingHandler | None] = []

        @track_user("breaker")
        def words(question: str) -> Iterator[str]:
            handlers.append(current_handler())
            yield from chain.stream({"question": question})

        gen = words("q")
        for i, _chunk in enumerate(gen):
            if i == 2:
                break
        assert handlers[0] is not None
        assert handlers[0].active_turns > 0

        gen.close()  # type: ignore[attr-defined]

        assert handlers[0].active_turns == 0
        assert len(_handler._CLAIMED) == 0

    @pytest.mark.parametrize("returned", [True, False], ids=["returned", "generator"])
    def test_abandoned_stream_released_by_gc(self, returned: bool) -> None:
        """A half-read stream dropped without ``close()`` frees its state when collected."""
        chain = streaming_chain("x y z w v")
        handlers: list[RecordingHandler | None] = []

        @track_user("dropper")
        def answer_stream(question: str) -> Iterator[str]:
            handlers.append(current_handler())
            return chain.stream({"question": question})

        @track_user("dropper")
        def words(question: str) -> Iterator[str]:
            handlers.append(current_handler())
            yield from chain.stream({"question": question})

        stream = answer_stream("q") if returned else words("q")
        next(stream)
        next(stream)
        assert handlers[0] is not None
        assert handlers[0].active_turns > 0

        del stream
        gc.collect()

        assert handlers[0].active_turns == 0
        assert len(_handler._CLAIMED) == 0

    @pytest.mark.parametrize("how", ["aclose", "gc"])
    @pytest.mark.parametrize("returned", [True, False], ids=["returned", "generator"])
    def test_abandoned_astream_released(self, returned: bool, how: str) -> None:
        """A half-read astream closed (or dropped) frees its state once the loop ran."""
        # LangChain ends an abandoned astream's runs in tasks on the event loop
        # (async generator finalisers), so the check runs after asyncio.run()
        # has drained the loop, instead of sleeping.
        chain = streaming_chain("p q r s t")
        handlers: list[RecordingHandler | None] = []

        @track_user("acloser")
        def answer_stream(question: str) -> AsyncIterator[str]:
            handlers.append(current_handler())
            return chain.astream({"question": question})

        @track_user("acloser")
        async def words(question: str) -> AsyncIterator[str]:
            handlers.append(current_handler())
            async for chunk in chain.astream({"question": question}):
                yield chunk

        async def abandon() -> int:
            stream = answer_stream("q") if returned else words("q")
            async for _chunk in stream:
                break
            active = handlers[0].active_turns if handlers[0] is not None else -1
            if how == "aclose":
                await stream.aclose()  # type: ignore[attr-defined]
            else:
                del stream
                gc.collect()
            return active

        active_while_open = asyncio.run(abandon())

        assert active_while_open > 0
        assert handlers[0] is not None
        assert handlers[0].active_turns == 0
        assert len(_handler._CLAIMED) == 0
