"""Transcripts of the app shapes people ship: RAG, LangGraph threads, history, streams."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import (
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import (
    ChatPromptTemplate,
    FewShotChatMessagePromptTemplate,
    MessagesPlaceholder,
)
from langchain_core.runnables import (
    Runnable,
    RunnableBranch,
    RunnableLambda,
    RunnablePassthrough,
)
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.tools import tool
from langchain_core.vectorstores import InMemoryVectorStore
from langgraph.checkpoint.memory import MemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from context_trace import _runtime, configure, context_session, flush, track_user
from context_trace._record import Message, exported_metadata
from context_trace._store.reader import SQLiteReader
from context_trace.testing import CapturedRecords, capture

from ._models import ToolCallingFake, get_weather


def _shape(conversation: Any) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conversation.messages]


def _replies(*texts: str, model: str | None = None, tokens: int = 0) -> Any:
    """A fake model answering *texts* in turn, naming *model* in its responses."""
    meta = {"model_name": model} if model else {}
    usage = (
        {"input_tokens": tokens, "output_tokens": 1, "total_tokens": tokens + 1}
        if tokens
        else None
    )
    return GenericFakeChatModel(
        messages=iter(
            [AIMessage(t, response_metadata=meta, usage_metadata=usage) for t in texts]
        )
    )


def _react_agent(model: Any, tools: Any, **kwargs: Any) -> Any:
    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():
        # Deprecated in LangGraph 1.0 in favour of langchain.agents; still used.
        warnings.simplefilter("ignore", DeprecationWarning)
        return create_react_agent(model, tools, **kwargs)


def _rag_chain(model: Any) -> Any:
    store = InMemoryVectorStore.from_texts(
        ["Refunds take 5 business days."], DeterministicFakeEmbedding(size=16)
    )
    retriever = store.as_retriever(search_kwargs={"k": 1})

    def fmt(docs: list[Document]) -> str:
        return "\n".join(d.page_content for d in docs)

    prompt = ChatPromptTemplate.from_messages(
        [("human", "Context:\n{context}\n\nQuestion: {question}")]
    )
    return (
        {"context": retriever | fmt, "question": RunnablePassthrough()}
        | prompt
        | model
        | StrOutputParser()
    )


class TestUsersOwnWords:
    def test_rag_chain_records_the_question(self, records: CapturedRecords) -> None:
        """A RAG chain records the user's question; the rendered prompt is detail."""
        chain = _rag_chain(_replies("Five business days."))

        with track_user("u"):
            chain.invoke("How long do refunds take?")

        (turn,) = records.conversations

        assert [
            ("user", "How long do refunds take?"),
            ("assistant", "Five business days."),
        ] == _shape(turn)
        assert (
            "Context:\nRefunds take 5 business days.\n\n"
            "Question: How long do refunds take?"
        ) == exported_metadata(turn)["model_input"]

    def test_few_shot_examples_and_a_classifier(self, records: CapturedRecords) -> None:
        """Few-shot examples and a classification step are not the user's turn."""
        classify = (
            ChatPromptTemplate.from_messages([("human", "Classify: {question}")])
            | _replies("billing")
            | StrOutputParser()
        )
        examples = FewShotChatMessagePromptTemplate(
            examples=[{"q": "Can I pay by card?", "a": "Yes."}],
            example_prompt=ChatPromptTemplate.from_messages(
                [("human", "{q}"), ("ai", "{a}")]
            ),
        )
        answer = ChatPromptTemplate.from_messages(
            [("system", "Topic: {category}"), examples, ("human", "{question}")]
        )
        chain = (
            RunnablePassthrough.assign(category=classify)
            | answer
            | _replies("Within a week.")
            | StrOutputParser()
        )

        with track_user("u"):
            chain.invoke({"question": "When is my refund due?"})

        assert [
            ("system", "Topic: billing"),
            ("user", "When is my refund due?"),
            ("assistant", "Within a week."),
        ] == _shape(records.conversations[0])


