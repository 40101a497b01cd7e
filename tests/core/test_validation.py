"""Bad input fails early with an error naming the parameter."""

from __future__ import annotations

import logging
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
        "resolver",
        [
            lambda user_id: 1 / 0,
            lambda user_id: ["not", "an", "id"],
            lambda user_id: 2.5,
        ],
        ids=["raises", "returns-list", "returns-float"],
    )
    def test_failing_resolver_runs_unscoped_and_warns_once(
        self,
        resolver: Any,
        records: CapturedRecords,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A resolver that fails at call time: the call runs unscoped, one warning."""

        @track_user(resolver)
        def chat(user_id: str, text: str) -> tuple[str | None, str]:
            return current_user(), str(ParrotFakeChatModel().invoke(text).content)

        with caplog.at_level(logging.DEBUG, logger="context_trace"):
            results = [chat("u", f"t{i}") for i in range(3)]

        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]

        assert results == [(None, "t0"), (None, "t1"), (None, "t2")]
        assert len(warnings) == 1
        assert "chat" in warnings[0].getMessage()
        assert records == []

    def test_resolver_returning_none_leaves_user_unset(self) -> None:
        """A resolver returning None (anonymous request) keeps the outer user."""

        @track_user(lambda user_id: None)
        def chat(user_id: str | None) -> str | None:
            return current_user()

        with track_user("outer"):
            assert chat(None) == "outer"
        assert chat(None) is None
