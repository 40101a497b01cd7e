"""User and session ids taken from a model's headers / OpenAI ``user`` field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from context_trace import (
    ContextCallbackHandler,
    configure,
    context_session,
    flush,
    track_user,
)
from context_trace._attribution import _SessionSystems
from context_trace._convert import header_ids
from context_trace._record import Message
from context_trace._store.reader import SQLiteReader
from context_trace.testing import CapturedRecords

from ._models import HeaderParrot, echo_chain, history_chain


class TestHeaderIds:
    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({"headers": {"user_id": "123"}}, ("123", None)),
            ({"headers": {"X-User-Id": "u", "X-Session-Id": "s"}}, ("u", "s")),
            ({"headers": {"x-user-id": "u", "SESSION_ID": "s"}}, ("u", "s")),
            ({"default_headers": {"user_id": 7, "session_id": 8}}, ("7", "8")),
            ({"extra_headers": {"user-id": " padded "}}, ("padded", None)),
            ({"model_kwargs": {"headers": {"user_id": "mk"}}}, ("mk", None)),
            ({"user": "openai-user"}, ("openai-user", None)),
            ({"model_kwargs": {"user": "mk-user"}}, ("mk-user", None)),
        ],
        ids=[
            "headers user_id",
            "X- header names",
            "any case and separator",
            "default_headers, int ids",
            "per-call extra_headers, stripped",
            "headers inside model_kwargs",
            "OpenAI user field",
            "user inside model_kwargs",
        ],
    )
    def test_finds_ids(self, params: dict[str, Any], expected: tuple[Any, ...]) -> None:
        """Every supported place and spelling of the user/session id is found."""
        assert expected == header_ids(params)

    def test_precedence(self) -> None:
        """extra_headers beat headers, which beat default_headers, which beat user."""
        params = {
            "user": "from-user-field",
            "default_headers": {"user_id": "from-default", "session_id": "s-default"},
            "headers": {"user_id": "from-headers"},
            "extra_headers": {"X-Session-Id": "s-extra"},
        }

        assert ("from-headers", "s-extra") == header_ids(params)

    @pytest.mark.parametrize(
        "params",
        [
            None,
            "headers",
            {},
            {"headers": None},
            {"headers": {"user_id": ""}},
            {"headers": {"user_id": True}},
            {"headers": {"user_id": {"nested": 1}}},
            {"headers": {1: "not-a-name"}},
            {"headers": ["user_id", "u"]},
            {"user": 3.5},
        ],
    )
    def test_ignores_missing_and_unusable_values(self, params: Any) -> None:
        """Missing, empty, bool and non-scalar values give no id."""
        assert (None, None) == header_ids(params)


class TestAttribution:
    def test_header_user_when_no_scope(self, records: CapturedRecords) -> None:
        """Outside any scope the turn goes to the user in the model's headers."""
        chain = echo_chain(HeaderParrot(headers={"user_id": "123"}))

        chain.invoke(
            {"question": "hi"}, config={"callbacks": [ContextCallbackHandler()]}
        )

        assert [("123", None)] == [
            (c.user_id, c.session_id) for c in records.conversations
        ]

    @pytest.mark.parametrize(
        ("model_fields", "expected"),
        [
            ({"default_headers": {"X-User-Id": "d-user"}}, "d-user"),
            ({"user": "openai-user"}, "openai-user"),
            (
                {"headers": {"user_id": "h-user"}, "user": "openai-user"},
                "h-user",
            ),
        ],
    )
    def test_other_sources(
        self, records: CapturedRecords, model_fields: dict[str, Any], expected: str
    ) -> None:
        """default_headers and the OpenAI user field attribute too; headers win."""
        chain = echo_chain(HeaderParrot(**model_fields))

        chain.invoke(
            {"question": "q"}, config={"callbacks": [ContextCallbackHandler()]}
        )

        assert [expected] == [c.user_id for c in records.conversations]

    def test_per_call_user_kwarg(self, records: CapturedRecords) -> None:
        """A user passed per call (model.invoke(..., user=...)) attributes that call."""
        model = HeaderParrot()

        model.invoke("q", config={"callbacks": [ContextCallbackHandler()]}, user="x1")

        assert ["x1"] == [c.user_id for c in records.conversations]

    def test_scope_user_wins_over_header(self, records: CapturedRecords) -> None:
        """With both a scope user and a header user, the scope user is recorded."""
        chain = echo_chain(
            HeaderParrot(headers={"user_id": "header-user", "session_id": "h-sess"})
        )

        with track_user("scope-user"):
            chain.invoke({"question": "q"})

        assert [("scope-user", "h-sess")] == [
            (c.user_id, c.session_id) for c in records.conversations
        ]

    def test_scope_session_wins_over_header(self, records: CapturedRecords) -> None:
        """A scope session wins over a header session; the header user fills in."""
        chain = echo_chain(
            HeaderParrot(headers={"user_id": "header-user", "session_id": "h-sess"})
        )

        with context_session("scope-sess"):
            chain.invoke({"question": "q"})

        assert [("header-user", "scope-sess")] == [
            (c.user_id, c.session_id) for c in records.conversations
        ]

    def test_headers_apply_to_scope_recorders_too(
        self, records: CapturedRecords
    ) -> None:
        """A scope whose resolver finds no user takes the user from the model's headers."""
        chain = echo_chain(HeaderParrot(headers={"X-User-Id": "via-header"}))

        @track_user(lambda: None, metadata={"tenant": "acme"})
        def ask() -> None:
            chain.invoke({"question": "q"})

        ask()

        assert [("via-header", "acme")] == [
            (c.user_id, c.metadata["tenant"]) for c in records.conversations
        ]


