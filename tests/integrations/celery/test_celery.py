"""
Tasks run in the worker in the scope they were sent from: a real redis broker,
a real ``celery worker`` per pool (threads and prefork with concurrency 2, and
solo) and the worker's real SQLite store.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from celery import chain, chord, group, signals

import context_trace as ct
from context_trace.integrations.celery import (
    HEADER,
    MAX_ENTRIES,
    ContextTraceCelery,
    stats,
)

from .conftest import WAIT, Worker, wait_stored
from .tasks import app, ask, ask_next, boom, flaky, leave_scope_open, own_header


def _marker() -> str:
    return uuid.uuid4().hex[:12]


def _attribution(result: dict[str, Any]) -> tuple[Any, Any]:
    return result["user"], result["session"]


@contextmanager
def _header_replaced(value: object) -> Iterator[None]:
    """Publish with ``HEADER`` set to *value*, after the integration has written it."""

    def replace(headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers is not None:
            headers[HEADER] = value

    signals.before_task_publish.connect(
        replace, weak=False, dispatch_uid="test.header_replaced"
    )
    try:
        yield
    finally:
        signals.before_task_publish.disconnect(dispatch_uid="test.header_replaced")


class TestTaskForms:
    def test_delay_runs_in_the_senders_user_session_and_metadata(
        self, worker: Worker
    ) -> None:
        """delay() in track_user + context_session: the worker's turn has the same ids."""
        m = _marker()
        with (
            ct.track_user(f"alice-{m}", metadata={"plan": "pro"}),
            ct.context_session(f"s-{m}") as session,
        ):
            result = ask.delay(f"{m} hello")
        seen = result.get(timeout=WAIT)
        turns = wait_stored(worker.db, m, 1)

        assert (f"alice-{m}", session.id) == _attribution(seen)
        assert {"plan": "pro"} == seen["metadata"]
        assert seen["recording"]
        assert [(f"alice-{m}", f"s-{m}", f"{m} hello")] == [
            (t.user_id, t.session_id, t.question) for t in turns
        ]
        assert "pro" == turns[0].metadata["plan"]

    def test_apply_async_with_the_apps_own_headers_keeps_them(
        self, worker: Worker
    ) -> None:
        """apply_async(headers=...) in a scope: the app's header arrives untouched, beside ours."""
        m = _marker()
        with ct.track_user(f"bob-{m}"):
            result = own_header.apply_async(("tenant",), headers={"tenant": "acme"})
        seen = result.get(timeout=WAIT)

        assert (f"bob-{m}", None) == _attribution(seen)
        assert "acme" == seen["header"]

    def test_metadata_over_the_limit_travels_without_the_metadata(
        self, worker: Worker
    ) -> None:
        """65 metadata entries (over 64): the task still runs for the user and session."""
        m = _marker()
        metadata = {f"k{i}": "v" for i in range(MAX_ENTRIES + 1)}
        with ct.track_user(f"kim-{m}", metadata=metadata), ct.context_session(f"s-{m}"):
            seen = ask.delay(f"{m} big").get(timeout=WAIT)

        assert (f"kim-{m}", f"s-{m}") == _attribution(seen)
        assert {} == seen["metadata"]

    def test_user_without_session_sends_the_user_only(self, worker: Worker) -> None:
        """track_user alone: the worker's turn has the user and no session."""
        m = _marker()
        with ct.track_user(f"carol-{m}"):
            result = ask.apply_async((f"{m} no session",))
        seen = result.get(timeout=WAIT)
        turns = wait_stored(worker.db, m, 1)

        assert (f"carol-{m}", None) == _attribution(seen)
        assert [(f"carol-{m}", None)] == [(t.user_id, t.session_id) for t in turns]

    def test_chain_keeps_the_ids_on_every_link(self, worker: Worker) -> None:
        """A three-link chain: every link (sent by the worker) runs in the sender's scope."""
        m = _marker()
        with ct.track_user(f"dan-{m}"), ct.context_session(f"s-{m}"):
            result = chain(
                ask.s(f"{m} 1"), ask_next.s(f"{m} 2"), ask_next.s(f"{m} 3")
            ).apply_async()
        seen = result.get(timeout=WAIT)
        turns = wait_stored(worker.db, m, 3)

        assert [(f"dan-{m}", f"s-{m}")] * 3 == [_attribution(s) for s in seen]
        assert [(f"dan-{m}", f"s-{m}", f"{m} {i}") for i in (1, 2, 3)] == [
            (t.user_id, t.session_id, t.question) for t in turns
        ]

    def test_group_runs_every_member_in_the_scope(self, worker: Worker) -> None:
        """A group of four: every member's turn has the sender's user and session."""
        m = _marker()
        with ct.track_user(f"eve-{m}"), ct.context_session(f"s-{m}"):
            result = group(ask.s(f"{m} {i}") for i in range(4)).apply_async()
        seen = result.get(timeout=WAIT)
        turns = wait_stored(worker.db, m, 4)

        assert [(f"eve-{m}", f"s-{m}")] * 4 == [_attribution(s) for s in seen]
        assert [(f"eve-{m}", f"s-{m}")] * 4 == [
            (t.user_id, t.session_id) for t in turns
        ]

    def test_chord_body_runs_in_the_scope(self, worker: Worker) -> None:
        """A chord: the header's tasks and the body (sent by the last header task) keep the ids."""
        m = _marker()
        with ct.track_user(f"fay-{m}"), ct.context_session(f"s-{m}"):
            result = chord(
                [ask.s(f"{m} part {i}") for i in range(3)], ask_next.s(f"{m} body")
            ).apply_async()
        seen = result.get(timeout=WAIT)
        turns = wait_stored(worker.db, m, 4)

        assert [(f"fay-{m}", f"s-{m}")] * 4 == [_attribution(s) for s in seen]
        assert [f"{m} body", *(f"{m} part {i}" for i in range(3))] == [
            t.question for t in turns
        ]
        assert {(f"fay-{m}", f"s-{m}")} == {(t.user_id, t.session_id) for t in turns}

    def test_retries_keep_the_ids(self, worker: Worker) -> None:
        """A task that retries twice: all three attempts' turns have the sender's ids."""
        m = _marker()
        with ct.track_user(f"gus-{m}"), ct.context_session(f"s-{m}"):
            result = flaky.delay(f"{m} flaky", 2)
        [seen] = result.get(timeout=WAIT)
        turns = wait_stored(worker.db, m, 3)

        assert 2 == seen["attempt"]
        assert (f"gus-{m}", f"s-{m}") == _attribution(seen)
        assert [
            (f"gus-{m}", f"s-{m}", f"{m} flaky (attempt {i})") for i in range(3)
        ] == [(t.user_id, t.session_id, t.question) for t in turns]


