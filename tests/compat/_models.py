"""Real LangChain runnables for the compatibility tests (no network, no keys)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import (
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

__all__ = [
    "HeaderLLM",
    "HeaderParrot",
    "ToolCallingFake",
    "WeatherBot",
    "build_agent",
    "echo_chain",
    "get_weather",
    "history_chain",
    "paris_script",
]


class HeaderParrot(ParrotFakeChatModel):
    """
    A parrot carrying HTTP headers and OpenAI's ``user`` like ``ChatOpenAI`` does.

    ``ChatOpenAI(headers=...)`` moves ``headers`` into ``model_kwargs``, which it
    spreads into its default params, so they show up in the invocation params
    LangChain passes to ``on_chat_model_start``; this model does the same.
    """

    headers: dict[str, Any] | None = None
    default_headers: dict[str, Any] | None = None
    user: str | None = None

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            **super()._identifying_params,
            "headers": self.headers,
            "default_headers": self.default_headers,
            "user": self.user,
        }


class HeaderLLM(FakeListLLM):
    """A completion-style LLM (``on_llm_start``) carrying headers."""

    headers: dict[str, Any] | None = None

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {**super()._identifying_params, "headers": self.headers}


class ToolCallingFake(GenericFakeChatModel):
    """``GenericFakeChatModel`` that accepts ``bind_tools`` (the script has the calls)."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ToolCallingFake:
        return self


class WeatherBot(BaseChatModel):
    """
    A tool-calling fake driven by its input, so one instance serves many users.

    A question ending in a city name gets a ``get_weather`` call for that city;
    the tool's result gets the answer ``It is <result>``. ``headers`` show up in
    the invocation params, as :class:`HeaderParrot`'s do.
    """

    headers: dict[str, Any] | None = None

    @property
    def _llm_type(self) -> str:
        return "weather-bot"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"headers": self.headers}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> WeatherBot:
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
            reply = AIMessage(content=f"It is {last.content}")
        else:
            city = str(last.content).rstrip("?").rsplit(" ", 1)[-1]
            reply = AIMessage(
                content="",
                tool_calls=[
                    {
                        "name": "get_weather",
                        "args": {"city": city},
                        "id": f"call_{city}",
                    }
                ],
            )
        return ChatResult(generations=[ChatGeneration(message=reply)])


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"sunny in {city}"


def paris_script() -> Iterator[AIMessage]:
    """The two replies of the Paris example: a tool call, then the answer."""
    return iter(
        [
            AIMessage(
                content="",
                tool_calls=[
                    {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}
                ],
            ),
            AIMessage(content="It is sunny in Paris"),
        ]
    )


def build_agent(
    model: BaseChatModel, checkpointer: BaseCheckpointSaver[Any] | None = None
) -> Runnable[Any, Any]:
    """A ReAct agent as a StateGraph: model node, ToolNode, ``tools_condition``."""
    bound = model.bind_tools([get_weather])

    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [bound.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer)


def echo_chain(model: BaseChatModel | None = None) -> Runnable[dict[str, Any], str]:
    """``prompt | model | StrOutputParser``; with the default parrot the answer is the question."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are terse."), ("human", "{question}")]
    )
    return (
        prompt
        | (model if model is not None else ParrotFakeChatModel())
        | StrOutputParser()
    )


def history_chain(model: BaseChatModel) -> Runnable[dict[str, Any], str]:
    """A chat prompt that re-sends the conversation's history before the question."""
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are terse."),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )
    return prompt | model | StrOutputParser()
