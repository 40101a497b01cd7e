"""
The demo's app: a support chatbot on Flask, answering with fake chat models.

:func:`build_app` attributes each request with the :class:`ContextTrace`
extension and tags each turn with the user's account (``variant`` and ``plan``)
through :func:`track_user`; :func:`build_chain` is the LangChain chain it
answers with, on a :class:`DemoChatModel`. :mod:`context_trace._demo` drives it.
"""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import StructuredTool

from . import _demo_script as _script
from ._decorators import track_user
from ._scopes import current_session, current_user

if TYPE_CHECKING:
    import flask
    from langchain_core.callbacks import CallbackManagerForLLMRun

__all__ = ["DEMO_METADATA", "DemoChatModel", "build_app", "build_chain"]

# On every turn the demo records: how run_demo tells its own store from an app's.
DEMO_METADATA = {"source": "context-trace demo"}
# Seconds of simulated model latency: between the two, picked from the question.
_MIN_LATENCY = 0.015
_LATENCY_SPREAD_MS = 50

_ORDER_RE = re.compile(r"#(\d{3,6})\b")
_ORDER_STATUSES = ("shipped", "out for delivery", "being packed", "delivered")
# The order the simulated order service times out on: the one failing turn.
_ERROR_ORDER = "9999"
_ERROR_TURN_TEXT = "Could you also check my older order #" + _ERROR_ORDER + "?"


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _order_status(order_id: str) -> dict[str, str]:
    code = _crc(order_id)
    days = 1 + (code >> 8) % 4
    return {
        "order": order_id,
        "status": _ORDER_STATUSES[code % len(_ORDER_STATUSES)],
        "eta": f"{days} business day{'s' if days > 1 else ''}",
    }


def _lookup_order(order_id: str) -> str:
    """Look up an order's shipping status by its number."""
    if order_id == _ERROR_ORDER:
        raise TimeoutError("order service did not answer within 2.0 s")
    return json.dumps(_order_status(order_id), separators=(",", ":"))


_LOOKUP_ORDER = StructuredTool.from_function(
    _lookup_order,
    name="lookup_order",
    description="Look up an order's shipping status by its number.",
)


def _reply(question: str) -> str:
    """The canned answer to *question* (deterministic)."""
    match = _ORDER_RE.search(question)
    if match:
        info = _order_status(match.group(1))
        if info["status"] == "delivered":
            return f"Order #{info['order']} was delivered; I hope you enjoy it!"
        return (
            f"Order #{info['order']} is {info['status']} and should arrive in "
            f"{info['eta']}."
        )
    answer = _script.ANSWERS.get(question.strip()) or _script.UNHAPPY_ANSWERS.get(
        question.strip()
    )
    if answer is not None:
        return answer
    return _script.GENERIC_ANSWERS[_crc(question) % len(_script.GENERIC_ANSWERS)]


def _tokens(text: str) -> int:
    """A rough token count (about 4 tokens per 3 words), for plausible usage data."""
    return max(1, len(text.split()) * 4 // 3)


class DemoChatModel(BaseChatModel):
    """
    A deterministic chat model with canned customer-support answers.

    It answers the demo's scripted questions sensibly, reports token usage like
    a real provider, and waits a few milliseconds per call (derived from the
    question) so latency figures look real. It keeps no state, so one instance
    can serve many threads. With ``cache_reads``, the usage it reports counts
    the prompt before the new question as read from a provider's prompt cache.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       ``cache_reads``.
    """

    model_name: str = "demo-support-1"
    latency: bool = True
    cache_reads: bool = False

    @property
    def _llm_type(self) -> str:
        return "context-trace-demo"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        question = ""
        for message in reversed(messages):
            if isinstance(message, HumanMessage):
                question = message.text
                break
        answer = _reply(question)
        if self.latency:
            time.sleep(_MIN_LATENCY + (_crc(question) % _LATENCY_SPREAD_MS) / 1000)
        prompt_tokens = sum(_tokens(m.text) + 3 for m in messages)
        completion_tokens = _tokens(answer)
        usage: dict[str, Any] = {
            "input_tokens": prompt_tokens,
            "output_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if self.cache_reads:
            # A provider's prompt cache: everything before the new question.
            usage["input_token_details"] = {
                "cache_read": prompt_tokens - _tokens(messages[-1].text) - 3
            }
        message = AIMessage(content=answer, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])


def _check_orders(inputs: dict[str, Any]) -> dict[str, Any]:
    """Call ``lookup_order`` for an order number in the message (a child run)."""
    match = _ORDER_RE.search(str(inputs.get("message", "")))
    if match:
        _LOOKUP_ORDER.invoke({"order_id": match.group(1)})
    return inputs


def build_chain(model: BaseChatModel | None = None) -> Runnable[dict[str, Any], str]:
    """
    The demo's chain: order lookup, then system prompt + history + question.

    Args:
        model: The chat model (default: a :class:`DemoChatModel`).

    Returns:
        A runnable taking ``{"history": [...], "message": str}`` and returning
        the answer text.

    .. versionadded:: 0.1.0
    """
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", _script.SYSTEM_PROMPT),
            MessagesPlaceholder("history"),
            ("human", "{message}"),
        ]
    )
    chat_model = model if model is not None else DemoChatModel()
    return RunnableLambda(_check_orders) | prompt | chat_model | StrOutputParser()


