"""LangGraph agents: one conversation per graph invocation, tool calls included."""

from __future__ import annotations

import asyncio
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from context_trace import (
    ContextCallbackHandler,
    InMemoryExporter,
    configure,
    context_session,
    flush,
    track_user,
)
from context_trace._record import Message, exported_metadata
from context_trace._store.reader import SQLiteReader
from context_trace.testing import CapturedRecords

from ._models import (
    ToolCallingFake,
    WeatherBot,
    build_agent,
    get_weather,
    paris_script,
)

PARIS = [
    Message("user", "What's the weather in Paris?"),
    Message("tool", "sunny in Paris", "get_weather", '{"city":"Paris"}'),
    Message("assistant", "It is sunny in Paris"),
]

CITIES = [f"City{i:02d}" for i in range(50)]


def _question(city: str) -> dict[str, Any]:
    return {"messages": [("user", f"What's the weather in {city}")]}


def _expected(user: str, city: str) -> tuple[str, list[Message]]:
    return (
        user,
        [
            Message("user", f"What's the weather in {city}"),
            Message("tool", f"sunny in {city}", "get_weather", f'{{"city":"{city}"}}'),
            Message("assistant", f"It is sunny in {city}"),
        ],
    )


class TestOneInvocation:
    def test_state_graph_agent(self, records: CapturedRecords) -> None:
        """User message, tool call (name, arguments, result), answer: in that order."""
        agent = build_agent(ToolCallingFake(messages=paris_script()))

        with track_user("u1"):
            result = agent.invoke(
                {"messages": [("user", "What's the weather in Paris?")]}
            )

        assert "It is sunny in Paris" == result["messages"][-1].content
        assert [("u1", PARIS)] == [
            (c.user_id, list(c.messages)) for c in records.conversations
        ]
        assert "ToolCallingFake" == exported_metadata(records.conversations[0])["model"]

    def test_prebuilt_react_agent(self, records: CapturedRecords) -> None:
        """langgraph.prebuilt.create_react_agent records the same conversation."""
        from langgraph.prebuilt import create_react_agent

        with warnings.catch_warnings():
            # Deprecated in LangGraph 1.0 in favour of langchain.agents; still used.
            warnings.simplefilter("ignore", DeprecationWarning)
            agent = create_react_agent(
                ToolCallingFake(messages=paris_script()), [get_weather]
            )

        with track_user("u1"):
            agent.invoke({"messages": [("user", "What's the weather in Paris?")]})

        assert [("u1", PARIS)] == [
            (c.user_id, list(c.messages)) for c in records.conversations
        ]

    async def test_async_invoke(self, records: CapturedRecords) -> None:
        """ainvoke inside async with track_user records the same conversation."""
        agent = build_agent(ToolCallingFake(messages=paris_script()))

        async with track_user("u1"):
            await agent.ainvoke(
                {"messages": [("user", "What's the weather in Paris?")]}
            )

        assert [("u1", PARIS)] == [
            (c.user_id, list(c.messages)) for c in records.conversations
        ]

    def test_drop_in_with_header_user(self, records: CapturedRecords) -> None:
        """The drop-in passed to a graph attributes it to the model's header user."""
        agent = build_agent(WeatherBot(headers={"user_id": "header-user"}))

        agent.invoke(
            _question("Lima"), config={"callbacks": [ContextCallbackHandler()]}
        )

        assert [_expected("header-user", "Lima")] == [
            (c.user_id, list(c.messages)) for c in records.conversations
        ]

    def test_checkpointed_thread_in_a_session(self, records: CapturedRecords) -> None:
        """With a checkpointer, later turns leave out the re-sent earlier tool calls."""
        agent = build_agent(WeatherBot(), checkpointer=InMemorySaver())
        config = {"configurable": {"thread_id": "thread-1"}}

        with track_user("u1"), context_session("s1"):
            for city in ("Paris", "Rome", "Oslo"):
                agent.invoke(_question(city), config=config)

        assert [_expected("u1", city) for city in ("Paris", "Rome", "Oslo")] == [
            (c.user_id, list(c.messages)) for c in records.conversations
        ]

    def test_checkpointed_thread_with_header_session(
        self, records: CapturedRecords
    ) -> None:
        """The same de-duplication holds for a session known only from headers."""
        model = WeatherBot(headers={"X-User-Id": "u2", "X-Session-Id": "hs-graph"})
        agent = build_agent(model, checkpointer=InMemorySaver())
        config = {
            "configurable": {"thread_id": "thread-2"},
            "callbacks": [ContextCallbackHandler()],
        }

        for city in ("Paris", "Rome"):
            agent.invoke(_question(city), config=config)

        assert [_expected("u2", city) for city in ("Paris", "Rome")] == [
            (c.user_id, list(c.messages)) for c in records.conversations
        ]
        assert ["hs-graph", "hs-graph"] == [c.session_id for c in records.conversations]

    def test_per_request_sessions_through_the_store(self, tmp_path: Path) -> None:
        """A scope per request (a new Session each time): the stored thread has no repeats."""
        db = tmp_path / "graph.db"
        configure(db_path=db)
        agent = build_agent(WeatherBot(), checkpointer=InMemorySaver())
        config = {"configurable": {"thread_id": "thread-3"}}

        for city in ("Paris", "Rome"):
            with track_user("u3", session_id="s-requests"):
                agent.invoke(_question(city), config=config)
        assert True is flush(10.0)
        with SQLiteReader(db) as reader:
            transcript = reader.session_messages("s-requests")

        assert [*_expected("u3", "Paris")[1], *_expected("u3", "Rome")[1]] == [
            Message(m.role, m.content, m.name, m.tool_input) for m in transcript
        ]


class TestConcurrentInvocations:
    def test_threads(self) -> None:
        """50 threads, 50 users, one shared agent: 50 conversations, none mixed up."""
        exporter = InMemoryExporter()
        configure(exporter=exporter)
        agent = build_agent(WeatherBot())
        barrier = threading.Barrier(len(CITIES))

        def ask(index: int) -> str:
            barrier.wait()
            with track_user(f"user-{index}"):
                result = agent.invoke(_question(CITIES[index]))
            return str(result["messages"][-1].content)

        with ThreadPoolExecutor(len(CITIES)) as pool:
            answers = list(pool.map(ask, range(len(CITIES))))
        assert True is flush(30.0)
        recorded = sorted(
            ((c.user_id, list(c.messages)) for c in exporter.conversations),
            key=lambda item: int(str(item[0]).split("-")[1]),
        )

        assert [f"It is sunny in {city}" for city in CITIES] == answers
        assert [_expected(f"user-{i}", c) for i, c in enumerate(CITIES)] == recorded

    async def test_asyncio_tasks(self) -> None:
        """50 concurrent ainvoke tasks under 50 users: 50 conversations, none mixed up."""
        exporter = InMemoryExporter()
        configure(exporter=exporter)
        agent = build_agent(WeatherBot())

        async def ask(index: int) -> str:
            async with track_user(f"user-{index}"):
                result = await agent.ainvoke(_question(CITIES[index]))
            return str(result["messages"][-1].content)

        answers = await asyncio.gather(*(ask(i) for i in range(len(CITIES))))
        assert True is flush(30.0)
        recorded = sorted(
            ((c.user_id, list(c.messages)) for c in exporter.conversations),
            key=lambda item: int(str(item[0]).split("-")[1]),
        )

        assert [f"It is sunny in {city}" for city in CITIES] == answers
        assert [_expected(f"user-{i}", c) for i, c in enumerate(CITIES)] == recorded
