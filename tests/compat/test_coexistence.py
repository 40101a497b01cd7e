"""Living beside the callbacks, collectors and tracers apps already use."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable
from langchain_core.tracers.context import collect_runs, tracing_v2_enabled
from langchain_core.tracers.langchain import wait_for_all_tracers
from langchain_core.tracers.schemas import Run

import context_trace
from context_trace import (
    ContextCallbackHandler,
    configure,
    context_session,
    runnable_config,
    track_user,
)
from context_trace.testing import CapturedRecords

from ._models import WeatherBot, build_agent, echo_chain

SCOPE_IDS = {"user_id": "u-meta", "session_id": "s-meta"}


class EventLog(BaseCallbackHandler):
    """A user's own handler: logs (event, run name, parent's position) in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int | None]] = []
        self._names: dict[UUID, str] = {}
        self._order: dict[UUID, int] = {}

    def _start(
        self, event: str, name: str, run_id: UUID, parent_run_id: UUID | None
    ) -> None:
        self._names[run_id] = name
        self._order[run_id] = len(self._order)
        parent = self._order.get(parent_run_id) if parent_run_id else None
        self.events.append((event, name, parent))

    def _end(self, event: str, run_id: UUID) -> None:
        self.events.append((event, self._names.get(run_id, "?"), None))

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "chain"
        self._start("chain_start", name, run_id, parent_run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end("chain_end", run_id)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "model"
        self._start("chat_model_start", name, run_id, parent_run_id)

    def on_llm_new_token(self, token: str, *, run_id: UUID, **kwargs: Any) -> None:
        self._end("llm_new_token", run_id)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end("llm_end", run_id)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
        self._start("tool_start", name, run_id, parent_run_id)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end("tool_end", run_id)


def _walk(runs: list[Run]) -> Iterator[Run]:
    for run in runs:
        yield run
        yield from _walk(run.child_runs)


def _ids(metadata: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (metadata or {}).items() if k in SCOPE_IDS}


#: The root run's name for each runnable the event tests drive.
ROOT_NAMES = {"lcel chain": "RunnableSequence", "langgraph agent": "LangGraph"}


class TestUserCallbacks:
    @pytest.mark.parametrize("how", ["with_config", "config"])
    @pytest.mark.parametrize("runnable", ["lcel chain", "langgraph agent"])
    def test_own_handler_sees_the_same_events_in_a_scope(
        self, records: CapturedRecords, how: str, runnable: str
    ) -> None:
        """A user's handler gets the identical event list inside and outside a scope."""
        chain: Runnable[Any, Any]
        if runnable == "lcel chain":
            chain, inputs = echo_chain(), {"question": "Weather in Oslo"}
        else:
            chain = build_agent(WeatherBot())
            inputs = {"messages": [("user", "Weather in Oslo")]}
        outside, inside = EventLog(), EventLog()

        def run(log: EventLog) -> Any:
            if how == "with_config":
                result = chain.with_config(callbacks=[log]).invoke(inputs)
            else:
                result = chain.invoke(inputs, config={"callbacks": [log]})
            # An agent returns its message list (with fresh ids): keep the answer.
            return result if isinstance(result, str) else result["messages"][-1].content

        expected = run(outside)
        with track_user("u1"), context_session("s1"):
            actual = run(inside)

        assert expected == actual
        assert outside.events == inside.events
        assert ("chain_start", ROOT_NAMES[runnable], None) == outside.events[0]
        assert ["u1"] == [c.user_id for c in records.conversations]

    def test_own_handler_beside_the_drop_in(self, records: CapturedRecords) -> None:
        """Passed together with the drop-in, a user's handler still sees every event."""
        chain = echo_chain()
        outside, inside = EventLog(), EventLog()

        chain.invoke({"question": "x"}, config={"callbacks": [outside]})
        with track_user("u1"):
            chain.invoke(
                {"question": "x"},
                config={"callbacks": [inside, ContextCallbackHandler()]},
            )

        assert outside.events == inside.events
        assert ["u1"] == [c.user_id for c in records.conversations]


class TestCollectRuns:
    def test_collects_runs_with_scope_ids(self, records: CapturedRecords) -> None:
        """collect_runs() around a scope gets every run, each with user_id/session_id."""
        chain = echo_chain()

        with (
            collect_runs() as collector,
            track_user("u-meta"),
            context_session("s-meta"),
        ):
            chain.invoke({"question": "q"})
        runs = list(_walk(collector.traced_runs))

        assert ["RunnableSequence"] == [r.name for r in collector.traced_runs]
        assert 4 == len(runs)
        assert [SCOPE_IDS] * 4 == [_ids(r.extra.get("metadata")) for r in runs]
        assert ["u-meta"] == [c.user_id for c in records.conversations]

    def test_collects_runs_opened_inside_a_scope(
        self, records: CapturedRecords
    ) -> None:
        """collect_runs() opened inside a scope still collects the whole run tree."""
        chain = echo_chain()

        with (
            track_user("u-meta"),
            context_session("s-meta"),
            collect_runs() as collector,
        ):
            chain.invoke({"question": "q"})

        assert ["RunnableSequence"] == [r.name for r in collector.traced_runs]
        assert 4 == len(list(_walk(collector.traced_runs)))
        assert ["u-meta"] == [c.user_id for c in records.conversations]

    def test_scope_ids_in_runs_of_a_collector_opened_inside_with_run_metadata(
        self,
    ) -> None:
        """With run_metadata=True a collector opened inside the scope sees the ids."""
        configure(run_metadata=True)
        chain = echo_chain()

        with (
            track_user("u-meta"),
            context_session("s-meta"),
            collect_runs() as collector,
        ):
            chain.invoke({"question": "q"})

        runs = list(_walk(collector.traced_runs))
        assert [SCOPE_IDS] * 4 == [_ids(r.extra.get("metadata")) for r in runs]

    def test_scope_ids_in_runs_of_a_collector_opened_inside(self) -> None:
        """A collector opened inside the scope sees the ids with run_metadata=True (documented)."""
        context_trace.configure(run_metadata=True)
        chain = echo_chain()

        with (
            track_user("u-meta"),
            context_session("s-meta"),
            collect_runs() as collector,
        ):
            chain.invoke({"question": "q"})

        runs = list(_walk(collector.traced_runs))
        assert [SCOPE_IDS] * 4 == [_ids(r.extra.get("metadata")) for r in runs]

    def test_explicit_metadata_replaces_the_scope_ids(
        self, records: CapturedRecords
    ) -> None:
        """
        LangChain replaces (not merges) inherited metadata with config["metadata"].

        Documents the limitation the README describes: runs then lack the scope's
        ids (our own record keeps them); merge runnable_config()["metadata"] in.
        """
        chain = echo_chain()

        with (
            collect_runs() as collector,
            track_user("u-meta"),
            context_session("s-meta"),
        ):
            chain.invoke({"question": "q"}, config={"metadata": {"tenant": "a"}})
            chain.invoke(
                {"question": "q"},
                config={"metadata": {**runnable_config()["metadata"], "tenant": "b"}},
            )
        replaced, merged = collector.traced_runs

        assert {"tenant": "a"} == replaced.extra["metadata"]
        assert {**SCOPE_IDS, "tenant": "b"} == merged.extra["metadata"]
        assert [("u-meta", "s-meta")] * 2 == [
            (c.user_id, c.session_id) for c in records.conversations
        ]


class _LangSmithStub(BaseHTTPRequestHandler):
    """Answers every LangSmith API call with 200 {}; keeps the runs it is sent."""

    created: list[dict[str, Any]]

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.command == "POST" and self.path == "/runs":
            self.created.append(json.loads(body))
        payload = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_PUT = _reply

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def langsmith(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, list[Any]]]:
    """A LangSmith client pointed at a stub server on 127.0.0.1, and the runs posted."""
    from langsmith import Client

    created: list[dict[str, Any]] = []
    handler = type("Stub", (_LangSmithStub,), {"created": created})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("LANGSMITH_ENDPOINT", url)
    monkeypatch.setenv("LANGSMITH_API_KEY", "test-key-123")
    client = Client(api_url=url, api_key="test-key-123", auto_batch_tracing=False)
    try:
        yield client, created
    finally:
        wait_for_all_tracers()
        client.close()
        server.shutdown()
        server.server_close()
        thread.join(5.0)