class TestSetUp:
    def test_a_non_celery_app_is_refused_naming_the_argument(self) -> None:
        """ContextTraceCelery(object()) is a TypeError naming app and the type given."""
        with pytest.raises(
            TypeError, match=r"app must be a celery\.Celery, got object"
        ):
            ContextTraceCelery(object())

    def test_setting_up_twice_sends_one_header(self) -> None:
        """A second ContextTraceCelery(app) adds no second receiver: one header write."""
        ContextTraceCelery(app)
        ContextTraceCelery().init_app(app)
        before = stats()["sent"]
        with ct.track_user("zed"):
            signals.before_task_publish.send(sender="t", headers={}, body=())

        assert before + 1 == stats()["sent"]


class TestEager:
    def test_apply_runs_in_the_callers_scope_and_leaves_it_as_it_was(self) -> None:
        """apply() (no broker, no header) inside a scope: the task sees the caller's scope."""
        with ct.track_user("lea"), ct.context_session("s-lea"):
            seen = ask.apply(("eager",)).get()
            after = ct.current_user()
        outside = ask.apply(("eager outside",)).get()

        assert ("lea", "s-lea") == _attribution(seen)
        assert "lea" == after
        assert (None, None) == _attribution(outside)


class TestUnscoped:
    def test_task_sent_outside_any_scope_runs_unscoped(self, worker: Worker) -> None:
        """delay() outside every scope: the task sees no user, no session, no recorder."""
        m = _marker()
        seen = ask.delay(f"{m} unscoped").get(timeout=WAIT)

        assert (None, None) == _attribution(seen)
        assert None is seen["metadata"]
        assert not seen["recording"]

    def test_our_header_set_by_hand_outside_a_scope_is_not_sent(
        self, worker: Worker
    ) -> None:
        """Outside a scope a hand-made context_trace header is removed before sending."""
        spoofed = {"v": 1, "user_id": "mallory", "session_id": "s-mallory"}
        seen = own_header.apply_async(("tenant",), headers={HEADER: spoofed}).get(
            timeout=WAIT
        )

        assert (None, None) == _attribution(seen)
        assert not seen["recording"]

    def test_malformed_headers_are_ignored_counted_and_logged_once(
        self, worker: Worker
    ) -> None:
        """Seven malformed headers: each task runs unscoped; counted; one WARNING per process."""
        malformed: list[object] = [
            "alice",
            {"v": 1, "user_id": 42},
            {"v": 2, "user_id": "alice"},
            {"v": 1, "user_id": "   "},
            {"v": 1, "user_id": "alice", "extra": "x"},
            {"v": 1, "user_id": "alice", "metadata": {"k": 1}},
            {"v": 1, "user_id": "a" * 9000},
        ]
        results = []
        with ct.track_user("alice"):
            for value in malformed:
                with _header_replaced(value):
                    results.append(ask.delay("malformed"))
        seen = [r.get(timeout=WAIT) for r in results]
        ignored_per_process: dict[str, int] = {}
        for s in seen:
            pid = s["where"].split(":")[0]
            ignored_per_process[pid] = max(
                ignored_per_process.get(pid, 0), s["ignored"]
            )
        warnings = re.findall(
            r"WARNING.*malformed 'context_trace' header", worker.log()
        )

        assert [(None, None)] * 7 == [_attribution(s) for s in seen]
        assert not any(s["recording"] for s in seen)
        assert 7 == sum(ignored_per_process.values())
        assert len(ignored_per_process) == len(warnings)


