"""
A multi-turn chatbot: one session, history in the prompt, a rating at the end.

    python examples/session_chatbot.py

The prompt re-sends the whole history on every turn (``MessagesPlaceholder``),
as chatbots do. context_trace records each turn inside ``context_session()``
under one session id, and leaves out the history a turn re-sends, so the
stored transcript holds every message once. ``session.rate(1)`` rates the last
answer. A fake chat model stands in for a real one (no API key needed); the
store is temporary unless $CONTEXT_TRACE_DB is set. The script ends by printing
the stored transcript, as ``context-trace show SESSION_ID`` does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

import context_trace as ct
from context_trace.cli import main as context_trace_cli

db_path = os.environ.get("CONTEXT_TRACE_DB") or str(
    Path(tempfile.mkdtemp(prefix="context-trace-")) / "traces.db"
)
ct.configure(db_path=db_path, token=None)  # local only, even with CONTEXT_TOKEN set

QUESTIONS = [
    "Hi! I'd like to plan a weekend in Lisbon.",
    "What should I see on the first day?",
    "And where can I eat well in the evening?",
]
REPLIES = [
    "Great choice! Lisbon is lovely in spring. How do you like to travel?",
    "Start in Alfama: the castle in the morning, then tram 28 to Baixa.",
    "Try a tasca in Bairro Alto, and book ahead on Saturdays.",
]

prompt = ChatPromptTemplate.from_messages(
    [
        ("system", "You are a friendly travel assistant."),
        MessagesPlaceholder("history"),
        ("human", "{question}"),
    ]
)
model = GenericFakeChatModel(messages=iter(REPLIES))
chain = prompt | model | StrOutputParser()

history: list[BaseMessage] = []
with ct.track_user("alice"), ct.context_session() as session:
    for question in QUESTIONS:
        reply = chain.invoke({"history": history, "question": question})
        history += [HumanMessage(question), AIMessage(reply)]
        print(f"alice: {question}\nbot:   {reply}\n")
    session.rate(1)  # alice liked the last answer
    print(f"session {session.id}: {len(QUESTIONS)} turns, rated {session.ratings}")

ct.flush()
print(f"\nThe transcript stored in {db_path}")
print("(each message once: the history the prompt re-sent is not repeated):")
context_trace_cli(["--db", db_path, "show", session.id])