class TestAnsweringModel:
    def test_model_named_by_its_response(self, records: CapturedRecords) -> None:
        """The model name comes from the response, not the model's class."""
        chain = _rag_chain(_replies("Five days.", model="gpt-x"))

        with track_user("u"):
            chain.invoke("How long do refunds take?")

        assert "gpt-x" == exported_metadata(records.conversations[0])["model"]

    def test_rewrite_then_answer_records_the_answerer(
        self, records: CapturedRecords
    ) -> None:
        """The answering model is recorded; each call's model and tokens are kept."""
        rewrite = (
            ChatPromptTemplate.from_messages([("human", "Rewrite: {question}")])
            | _replies("refund duration", model="cheap-mini", tokens=4)
            | StrOutputParser()
        )
        answer = (
            ChatPromptTemplate.from_messages([("human", "{query}")])
            | _replies("Five days.", model="big-model", tokens=10)
            | StrOutputParser()
        )
        chain = {"query": rewrite} | answer

        with track_user("u"):
            chain.invoke({"question": "refunds how long"})

        (turn,) = records.conversations

        assert [
            ("user", "refunds how long"),
            ("assistant", "Five days."),
        ] == _shape(turn)
        assert ("big-model", "14", "2", "16") == (
            exported_metadata(turn)["model"],
            exported_metadata(turn)["prompt_tokens"],
            exported_metadata(turn)["completion_tokens"],
            exported_metadata(turn)["total_tokens"],
        )
        assert [
            {
                "model": "cheap-mini",
                "prompt_tokens": 4,
                "completion_tokens": 1,
                "total_tokens": 5,
            },
            {
                "model": "big-model",
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "total_tokens": 11,
            },
        ] == json.loads(exported_metadata(turn)["model_calls"])

    def test_answer_follows_the_root_output(self, records: CapturedRecords) -> None:
        """A chain ending in a lambda that returns a dict records the whole dict."""
        chain = (
            ChatPromptTemplate.from_messages([("human", "{q}")])
            | ParrotFakeChatModel()
            | StrOutputParser()
            | RunnableLambda(lambda s: {"result": s, "score": 7})
        )

        with track_user("u"):
            chain.invoke({"q": "hello"})

        assert '{"result":"hello","score":7}' == records.conversations[0].answer


def _history_chain() -> Runnable[Any, Any]:
    stores: dict[str, InMemoryChatMessageHistory] = {}
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are terse."),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )
    return RunnableWithMessageHistory(
        prompt | ParrotFakeChatModel(),
        lambda sid: stores.setdefault(sid, InMemoryChatMessageHistory()),
        input_messages_key="question",
        history_messages_key="history",
    )