class TestIsolation:
    def _until_same_place(self, where: str, m: str) -> list[dict[str, Any]]:
        """Send unscoped tasks until one runs where *where* ran; all they saw."""
        seen: list[dict[str, Any]] = []
        for i in range(20):
            seen += group(ask.s(f"{m} after {i}.{j}") for j in range(2))().get(
                timeout=WAIT
            )
            if any(s["where"] == where for s in seen):
                break
        return seen

    def test_a_failed_task_does_not_leak_its_scope(self, worker: Worker) -> None:
        """A task that raises: its turn is recorded and the next task on its thread is unscoped."""
        m = _marker()
        with ct.track_user(f"hal-{m}"), ct.context_session(f"s-{m}"):
            result = boom.delay(f"{m} boom")
        error = result.get(timeout=WAIT, propagate=False)
        where = str(error).split("boom at ")[1]
        after = self._until_same_place(where, m)
        turns = wait_stored(worker.db, f"{m} boom", 1)

        assert isinstance(error, ValueError)
        assert where in {s["where"] for s in after}
        assert {(None, None)} == {_attribution(s) for s in after}
        assert [(f"hal-{m}", f"s-{m}")] == [(t.user_id, t.session_id) for t in turns]

    def test_a_scope_the_task_left_open_is_closed(self, worker: Worker) -> None:
        """A task that never closes a scope of its own: the next task there is unscoped."""
        m = _marker()
        with ct.track_user(f"ida-{m}"):
            first = leave_scope_open.delay(f"{m} leak").get(timeout=WAIT)
        after = self._until_same_place(first["where"], m)

        assert (f"ida-{m}", None) == _attribution(first)
        assert first["where"] in {s["where"] for s in after}
        assert {(None, None)} == {_attribution(s) for s in after}
        assert "left a scope open" in worker.log()


class TestConcurrency:
    def test_fifty_concurrent_scopes_have_no_mismatch(self, worker: Worker) -> None:
        """50 threads, each in its own user and session, send 2 tasks: 100 turns, 0 mismatches."""
        m = _marker()

        def request(i: int) -> list[tuple[str, Any, Any]]:
            with ct.track_user(f"u{i}-{m}"), ct.context_session(f"s{i}-{m}"):
                sent = [ask.delay(f"{m} {i} a"), ask.s(f"{m} {i} b").apply_async()]
            return [(f"{i}", *_attribution(r.get(timeout=WAIT))) for r in sent]

        with ThreadPoolExecutor(50) as pool:
            seen = [row for rows in pool.map(request, range(50)) for row in rows]
        turns = wait_stored(worker.db, m, 100)
        mismatched_results = [
            (i, user, session)
            for i, user, session in seen
            if (user, session) != (f"u{i}-{m}", f"s{i}-{m}")
        ]
        mismatched_turns = [
            t
            for t in turns
            if (t.user_id, t.session_id)
            != (f"u{t.question.split()[1]}-{m}", f"s{t.question.split()[1]}-{m}")
        ]

        assert 100 == len(seen)
        assert [] == mismatched_results
        assert 100 == len(turns)
        assert [] == mismatched_turns
