"""
Every conversation as OpenTelemetry GenAI spans, sent to any OTLP backend.

    pip install 'context-trace[otel]' arize-phoenix
    phoenix serve                                        # in another terminal
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:6006 \\
    OTEL_SERVICE_NAME=travel-bot python examples/otel_export.py

Any OTLP/HTTP collector or backend works the same way (set
``OTEL_EXPORTER_OTLP_ENDPOINT``, and ``OTEL_EXPORTER_OTLP_HEADERS`` for its API
key). ``exporter="sqlite,otlp"`` keeps the local store (and the
``context-trace`` CLI) beside OTLP. Each turn becomes one trace: a root span
with the user's words and the answer, a ``chat {model}`` span per model call
and an ``execute_tool {name}`` span per tool call, all carrying ``user.id`` and
``session.id``. The app's own request span (here a stand-in for what
opentelemetry-instrumentation-flask would open) becomes the turn's parent.
Spans are built and sent by the background worker, through the durable
outbox: a backend that is down loses nothing. A fake chat model stands in for
a real one (no API key needed).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from opentelemetry.sdk.trace import TracerProvider

import context_trace as ct


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"sunny in {city}"


class WeatherModel(BaseChatModel):
    """A fake tool-calling model: asks for the weather, then answers with it."""

    @property
    def _llm_type(self) -> str:
        return "weather-model"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> WeatherModel:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            reply = AIMessage(f"It is {last.content}.")
        else:
            city = str(last.content).rstrip("?").rsplit(" ", 1)[-1]
            reply = AIMessage(
                "",
                tool_calls=[
                    {"name": "get_weather", "args": {"city": city}, "id": "c1"}
                ],
            )
        return ChatResult(generations=[ChatGeneration(message=reply)])


def build_agent() -> Any:
    """A ReAct agent: model node, ToolNode, ``tools_condition``."""
    model = WeatherModel().bind_tools([get_weather])

    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


db_path = os.environ.get("CONTEXT_TRACE_DB") or str(
    Path(tempfile.mkdtemp(prefix="context-trace-")) / "traces.db"
)
# The endpoint, headers and service name come from the OTEL_* variables.
ct.configure(exporter="sqlite,otlp", db_path=db_path, token=None)

# The app's own OpenTelemetry setup; a web framework's instrumentation would
# open this request span.
app_tracer = TracerProvider().get_tracer("travel-bot")
agent = build_agent()

with (
    app_tracer.start_as_current_span("POST /chat") as request,
    ct.track_user("alice", metadata={"plan": "pro"}),
    ct.context_session("trip-lisbon") as session,
):
    result = agent.invoke({"messages": [("human", "Weather in Lisbon?")]})
    print(f"alice: Weather in Lisbon?\nbot:   {result['messages'][-1].content}")
    session.rate(1)

ct.flush(10)
trace_id = f"{request.get_span_context().trace_id:032x}"
print(f"sent to {ct.get_config().otlp_endpoint}, trace {trace_id}")
print(f"stats: {ct.stats()}")