#: The runs of one echo_chain() call, in the order the tracer posts them.
SEQUENCE = [
    "RunnableSequence",
    "ChatPromptTemplate",
    "ParrotFakeChatModel",
    "StrOutputParser",
]


class TestLangSmithTracing:
    def test_posted_runs_carry_scope_ids(
        self, langsmith: tuple[Any, list[Any]], records: CapturedRecords
    ) -> None:
        """tracing_v2_enabled around a scope posts every run with user_id/session_id."""
        client, created = langsmith
        chain = echo_chain()

        with (
            tracing_v2_enabled(project_name="compat", client=client),
            track_user("u-meta"),
            context_session("s-meta"),
        ):
            answer = chain.invoke({"question": "traced"})
        wait_for_all_tracers()

        assert "traced" == answer
        assert SEQUENCE == [run["name"] for run in created]
        assert [SCOPE_IDS] * 4 == [_ids(run["extra"]["metadata"]) for run in created]
        assert ["u-meta"] == [c.user_id for c in records.conversations]

    def test_tracer_posts_the_same_runs_in_a_scope(
        self, langsmith: tuple[Any, list[Any]]
    ) -> None:
        """The tracer posts the same runs for a call inside a scope as outside."""
        client, created = langsmith
        chain = echo_chain()

        with tracing_v2_enabled(project_name="compat", client=client):
            chain.invoke({"question": "x"})
            wait_for_all_tracers()
            outside = [(run["name"], run["run_type"]) for run in created]
            created.clear()
            with track_user("u1"):
                chain.invoke({"question": "x"})
            wait_for_all_tracers()
            inside = [(run["name"], run["run_type"]) for run in created]

        assert outside == inside
        assert SEQUENCE == [name for name, _ in inside]

    def test_tracer_opened_inside_a_scope_gets_scope_ids(
        self, langsmith: tuple[Any, list[Any]]
    ) -> None:
        """tracing_v2_enabled inside a scope posts the ids with run_metadata=True (documented)."""
        context_trace.configure(run_metadata=True)
        client, created = langsmith
        chain = echo_chain()

        with (
            track_user("u-meta"),
            context_session("s-meta"),
            tracing_v2_enabled(project_name="compat", client=client),
        ):
            chain.invoke({"question": "traced"})
        wait_for_all_tracers()

        assert [SCOPE_IDS] * 4 == [_ids(run["extra"]["metadata"]) for run in created]


