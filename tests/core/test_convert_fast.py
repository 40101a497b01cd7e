"""
The converter's fast path for the usual turn gives the record the general rules give.

``_convert._one_call`` picks the usual turn (a dict input, one chat model call,
a str answer) and skips the rules whose answer it knows. Each case here records
real turns through real chains, converts them once with the fast path and once
with it turned off, and compares the whole records.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableLambda

import context_trace as ct
from context_trace import _convert, _runtime
from context_trace._attribution import reset_header_sessions
from context_trace._record import Conversation
from context_trace._turn import Turn

from ._helpers import KeepingPipeline


@pytest.fixture
def recorded() -> Iterator[list[Turn]]:
    """The raw turns recorded while the test runs (nothing is exported)."""
    state = _runtime._STATE
    keep = KeepingPipeline()
    with state.lock:
        previous, state.pipeline = state.pipeline, keep  # type: ignore[assignment]
    try:
        yield keep.items
    finally:
        with state.lock:
            state.pipeline = previous
    reset_header_sessions()


def _prompt(*parts: Any) -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages(list(parts))


def _usage_model() -> GenericFakeChatModel:
    message = AIMessage(
        "Paris.",
        usage_metadata={"input_tokens": 12, "output_tokens": 3, "total_tokens": 15},
        response_metadata={"model_name": "fake-4o"},
    )
    return GenericFakeChatModel(messages=iter([message] * 8))


SYSTEM = ("system", "You are terse.")
HISTORY = [HumanMessage("hello"), AIMessage("hi there")]

# name -> (chain, the inputs of its turns). Every case records several turns.
CASES: dict[str, tuple[Callable[[], Runnable[Any, Any]], list[Any]]] = {
    "parrot": (
        lambda: (
            _prompt(SYSTEM, ("human", "{q}"))
            | ParrotFakeChatModel()
            | StrOutputParser()
        ),
        [{"q": "What is the capital of France?"}, {"q": "And of Spain?"}],
    ),
    "no system prompt": (
        lambda: (
            _prompt(("human", "{question}")) | ParrotFakeChatModel() | StrOutputParser()
        ),
        [{"question": "hi"}, {"question": "again"}],
    ),
    "template adds context": (
        lambda: (
            _prompt(SYSTEM, ("human", "Context: {ctx}\n\nQuestion: {question}"))
            | FakeListChatModel(responses=["Paris.", "Madrid."])
            | StrOutputParser()
        ),
        [
            {"ctx": "France", "question": "capital?"},
            {"ctx": "Spain", "question": "capital?"},
        ],
    ),
    "history in the input": (
        lambda: (
            _prompt(SYSTEM, MessagesPlaceholder("history"), ("human", "{input}"))
            | ParrotFakeChatModel()
            | StrOutputParser()
        ),
        [{"history": HISTORY, "input": "and now?"}, {"history": [], "input": "fresh"}],
    ),
    "usage and model name": (
        lambda: _prompt(SYSTEM, ("human", "{q}")) | _usage_model() | StrOutputParser(),
        [{"q": "capital of France?"}, {"q": "capital of Italy?"}],
    ),
    "message output": (
        lambda: _prompt(("human", "{q}")) | FakeListChatModel(responses=["ok", "sure"]),
        [{"q": "one"}, {"q": "two"}],
    ),
    "empty answer": (
        lambda: (
            _prompt(("human", "{q}"))
            | FakeListChatModel(responses=[""])
            | StrOutputParser()
        ),
        [{"q": "say nothing"}],
    ),
    "answer not the model's": (
        lambda: (
            _prompt(("human", "{q}"))
            | ParrotFakeChatModel()
            | StrOutputParser()
            | RunnableLambda(lambda text: text.upper())
        ),
        [{"q": "shout"}],
    ),
    "two model calls": (
        lambda: (
            _prompt(("human", "{q}"))
            | ParrotFakeChatModel()
            | StrOutputParser()
            | (lambda text: {"q": text})
            | _prompt(("human", "{q}"))
            | ParrotFakeChatModel()
            | StrOutputParser()
        ),
        [{"q": "twice"}],
    ),
    "str input": (
        lambda: ParrotFakeChatModel() | StrOutputParser(),
        ["a plain string"],
    ),
    "a failing turn": (
        lambda: (
            _prompt(("human", "{q}"))
            | ParrotFakeChatModel()
            | RunnableLambda(lambda _: 1 / 0)
        ),
        [{"q": "fail"}],
    ),
}


def _record(
    chain: Runnable[Any, Any], inputs: list[Any], session: bool, stream: bool = False
) -> None:
    config = {"tags": ["t1"], "metadata": {"plan": "pro"}, "run_name": "answer"}
    for value in inputs:
        with ct.track_user("u1", metadata={"team": "a"}):
            if session:
                with ct.context_session("s1"):
                    _invoke(chain, value, config, stream)
            else:
                _invoke(chain, value, config, stream)


def _invoke(
    chain: Runnable[Any, Any], value: Any, config: dict[str, Any], stream: bool
) -> None:
    # A stream of an empty answer fails in LangChain: "No generation chunks".
    with contextlib.suppress(ZeroDivisionError, ValueError):
        if stream:  # read to the end: the root's inputs come at its end
            for _ in chain.stream(value, config=config):  # type: ignore[arg-type]
                pass
        else:
            chain.invoke(value, config=config)  # type: ignore[arg-type]


def _convert_all(turns: list[Turn], fast: bool, monkeypatch: Any) -> list[Any]:
    reset_header_sessions()  # the per-session system prompts, as in a fresh process
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(_convert, "_one_call", lambda *_: None)
        return [_convert.to_conversation(t) for t in turns]


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
@pytest.mark.parametrize("session", [False, True], ids=["no session", "session"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_fast_path_gives_the_general_record(
    case: str,
    session: bool,
    stream: bool,
    recorded: list[Turn],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every turn, invoked or streamed, converts to the same record either way."""
    build, inputs = CASES[case]
    _record(build(), inputs, session, stream)
    assert recorded, "no turn recorded"

    general = _convert_all(recorded, False, monkeypatch)
    fast = _convert_all(recorded, True, monkeypatch)

    assert general == fast
    assert all(isinstance(r, Conversation) for r in fast)


def test_the_usual_turn_takes_the_fast_path(recorded: list[Turn]) -> None:
    """A prompt | chat model | parser turn with a dict input is the usual turn."""
    build, inputs = CASES["parrot"]
    _record(build(), inputs, session=False)

    picked = [
        _convert._one_call(t, t.steps or [], t.results or {}) is not None
        for t in recorded
    ]

    assert [True, True] == picked


def test_a_streamed_usual_turn_takes_the_fast_path(recorded: list[Turn]) -> None:
    """The same turn read as a stream to its end is the usual turn too."""
    build, inputs = CASES["usage and model name"]
    _record(build(), inputs, session=False, stream=True)

    picked = [
        _convert._one_call(t, t.steps or [], t.results or {}) is not None
        for t in recorded
    ]

    assert [True, True] == picked


def test_records_are_built_in_the_dataclass_field_order() -> None:
    """to_conversation passes a Conversation's fields positionally, in their order."""
    assert _convert.CONVERSATION_FIELDS == tuple(f.name for f in fields(Conversation))