def _ask(chain: Any, history: list[Any], question: str) -> None:
    handler = ContextCallbackHandler()
    answer = chain.invoke(
        {"history": list(history), "question": question},
        config={"callbacks": [handler]},
    )
    history.extend([HumanMessage(question), AIMessage(answer)])


class TestHeaderSessions:
    def test_history_is_de_duplicated(self, records: CapturedRecords) -> None:
        """Turns of a header-only session leave out the history the prompt re-sends."""
        chain = history_chain(
            HeaderParrot(headers={"user_id": "u1", "session_id": "hs-1"})
        )
        history: list[Any] = []

        _ask(chain, history, "first")
        _ask(chain, history, "second")

        assert [
            [
                Message("system", "You are terse."),
                Message("user", "first"),
                Message("assistant", "first"),
            ],
            [Message("user", "second"), Message("assistant", "second")],
        ] == [list(c.messages) for c in records.conversations]
        assert {"hs-1"} == {c.session_id for c in records.conversations}

    def test_sessions_do_not_share_history(self, records: CapturedRecords) -> None:
        """Two header sessions keep separate de-duplication state."""
        one = history_chain(HeaderParrot(headers={"session_id": "hs-a"}))
        two = history_chain(HeaderParrot(headers={"session_id": "hs-b"}))

        _ask(one, [], "same")
        _ask(two, [], "same")

        assert [3, 3] == [len(c.messages) for c in records.conversations]

    def test_lru_forgets_the_least_recent_session(self) -> None:
        """The per-session system prompts are bounded: the least recent is dropped."""
        sessions = _SessionSystems(2)

        sessions.changed("a", "sys")
        sessions.changed("b", "sys")
        sessions.changed("a", "sys")
        sessions.changed("c", "sys")

        assert (False, True) == (
            sessions.changed("a", "sys"),
            sessions.changed("b", "sys"),
        )

    def test_stored_session_transcript(self, tmp_path: Path) -> None:
        """Through the SQLite store, a header session's transcript has no repeats."""
        db = tmp_path / "headers.db"
        configure(db_path=db)
        chain = history_chain(
            HeaderParrot(headers={"user_id": "u-db", "session_id": "hs-db"})
        )
        history: list[Any] = []

        for question in ("one", "two", "three"):
            _ask(chain, history, question)
        assert True is flush(10.0)

        with SQLiteReader(db) as reader:
            transcript = reader.session_messages("hs-db")
            users = [c.user_id for c in reader.conversations()]

        assert [
            ("system", "You are terse."),
            ("user", "one"),
            ("assistant", "one"),
            ("user", "two"),
            ("assistant", "two"),
            ("user", "three"),
            ("assistant", "three"),
        ] == [(m.role, m.content) for m in transcript]
        assert ["u-db", "u-db", "u-db"] == users