# RunnableWithMessageHistory and InMemoryChatMessageHistory are deprecated in
# favour of LangGraph persistence, and still in wide use.
@pytest.mark.filterwarnings("ignore::langchain_core._api.LangChainDeprecationWarning")
class TestFrameworkSessions:
    def test_message_history_session_id(self, records: CapturedRecords) -> None:
        """RunnableWithMessageHistory's session_id is the session; history is once."""
        chain = _history_chain()
        config: Any = {"configurable": {"session_id": "s1"}}

        with track_user("u"):
            for question in ("q1", "q2", "q3"):
                chain.invoke({"question": question}, config=config)

        assert [("u", "s1")] * 3 == [
            (c.user_id, c.session_id) for c in records.conversations
        ]
        assert [
            [("system", "You are terse."), ("user", "q1"), ("assistant", "q1")],
            [("user", "q2"), ("assistant", "q2")],
            [("user", "q3"), ("assistant", "q3")],
        ] == [_shape(c) for c in records.conversations]

    def test_langgraph_thread_id(self, records: CapturedRecords) -> None:
        """A LangGraph thread_id with a checkpointer is the session; no replays."""
        agent = _react_agent(
            _replies("Hello!", "Paris is sunny."), [], checkpointer=MemorySaver()
        )
        config: Any = {"configurable": {"thread_id": "t1"}}

        with track_user("u"):
            agent.invoke({"messages": [("user", "hi")]}, config=config)
            agent.invoke({"messages": [("user", "and Paris?")]}, config=config)

        assert [("u", "t1")] * 2 == [
            (c.user_id, c.session_id) for c in records.conversations
        ]
        assert [
            [("user", "hi"), ("assistant", "Hello!")],
            [("user", "and Paris?"), ("assistant", "Paris is sunny.")],
        ] == [_shape(c) for c in records.conversations]

    def test_langgraph_thread_id_as_a_uuid(self, records: CapturedRecords) -> None:
        """A UUID thread_id is the session, as its canonical string."""
        agent = _react_agent(_replies("Hello!"), [], checkpointer=MemorySaver())
        thread = uuid.uuid4()

        with track_user("u"):
            agent.invoke(
                {"messages": [("user", "hi")]},
                config={"configurable": {"thread_id": thread}},
            )

        assert [str(thread)] == [c.session_id for c in records.conversations]

    def test_explicit_session_wins(self, records: CapturedRecords) -> None:
        """An open context_session wins over the framework's session id."""
        chain = _history_chain()

        with track_user("u"), context_session(session_id="mine"):
            chain.invoke(
                {"question": "q"}, config={"configurable": {"session_id": "s1"}}
            )

        assert ["mine"] == [c.session_id for c in records.conversations]

    def test_sampling_keeps_a_framework_session_whole(self) -> None:
        """Under sample_rate, a framework session is kept or dropped as a whole."""
        configure(sample_rate=0.5)
        with capture() as captured, track_user("u"):
            chain = _history_chain()
            agent = _react_agent(
                GenericFakeChatModel(messages=itertools.repeat(AIMessage("ok"))),
                [],
                checkpointer=MemorySaver(),
            )
            for n in range(12):
                for turn in range(3):
                    chain.invoke(
                        {"question": f"q{turn}"},
                        config={"configurable": {"session_id": f"s{n}"}},
                    )
                    agent.invoke(
                        {"messages": [("user", f"q{turn}")]},
                        config={"configurable": {"thread_id": f"t{n}"}},
                    )
        config = _runtime.active_config()
        expected = sorted(
            sid
            for n in range(12)
            for sid in (f"s{n}", f"t{n}")
            if config.keep_session(sid)
            for _ in range(3)
        )

        assert 0 < len(expected) < 72  # some sessions sampled in, some out
        assert expected == sorted(str(c.session_id) for c in captured.conversations)


def _placeholder_chain() -> Runnable[dict[str, Any], str]:
    """A system prompt, the history the app passes in, the question; echoes it."""
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are terse."),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )
    return prompt | ParrotFakeChatModel() | StrOutputParser()


def _three_turns(chain: Runnable[dict[str, Any], str]) -> None:
    """Ask Q1, Q2, Q3, re-sending the history each time (as an app does)."""
    history: list[Any] = []
    for question in ("Q1", "Q2", "Q3"):
        answer = chain.invoke({"history": history, "question": question})
        history += [("human", question), ("ai", answer)]


_THIRD_WITH_HISTORY = [
    ("system", "You are terse."),
    ("user", "Q1"),
    ("assistant", "Q1"),
    ("user", "Q2"),
    ("assistant", "Q2"),
    ("user", "Q3"),
    ("assistant", "Q3"),
]


