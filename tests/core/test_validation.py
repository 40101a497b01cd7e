"""Bad input fails early with an error naming the parameter."""

from __future__ import annotations

import functools
import logging
import uuid
import warnings
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel

from context_trace import context_session, current_user, propagate, track_user
from context_trace.testing import CapturedRecords


class _Opaque:
    """No ``__str__`` or ``__repr__`` of its own: its str() is meaningless."""


class _Named:
    def __str__(self) -> str:
        return "named-value"


class TestIds:
    @pytest.mark.parametrize(
        "value",
        [["u1"], 1.5, True, False, b"u1", {"id": 1}, object()],
        ids=["list", "float", "true", "false", "bytes", "dict", "object"],
    )
    @pytest.mark.parametrize("factory", [track_user, context_session])
    def test_user_id_wrong_type(self, factory: Any, value: Any) -> None:
        """A user_id that is not str, int or callable is a TypeError naming user_id."""
        with pytest.raises(TypeError, match="user_id"):
            factory(user_id=value)

    @pytest.mark.parametrize("value", [["s"], 2.0, True])
    @pytest.mark.parametrize("factory", [track_user, context_session])
    def test_session_id_wrong_type(self, factory: Any, value: Any) -> None:
        """A bad session_id is a TypeError naming session_id."""
        with pytest.raises(TypeError, match="session_id"):
            factory(user_id="u", session_id=value)

    @pytest.mark.parametrize("value", ["", "   ", "\t\n"])
    def test_empty_user_id(self, value: str) -> None:
        """An empty or blank user_id is a ValueError naming user_id."""
        with pytest.raises(ValueError, match="user_id"):
            track_user(value)

    def test_empty_session_id(self) -> None:
        """An empty session_id is a ValueError naming session_id."""
        with pytest.raises(ValueError, match="session_id"):
            context_session("")

    def test_zero_is_a_valid_id(self) -> None:
        """0 is a real id, not "no user"."""
        with track_user(0):
            assert current_user() == "0"

    def test_uuids_are_ids(self, records: CapturedRecords) -> None:
        """A UUID user or session id is kept as its canonical string form."""
        user, session = (
            uuid.uuid4(),
            uuid.UUID("{12345678-1234-5678-1234-56781234ABCD}"),
        )

        with track_user(user), context_session(session) as opened:
            assert (str(user), "12345678-1234-5678-1234-56781234abcd") == (
                current_user(),
                opened.id,
            )
            ParrotFakeChatModel().invoke("hi")

        assert [(str(user), "12345678-1234-5678-1234-56781234abcd")] == [
            (c.user_id, c.session_id) for c in records.conversations
        ]


class TestMetadata:
    @pytest.mark.parametrize("value", [["a", "b"], "k=v", 3])
    def test_not_a_mapping(self, value: Any) -> None:
        """Metadata that is not a mapping is a TypeError naming metadata."""
        with pytest.raises(TypeError, match="metadata"):
            track_user("u", metadata=value)

    def test_value_without_meaningful_str(self) -> None:
        """A value whose str() is just an address is a TypeError naming its key."""
        with pytest.raises(TypeError, match="'order'"):
            track_user("u", metadata={"fine": "x", "order": _Opaque()})

    def test_plain_object_value(self) -> None:
        """A plain ``object()`` value is rejected, naming the key."""
        with pytest.raises(TypeError, match="metadata\\['blob'\\]"):
            context_session(metadata={"blob": object()})

    def test_non_str_key(self) -> None:
        """A non-str key is a TypeError mentioning metadata keys."""
        with pytest.raises(TypeError, match="metadata keys"):
            track_user("u", metadata={1: "x"})

    def test_values_with_meaningful_str_are_kept(
        self, records: CapturedRecords
    ) -> None:
        """Numbers, bools and objects with their own __str__ are stringified."""
        with track_user("u", metadata={"n": 3, "ok": True, "obj": _Named()}):
            ParrotFakeChatModel().invoke("x")

        metadata = records.conversations[0].metadata

        assert (
            metadata["n"],
            metadata["ok"],
            metadata["obj"],
        ) == ("3", "True", "named-value")


