"""The GenAI mapping, through the real SDK and its in-memory span exporter."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import (
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

import context_trace as ct
from context_trace import _handler, _turn
from tests.compat._models import WeatherBot, build_agent

Memory = tuple[TracerProvider, InMemorySpanExporter]
ATTRIBUTION = {"user.id": "u1", "plan": "pro"}
SESSION = {"session.id": "s1", "gen_ai.conversation.id": "s1"}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder's clock ticks one second per reading, from 1000.0."""
    ticks = itertools.count(1000)
    fake = SimpleNamespace(time=lambda: float(next(ticks)))
    monkeypatch.setattr(_handler, "time", fake)
    monkeypatch.setattr(_turn, "time", fake)


def _configure(memory: Memory, **kwargs: Any) -> InMemorySpanExporter:
    provider, exporter = memory
    ct.configure(tracer_provider=provider, **kwargs)
    return exporter


def _spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert ct.flush(10)
    return sorted(
        exporter.get_finished_spans(),
        key=lambda s: (s.start_time or 0, s.parent is not None),
    )


def _shape(spans: list[ReadableSpan]) -> list[tuple[str, str | None]]:
    """Each span's name and its parent's name."""
    names = {s.context.span_id: s.name for s in spans}
    return [
        (s.name, names.get(s.parent.span_id) if s.parent is not None else None)
        for s in spans
    ]


def _chain() -> Any:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are terse."), ("human", "{question}")]
    )
    return prompt | ParrotFakeChatModel() | StrOutputParser()


S = 1_000_000_000  # ns per second