class TestHistoryOnce:
    def test_without_a_session_a_turn_keeps_the_history_it_was_sent(
        self, records: CapturedRecords
    ) -> None:
        """With no session to hold it, turn 3 keeps the history before Q3 and A3."""
        with track_user("u"):
            _three_turns(_placeholder_chain())

        assert _THIRD_WITH_HISTORY == _shape(records[-1])
        assert "model_input" not in exported_metadata(records[-1])
        assert [None] * 3 == [c.session_id for c in records.conversations]

    def test_without_a_session_the_store_keeps_the_history(
        self, tmp_path: Path
    ) -> None:
        """Through the SQLite store, a session-less turn's history is still there."""
        db = tmp_path / "t.db"
        configure(db_path=db)

        with track_user("u"):
            _three_turns(_placeholder_chain())
        flush()
        stored = list(SQLiteReader(db).conversations())

        assert [None] * 3 == [c.session_id for c in stored]
        assert _THIRD_WITH_HISTORY == [(m.role, m.content) for m in stored[-1].messages]

    def test_few_shot_examples_are_not_history(self, records: CapturedRecords) -> None:
        """A template's few-shot examples stay out; the history the app sent is kept."""
        examples = FewShotChatMessagePromptTemplate(
            examples=[{"q": "Can I pay by card?", "a": "Yes."}],
            example_prompt=ChatPromptTemplate.from_messages(
                [("human", "{q}"), ("ai", "{a}")]
            ),
        )
        prompt = ChatPromptTemplate.from_messages(
            [examples, MessagesPlaceholder("history"), ("human", "{question}")]
        )
        chain = prompt | ParrotFakeChatModel() | StrOutputParser()

        with track_user("u"):
            chain.invoke(
                {"history": [("human", "Hi"), ("ai", "Hello")], "question": "Refund?"}
            )

        assert [
            ("user", "Hi"),
            ("assistant", "Hello"),
            ("user", "Refund?"),
            ("assistant", "Refund?"),
        ] == _shape(records[-1])

    def test_in_a_session_a_turn_holds_only_its_own_exchange(
        self, records: CapturedRecords
    ) -> None:
        """In a session, turn 3 holds Q3 and A3: the session's turns hold the rest."""
        with track_user("u"), context_session(session_id="s"):
            _three_turns(_placeholder_chain())

        assert [("user", "Q3"), ("assistant", "Q3")] == _shape(records[-1])

    def test_a_model_called_with_history_and_no_session(
        self, records: CapturedRecords
    ) -> None:
        """A chat model invoked with a message list keeps the messages before the question."""
        with track_user("u"):
            ParrotFakeChatModel().invoke(
                [
                    ("system", "Be brief."),
                    ("human", "hi"),
                    ("ai", "hello"),
                    ("human", "and more?"),
                ]
            )

        assert [
            ("system", "Be brief."),
            ("user", "hi"),
            ("assistant", "hello"),
            ("user", "and more?"),
            ("assistant", "and more?"),
        ] == _shape(records[-1])

    def test_an_agent_given_its_messages_without_a_checkpointer(
        self, records: CapturedRecords
    ) -> None:
        """A LangGraph agent handed the whole conversation keeps it when there is no thread."""
        agent = _react_agent(_replies("Paris is sunny."), [])

        with track_user("u"):
            agent.invoke(
                {
                    "messages": [
                        ("user", "hi"),
                        ("assistant", "Hello!"),
                        ("user", "and Paris?"),
                    ]
                }
            )

        assert [
            ("user", "hi"),
            ("assistant", "Hello!"),
            ("user", "and Paris?"),
            ("assistant", "Paris is sunny."),
        ] == _shape(records[-1])

    def test_changing_system_prompt_in_the_store(self, tmp_path: Path) -> None:
        """A system prompt is stored when it changes; the exchanges once each."""
        db = tmp_path / "t.db"
        configure(db_path=db)
        prompt = ChatPromptTemplate.from_messages(
            [
                ("system", "Summary: {summary}"),
                MessagesPlaceholder("history"),
                ("human", "{question}"),
            ]
        )
        chain = prompt | ParrotFakeChatModel() | StrOutputParser()
        history: list[Any] = []

        with track_user("u"), context_session(session_id="sum") as session:
            for question, summary in (("Q1", "none"), ("Q2", "Q1"), ("Q3", "Q1")):
                answer = chain.invoke(
                    {"summary": summary, "history": history, "question": question}
                )
                history += [("human", question), ("ai", answer)]
        flush()

        assert [
            ("system", "Summary: none"),
            ("user", "Q1"),
            ("assistant", "Q1"),
            ("system", "Summary: Q1"),
            ("user", "Q2"),
            ("assistant", "Q2"),
            ("user", "Q3"),
            ("assistant", "Q3"),
        ] == [
            (m.role, m.content) for m in SQLiteReader(db).session_messages(session.id)
        ]


