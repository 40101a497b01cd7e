"""Resolvers bind to the decorated function's parameters by name; misuse fails at decoration."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from context_trace import track_user
from context_trace.testing import CapturedRecords

from ._helpers import collect, echo_chain, streaming_chain

CHAIN = echo_chain()
STREAM = streaming_chain("a streamed answer")


def _plain(user_id: str, question: str = "hi") -> str:
    return CHAIN.invoke({"question": question})


async def _async(user_id: str, question: str = "hi") -> str:
    return await CHAIN.ainvoke({"question": question})


def _generator(user_id: str, question: str = "hi") -> Iterator[str]:
    yield from STREAM.stream({"question": question})


async def _async_generator(user_id: str, question: str = "hi") -> AsyncIterator[str]:
    async for chunk in STREAM.astream({"question": question}):
        yield chunk


def _returns_stream(user_id: str, question: str = "hi") -> Iterator[str]:
    return STREAM.stream({"question": question})


class _Service:
    def method(self, user_id: str, question: str = "hi") -> str:
        return CHAIN.invoke({"question": question})

    @classmethod
    def klass(cls, user_id: str, question: str = "hi") -> str:
        return CHAIN.invoke({"question": question})

    @staticmethod
    def static(user_id: str, question: str = "hi") -> str:
        return CHAIN.invoke({"question": question})


def _bound(kind: str, resolver: Callable[..., Any]) -> Callable[..., Any]:
    """The function of *kind*, decorated with *resolver*, ready to call."""
    if kind in ("method", "classmethod", "staticmethod"):

        class Service(_Service):
            method = track_user(resolver)(_Service.method)
            klass = track_user(resolver)(_Service.__dict__["klass"])
            static = track_user(resolver)(_Service.__dict__["static"])

        service = Service()
        return {
            "method": service.method,
            "classmethod": Service.klass,
            "staticmethod": service.static,
        }[kind]
    fn = {
        "def": _plain,
        "async def": _async,
        "generator": _generator,
        "async generator": _async_generator,
        "returned stream": _returns_stream,
    }[kind]
    return track_user(resolver)(fn)


KINDS = [
    "def",
    "async def",
    "generator",
    "async generator",
    "returned stream",
    "method",
    "classmethod",
    "staticmethod",
]


class TestBindingByName:
    @pytest.mark.parametrize("kind", KINDS)
    async def test_kwargs_resolver_gets_positional_arguments_by_name(
        self, kind: str, records: CapturedRecords
    ) -> None:
        """``lambda user_id, **_: user_id`` finds user_id passed positionally."""
        fn = _bound(kind, lambda user_id, **_: user_id)

        await collect(fn("alice", "q1"))

        assert [("alice", True)] == [
            (c.user_id, len(c.messages) > 0) for c in records.conversations
        ]

    @pytest.mark.parametrize("kind", KINDS)
    async def test_narrow_resolver_gets_only_its_parameter(
        self, kind: str, records: CapturedRecords
    ) -> None:
        """A resolver naming one parameter gets it, however the caller passed it."""
        fn = _bound(kind, lambda question: f"asker-of-{question}")

        await collect(fn("ignored", question="q2"))
        await collect(fn("ignored", "q3"))

        assert ["asker-of-q2", "asker-of-q3"] == [
            c.user_id for c in records.conversations
        ]

    async def test_defaults_are_applied(self, records: CapturedRecords) -> None:
        """A parameter the caller left out reaches the resolver with its default."""
        fn = track_user(lambda question: f"default-{question}")(_plain)

        fn("bob")

        assert ["default-hi"] == [c.user_id for c in records.conversations]

    def test_self_only_when_named(self, records: CapturedRecords) -> None:
        """A method's resolver gets ``self`` when it names it, and not otherwise."""

        class Service:
            tenant = "acme"

            @track_user(lambda self, user_id: f"{self.tenant}:{user_id}")
            def named(self, user_id: str) -> str:
                return CHAIN.invoke({"question": "x"})

            @track_user(lambda **kw: ",".join(sorted(kw)))
            def all_of_them(self, user_id: str, question: str = "hi") -> str:
                return CHAIN.invoke({"question": question})

        Service().named("u1")
        Service().all_of_them("u2")

        assert ["acme:u1", "question,user_id"] == [
            c.user_id for c in records.conversations
        ]

    def test_function_kwargs_reach_a_kwargs_resolver(
        self, records: CapturedRecords
    ) -> None:
        """The function's own ``**kwargs`` are given to the resolver as parameters."""

        @track_user(lambda tenant, **_: tenant)
        def handler(question: str, **extra: Any) -> str:
            return CHAIN.invoke({"question": question})

        handler("q", tenant="acme")

        assert ["acme"] == [c.user_id for c in records.conversations]


class TestMismatchAtDecoration:
    def test_unknown_parameter(self) -> None:
        """A resolver naming a parameter the function lacks is a TypeError naming all three."""
        with pytest.raises(TypeError) as info:
            track_user(lambda uid: uid)(_plain)

        message = str(info.value)
        assert "'uid'" in message
        assert "_plain" in message
        assert "<lambda>" in message

    def test_positional_only_parameter(self) -> None:
        """A resolver that can only be called positionally is rejected at decoration."""

        def resolver(user_id: str, /) -> str:
            return user_id

        with pytest.raises(TypeError, match="positional-only parameter 'user_id'"):
            track_user(resolver)(_plain)


class TestFailureAtRequestTime:
    def test_raising_resolver_records_with_no_user_and_logs_once_per_function(
        self, records: CapturedRecords, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The request runs, its turn is recorded with no user, each function warns once."""

        def broken(user_id: str) -> str:
            raise KeyError(user_id)

        @track_user(broken)
        def first(user_id: str) -> str:
            return CHAIN.invoke({"question": "one"})

        @track_user(broken)
        def second(user_id: str) -> str:
            return CHAIN.invoke({"question": "two"})

        with caplog.at_level(logging.WARNING, logger="context_trace"):
            answers = [first("a"), first("b"), second("c")]

        warnings = [
            r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
        ]
        assert ["one", "one", "two"] == answers
        assert [None, None, None] == [c.user_id for c in records.conversations]
        assert 2 == len(warnings)
        assert "first" in warnings[0]
        assert "second" in warnings[1]

    def test_resolver_returning_none_records_no_user(
        self, records: CapturedRecords
    ) -> None:
        """A resolver returning None: the turn is recorded, with no user."""
        fn = track_user(lambda user_id: None)(_plain)

        fn("whoever")

        assert [None] == [c.user_id for c in records.conversations]


class TestLiteralIds:
    @pytest.mark.parametrize("value", [None, True, 1.5, b"alice", ["alice"]])
    def test_not_a_str_or_int(self, value: Any) -> None:
        """track_user() rejects None and other non-id values, naming user_id."""
        with pytest.raises(TypeError, match="user_id"):
            track_user(value)

    @pytest.mark.parametrize("value", ["", "   "])
    def test_empty(self, value: str) -> None:
        """An empty user id is a ValueError."""
        with pytest.raises(ValueError, match="user_id"):
            track_user(value)

    def test_str_and_int_are_accepted(self, records: CapturedRecords) -> None:
        """A non-empty str and an int are ids."""
        with track_user("alice"):
            CHAIN.invoke({"question": "a"})
        with track_user(42):
            CHAIN.invoke({"question": "b"})

        assert ["alice", "42"] == [c.user_id for c in records.conversations]
