"""
A LangGraph tool-calling agent whose conversations are recorded per user.

``@track_user`` on the function that runs the agent is all it takes: every
graph invocation inside becomes one conversation with the user's question, each
tool call (name, arguments, result) and the final answer. With
``session_id=...`` a thread's turns form one session; the history a
checkpointer re-sends (earlier questions, tool calls and answers) is recorded
once, not on every turn.

A fake chat model stands in for a real one so this runs without keys::

    python examples/langgraph_agent.py

It records to a temporary SQLite file (or to ``$CONTEXT_TRACE_DB``) and prints
each session's transcript.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

import context_trace

# The local store's reader (``context-trace`` on the command line shows the same).
from context_trace._store.reader import SQLiteReader


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"sunny in {city}"


class FakeToolCallingModel(BaseChatModel):
    """
    Stands in for a tool-calling chat model (e.g. ``ChatOpenAI``).

    A question ending in a city asks for ``get_weather(city)``; a tool result
    is turned into the answer.
    """

    @property
    def _llm_type(self) -> str:
        return "fake-tool-calling"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> FakeToolCallingModel:
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
            reply = AIMessage(content=f"It is {last.content}.")
        else:
            city = str(last.content).rstrip("?").rsplit(" ", 1)[-1]
            call = {"name": "get_weather", "args": {"city": city}, "id": f"call_{city}"}
            reply = AIMessage(content="", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=reply)])


def build_agent() -> Runnable[Any, Any]:
    """The ReAct loop: the model calls tools until it answers (what
    ``langgraph.prebuilt.create_react_agent`` builds)."""
    model = FakeToolCallingModel().bind_tools([get_weather])

    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=InMemorySaver())


AGENT = build_agent()


# No session wiring: LangGraph's thread_id names the session.
@context_trace.track_user(user_id=lambda user_id: user_id)
def ask(user_id: str, thread_id: str, question: str) -> str:
    """Run one turn of *thread_id* for *user_id*; return the agent's answer."""
    result = AGENT.invoke(
        {"messages": [("user", question)]},
        config={"configurable": {"thread_id": thread_id}},
    )
    return str(result["messages"][-1].content)


def main() -> None:
    if not os.environ.get("CONTEXT_TRACE_DB"):
        tmp = tempfile.mkdtemp(prefix="context-trace-example-")
        context_trace.configure(db_path=Path(tmp) / "traces.db")
    db_path = context_trace.get_config().db_path

    # Two users at once, on threads: each turn is recorded for its own user.
    with ThreadPoolExecutor(2) as pool:
        first = list(
            pool.map(
                ask,
                ["alice", "bob"],
                ["thread-alice", "thread-bob"],
                ["What's the weather in Paris?", "What's the weather in Tokyo?"],
            )
        )
    # A second turn in Alice's thread: the checkpointer re-sends the first one.
    second = ask("alice", "thread-alice", "And in Rome?")
    for answer in [*first, second]:
        print(f"agent: {answer}")

    context_trace.flush()
    with SQLiteReader(db_path) as reader:
        for thread_id in ("thread-alice", "thread-bob"):
            user = next(
                c.user_id for c in reader.conversations() if c.session_id == thread_id
            )
            print(f"\nsession {thread_id} (user={user})")
            for message in reader.session_messages(thread_id):
                detail = (
                    f" {message.name}({message.tool_input})" if message.name else ""
                )
                print(f"  {message.role:>9}:{detail} {message.content}")
    context_trace.shutdown()


if __name__ == "__main__":
    main()