def _stream_chain() -> Runnable[dict[str, Any], str]:
    model = GenericFakeChatModel(
        messages=itertools.repeat(AIMessage("one two three four five"))
    )
    return (
        ChatPromptTemplate.from_messages([("human", "{question}")])
        | model
        | StrOutputParser()
    )


async def _until_recorded(records: CapturedRecords) -> None:
    """Let the event loop finalize a closed async generator (no wall-clock wait)."""
    for _ in range(100):
        if records:
            return
        await asyncio.sleep(0)


class TestAbandonedStreams:
    def test_sync_stream_closed_after_two_chunks(
        self, records: CapturedRecords
    ) -> None:
        """A sync stream closed early records the two chunks read, marked, no error."""
        with track_user("u"):
            stream: Any = _stream_chain().stream({"question": "q"})
            received = next(stream) + next(stream)
            stream.close()

        (turn,) = records.conversations

        assert ("one ", received) == (turn.answer, "one ")
        assert ("true", None) == (
            exported_metadata(turn).get("stream_abandoned"),
            turn.error,
        )

    async def test_astream_closed_after_two_chunks(
        self, records: CapturedRecords
    ) -> None:
        """An astream closed early records what was read, marked, with no error."""
        async with track_user("u"):
            stream: Any = _stream_chain().astream({"question": "q"})
            received = await stream.__anext__() + await stream.__anext__()
            await stream.aclose()
            await _until_recorded(records)

        (turn,) = records.conversations

        assert (received, "true", None) == (
            turn.answer,
            exported_metadata(turn).get("stream_abandoned"),
            turn.error,
        )

    async def test_astream_events_abandoned(self, records: CapturedRecords) -> None:
        """astream_events left after two tokens records them, marked, no error."""
        received = ""
        async with track_user("u"):
            events = _stream_chain().astream_events({"question": "q"}, version="v2")
            count = 0
            async for event in events:
                if event["event"] == "on_chat_model_stream":
                    received += event["data"]["chunk"].content
                    count += 1
                    if count == 2:
                        break
            await events.aclose()  # type: ignore[attr-defined]
            await _until_recorded(records)

        (turn,) = records.conversations

        assert ("one ", "true", None) == (
            turn.answer,
            exported_metadata(turn).get("stream_abandoned"),
            turn.error,
        )
        assert "one " == received

    def test_stream_read_to_the_end_is_not_marked(
        self, records: CapturedRecords
    ) -> None:
        """A stream read to the end records the whole answer, unmarked."""
        with track_user("u"):
            "".join(_stream_chain().stream({"question": "q"}))

        (turn,) = records.conversations

        assert ("one two three four five", None) == (
            turn.answer,
            exported_metadata(turn).get("stream_abandoned"),
        )

    def test_langgraph_messages_stream_abandoned(
        self, records: CapturedRecords
    ) -> None:
        """A LangGraph messages stream left early records what was read, marked."""
        agent = _alpha_agent()

        with track_user("u"):
            stream = agent.stream(
                {"messages": [("user", "hi")]},
                config={"configurable": {"thread_id": "t"}},
                stream_mode="messages",
            )
            received = "".join(chunk.content for chunk, _meta in _take(stream, 2))
            stream.close()

        (turn,) = records.conversations

        # LangGraph runs the model's step to its end before it yields the first
        # token, so the callbacks saw every token: the answer is what the stream
        # handed its consumer, not what the model generated.
        assert "alpha " == received
        assert (received, "true", None, "t") == (
            turn.answer,
            exported_metadata(turn).get("stream_abandoned"),
            turn.error,
            turn.session_id,
        )
        assert [("user", "hi"), ("assistant", received)] == _shape(turn)

    async def test_langgraph_messages_astream_abandoned(
        self, records: CapturedRecords
    ) -> None:
        """A LangGraph messages astream closed early records what was read, marked."""
        agent = _alpha_agent()

        async with track_user("u"):
            stream = agent.astream(
                {"messages": [("user", "hi")]},
                config={"configurable": {"thread_id": "t"}},
                stream_mode="messages",
            )
            first = await stream.__anext__()
            second = await stream.__anext__()
            await stream.aclose()
            await _until_recorded(records)

        (turn,) = records.conversations

        received = first[0].content + second[0].content
        assert "alpha " == received
        assert (received, "true", None, "t") == (
            turn.answer,
            exported_metadata(turn).get("stream_abandoned"),
            turn.error,
            turn.session_id,
        )

    def test_langgraph_messages_stream_read_to_the_end_is_not_marked(
        self, records: CapturedRecords
    ) -> None:
        """A LangGraph messages stream read to the end records the whole answer."""
        agent = _alpha_agent()

        with track_user("u"):
            received = "".join(
                chunk.content
                for chunk, _meta in agent.stream(
                    {"messages": [("user", "hi")]},
                    config={"configurable": {"thread_id": "t"}},
                    stream_mode="messages",
                )
            )

        (turn,) = records.conversations

        assert ("alpha beta gamma", "alpha beta gamma", None, None) == (
            received,
            turn.answer,
            exported_metadata(turn).get("stream_abandoned"),
            turn.error,
        )

    def test_langgraph_stream_mode_list_abandoned(
        self, records: CapturedRecords
    ) -> None:
        """With a list of modes, the messages items the consumer read are recorded."""
        agent = _alpha_agent()

        with track_user("u"):
            stream = agent.stream(
                {"messages": [("user", "hi")]},
                config={"configurable": {"thread_id": "t"}},
                stream_mode=["updates", "messages"],
            )
            items = _take(stream, 3)
            stream.close()

        (turn,) = records.conversations

        received = "".join(p[0].content for mode, p in items if mode == "messages")
        assert "alpha beta" == received
        assert (received, "true", None) == (
            turn.answer,
            exported_metadata(turn).get("stream_abandoned"),
            turn.error,
        )

    def test_langgraph_subgraphs_stream_abandoned(
        self, records: CapturedRecords
    ) -> None:
        """With ``subgraphs=True`` items lead with a namespace; the text is the same."""
        agent = _alpha_agent()

        with track_user("u"):
            stream = agent.stream(
                {"messages": [("user", "hi")]},
                config={"configurable": {"thread_id": "t"}},
                stream_mode=["messages"],
                subgraphs=True,
            )
            items = _take(stream, 2)
            stream.close()

        (turn,) = records.conversations

        received = "".join(p[0].content for _ns, _mode, p in items)
        assert ("alpha ", "alpha ", "true") == (
            received,
            turn.answer,
            exported_metadata(turn).get("stream_abandoned"),
        )

    def test_langgraph_values_stream_abandoned_is_unaffected(
        self, records: CapturedRecords
    ) -> None:
        """A values stream left early is recorded as before: marked, no tokens."""
        agent = _alpha_agent()

        with track_user("u"):
            stream = agent.stream(
                {"messages": [("user", "hi")]},
                config={"configurable": {"thread_id": "t"}},
                stream_mode="values",
            )
            states = _take(stream, 2)
            stream.close()

        (turn,) = records.conversations

        # No messages mode: nothing streamed tokens, and the stream is not read
        # for its states, so the abandoned turn's answer is empty (as before),
        # even though the second state held the model's whole answer.
        assert "alpha beta gamma" == states[-1]["messages"][-1].content
        assert ("", "true", None) == (
            turn.answer,
            exported_metadata(turn).get("stream_abandoned"),
            turn.error,
        )


