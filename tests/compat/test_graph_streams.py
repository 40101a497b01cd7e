"""LangGraph's streams, followed for what their consumer received."""

from __future__ import annotations

import inspect
import subprocess
import sys
from typing import Any

import langgraph.pregel
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.pregel import Pregel

from context_trace import _graph_streams, track_user
from context_trace._record import exported_metadata
from context_trace._turn import RECEIVING
from context_trace.testing import CapturedRecords

from ._models import WeatherBot, build_agent

QUESTION = {"messages": [("user", "weather in Paris")]}


@pytest.fixture(autouse=True)
def _installed() -> None:
    """The patch is in (the first recorder built installs it; not every test builds one)."""
    _graph_streams.install()


def _take(stream: Any, count: int) -> list[Any]:
    return [next(stream) for _ in range(count)]


def _shape(conversation: Any) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conversation.messages]


def _alpha_agent() -> Any:
    model = GenericFakeChatModel(messages=iter([AIMessage("alpha beta gamma")]))

    def answer(state: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    from langgraph.graph import START, MessagesState, StateGraph

    graph = StateGraph(MessagesState)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    return graph.compile()


class TestWhatTheConsumerGot:
    def test_closed_after_the_tool_call_records_no_answer(
        self, records: CapturedRecords
    ) -> None:
        """Left after the tool's result: the tool is kept, the answer is empty."""
        with track_user("u"):
            stream = build_agent(WeatherBot()).stream(QUESTION, stream_mode="messages")
            got = _take(stream, 2)
            stream.close()

        (turn,) = records.conversations

        assert ["ai", "tool"] == [m.type for m, _meta in got]
        assert [
            ("user", "weather in Paris"),
            ("tool", "sunny in Paris"),
            ("assistant", ""),
        ] == _shape(turn)
        assert ("true", None) == (
            exported_metadata(turn).get("stream_abandoned"),
            turn.error,
        )

    def test_whole_messages_received_are_the_answer(
        self, records: CapturedRecords
    ) -> None:
        """A model that does not stream sends whole messages: the last is the answer."""
        with track_user("u"):
            stream = build_agent(WeatherBot()).stream(QUESTION, stream_mode="messages")
            got = _take(stream, 3)
            stream.close()

        (turn,) = records.conversations

        assert "It is sunny in Paris" == got[-1][0].content
        assert [
            ("user", "weather in Paris"),
            ("tool", "sunny in Paris"),
            ("assistant", "It is sunny in Paris"),
        ] == _shape(turn)
        assert ("true", None) == (
            exported_metadata(turn).get("stream_abandoned"),
            turn.error,
        )

    def test_a_decorated_function_returning_the_stream(
        self, records: CapturedRecords
    ) -> None:
        """A stream returned from a ``@track_user`` function is followed too."""

        @track_user("u")
        def view() -> Any:
            return _alpha_agent().stream(QUESTION, stream_mode="messages")

        stream = view()
        received = "".join(chunk.content for chunk, _meta in _take(stream, 2))
        stream.close()

        (turn,) = records.conversations

        assert ("alpha ", "alpha ", "u", "true") == (
            received,
            turn.answer,
            turn.user_id,
            exported_metadata(turn).get("stream_abandoned"),
        )


class TestTheStreamIsUnchanged:
    def test_still_a_generator_with_the_same_items(
        self, records: CapturedRecords
    ) -> None:
        """Followed or not, the stream is a generator yielding the same items."""
        with track_user("u"):
            followed = _alpha_agent().stream(QUESTION, stream_mode="messages")
            assert inspect.isgenerator(followed)
            inside = [(c.content, m["langgraph_node"]) for c, m in followed]
        outside = [
            (c.content, m["langgraph_node"])
            for c, m in _alpha_agent().stream(QUESTION, stream_mode="messages")
        ]

        assert inside == outside
        assert "alpha beta gamma" == "".join(text for text, _node in inside)
        assert "alpha beta gamma" == records.conversations[0].answer

    async def test_astream_is_still_an_async_generator(
        self, records: CapturedRecords
    ) -> None:
        """``astream`` in messages mode is an async generator yielding the chunks."""
        async with track_user("u"):
            stream = _alpha_agent().astream(QUESTION, stream_mode="messages")
            assert inspect.isasyncgen(stream)
            texts = [chunk.content async for chunk, _meta in stream]

        assert "alpha beta gamma" == "".join(texts)

    def test_nothing_is_kept_for_a_stream_no_turn_records(self) -> None:
        """Outside any scope the stream keeps no items, and the marker is reset."""
        stream = _alpha_agent().stream(QUESTION, stream_mode="messages")
        next(stream)

        assert None is stream._self_received
        assert None is RECEIVING.get()
        stream.close()

    def test_a_scope_inside_a_node_keeps_its_own_answer(
        self, records: CapturedRecords
    ) -> None:
        """
        A graph streamed outside any scope (as LangGraph's server runs it) whose
        node opens a scope and leaves a stream after one chunk: that turn keeps
        the chunk it read, not the outer graph's items.
        """
        from langchain_core.runnables import RunnableLambda
        from langgraph.graph import START, MessagesState, StateGraph

        def node(state: dict[str, Any]) -> dict[str, Any]:
            inner = GenericFakeChatModel(messages=iter([AIMessage("one two three")]))
            with track_user("u-inner"):
                stream = (RunnableLambda(lambda x: x) | inner).stream("hi inner")
                first = next(stream)
                stream.close()
            return {"messages": [AIMessage("graph says " + str(first.content))]}

        graph = StateGraph(MessagesState)
        graph.add_node("n", node)
        graph.add_edge(START, "n")
        list(graph.compile().stream(QUESTION, stream_mode="messages"))

        (turn,) = records.conversations

        assert ("u-inner", [("user", "hi inner"), ("assistant", "one")]) == (
            turn.user_id,
            _shape(turn),
        )

    def test_a_stream_read_to_the_end_lets_go_of_its_items(
        self, records: CapturedRecords
    ) -> None:
        """Once exhausted, nothing the consumer got is held for the turn."""
        with track_user("u"):
            stream = _alpha_agent().stream(QUESTION, stream_mode="messages")
            held = None
            for _ in stream:
                held = stream._self_received
            after = stream._self_received

        assert (True, None) == (held is not None, after)
        assert 1 == len(records.conversations)

    def test_the_marker_is_reset_after_the_first_step(
        self, records: CapturedRecords
    ) -> None:
        """Runs started after the stream's first step never see its accumulator."""
        with track_user("u"):
            stream = _alpha_agent().stream(QUESTION, stream_mode="messages")
            next(stream)
            marker = RECEIVING.get()
            stream.close()

        assert None is marker
        assert 1 == len(records.conversations)

    def test_other_modes_get_the_generator_itself(self) -> None:
        """Without the messages mode the stream is LangGraph's own generator."""
        stream = _alpha_agent().stream(QUESTION, stream_mode="updates")

        assert not hasattr(stream, "_self_received")
        stream.close()


class TestInstall:
    def test_patching_again_wraps_once(self) -> None:
        """The patch is idempotent: one wrapper around LangGraph's own methods."""
        _graph_streams.install()
        _graph_streams._patch(langgraph.pregel)

        for name in ("stream", "astream"):
            wrapper = vars(Pregel)[name]
            assert _graph_streams._wrap_stream is wrapper._self_wrapper
            assert not hasattr(wrapper.__wrapped__, "_self_wrapper")

    def test_import_does_not_import_langgraph(self) -> None:
        """Recording imports no LangGraph; importing it later installs the patch."""
        code = (
            "import sys, context_trace\n"
            "with context_trace.track_user('u'):\n"
            "    pass\n"
            "print('langgraph' in sys.modules)\n"
            "from langgraph.pregel import Pregel\n"
            "from context_trace import _graph_streams\n"
            "print(Pregel.stream._self_wrapper is _graph_streams._wrap_stream)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )

        assert ["False", "True"] == out.stdout.split()
