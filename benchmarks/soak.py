"""
Soak: many threads, then many asyncio tasks, recording into the default local store.

    python benchmarks/soak.py [--threads 32] [--thread-turns 1562]
                              [--tasks 200] [--task-turns 250] [--pause 0.001]

The overload that back-pressure was built for: each of ``--threads`` threads runs ``--thread-turns``
turns of ``RunnableLambda(pause) | prompt | ParrotFakeChatModel() | StrOutputParser()``
inside ``track_user`` (one scope per turn, as a request would open), then
``--tasks`` asyncio tasks run ``--task-turns`` turns each the same way with
``ainvoke``. Every turn's question names its user, and the parrot repeats it, so
the stored answers show whether a turn landed on the wrong user.

It prints what was issued, stored (counted in the SQLite file), dropped
(``context_trace.stats()``), mismatched (stored under another user than the one
its text names), the emits that waited for room (back-pressure) and RSS before
and after (after a flush and a gc). Exit status 1 if anything was dropped,
lost or mismatched (except with ``--smoke``).

Run by hand; ``--smoke`` runs a tiny version in seconds (CI).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def build_chain(pause_s: float) -> Any:
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda

    def pause(inputs: dict[str, str]) -> dict[str, str]:
        time.sleep(pause_s)  # the request's own I/O (a cache, a database)
        return inputs

    async def apause(inputs: dict[str, str]) -> dict[str, str]:
        await asyncio.sleep(pause_s)
        return inputs

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are helpful."), ("human", "{q}")]
    )
    return (
        RunnableLambda(pause, afunc=apause)
        | prompt
        | ParrotFakeChatModel()
        | StrOutputParser()
    )


def question(user: str, i: int) -> dict[str, str]:
    return {"q": f"user={user} turn={i}: what is the capital of France?"}


def run_threads(chain: Any, threads: int, turns: int) -> tuple[int, list[str]]:
    import context_trace as ct

    errors: list[str] = []
    barrier = threading.Barrier(threads)

    def work(k: int) -> None:
        user = f"t{k}"
        barrier.wait()
        for i in range(turns):
            try:
                with ct.track_user(user):
                    chain.invoke(question(user, i))
            except Exception as exc:  # noqa: BLE001 - report, do not stop the load
                errors.append(repr(exc))

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return threads * turns, errors


async def run_tasks(chain: Any, tasks: int, turns: int) -> int:
    import context_trace as ct

    async def work(k: int) -> None:
        user = f"a{k}"
        for i in range(turns):
            async with ct.track_user(user):
                await chain.ainvoke(question(user, i))

    await asyncio.gather(*(work(k) for k in range(tasks)))
    return tasks * turns


def count_store(db: str) -> tuple[int, int]:
    """(stored conversations, stored under another user than their text names)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored = mismatched = 0
        for user_id, messages in conn.execute(
            "SELECT user_id, messages_json FROM conversations"
        ):
            stored += 1
            if f"user={user_id} " not in messages:
                mismatched += 1
        return stored, mismatched
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--thread-turns", type=int, default=1562)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--task-turns", type=int, default=250)
    ap.add_argument(
        "--pause", type=float, default=0.001, help="seconds the lambda sleeps per turn"
    )
    ap.add_argument("--json", dest="json_out", help="also write the figures here")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, seconds in all: checks the script runs (CI), measures nothing",
    )
    args = ap.parse_args()
    if args.smoke:
        args.threads, args.thread_turns, args.tasks, args.task_turns = 4, 25, 10, 5

    tmp = tempfile.mkdtemp(prefix="ct-soak-")
    db = os.path.join(tmp, "soak.db")
    os.environ["CONTEXT_TRACE_DB"] = db
    for var in ("CONTEXT_TOKEN", "GETCONTEXT_TOKEN"):
        os.environ.pop(var, None)

    import context_trace as ct

    chain = build_chain(args.pause)
    with ct.track_user("warm-up"):  # imports, the store's schema, the worker
        chain.invoke(question("warm-up", 0))
    ct.flush(60)
    gc.collect()
    rss_before = rss_kib()

    t0 = time.perf_counter()
    issued, errors = run_threads(chain, args.threads, args.thread_turns)
    t1 = time.perf_counter()
    issued += asyncio.run(run_tasks(chain, args.tasks, args.task_turns))
    t2 = time.perf_counter()
    flushed = ct.flush(120)
    t3 = time.perf_counter()
    gc.collect()
    rss_after = rss_kib()
    stats = ct.stats()
    ct.shutdown(30)
    stored, mismatched = count_store(db)
    stored -= 1  # the warm-up turn
    report = {
        "issued": issued,
        "stored": stored,
        "dropped": stats["dropped"],
        "mismatched": mismatched,
        "waited": stats.get("waited"),
        "errors": len(errors),
        "flushed": flushed,
        "threads_s": round(t1 - t0, 2),
        "tasks_s": round(t2 - t1, 2),
        "flush_s": round(t3 - t2, 2),
        "turns_per_s": round(issued / (t2 - t0)),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_growth_kib": rss_after - rss_before,
    }
    print(
        f"issued {issued}, stored {stored}, dropped {stats['dropped']},"
        f" mismatched {mismatched}, waited {stats.get('waited')}, errors {len(errors)}"
    )
    print(
        f"threads {args.threads}x{args.thread_turns} in {t1 - t0:.1f} s,"
        f" tasks {args.tasks}x{args.task_turns} in {t2 - t1:.1f} s,"
        f" final flush {t3 - t2:.1f} s ({report['turns_per_s']} turns/s)"
    )
    print(
        f"RSS {rss_before / 1024:.1f} MiB -> {rss_after / 1024:.1f} MiB"
        f" (+{(rss_after - rss_before) / 1024:.1f} MiB)"
    )
    if errors:
        print(f"first error: {errors[0]}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)
    lost = issued - stored
    if args.smoke:  # CI checks that it runs; thresholds are for a real run
        return 0
    return 1 if (stats["dropped"] or lost or mismatched or errors) else 0


if __name__ == "__main__":
    sys.exit(main())