def _alpha_agent() -> Any:
    return _react_agent(
        GenericFakeChatModel(messages=iter([AIMessage("alpha beta gamma")])),
        [],
        checkpointer=MemorySaver(),
    )


def _take(stream: Iterator[Any], count: int) -> list[Any]:
    return [next(stream) for _ in range(count)]


@tool
def broken_weather(city: str) -> str:
    """Get the weather for a city (always fails)."""
    raise ValueError(f"no station in {city}")


def _calls(*steps: AIMessage) -> Iterator[AIMessage]:
    return iter(steps)


def _weather_call(name: str, text: str = "") -> AIMessage:
    return AIMessage(
        text,
        tool_calls=[{"name": name, "args": {"city": "Paris"}, "id": "call_1"}],
    )


class TestTools:
    def test_failing_tool_is_flagged(self, records: CapturedRecords) -> None:
        """A tool that failed inside ToolNode(handle_tool_errors=True) is flagged."""
        model = ToolCallingFake(
            messages=_calls(_weather_call("broken_weather"), AIMessage("Sorry."))
        )
        agent = _react_agent(model, ToolNode([broken_weather], handle_tool_errors=True))

        with track_user("u"):
            agent.invoke({"messages": [("user", "Weather in Paris?")]})

        (turn,) = records.conversations
        (tool_message,) = [m for m in turn.messages if m.role == "tool"]

        assert (True, "broken_weather") == (
            tool_message.error,
            exported_metadata(turn).get("failed_tools"),
        )

    def test_failed_tool_flag_survives_the_store(self, tmp_path: Path) -> None:
        """A failed tool's flag is stored in SQLite and read back; others are not."""
        db = tmp_path / "t.db"
        configure(db_path=db)
        model = ToolCallingFake(
            messages=_calls(
                _weather_call("broken_weather"),
                _weather_call("get_weather"),
                AIMessage("Sunny."),
            )
        )
        agent = _react_agent(
            model, ToolNode([broken_weather, get_weather], handle_tool_errors=True)
        )

        with track_user("u"), context_session(session_id="tools"):
            agent.invoke({"messages": [("user", "Weather in Paris?")]})
        flush()

        assert [("broken_weather", True), ("get_weather", False)] == [
            (m.name, m.error)
            for m in SQLiteReader(db).session_messages("tools")
            if m.role == "tool"
        ]

    def test_tool_error_reaching_the_caller_keeps_the_order(
        self, records: CapturedRecords
    ) -> None:
        """When a tool error reaches the caller: user, tool call and result, error."""
        model = ToolCallingFake(messages=_calls(_weather_call("broken_weather")))
        bound = model.bind_tools([broken_weather])

        def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
            return {"messages": [bound.invoke(state["messages"])]}

        graph = StateGraph(MessagesState)
        graph.add_node("agent", agent)
        graph.add_node("tools", ToolNode([broken_weather], handle_tool_errors=False))
        graph.add_edge(START, "agent")
        graph.add_conditional_edges("agent", tools_condition)
        graph.add_edge("tools", "agent")
        app: Any = graph.compile()

        with track_user("u"), pytest.raises(ValueError, match="no station"):
            app.invoke({"messages": [("user", "Weather in Paris?")]})

        (turn,) = records.conversations

        assert [
            Message("user", "Weather in Paris?"),
            Message(
                "tool",
                "ValueError: no station in Paris",
                name="broken_weather",
                tool_input='{"city":"Paris"}',
                error=True,
            ),
        ] == list(turn.messages)
        assert "ValueError: no station in Paris" == turn.error

    def test_text_beside_tool_calls_is_an_assistant_message(
        self, records: CapturedRecords
    ) -> None:
        """What the assistant says beside its tool calls is an assistant message."""
        model = ToolCallingFake(
            messages=_calls(
                _weather_call("get_weather", "Let me check the weather for you."),
                AIMessage("It is sunny in Paris"),
            )
        )
        agent = _react_agent(model, [get_weather])

        with track_user("u"):
            agent.invoke({"messages": [("user", "Weather in Paris?")]})

        assert [
            ("user", "Weather in Paris?"),
            ("assistant", "Let me check the weather for you."),
            ("tool", "sunny in Paris"),
            ("assistant", "It is sunny in Paris"),
        ] == _shape(records.conversations[0])