def build_app(
    chain: Runnable[dict[str, Any], str] | None = None,
    *,
    accounts: Mapping[str, Mapping[str, str]] | None = None,
) -> flask.Flask:
    """
    The demo's Flask app, with ``ContextTrace`` attributing every request.

    Routes: ``POST /chat`` (JSON ``{"message": ...}``; answers
    ``{"answer", "user", "session"}``, or 502 with ``{"error"}`` when the chain
    fails) and ``POST /feedback`` (JSON ``{"rating": -1|0|1}``, rates the
    session). The user and session come from the ``X-User-Id`` and
    ``X-Session-Id`` headers; each session's history is kept in memory. Every
    turn carries :data:`DEMO_METADATA`, and the user's account from *accounts*
    (``variant`` and ``plan``), set with :func:`track_user` as an app would.

    Args:
        chain: The chain to answer with (default: one :func:`build_chain` per
            model: variant A's, variant B's with prompt-cache reads, and the
            self-hosted one of the enterprise plan).
        accounts: Each user's account metadata (default: none).

    Returns:
        The Flask application.

    Raises:
        ImportError: If Flask is not installed.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       *accounts*; a model per variant.
    """
    import flask

    from .integrations.flask import ContextTrace

    known = {u: dict(a) for u, a in (accounts or {}).items()}
    chains = {
        name: chain
        if chain is not None
        else build_chain(DemoChatModel(model_name=name, cache_reads=name == "gpt-4o"))
        for name in _script.MODELS.values()
    }
    app = flask.Flask("context_trace_demo")
    ContextTrace(app, metadata=DEMO_METADATA)
    histories: dict[str, list[BaseMessage]] = {}
    lock = threading.Lock()

    @app.post("/chat")
    def chat() -> tuple[dict[str, Any], int]:
        body = flask.request.get_json(silent=True)
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message.strip():
            return {"error": "message must be a non-empty string"}, 400
        session = current_session()
        key = session.id if session is not None else None
        with lock:
            history = list(histories.get(key, ())) if key is not None else []
        user = current_user()
        account = known.get(user) if user is not None else None
        answer_chain = chains[_script.model_for(account or {})]
        try:
            if account is None:
                answer = answer_chain.invoke({"history": history, "message": message})
            else:
                with track_user(user, metadata=account):
                    answer = answer_chain.invoke(
                        {"history": history, "message": message}
                    )
        except Exception as exc:  # noqa: BLE001 - a failed turn is answered with 502
            return {"error": f"{type(exc).__name__}: {exc}"}, 502
        if key is not None:
            with lock:
                histories.setdefault(key, []).extend(
                    [HumanMessage(message), AIMessage(answer)]
                )
        return {"answer": answer, "user": current_user(), "session": key}, 200

    @app.post("/feedback")
    def feedback() -> tuple[dict[str, Any], int]:
        body = flask.request.get_json(silent=True)
        rating = body.get("rating") if isinstance(body, dict) else None
        session = current_session()
        if session is None:
            return {"error": "send the X-Session-Id header to rate a session"}, 400
        try:
            session.rate(rating)  # type: ignore[arg-type]
        except ValueError as exc:
            return {"error": str(exc)}, 400
        return {"ok": True}, 200

    return app