class TestChat:
    def test_chain_is_a_root_with_a_chat_child(
        self, memory: Memory, clock: None
    ) -> None:
        """An LCEL chain: one trace, a root span and a ``chat`` child, real times."""
        exporter = _configure(memory)
        with ct.track_user("u1", metadata={"plan": "pro"}):
            _chain().invoke({"question": "hi there"})
        root, chat = _spans(exporter)

        assert [
            ("RunnableSequence", None),
            ("chat ParrotFakeChatModel", "RunnableSequence"),
        ] == _shape([root, chat])
        assert (1000 * S, 1005 * S, 1002 * S, 1003 * S) == (
            root.start_time,
            root.end_time,
            chat.start_time,
            chat.end_time,
        )
        assert root.context.trace_id == chat.context.trace_id
        assert (SpanKind.INTERNAL, SpanKind.CLIENT) == (root.kind, chat.kind)
        assert {
            **ATTRIBUTION,
            "gen_ai.operation.name": "chat",
            "openinference.span.kind": "LLM",
            "gen_ai.request.model": "ParrotFakeChatModel",
            "gen_ai.provider.name": "parrotfakechatmodel",
        } == dict(chat.attributes or {})
        assert {
            **ATTRIBUTION,
            "openinference.span.kind": "CHAIN",
            "metadata": '{"plan":"pro"}',
            "gen_ai.input.messages": json.dumps(
                [
                    {
                        "role": "system",
                        "parts": [{"type": "text", "content": "You are terse."}],
                    },
                    {
                        "role": "user",
                        "parts": [{"type": "text", "content": "hi there"}],
                    },
                ],
                separators=(",", ":"),
            ),
            "input.value": "hi there",
            "input.mime_type": "text/plain",
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": "hi there"}],
                    }
                ],
                separators=(",", ":"),
            ),
            "output.value": "hi there",
            "output.mime_type": "text/plain",
        } == dict(root.attributes or {})

    def test_usage_response_model_and_finish_reason(self, memory: Memory) -> None:
        """A model invoked directly: a ``turn`` root, its chat span, usage and finish reason."""
        reply = AIMessage(
            "ok",
            usage_metadata={"input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
            response_metadata={"model_name": "fake-2024", "finish_reason": "stop"},
        )
        model = GenericFakeChatModel(messages=iter([reply]))
        exporter = _configure(memory)
        with ct.track_user("u1"):
            model.invoke("hello")
        root, chat = _spans(exporter)

        assert ("turn", "chat GenericFakeChatModel") == (
            root.name,
            chat.name,
        )
        assert chat.parent is not None
        assert root.context.span_id == chat.parent.span_id
        attributes = dict(chat.attributes or {})
        assert (7, 3, "fake-2024", ("stop",)) == (
            attributes["gen_ai.usage.input_tokens"],
            attributes["gen_ai.usage.output_tokens"],
            attributes["gen_ai.response.model"],
            attributes["gen_ai.response.finish_reasons"],
        )

    def test_content_capture_off(
        self, memory: Memory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=false keeps transcripts off."""
        monkeypatch.setenv(
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "false"
        )
        exporter = _configure(memory)
        with ct.track_user("u1"):
            _chain().invoke({"question": "secret"})
        spans = _spans(exporter)

        keys = {k for s in spans for k in (s.attributes or {})}
        assert set() == keys & {
            "input.value",
            "output.value",
            "gen_ai.input.messages",
            "gen_ai.output.messages",
        }
        assert 2 == len(spans)

    def test_redaction_applies(self, memory: Memory) -> None:
        """Captured content is redacted as the store's is."""
        exporter = _configure(memory, redact=["email"])
        with ct.track_user("u1"):
            _chain().invoke({"question": "mail bob@example.com"})
        root = _spans(exporter)[0]

        assert "bob@example.com" not in json.dumps(dict(root.attributes or {}))


class TestToolsAndAgents:
    def test_agent_tool_and_model_spans(self, memory: Memory, clock: None) -> None:
        """A LangGraph agent: two chat spans and an execute_tool span under the root."""
        exporter = _configure(memory)
        with ct.track_user("u1", metadata={"plan": "pro"}):
            build_agent(WeatherBot()).invoke(
                {"messages": [("human", "weather in Paris?")]}
            )
        spans = _spans(exporter)

        assert [
            ("LangGraph", None),
            ("chat WeatherBot", "LangGraph"),
            ("execute_tool get_weather", "LangGraph"),
            ("chat WeatherBot", "LangGraph"),
        ] == _shape(spans)
        tool = spans[2]
        assert {
            **ATTRIBUTION,
            "gen_ai.operation.name": "execute_tool",
            "openinference.span.kind": "TOOL",
            "gen_ai.tool.name": "get_weather",
            "gen_ai.tool.call.id": "call_Paris",
            "gen_ai.tool.call.arguments": '{"city":"Paris"}',
            "gen_ai.tool.call.result": "sunny in Paris",
        } == dict(tool.attributes or {})
        first, second = spans[1], spans[3]
        assert (first.end_time or 0) <= (tool.start_time or 0)
        assert (tool.end_time or 0) <= (second.start_time or 0)
        assert (spans[0].end_time or 0) >= (second.end_time or 0)


class TestStreams:
    def test_stream_records_one_trace(self, memory: Memory) -> None:
        """A streamed chain is one trace with its chat span."""
        model = GenericFakeChatModel(messages=itertools.repeat(AIMessage("a b c")))
        chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model
        exporter = _configure(memory)
        with ct.track_user("u1"):
            text = "".join(str(c.content) for c in chain.stream({"q": "go"}))
        spans = _spans(exporter)

        assert "a b c" == text
        assert [
            ("RunnableSequence", None),
            ("chat GenericFakeChatModel", "RunnableSequence"),
        ] == _shape(spans)
        assert "a b c" == dict(spans[0].attributes or {})["output.value"]


class TestErrors:
    def test_failed_turn_is_an_error_span(self, memory: Memory) -> None:
        """A failing turn: status ERROR, error.type and an exception event."""

        def boom(_: Any) -> str:
            raise RuntimeError("no luck")

        chain = _chain() | RunnableLambda(boom)
        exporter = _configure(memory)
        with ct.track_user("u1"), pytest.raises(RuntimeError):
            chain.invoke({"question": "q"})
        root = _spans(exporter)[0]

        assert (StatusCode.ERROR, "no luck") == (
            root.status.status_code,
            root.status.description,
        )
        assert "RuntimeError" == dict(root.attributes or {})["error.type"]
        assert [
            (
                "exception",
                {"exception.type": "RuntimeError", "exception.message": "no luck"},
            )
        ] == [(e.name, dict(e.attributes or {})) for e in root.events]

    def test_failed_tool_is_an_error_span(self, memory: Memory) -> None:
        """A tool that raises: its execute_tool span is ERROR; the turn still answers."""
        from langchain_core.tools import tool
        from langgraph.graph import START, MessagesState, StateGraph
        from langgraph.prebuilt import ToolNode, tools_condition

        @tool
        def get_weather(city: str) -> str:
            """Get the weather."""
            raise RuntimeError(f"no data for {city}")

        model = WeatherBot().bind_tools([get_weather])
        graph = StateGraph(MessagesState)
        graph.add_node(
            "agent", lambda state: {"messages": [model.invoke(state["messages"])]}
        )
        graph.add_node("tools", ToolNode([get_weather], handle_tool_errors=True))
        graph.add_edge(START, "agent")
        graph.add_conditional_edges("agent", tools_condition)
        graph.add_edge("tools", "agent")
        exporter = _configure(memory)
        with ct.track_user("u1"):
            graph.compile().invoke({"messages": [("human", "weather in Oslo?")]})
        spans = _spans(exporter)
        tool_span = next(s for s in spans if s.name == "execute_tool get_weather")

        assert (StatusCode.ERROR, "no data for Oslo", "RuntimeError") == (
            tool_span.status.status_code,
            tool_span.status.description,
            (tool_span.attributes or {})["error.type"],
        )
        assert StatusCode.UNSET == spans[0].status.status_code


class TestSessionsAndRatings:
    def test_session_on_every_span_and_rating(self, memory: Memory) -> None:
        """Session ids on every span; a rating is an evaluation in the rated turn's trace."""
        exporter = _configure(memory)
        with (
            ct.track_user("u1", metadata={"plan": "pro"}),
            ct.context_session("s1") as session,
        ):
            _chain().invoke({"question": "one"})
            _chain().invoke({"question": "two"})
            session.rate(-1)
        spans = _spans(exporter)

        turns = [s for s in spans if s.name == "RunnableSequence"]
        rating = next(s for s in spans if s.name == "evaluate user_rating")
        for span in spans:
            assert SESSION.items() <= dict(span.attributes or {}).items()
            assert "u1" == (span.attributes or {})["user.id"]
        assert 2 == len({s.context.trace_id for s in turns})
        assert rating.parent is not None
        assert (turns[1].context.trace_id, turns[1].context.span_id) == (
            rating.context.trace_id,
            rating.parent.span_id,
        )
        assert [
            (
                "gen_ai.evaluation.result",
                {
                    "gen_ai.evaluation.name": "user_rating",
                    "gen_ai.evaluation.score.value": -1.0,
                    "gen_ai.evaluation.score.label": "bad",
                },
            )
        ] == [(e.name, dict(e.attributes or {})) for e in rating.events]


class TestRequestSpan:
    def test_request_span_is_the_parent(self, memory: Memory) -> None:
        """A span current as the turn starts (the app's request span) is its parent."""
        provider, _ = memory
        exporter = _configure(memory)
        tracer = provider.get_tracer("app")
        with tracer.start_as_current_span("GET /chat") as request, ct.track_user("u1"):
            _chain().invoke({"question": "hi"})
        spans = _spans(exporter)
        root = next(s for s in spans if s.name == "RunnableSequence")

        assert root.parent is not None
        assert (
            request.get_span_context().trace_id,
            request.get_span_context().span_id,
        ) == (
            root.context.trace_id,
            root.parent.span_id,
        )
        assert {request.get_span_context().trace_id} == {
            s.context.trace_id for s in spans
        }


class TestOff:
    def test_no_tree_without_otlp(self) -> None:
        """With OTLP export off, turns carry no span records (nothing paid)."""
        with ct.testing.capture() as captured, ct.track_user("u1"):
            _chain().invoke({"question": "hi"})

        assert ((), None) == (
            captured.conversations[0].spans,
            captured.conversations[0].trace_id,
        )


class TestHistoryWithoutASession:
    def test_root_span_carries_the_history_and_the_turns_own_words(
        self, memory: Memory
    ) -> None:
        """A session-less turn's history is in its input messages; input.value is its question."""
        from langchain_core.prompts import MessagesPlaceholder

        exporter = _configure(memory)
        prompt = ChatPromptTemplate.from_messages(
            [
                ("system", "You are terse."),
                MessagesPlaceholder("history"),
                ("human", "{question}"),
            ]
        )
        with ct.track_user("u1"):
            (prompt | ParrotFakeChatModel() | StrOutputParser()).invoke(
                {"history": [("human", "Q1"), ("ai", "A1")], "question": "Q2"}
            )
        root = _spans(exporter)[0]
        attributes = dict(root.attributes or {})

        assert [
            ("system", "You are terse."),
            ("user", "Q1"),
            ("assistant", "A1"),
            ("user", "Q2"),
        ] == [
            (m["role"], m["parts"][0]["content"])
            for m in json.loads(str(attributes["gen_ai.input.messages"]))
        ]
        assert "Q2" == attributes["input.value"]
