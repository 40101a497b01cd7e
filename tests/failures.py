"""
A store holding failures, recorded through the real pipeline.

Shared by the CLI and dashboard tests: a real LangGraph ReAct agent whose tool
raises and whose ``ToolNode(handle_tool_errors=True)`` hands the error back to
the model (a turn that answered although its tool failed), and a session with
a turn whose model call failed and one that failed after the model answered.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import tool

import context_trace
from context_trace import _runtime

from .compat._models import ToolCallingFake

USER = "dana"
TOOL_SESSION = "s-tools"
FAILED_SESSION = "s-failed"
TOOL_QUESTION = "where is order 42?"
TOOL_ERROR = "ConnectionError: order service timed out"
TOOL_ANSWER = "Sorry, I cannot reach the order service right now."
MODEL_ERROR = "ProviderDown: provider down"
AFTER_ERROR = "RuntimeError: post-processing failed"


class ProviderDown(Exception):
    """The model provider's error."""


class FailingChatModel(ParrotFakeChatModel):
    """A real chat model whose provider call fails."""

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        raise ProviderDown("provider down")


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order."""
    raise ConnectionError("order service timed out")


def agent_with_failing_tool() -> Runnable[Any, Any]:
    """create_react_agent: a lookup_order call that fails, then an apology."""
    from langgraph.prebuilt import ToolNode, create_react_agent

    script = iter(
        [
            AIMessage(
                content="",
                tool_calls=[
                    {"name": "lookup_order", "args": {"order_id": "42"}, "id": "c1"}
                ],
            ),
            AIMessage(content=TOOL_ANSWER),
        ]
    )
    with warnings.catch_warnings():
        # Deprecated in LangGraph 1.0 in favour of langchain.agents; still used.
        warnings.simplefilter("ignore", DeprecationWarning)
        return create_react_agent(
            ToolCallingFake(messages=script),
            ToolNode([lookup_order], handle_tool_errors=True),
        )


def _post_process(_: object) -> object:
    raise RuntimeError("post-processing failed")


def record_failures(path: Path) -> None:
    """
    Record, for user dana: session s-tools (the agent's turn whose tool failed,
    then a good turn) and session s-failed (good, model call failed, failed
    after the model answered, good).
    """
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("CONTEXT_")}
    _runtime.reset()
    try:
        _runtime.configure(db_path=path, token=None)
        chain = ParrotFakeChatModel() | StrOutputParser()
        with context_trace.track_user(USER):
            with context_trace.context_session(TOOL_SESSION):
                agent_with_failing_tool().invoke(
                    {"messages": [("user", TOOL_QUESTION)]}
                )
                chain.invoke("thanks anyway")
            with context_trace.context_session(FAILED_SESSION):
                chain.invoke("hello")
                with contextlib.suppress(ProviderDown):
                    (FailingChatModel() | StrOutputParser()).invoke("is it down?")
                with contextlib.suppress(RuntimeError):
                    (chain | RunnableLambda(_post_process)).invoke("format it")
                chain.invoke("thanks")
        assert _runtime.flush(10.0)
    finally:
        _runtime.reset()
        os.environ.update(saved)