class TestRate:
    @pytest.mark.parametrize(
        "rating", [2, -2, True, False, 1.0, 0.5, "1", None], ids=repr
    )
    def test_bad_rating(self, rating: Any, records: CapturedRecords) -> None:
        """A rating other than the ints -1, 0, 1 is a ValueError; nothing is recorded."""
        with context_session() as session, pytest.raises(ValueError, match="rating"):
            session.rate(rating)

        assert (session.ratings, list(records)) == ([], [])

    @pytest.mark.parametrize(
        ("turn_id", "error", "message"),
        [
            (42, TypeError, "turn_id must be a str (a turn's id), got int"),
            (b"c1", TypeError, "turn_id must be a str (a turn's id), got bytes"),
            ("", ValueError, "turn_id must not be empty"),
            ("  ", ValueError, "turn_id must not be empty"),
        ],
        ids=repr,
    )
    def test_bad_turn_id(
        self,
        turn_id: Any,
        error: type[Exception],
        message: str,
        records: CapturedRecords,
    ) -> None:
        """A turn id that is not a non-empty str fails at the call, naming turn_id."""
        with context_session() as session, pytest.raises(error) as raised:
            session.rate(1, turn_id=turn_id)

        assert message == str(raised.value)
        assert (session.ratings, list(records)) == ([], [])


