"""
Threads and asyncio: the user follows the work, and never leaks across it.

    python examples/threads_and_async.py

Scopes live in ContextVars. asyncio tasks copy them, so concurrent tasks can
each have their own user. Plain threads start empty, so carry the scope over
with ``propagate(fn)`` or submit to a ``ContextThreadPoolExecutor``. Every
answer below is printed with the user it was recorded for; the report at the
end comes from the store and shows the same counts. A fake (echo) chat model
stands in for a real one; the store is temporary unless $CONTEXT_TRACE_DB is set.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import context_trace as ct
from context_trace.cli import main as context_trace_cli

db_path = os.environ.get("CONTEXT_TRACE_DB") or str(
    Path(tempfile.mkdtemp(prefix="context-trace-")) / "traces.db"
)
ct.configure(db_path=db_path, token=None)  # local only, even with CONTEXT_TOKEN set

prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
chain = prompt | ParrotFakeChatModel() | StrOutputParser()  # answers with the question


def ask(question: str) -> str:
    """Runs on a worker thread; says whom the turn is recorded for."""
    answer = chain.invoke({"question": question})
    return f"  [{threading.current_thread().name}] user={ct.current_user()!r}: {answer}"


# 1. A plain thread, with propagate(): the thread runs in a copy of this context.
print("propagate() into a plain thread:")
results: list[str] = []
with ct.track_user("alice"):
    worker = threading.Thread(
        target=ct.propagate(lambda: results.append(ask("alice's question")))
    )
    worker.start()
    worker.join()
print(*results, sep="\n")

# 2. A thread pool that carries the submitter's scope into its workers.
print("ContextThreadPoolExecutor:")
with ct.track_user("bob"), ct.ContextThreadPoolExecutor(max_workers=3) as pool:
    print(*pool.map(ask, [f"bob's question {n}" for n in (1, 2, 3)]), sep="\n")

# 3. Without either, a plain pool's threads see no user, and nothing is recorded.
print("a plain ThreadPoolExecutor (not recorded):")
with ct.track_user("mallory"), ThreadPoolExecutor(max_workers=1) as plain:
    print(plain.submit(ask, "this turn has no user").result())


# 4. asyncio: each task gets its own copy of the context, so its own user.
async def handle(user: str, question: str) -> str:
    async with ct.track_user(user):
        await asyncio.sleep(0)  # let the other tasks interleave
        answer = await chain.ainvoke({"question": question})
        return f"  [task {user}] user={ct.current_user()!r}: {answer}"


async def serve_concurrently() -> list[str]:
    users = ["carol", "dave", "erin", "carol"]
    return await asyncio.gather(*(handle(u, f"{u}'s async question") for u in users))


print("asyncio.gather with a user per task:")
print(*asyncio.run(serve_concurrently()), sep="\n")

ct.flush()
print("\nRecorded per user (alice 1, bob 3, carol 2, dave 1, erin 1, no mallory):")
context_trace_cli(["--db", db_path, "users"])
