"""
Testing your own app with context_trace: the ``context_trace_records`` fixture.

    pytest examples/test_with_context_trace.py

The fixture records every turn the test produces into a list, synchronously
(no background thread, nothing written to disk), and ``assert_conversation``
checks what was recorded: the user, the session, a piece of text, errors.
Installing context-trace registers the fixture with pytest (a ``pytest11``
entry point); nothing needs to go in your conftest.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda

import context_trace as ct
from context_trace.testing import CapturedRecords, assert_conversation

# --- the app under test (normally imported from your own package) -------------
PROMPT = ChatPromptTemplate.from_messages(
    [("system", "You are the support assistant."), ("human", "{text}")]
)


def support_chain() -> Runnable[dict[str, Any], str]:
    # An echo model stands in for the real one: it answers with the question.
    return PROMPT | ParrotFakeChatModel() | StrOutputParser()


@ct.track_user(user_id=lambda user_id: user_id, metadata={"feature": "support"})
def handle_message(
    user_id: str, text: str, chain: Runnable[dict[str, Any], str]
) -> str:
    return chain.invoke({"text": text})


def _timeout(_: Any) -> Any:
    raise TimeoutError("the model provider timed out")


# --- the tests ----------------------------------------------------------------
class TestSupportBot:
    def test_turn_is_recorded_for_the_user(
        self, context_trace_records: CapturedRecords
    ) -> None:
        """A message handled for u-42 is recorded once, for u-42, with its text."""
        handle_message("u-42", "Where is my parcel?", support_chain())

        [turn] = assert_conversation(
            context_trace_records,
            user_id="u-42",
            contains="Where is my parcel?",
            count=1,
        )
        assert "support" == turn.metadata["feature"]
        assert "Where is my parcel?" == turn.answer  # the echo model repeats it

    def test_session_groups_turns_and_keeps_the_rating(
        self, context_trace_records: CapturedRecords
    ) -> None:
        """Two turns in one session share its id; the rating is recorded for it."""
        chain = support_chain()
        with ct.context_session("chat-1", user_id="u-7") as session:
            handle_message("u-7", "Hello", chain)
            handle_message("u-7", "Can I change my address?", chain)
            session.rate(1)

        assert_conversation(context_trace_records, session_id="chat-1", count=2)
        assert [("chat-1", 1)] == [
            (f.session_id, f.rating) for f in context_trace_records.feedback
        ]

    def test_failed_turn_is_recorded_as_an_error(
        self, context_trace_records: CapturedRecords
    ) -> None:
        """A turn whose chain raises is still recorded, marked with the error."""
        failing = (
            PROMPT
            | RunnableLambda(_timeout)
            | ParrotFakeChatModel()
            | StrOutputParser()
        )

        with pytest.raises(TimeoutError):
            handle_message("u-1", "Are you there?", failing)

        [turn] = assert_conversation(
            context_trace_records, user_id="u-1", error=True, count=1
        )
        assert "TimeoutError: the model provider timed out" == turn.error

    def test_nothing_is_recorded_outside_a_scope(
        self, context_trace_records: CapturedRecords
    ) -> None:
        """A chain called outside any user scope is not recorded."""
        support_chain().invoke({"text": "background job"})

        assert [] == list(context_trace_records)
