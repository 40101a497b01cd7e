"""
One app server of the several-host test (``test_several_hosts.py``), run in a
spawned process: its own outbox file and host identity, one shared store.

Turn *j* of session *s* is served by host ``(s + j) % HOSTS``, so every
session's turns are spread over all hosts, as behind a load balancer without
sticky sessions. A barrier (the test process takes part) separates the rounds,
as a user waits for an answer before asking again; the test stops and starts
PostgreSQL between two rounds.
"""

from __future__ import annotations

import time
from typing import Any

HOSTS = 4
SESSIONS = 200
ROUNDS = 40
USERS = 25
SYSTEM = "You are the support bot."
_DRAIN = 240.0


def question(session: int, turn: int) -> str:
    """The user's words in turn *turn* of session *session*."""
    return f"s{session} question {turn}"


def user_of(session: int) -> str:
    return f"user{session % USERS}"


def serve(index: int, url: str, outbox: str, barrier: Any) -> None:
    """Record this host's share of every round's turns, then drain the outbox."""
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

    import context_trace

    context_trace.configure(
        store=url, host=f"host{index}", db_path=outbox, flush_interval=0.2
    )
    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM), MessagesPlaceholder("history"), ("human", "{q}")]
    )
    chain = prompt | ParrotFakeChatModel() | StrOutputParser()
    for turn in range(ROUNDS):
        barrier.wait()
        for session in range(SESSIONS):
            if (session + turn) % HOSTS != index:
                continue
            history: list[BaseMessage] = []
            for earlier in range(turn):
                words = question(session, earlier)
                history += [HumanMessage(words), AIMessage(words)]
            with (
                context_trace.track_user(user_of(session)),
                context_trace.context_session(f"session{session}"),
            ):
                answer = chain.invoke(
                    {"history": history, "q": question(session, turn)}
                )
            assert answer == question(session, turn)
        barrier.wait()
    deadline = time.monotonic() + _DRAIN
    while True:
        context_trace.flush(5.0)
        if context_trace.stats()["pending"] == 0:
            break
        if time.monotonic() > deadline:
            raise SystemExit(
                f"host{index}: outbox not drained: {context_trace.stats()}"
            )
        time.sleep(0.2)
    stats = context_trace.stats()
    if stats["dropped"] or stats["failed"]:
        raise SystemExit(f"host{index}: lost turns: {stats}")
    context_trace.shutdown()
