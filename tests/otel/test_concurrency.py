"""Every span carries its own turn's user under threads and asyncio tasks."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import context_trace as ct

from .receiver import OTLPReceiver

THREADS, TURNS, TASKS = 64, 20, 500


def _chain() -> Any:
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    return prompt | ParrotFakeChatModel() | StrOutputParser()


def _run_all() -> None:
    chain = _chain()
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        start.wait()
        with ct.track_user(f"t{n}"):
            for i in range(TURNS):
                assert f"t{n} {i}" == chain.invoke({"q": f"t{n} {i}"})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def task(n: int) -> None:
        with ct.track_user(f"a{n}"):
            await asyncio.sleep(0)
            assert f"a{n}" == await chain.ainvoke({"q": f"a{n}"})

    async def main() -> None:
        await asyncio.gather(*(task(n) for n in range(TASKS)))

    asyncio.run(main())


def _check(spans: list[tuple[str, str | None, str, str]]) -> None:
    """(trace id, parent id, user.id, input.value of the root or '')"""
    users_per_trace: dict[str, set[str]] = defaultdict(set)
    roots: dict[str, tuple[str, str]] = {}
    for trace_id, parent, user, question in spans:
        users_per_trace[trace_id].add(user)
        if parent is None:
            roots[trace_id] = (user, question)
    turns = THREADS * TURNS + TASKS

    assert (turns, 2 * turns) == (len(roots), len(spans))
    # Each trace: one user, and the user who asked the root's question.
    assert [] == [t for t, users in users_per_trace.items() if len(users) != 1]
    assert [] == [t for t, (user, q) in roots.items() if q.split()[0] != user]
    per_user = Counter(user for user, _ in roots.values())
    assert {f"t{n}": TURNS for n in range(THREADS)} | {
        f"a{n}": 1 for n in range(TASKS)
    } == dict(per_user)


class TestAttributionUnderLoad:
    def test_threads_and_tasks_through_the_provider(self, memory: Any) -> None:
        """64 threads x 20 turns + 500 tasks: every span has its own turn's user.id."""
        provider: TracerProvider = memory[0]
        exporter: InMemorySpanExporter = memory[1]
        ct.configure(tracer_provider=provider, max_queue=10_000)
        _run_all()
        assert ct.flush(60)

        _check(
            [
                (
                    f"{s.context.trace_id:032x}",
                    None if s.parent is None else f"{s.parent.span_id:016x}",
                    str((s.attributes or {})["user.id"]),
                    str((s.attributes or {}).get("input.value", "")),
                )
                for s in exporter.get_finished_spans()
            ]
        )

    def test_threads_and_tasks_on_the_wire(
        self, receiver: OTLPReceiver, tmp_path: Path
    ) -> None:
        """The same load over OTLP/HTTP: exact counts, one user per trace."""
        ct.configure(
            exporter="otlp",
            otlp_endpoint=receiver.url,
            db_path=tmp_path / "load.db",
            max_queue=10_000,
        )
        _run_all()
        assert ct.flush(60)

        _check(
            [
                (
                    s.trace_id,
                    s.parent_id,
                    s.attributes["user.id"],
                    s.attributes.get("input.value", ""),
                )
                for s in receiver.accepted()
            ]
        )