class TestRunMetadata:
    def test_invoke_metadata_and_run_name(self, records: CapturedRecords) -> None:
        """The root run's metadata and run_name are recorded; the scope wins."""
        chain = _stream_chain()

        with track_user("u", metadata={"plan": "pro"}):
            chain.invoke(
                {"question": "q"},
                config={
                    "metadata": {"tenant": "acme", "plan": "free", "n": 3},
                    "run_name": "support",
                },
            )

        metadata = exported_metadata(records.conversations[0])

        assert ("acme", "pro", "3", "support") == (
            metadata.get("tenant"),
            metadata.get("plan"),
            metadata.get("n"),
            metadata.get("run_name"),
        )

    def test_batch_per_input_configs(self, records: CapturedRecords) -> None:
        """Per-input configs of batch keep each input's metadata and name."""
        chain = _stream_chain()

        with track_user("u"):
            chain.batch(
                [{"question": "a"}, {"question": "b"}],
                config=[
                    {"metadata": {"tenant": "acme"}, "run_name": "one"},
                    {"metadata": {"tenant": "globex"}, "run_name": "two"},
                ],
            )

        assert [("a", "acme", "one"), ("b", "globex", "two")] == sorted(
            (
                c.messages[0].content,
                c.metadata["tenant"],
                exported_metadata(c)["run_name"],
            )
            for c in records.conversations
        )