async def _event_names(chain: Runnable[Any, Any], inputs: Any) -> list[tuple[str, str]]:
    return [
        (event["event"], event["name"])
        async for event in chain.astream_events(inputs, version="v2")
    ]


class TestStreamEvents:
    async def test_same_event_sequence_in_a_scope(
        self, records: CapturedRecords
    ) -> None:
        """astream_events(v2) yields the same (event, name) sequence inside a scope."""
        chain = echo_chain()

        expected = await _event_names(chain, {"question": "streamed"})
        async with track_user("u1"):
            actual = await _event_names(chain, {"question": "streamed"})

        assert expected == actual
        assert ("on_chain_start", "RunnableSequence") == actual[0]
        assert ["u1"] == [c.user_id for c in records.conversations]

    async def test_same_event_sequence_for_an_agent(
        self, records: CapturedRecords
    ) -> None:
        """The same holds for a LangGraph agent with a tool call."""
        agent = build_agent(WeatherBot())
        inputs = {"messages": [("user", "Weather in Rome")]}

        expected = await _event_names(agent, inputs)
        async with track_user("u1"):
            actual = await _event_names(agent, inputs)

        assert expected == actual
        assert ("on_tool_start", "get_weather") in actual
        assert [("u1", "It is sunny in Rome")] == [
            (c.user_id, c.answer) for c in records.conversations
        ]
