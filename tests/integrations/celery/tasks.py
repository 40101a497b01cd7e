"""
The Celery app the tests send to and the workers run (``celery -A`` this module).

Every task answers with a real LangChain chain (prompt | fake chat model |
parser) and reports what it saw of context_trace in the worker: the user, the
session and the metadata of its scope, and where it ran (pid, thread).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from celery import Celery
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from context_trace import current_handler, current_session, current_user, track_user
from context_trace._scopes import current_scope
from context_trace.integrations.celery import ContextTraceCelery, stats

#: The broker (and result backend) URL, given by the tests to both sides.
BROKER_ENV = "CONTEXT_TRACE_TEST_CELERY_BROKER"

app = Celery("context_trace_celery_tests")
app.conf.update(
    broker_url=os.environ.get(BROKER_ENV, "redis://127.0.0.1:1/0"),
    result_backend=os.environ.get(BROKER_ENV, "redis://127.0.0.1:1/0"),
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=True,
    task_serializer="json",
    result_serializer="json",
)
ContextTraceCelery(app)

CHAIN = (
    ChatPromptTemplate.from_messages([("system", "You echo."), ("human", "{q}")])
    | ParrotFakeChatModel()
    | StrOutputParser()
)


def seen() -> dict[str, Any]:
    """What the running task sees of context_trace, and where it runs."""
    scope = current_scope()
    session = current_session()
    return {
        "user": current_user(),
        "session": session.id if session is not None else None,
        "metadata": dict(scope.metadata) if scope is not None else None,
        "recording": current_handler() is not None,
        "ignored": stats()["ignored"],
        "where": f"{os.getpid()}:{threading.get_ident()}",
    }


@app.task
def ask(question: str) -> dict[str, Any]:
    """One turn; what the task saw."""
    return {**seen(), "answer": CHAIN.invoke({"q": question})}


@app.task
def ask_next(previous: Any, question: str) -> list[dict[str, Any]]:
    """One turn after *previous* (a chain link or a chord's results): all seen so far."""
    earlier = previous if isinstance(previous, list) else [previous]
    return [*earlier, ask(question)]


@app.task(bind=True, max_retries=3)
def flaky(self: Any, question: str, failures: int) -> list[dict[str, Any]]:
    """One turn per attempt; retries *failures* times, then answers."""
    attempt = self.request.retries
    result = ask(f"{question} (attempt {attempt})")
    if attempt < failures:
        raise self.retry(countdown=0)
    return [{**result, "attempt": attempt}]


@app.task
def boom(question: str) -> None:
    """One turn, then an error naming where the task ran."""
    ask(question)
    raise ValueError(f"boom at {seen()['where']}")


@app.task
def leave_scope_open(question: str) -> dict[str, Any]:
    """One turn, then a scope of the task's own that it never closes."""
    result = ask(question)
    track_user("intruder").__enter__()
    return result


@app.task(bind=True)
def own_header(self: Any, name: str) -> dict[str, Any]:
    """What the task saw, and the value of the app's own header *name*."""
    return {**seen(), "header": self.request.get(name)}
