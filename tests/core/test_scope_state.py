"""
How a scope keeps its state per context: one Scope object active in many threads
and tasks at once, each restoring its own outer state, with exact counts.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import Counter

from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from context_trace import (
    Scope,
    context_session,
    current_handler,
    current_session,
    current_user,
    track_user,
)
from context_trace._activation import leave
from context_trace._integration_api import activation, current_scope
from context_trace.testing import CapturedRecords

from ._helpers import run_threads

ECHO = (
    ChatPromptTemplate.from_messages([("human", "answer for <{user}> #{n}")])
    | ParrotFakeChatModel()
    | StrOutputParser()
)


def _shared_scope(user: str) -> Scope:
    # One Scope object (not a factory): entering it again re-activates that object.
    with track_user(user) as scope:
        assert isinstance(scope, Scope)
        return scope


class TestOneScopeInManyContexts:
    def test_64_threads_nest_one_scope_in_their_own(
        self, records: CapturedRecords
    ) -> None:
        """64 threads enter one Scope inside their own user's: each gets its own back."""
        shared = _shared_scope("shared")
        restored: list[bool] = []

        def work(index: int) -> None:
            user = f"outer-{index}"
            with context_session(f"s-{index}", user_id=user) as session:
                own = current_handler()
                for n in range(10):
                    with shared:
                        assert current_user() == "shared"
                        recorder = current_handler()
                        assert recorder is not None
                        assert recorder.scope is shared
                        ECHO.invoke({"user": "shared", "n": f"{index}-{n}"})
                    restored.append(
                        (current_user(), current_session(), current_handler())
                        == (user, session, own)
                    )
                    ECHO.invoke({"user": user, "n": n})
            assert (current_user(), current_scope(), current_handler()) == (
                None,
                None,
                None,
            )

        run_threads(64, work)

        per_user = Counter(c.user_id for c in records.conversations)
        assert restored == [True] * 640
        assert per_user == {"shared": 640, **{f"outer-{i}": 10 for i in range(64)}}
        assert {
            c.session_id for c in records.conversations if c.user_id != "shared"
        } == {f"s-{i}" for i in range(64)}
        assert all(f"<{c.user_id}>" in (c.answer or "") for c in records.conversations)

    async def test_200_tasks_interleave_inside_one_scope(
        self, records: CapturedRecords
    ) -> None:
        """200 tasks hold one Scope active across awaits; each restores its own user."""
        shared = _shared_scope("shared")

        async def one(i: int) -> tuple[str | None, str | None, str | None]:
            async with track_user(f"task-{i}"):
                shared.activate()
                try:
                    await asyncio.sleep(0)  # every task is inside `shared` here
                    inside = current_user()
                    await ECHO.ainvoke({"user": "shared", "n": i})
                    await asyncio.sleep(0)
                finally:
                    leave(shared)
                after = current_user()
                await ECHO.ainvoke({"user": f"task-{i}", "n": i})
            return inside, after, current_user()

        results = await asyncio.gather(*(one(i) for i in range(200)))

        assert results == [("shared", f"task-{i}", None) for i in range(200)]
        per_user = Counter(c.user_id for c in records.conversations)
        assert per_user == {"shared": 200, **{f"task-{i}": 1 for i in range(200)}}
        assert all(f"<{c.user_id}>" in (c.answer or "") for c in records.conversations)

    def test_leaving_in_a_copied_context_changes_nothing(
        self, records: CapturedRecords
    ) -> None:
        """Leaving a scope in a copy of its context leaves both contexts' state alone."""
        with track_user("outer"):
            outer_handler = current_handler()
            with track_user("inner") as inner:
                copied = contextvars.copy_context()
                marker = activation()
                copied.run(leave, inner)  # tokens from another context: ignored
                assert copied.run(current_user) == "inner"
                assert copied.run(activation) is marker
                assert (current_user(), activation()) == ("inner", marker)
                ECHO.invoke({"user": "inner", "n": 1})
            assert (current_user(), current_handler()) == ("outer", outer_handler)
            ECHO.invoke({"user": "outer", "n": 2})
        assert current_user() is None

        assert [c.user_id for c in records.conversations] == ["inner", "outer"]

    def test_each_thread_started_in_a_scope_restores_its_own_copy(
        self, records: CapturedRecords
    ) -> None:
        """32 threads run in copies of one scope's context, nest and leave: exact counts."""
        seen: list[tuple[str | None, str | None]] = []
        lock = threading.Lock()

        def work(index: int) -> None:
            with track_user(f"nested-{index}"):
                ECHO.invoke({"user": f"nested-{index}", "n": index})
            ECHO.invoke({"user": "parent", "n": index})
            with lock:
                seen.append((current_user(), f"nested-{index}"))

        with track_user("parent"):
            threads = [
                threading.Thread(target=contextvars.copy_context().run, args=(work, i))
                for i in range(32)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        per_user = Counter(c.user_id for c in records.conversations)
        assert [user for user, _ in seen] == ["parent"] * 32
        assert per_user == {"parent": 32, **{f"nested-{i}": 1 for i in range(32)}}