class TestResolvers:
    def test_resolver_naming_unknown_parameter(self) -> None:
        """A resolver naming a parameter the function lacks fails at decoration."""

        def chat(user_id: str, text: str) -> None:
            return None

        with pytest.raises(TypeError, match=r"user_id.*account"):
            track_user(lambda account: account)(chat)

    def test_session_resolver_naming_unknown_parameter(self) -> None:
        """The same check applies to a session_id resolver."""

        def chat(text: str) -> None:
            return None

        with pytest.raises(TypeError, match="session_id"):
            context_session(session_id=lambda thread: thread)(chat)

    @pytest.mark.parametrize("factory", [track_user, context_session])
    def test_callable_id_as_context_manager(self, factory: Any) -> None:
        """A callable id cannot be resolved by ``with``: TypeError, scope untouched."""
        with pytest.raises(TypeError, match="user_id"), factory(user_id=lambda: "x"):
            pass

        assert current_user() is None

    async def test_callable_id_as_async_context_manager(self) -> None:
        """``async with`` a callable user id is a TypeError too."""
        with pytest.raises(TypeError, match="user_id"):
            async with track_user(lambda: "x"):
                pass

    def test_decorating_a_non_callable(self) -> None:
        """Decorating something that is not callable is a TypeError."""
        with pytest.raises(TypeError, match="callable"):
            track_user("u")(42)

    def test_propagate_a_non_callable(self) -> None:
        """``propagate`` rejects a non-callable, naming fn."""
        with pytest.raises(TypeError, match="fn"):
            propagate("not a function")  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("resolver", "named"),
        [
            (lambda user_id: 1 / 0, "ZeroDivisionError"),
            (lambda user_id: ["not", "an", "id"], "list"),
            (lambda user_id: 2.5, "float"),
        ],
        ids=["raises", "returns-list", "returns-float"],
    )
    def test_failing_resolver_records_with_no_user_and_warns_once(
        self,
        resolver: Any,
        named: str,
        records: CapturedRecords,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A resolver that fails at call time: every turn is recorded with no user, one warning."""

        @track_user(resolver)
        def chat(user_id: str, text: str) -> tuple[str | None, str]:
            return current_user(), str(ParrotFakeChatModel().invoke(text).content)

        with caplog.at_level(logging.DEBUG, logger="context_trace"):
            results = [chat("u", f"t{i}") for i in range(3)]

        warned = [r for r in caplog.records if r.levelno >= logging.WARNING]

        assert results == [(None, "t0"), (None, "t1"), (None, "t2")]
        assert len(warned) == 1
        message = warned[0].getMessage() + (warned[0].exc_text or "")
        assert "chat()" in message
        assert "user_id" in message
        assert named in message
        assert [(None, "t0"), (None, "t1"), (None, "t2")] == [
            (c.user_id, c.messages[0].content) for c in records.conversations
        ]

    def test_resolver_returning_a_uuid(self, records: CapturedRecords) -> None:
        """A resolver returning a UUID attributes the turn to its string form."""
        user = uuid.uuid4()

        @track_user(lambda user_id: user_id)
        def chat(user_id: uuid.UUID) -> str | None:
            ParrotFakeChatModel().invoke("hi")
            return current_user()

        assert str(user) == chat(user)
        assert [str(user)] == [c.user_id for c in records.conversations]

    def test_failing_resolver_keeps_the_outer_user_and_session_resolver(
        self, records: CapturedRecords
    ) -> None:
        """A bad user_id value leaves the outer user; a good session resolver still applies."""

        @track_user(lambda user_id: object(), session_id=lambda thread: thread)
        def chat(user_id: str, thread: str) -> None:
            ParrotFakeChatModel().invoke("hi")

        with track_user("outer"):
            chat("u", "t-1")
        chat("u", "t-2")

        assert [("outer", "t-1"), (None, "t-2")] == [
            (c.user_id, c.session_id) for c in records.conversations
        ]

    def test_resolver_returning_none_leaves_user_unset(self) -> None:
        """A resolver returning None (anonymous request) keeps the outer user."""

        @track_user(lambda user_id: None)
        def chat(user_id: str | None) -> str | None:
            return current_user()

        with track_user("outer"):
            assert chat(None) == "outer"
        assert chat(None) is None


class _ReprRaises:
    """A value whose own ``__repr__`` (and so its ``str()``) raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")


def _passthrough(func: Any) -> Any:
    """A well-behaved decorator of the app's own (``functools.wraps``)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


class TestMisuseAtDecoration:
    def test_bare_track_user_fails_at_decoration(self) -> None:
        """``@track_user`` without parentheses is a TypeError saying how to write it."""
        with pytest.raises(TypeError, match=r"write @track_user\(user_id="):

            @track_user  # type: ignore[arg-type]
            def chat(user_id: str, text: str) -> str:
                return text

    async def test_bare_track_user_on_async_def_fails_at_decoration(self) -> None:
        """An ``async def`` under a bare ``@track_user`` fails at decoration too."""
        with pytest.raises(TypeError, match=r"@track_user\(user_id=.*chat"):

            @track_user  # type: ignore[arg-type]
            async def chat(user_id: str) -> str:
                return user_id

    def test_bare_track_user_on_methods_fails_at_decoration(self) -> None:
        """A bare ``@track_user`` on a method, over @staticmethod or @classmethod fails."""
        with pytest.raises(TypeError, match=r"@track_user\(user_id="):

            class Api:
                @track_user  # type: ignore[arg-type]
                def chat(self, user_id: str) -> str:
                    return user_id

        for wrap in (staticmethod, classmethod):
            with pytest.raises(TypeError, match=r"@track_user\(user_id="):
                track_user(wrap(lambda user_id: user_id))  # type: ignore[arg-type]

    def test_bare_track_user_over_another_decorator_fails(self) -> None:
        """A bare ``@track_user`` over a ``functools.wraps`` decorator fails at decoration."""
        with pytest.raises(TypeError, match=r"@track_user\(user_id="):

            @track_user
            @_passthrough
            def chat(user_id: str) -> str:
                return user_id

    def test_bare_context_session_fails_at_decoration(self) -> None:
        """``@context_session`` without parentheses is a TypeError naming the fix."""
        with pytest.raises(TypeError, match=r"write @context_session\(\)"):

            @context_session  # type: ignore[arg-type]
            def chat(user_id: str) -> str:
                return user_id

    def test_named_resolver_passed_positionally_still_works(
        self, records: CapturedRecords
    ) -> None:
        """A resolver defined with ``def`` and passed positionally is not misuse."""

        def resolve(user_id: str) -> str:
            return f"user-{user_id}"

        @track_user(resolve)
        def chat(user_id: str, text: str) -> str:
            return str(ParrotFakeChatModel().invoke(text).content)

        chat("7", "hi")

        assert ["user-7"] == [c.user_id for c in records.conversations]

    def test_async_resolver_fails_at_decoration(self) -> None:
        """An async resolver can never give an id: TypeError naming it, up front."""

        async def resolve(user_id: str) -> str:
            return user_id

        with pytest.raises(TypeError, match=r"user_id resolver .*resolve is async"):
            track_user(user_id=resolve)

    @pytest.mark.parametrize("factory", [track_user, context_session])
    def test_literal_user_id_naming_a_parameter_warns(self, factory: Any) -> None:
        """``user_id="user_id"`` on a function taking user_id warns with the resolver form."""
        with pytest.warns(UserWarning, match=r"user_id=lambda user_id: user_id"):

            @factory(user_id="user_id")
            def chat(user_id: str, text: str) -> str:
                return text

    def test_literal_session_id_naming_a_parameter_warns(self) -> None:
        """``session_id="thread"`` on a function taking thread warns the same way."""
        with pytest.warns(UserWarning, match=r"session_id=lambda thread: thread"):

            @context_session(session_id="thread")
            def chat(thread: str) -> str:
                return thread

    def test_literal_id_not_naming_a_parameter_does_not_warn(self) -> None:
        """A literal id that is no parameter's name decorates without a warning."""
        with warnings.catch_warnings():
            warnings.simplefilter("error")

            @track_user("alice")
            def chat(user_id: str) -> str:
                return user_id

        assert "u" == chat("u")

    def test_metadata_value_whose_repr_raises(self) -> None:
        """A metadata value whose own repr raises is a TypeError naming its key."""
        with pytest.raises(TypeError, match=r"metadata\['broken'\]"):
            track_user("u", metadata={"fine": "x", "broken": _ReprRaises()})