class TestRootsWithoutAModel:
    def test_guardrail_refusal_is_recorded(self, records: CapturedRecords) -> None:
        """A RunnableBranch refusal, with no model call, is recorded as a turn."""
        answer = (
            ChatPromptTemplate.from_messages([("human", "{question}")])
            | ParrotFakeChatModel()
            | StrOutputParser()
        )
        guarded = RunnableBranch(
            (
                lambda x: "refund" not in x["question"],
                RunnableLambda(lambda x: AIMessage("I can only help with refunds.")),
            ),
            answer,
        )
        lambda_guard: Runnable[str, str] = RunnableLambda(
            lambda q: "Please ask about refunds."
        )

        with track_user("u"):
            guarded.invoke({"question": "Tell me a joke"})
            lambda_guard.invoke("What's the capital of France?")

        assert [
            [
                ("user", "Tell me a joke"),
                ("assistant", "I can only help with refunds."),
            ],
            [
                ("user", "What's the capital of France?"),
                ("assistant", "Please ask about refunds."),
            ],
        ] == [_shape(c) for c in records.conversations]
        assert "model" not in exported_metadata(records.conversations[0])

    def test_retriever_parser_tool_alone_stay_unrecorded(
        self, records: CapturedRecords
    ) -> None:
        """A retriever, a parser, a pass-through or a tool on its own records nothing."""
        retriever = InMemoryVectorStore.from_texts(
            ["Refunds take 5 business days."], DeterministicFakeEmbedding(size=16)
        ).as_retriever()

        with track_user("u"):
            retriever.invoke("refunds")
            StrOutputParser().invoke("text")
            StrOutputParser().invoke(AIMessage("text"))
            RunnablePassthrough[str]().invoke("same")
            get_weather.invoke({"city": "Paris"})

        assert [] == list(records)
