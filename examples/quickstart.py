"""
Quickstart: attribute LangChain calls to users without passing any callbacks.

    python examples/quickstart.py

``@track_user`` on a function (the user id taken from its arguments) and
``with track_user(...)`` around a block: every LangChain run inside is recorded
for that user. A fake chat model stands in for a real one, so no API key is
needed. Conversations go to a temporary SQLite store (or to $CONTEXT_TRACE_DB
when it is set), and the script ends by printing the report that
``context-trace users`` shows.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import context_trace as ct
from context_trace.cli import main as context_trace_cli

db_path = os.environ.get("CONTEXT_TRACE_DB") or str(
    Path(tempfile.mkdtemp(prefix="context-trace-")) / "traces.db"
)
# token=None keeps this example local even if CONTEXT_TOKEN is set; leave it
# out to send conversations to Context.
ct.configure(db_path=db_path, token=None)

model = GenericFakeChatModel(
    messages=iter(
        [
            "LangChain is a framework for building apps on top of language models.",
            "A retriever fetches the documents most relevant to a question.",
            "Yes: streaming works the same way, chunk by chunk.",
        ]
    )
)
prompt = ChatPromptTemplate.from_messages(
    [("system", "You are a concise assistant."), ("human", "{question}")]
)
chain = prompt | model | StrOutputParser()


# 1. As a decorator. The lambda names the parameter the user id comes from.
@ct.track_user(user_id=lambda user_id: user_id)
def answer(user_id: str, question: str) -> str:
    return chain.invoke({"question": question})


print("alice asked, got:", answer("alice", "What is LangChain?"))

# 2. As a context manager, with metadata attached to every turn inside.
with ct.track_user("bob", metadata={"plan": "pro"}):
    print(f"inside the block, current_user() is {ct.current_user()!r}")
    print("bob asked, got:  ", chain.invoke({"question": "What does a retriever do?"}))
    print("bob asked, got:  ", chain.invoke({"question": "Does streaming work too?"}))

print(f"outside, current_user() is {ct.current_user()!r}")

# Export runs in the background; a short script waits for it before exiting.
ct.flush()
print(f"\nRecorded in {db_path}:")
context_trace_cli(["--db", db_path, "users"])
