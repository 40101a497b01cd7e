"""Concurrency: every turn is attributed to its own user, with exact counts."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable

from context_trace import _handler, context_session, current_user, track_user
from context_trace.testing import CapturedRecords

from ._helpers import run_threads

# The parrot echoes the prompt, so every answer names the user that asked.
ECHO = (
    ChatPromptTemplate.from_messages([("human", "answer for <{user}> #{n}")])
    | ParrotFakeChatModel()
    | StrOutputParser()
)

# Shared across threads on purpose: one factory object entered concurrently.
SHARED_TRACKER = track_user("shared")


def _mismatches(records: CapturedRecords) -> list[tuple[str | None, str | None]]:
    return [
        (c.user_id, c.answer)
        for c in records.conversations
        if c.answer is None or f"<{c.user_id}>" not in c.answer
    ]


class TestThreads:
    def test_64_threads_20_invokes_each(self, records: CapturedRecords) -> None:
        """64 threads x 20 invokes, each in its own user's scope: 1280 exact records."""

        def work(index: int) -> None:
            user = f"user-{index}"
            with track_user(user):
                for n in range(20):
                    assert user == current_user()
                    ECHO.invoke({"user": user, "n": n})

        run_threads(64, work)

        per_user = Counter(c.user_id for c in records.conversations)

        assert len(records.conversations) == 1280
        assert _mismatches(records) == []
        assert {f"user-{i}": 20 for i in range(64)} == dict(per_user)
        assert len(_handler._CLAIMED) == 0

    def test_one_scope_object_shared_by_threads(self, records: CapturedRecords) -> None:
        """A module-level ``track_user`` object entered by many threads at once works."""
        seen_after: list[str | None] = []

        def work(index: int) -> None:
            with SHARED_TRACKER:
                for n in range(10):
                    assert current_user() == "shared"
                    ECHO.invoke({"user": "shared", "n": f"{index}-{n}"})
            seen_after.append(current_user())

        run_threads(32, work)

        assert len(records.conversations) == 320
        assert {"shared"} == {c.user_id for c in records.conversations}
        assert len({c.answer for c in records.conversations}) == 320
        assert seen_after == [None] * 32

    def test_decorated_function_called_from_threads(
        self, records: CapturedRecords
    ) -> None:
        """One decorated function called concurrently attributes each call to its caller."""

        @track_user(lambda user: user)
        def handle(user: str, n: int) -> str:
            return ECHO.invoke({"user": user, "n": n})

        def work(index: int) -> None:
            for n in range(10):
                handle(f"dec-{index}", n)

        run_threads(32, work)

        assert len(records.conversations) == 320
        assert _mismatches(records) == []

    def test_threads_sharing_one_session(self, records: CapturedRecords) -> None:
        """Threads handed one session (via its id) all land in it, no turn lost."""
        with context_session("team-room") as session:
            session_id = session.id

        def work(index: int) -> None:
            with context_session(session_id, user_id=f"member-{index}"):
                for n in range(5):
                    ECHO.invoke({"user": f"member-{index}", "n": n})

        run_threads(16, work)

        assert len(records.conversations) == 80
        assert {"team-room"} == {c.session_id for c in records.conversations}
        assert _mismatches(records) == []

    def test_batch_in_one_scope(self, records: CapturedRecords) -> None:
        """``chain.batch`` of 50 inputs in one scope gives 50 records for that user."""
        with track_user("batcher"):
            answers = ECHO.batch(
                [{"user": "batcher", "n": n} for n in range(50)],
                config={"max_concurrency": 8},
            )

        assert len(set(answers)) == 50
        assert len(records.conversations) == 50
        assert {"batcher"} == {c.user_id for c in records.conversations}
        assert sorted(answers) == sorted(c.answer or "" for c in records.conversations)

    def test_batches_from_several_users_at_once(self, records: CapturedRecords) -> None:
        """Concurrent batches by different users never mix their turns."""

        def work(index: int) -> None:
            user = f"b-{index}"
            with track_user(user):
                ECHO.batch([{"user": user, "n": n} for n in range(10)])

        run_threads(8, work)

        assert len(records.conversations) == 80
        assert _mismatches(records) == []


class TestAsyncio:
    async def test_500_tasks(self, records: CapturedRecords) -> None:
        """500 gathered tasks, each in its own user's scope: 500 records, no mismatch."""

        async def one(i: int) -> str:
            async with track_user(f"user-{i}"):
                answer = await ECHO.ainvoke({"user": f"user-{i}", "n": i})
                assert f"user-{i}" == current_user()
                return answer

        answers = await asyncio.gather(*(one(i) for i in range(500)))

        assert len(set(answers)) == 500
        assert len(records.conversations) == 500
        assert len({c.user_id for c in records.conversations}) == 500
        assert _mismatches(records) == []
        assert len(_handler._CLAIMED) == 0

    async def test_tasks_with_decorated_coroutines(
        self, records: CapturedRecords
    ) -> None:
        """A decorated coroutine run as 200 concurrent tasks attributes each call."""

        @track_user(lambda user: user)
        async def handle(user: str) -> str:
            await asyncio.sleep(0)  # let the other tasks interleave
            return await ECHO.ainvoke({"user": user, "n": 0})

        await asyncio.gather(*(handle(f"coro-{i}") for i in range(200)))

        assert len(records.conversations) == 200
        assert _mismatches(records) == []

    async def test_abatch_inside_tasks(self, records: CapturedRecords) -> None:
        """``abatch`` inside concurrent tasks keeps each task's user."""

        async def one(i: int) -> None:
            async with track_user(f"ab-{i}"):
                await ECHO.abatch([{"user": f"ab-{i}", "n": n} for n in range(5)])

        await asyncio.gather(*(one(i) for i in range(20)))

        assert len(records.conversations) == 100
        assert _mismatches(records) == []

    async def test_shared_tracker_in_tasks(self, records: CapturedRecords) -> None:
        """One ``track_user`` object used by many tasks with ``async with``."""

        async def one(i: int) -> str | None:
            async with SHARED_TRACKER:
                await ECHO.ainvoke({"user": "shared", "n": i})
            return current_user()

        after = await asyncio.gather(*(one(i) for i in range(100)))

        assert after == [None] * 100
        assert len(records.for_user("shared")) == 100

    async def test_streams_interleaved_across_tasks(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """Interleaved ``astream`` consumers each record their own text for their user."""

        async def one(i: int) -> str:
            async with track_user(f"s-{i}"):
                parts = []
                async for chunk in chain.astream({"question": f"<s-{i}> text"}):
                    parts.append(chunk)
                    await asyncio.sleep(0)
                return "".join(parts)

        await asyncio.gather(*(one(i) for i in range(50)))

        assert len(records.conversations) == 50
        assert _mismatches(records) == []
