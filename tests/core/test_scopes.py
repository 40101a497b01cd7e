"""Scopes: track_user, context_session, accessors, nesting, threads, disabling."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers.context import collect_runs

from context_trace import (
    ContextThreadPoolExecutor,
    Feedback,
    RecordingHandler,
    Scope,
    Session,
    _config,
    _runtime,
    configure,
    context_session,
    current_handler,
    current_session,
    current_user,
    headers,
    instrument_threads,
    propagate,
    runnable_config,
    track_user,
    uninstrument_threads,
)
from context_trace._record import exported_metadata
from context_trace._scopes import current_scope
from context_trace.testing import CapturedRecords, capture

from ._helpers import MetadataRecorder

HEX32 = re.compile(r"[0-9a-f]{32}")


def _state() -> tuple[Any, ...]:
    """Everything a scope sets, by identity, to compare before and after."""
    return (current_scope(), current_handler(), var_child_runnable_config.get())


class TestTrackUser:
    def test_context_manager_sets_user_and_records(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """``with track_user(...)`` sets the user and attributes the turn to it."""
        with track_user("alice") as scope:
            assert current_user() == "alice"
            chain.invoke({"question": "hi"})

        assert isinstance(scope, Scope)
        assert scope.user_id == "alice"
        assert current_user() is None
        assert [(c.user_id, c.session_id, c.answer) for c in records.conversations] == [
            ("alice", None, "hi")
        ]

    async def test_async_context_manager(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """``async with track_user(...)`` attributes awaited runs to the user."""
        async with track_user("bob"):
            assert current_user() == "bob"
            await chain.ainvoke({"question": "hey"})

        assert current_user() is None
        assert [c.user_id for c in records.conversations] == ["bob"]

    def test_decorator_with_constant_user(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """``@track_user("id")`` scopes every call of the function."""

        @track_user("carol")
        def handle(question: str) -> str:
            return chain.invoke({"question": question})

        assert handle("q") == "q"
        assert [c.user_id for c in records.conversations] == ["carol"]

    def test_int_user_id_becomes_str(self, records: CapturedRecords) -> None:
        """An int user id is recorded as its decimal string."""
        with track_user(1234):
            assert current_user() == "1234"
            ParrotFakeChatModel().invoke("hi")

        assert [c.user_id for c in records.conversations] == ["1234"]

    def test_session_id_argument_opens_a_session(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """``track_user(..., session_id=...)`` puts the turns in that session."""
        with track_user("dan", session_id="s-1"):
            session = current_session()
            chain.invoke({"question": "one"})
            chain.invoke({"question": "two"})

        assert session is not None
        assert (session.id, session.user_id) == ("s-1", "dan")
        assert [(c.user_id, c.session_id) for c in records.conversations] == [
            ("dan", "s-1")
        ] * 2

    def test_metadata_attached_to_every_turn(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """Scope metadata (values stringified) lands in every turn's metadata."""
        with track_user("erin", metadata={"plan": "pro", "seats": 3}):
            chain.invoke({"question": "x"})

        conversation = records.conversations[0]

        assert (
            conversation.metadata["plan"],
            conversation.metadata["seats"],
        ) == ("pro", "3")

    def test_shared_factory_used_twice(self) -> None:
        """One ``track_user(...)`` object can be entered again and nested in itself."""
        tracker = track_user("same")

        with tracker:
            with tracker:
                assert current_user() == "same"
            assert current_user() == "same"
        with tracker:
            assert current_user() == "same"

        assert current_user() is None


class TestContextSession:
    def test_yields_session_with_generated_id(self) -> None:
        """``context_session()`` yields a Session with a 32-hex id."""
        with context_session() as session:
            assert session is current_session()

        assert isinstance(session, Session)
        assert HEX32.fullmatch(session.id)
        assert (session.user_id, session.metadata) == (None, {})

    def test_given_id_user_and_metadata(self) -> None:
        """The session keeps the id, user and metadata it was opened with."""
        with context_session("thread-9", user_id=7, metadata={"k": "v"}) as session:
            assert current_user() == "7"

        assert (
            session.id,
            session.user_id,
            session.metadata,
        ) == ("thread-9", "7", {"k": "v"})

    def test_session_takes_the_outer_user(self) -> None:
        """A session opened inside ``track_user`` belongs to that user."""
        with track_user("outer-user"), context_session() as session:
            assert current_user() == "outer-user"

        assert session.user_id == "outer-user"

    def test_every_turn_lands_in_the_session(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """All turns inside the block share the session id and its metadata."""
        with context_session(user_id="fay", metadata={"channel": "web"}) as session:
            chain.invoke({"question": "a"})
            chain.batch([{"question": "b"}, {"question": "c"}])
            ParrotFakeChatModel().invoke("d")

        conversations = records.conversations

        assert len(conversations) == 4
        assert {(session.id, "fay", "web")} == {
            (c.session_id, c.user_id, c.metadata["channel"]) for c in conversations
        }

    async def test_async_with_session(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """``async with context_session()`` yields the session and records into it."""
        async with context_session(user_id="gus") as session:
            await chain.ainvoke({"question": "a"})

        assert isinstance(session, Session)
        assert [(session.id, "gus")] == [
            (c.session_id, c.user_id) for c in records.conversations
        ]

    async def test_async_decorator_opens_one_session_per_call(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """``@context_session()`` on an async def gives each call its own session."""

        @context_session(user_id="hal")
        async def chat(question: str) -> str:
            return await chain.ainvoke({"question": question})

        await chat("one")
        await chat("two")

        first, second = records.conversations

        assert first.session_id != second.session_id
        assert (first.user_id, second.user_id) == ("hal", "hal")

    @pytest.mark.parametrize("rating", [-1, 0, 1])
    def test_rate_emits_feedback_for_the_last_turn(
        self,
        rating: int,
        chain: Runnable[dict[str, Any], str],
        records: CapturedRecords,
    ) -> None:
        """``Session.rate`` records a Feedback tied to the session's last turn."""
        with context_session(user_id="ivy") as session:
            chain.invoke({"question": "first"})
            chain.invoke({"question": "second"})
            session.rate(rating)

        last = records.conversations[-1]
        (feedback,) = records.feedback

        assert isinstance(feedback, Feedback)
        assert (session.id, "ivy", rating, last.id) == (
            feedback.session_id,
            feedback.user_id,
            feedback.rating,
            feedback.conversation_id,
        )
        assert [rating] == session.ratings

    def test_rate_after_a_failed_turn_targets_the_last_answer(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """A turn that failed is not what a later rating targets: the last answer is."""
        with context_session(user_id="ivy") as session:
            chain.invoke({"question": "first"})
            with pytest.raises(ValueError, match="boom"):
                (chain | RunnableLambda(_boom)).invoke({"question": "second"})
            session.rate(-1)

        answered, failed = records.conversations
        (feedback,) = records.feedback

        assert failed.error is not None
        assert answered.id == feedback.conversation_id

    def test_rate_a_named_turn(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """``turn_id=`` rates that turn, not the last one."""
        with context_session(user_id="ivy") as session:
            chain.invoke({"question": "first"})
            first_id = session.last_turn_id
            chain.invoke({"question": "second"})
            session.rate(1, turn_id=first_id)

        (feedback,) = records.feedback

        assert (records.conversations[0].id, 1) == (
            feedback.conversation_id,
            feedback.rating,
        )

    def test_rate_before_any_turn(self, records: CapturedRecords) -> None:
        """Rating a session with no turn yet records feedback with no conversation id."""
        with context_session("empty") as session:
            session.rate(-1)

        assert [
            (f.session_id, f.conversation_id, f.rating) for f in records.feedback
        ] == [("empty", None, -1)]

    def test_rate_after_the_block(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """A session can be rated after its block ended (a later feedback request)."""
        with context_session(user_id="jon") as session:
            chain.invoke({"question": "q"})
        session.rate(1)

        assert [("jon", records.conversations[0].id)] == [
            (f.user_id, f.conversation_id) for f in records.feedback
        ]


def _boom(_: object) -> str:
    raise ValueError("boom")


class TestAccessors:
    def test_outside_every_scope(self) -> None:
        """Outside scopes every accessor is empty."""
        assert (
            current_user(),
            current_session(),
            current_handler(),
            headers(),
            dict(runnable_config()),
        ) == (None, None, None, {}, {})

    def test_current_handler_is_the_scope_recorder(self) -> None:
        """``current_handler()`` is the scope's RecordingHandler."""
        with track_user("kim") as scope:
            handler = current_handler()

        assert isinstance(handler, RecordingHandler)
        assert handler is scope.handler
        assert handler.scope is scope

    def test_re_entering_the_handlers_scope_records_again(
        self, records: CapturedRecords
    ) -> None:
        """``with current_handler().scope:`` later (a worker thread) still records."""
        with track_user("kim"):
            handler = current_handler()
        assert handler is not None
        assert handler.scope is not None

        with handler.scope:
            ParrotFakeChatModel().invoke("later")

        assert [("kim", "later")] == [
            (c.user_id, c.messages[0].content) for c in records.conversations
        ]

    def test_runnable_config_carries_handler_and_ids(self) -> None:
        """``runnable_config()`` holds the handler in callbacks and the ids in metadata."""
        with context_session("sess-rc", user_id="lee"):
            config = runnable_config()
            handler = current_handler()

        assert [handler] == config["callbacks"]
        assert config["metadata"] == {"user_id": "lee", "session_id": "sess-rc"}

    def test_runnable_config_records_from_an_unscoped_thread(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """Passing ``runnable_config()`` by hand attributes a run made elsewhere."""
        with track_user("max"):
            config = runnable_config()

        worker = threading.Thread(
            target=lambda: chain.invoke({"question": "by hand"}, config=config)
        )
        worker.start()
        worker.join()

        assert [(c.user_id, c.answer) for c in records.conversations] == [
            ("max", "by hand")
        ]

    @pytest.mark.parametrize(
        ("user", "session", "expected"),
        [
            ("u-1", None, {"X-User-Id": "u-1"}),
            (None, "s-1", {"X-Session-Id": "s-1"}),
            ("u-1", "s-1", {"X-User-Id": "u-1", "X-Session-Id": "s-1"}),
        ],
    )
    def test_headers_only_for_set_values(
        self, user: str | None, session: str | None, expected: dict[str, str]
    ) -> None:
        """``headers()`` has X-User-Id / X-Session-Id only for values that are set."""
        factory = (
            context_session(session, user_id=user)
            if session is not None
            else track_user(user)
        )
        with factory:
            assert expected == headers()


class TestNesting:
    def test_inner_overrides_user_and_session(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """An inner scope overrides the user and session; the outer one resumes after."""
        with context_session("outer-s", user_id="outer"):
            chain.invoke({"question": "1"})
            with context_session("inner-s", user_id="inner"):
                chain.invoke({"question": "2"})
            chain.invoke({"question": "3"})

        assert [(c.user_id, c.session_id, c.answer) for c in records.conversations] == [
            ("outer", "outer-s", "1"),
            ("inner", "inner-s", "2"),
            ("outer", "outer-s", "3"),
        ]

    def test_inner_user_keeps_outer_session(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """``track_user`` inside a session changes the user, not the session."""
        with context_session("keep-s", user_id="first"), track_user("second"):
            chain.invoke({"question": "x"})

        assert [(c.user_id, c.session_id) for c in records.conversations] == [
            ("second", "keep-s")
        ]

    def test_metadata_merges(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """Inner metadata merges over the outer; the outer's is intact after."""
        outer = track_user("m", metadata={"a": "outer", "b": "outer"})
        session = context_session(metadata={"b": "session", "c": "session"})
        inner = track_user("m", metadata={"c": "inner", "d": "inner"})
        with outer:
            with session, inner:
                chain.invoke({"question": "deep"})
            chain.invoke({"question": "shallow"})

        deep, shallow = records.conversations
        keys = ("a", "b", "c", "d")

        assert [deep.metadata[k] for k in keys] == [
            "outer",
            "session",
            "inner",
            "inner",
        ]
        assert {k: shallow.metadata[k] for k in keys if k in shallow.metadata} == {
            "a": "outer",
            "b": "outer",
        }

    def test_leaving_restores_outer_state_exactly(self) -> None:
        """After an inner block the scope, handler and LangChain config are the outer's."""
        before = _state()
        with track_user("outer", metadata={"k": "v"}):
            outer = _state()
            with context_session("s", user_id="inner"):
                assert outer != _state()
            assert outer == _state()
        assert before == _state()

    def test_exception_inside_restores_state(self) -> None:
        """An exception leaving the inner block restores the outer state and propagates."""
        error = RuntimeError("boom")
        with track_user("outer"):
            outer = _state()
            with pytest.raises(RuntimeError) as caught, track_user("inner"):
                raise error
            assert outer == _state()
            assert current_user() == "outer"

        assert caught.value is error
        assert current_user() is None

    async def test_exception_inside_async_restores_state(self) -> None:
        """``async with`` blocks restore the outer state after an exception too."""
        async with track_user("outer"):
            outer = _state()
            with pytest.raises(ValueError, match="bad"):
                async with context_session(user_id="inner"):
                    raise ValueError("bad")
            assert outer == _state()

        assert current_user() is None

    def test_decorated_exception_restores_state(self) -> None:
        """A decorated function that raises restores the caller's scope."""

        @track_user("inner")
        def fail() -> None:
            raise KeyError("k")

        with track_user("outer"):
            outer = _state()
            with pytest.raises(KeyError):
                fail()
            assert outer == _state()

    def test_nothing_recorded_outside_scopes(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """Runs outside every scope are not recorded."""
        chain.invoke({"question": "before"})
        with track_user("in"):
            chain.invoke({"question": "inside"})
        chain.invoke({"question": "after"})
        ParrotFakeChatModel().invoke("bare model")

        assert [(c.user_id, c.answer) for c in records.conversations] == [
            ("in", "inside")
        ]


class TestRunMetadata:
    def test_auto_mode_leaves_plain_handlers_alone(
        self, chain: Runnable[dict[str, Any], str]
    ) -> None:
        """With run_metadata="auto" and no tracer active, run metadata is untouched (documented)."""
        configure(run_metadata="auto")
        recorder = MetadataRecorder()
        with context_session("meta-s", user_id="meta-u"):
            chain.invoke({"question": "x"}, config={"callbacks": [recorder]})

        seen = [*recorder.chain_metadata.values(), *recorder.model_metadata.values()]

        assert len(seen) == 4  # sequence, prompt, parser, model
        assert [m.get("user_id") for m in seen] == [None] * 4

    def test_the_apps_own_handler_sees_the_ids_by_default(
        self, chain: Runnable[dict[str, Any], str]
    ) -> None:
        """A handler attached with ``with_config(callbacks=...)`` sees who each run is for."""
        recorder = MetadataRecorder()
        logged = chain.with_config(callbacks=[recorder])
        with track_user("own-u"):
            logged.invoke({"question": "x"})
        with context_session("own-s", user_id="own-v"):
            logged.invoke({"question": "y"})

        seen = [*recorder.chain_metadata.values(), *recorder.model_metadata.values()]

        assert (
            sorted((m.get("user_id"), m.get("session_id")) for m in seen)
            == [("own-u", None)] * 4 + [("own-v", "own-s")] * 4
        )

    def test_the_ids_stay_out_of_the_recorded_metadata(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """The scope's ids in run metadata are not recorded again as turn metadata."""
        with context_session("rec-s", user_id="rec-u"):
            chain.invoke({"question": "x"}, config={"callbacks": [MetadataRecorder()]})

        (turn,) = records.conversations

        assert (turn.user_id, turn.session_id, sorted(exported_metadata(turn))) == (
            "rec-u",
            "rec-s",
            ["latency_ms", "model", "run_name"],
        )

    def test_run_metadata_false_leaves_the_apps_handlers_alone(
        self, chain: Runnable[dict[str, Any], str]
    ) -> None:
        """The opt-out (``run_metadata=False``) gives plain handlers today's metadata."""
        configure(run_metadata=False)
        recorder = MetadataRecorder()
        with collect_runs(), track_user("off-u"):
            chain.invoke({"question": "x"}, config={"callbacks": [recorder]})

        seen = [*recorder.chain_metadata.values(), *recorder.model_metadata.values()]

        assert [m.get("user_id") for m in seen] == [None] * 4

    def test_ids_reach_a_callback_handler_when_enabled(
        self, chain: Runnable[dict[str, Any], str]
    ) -> None:
        """With ``run_metadata=True`` every run's metadata carries the ids."""
        configure(run_metadata=True)
        recorder = MetadataRecorder()
        with context_session("meta-s", user_id="meta-u"):
            chain.invoke({"question": "x"}, config={"callbacks": [recorder]})

        seen = [*recorder.chain_metadata.values(), *recorder.model_metadata.values()]

        assert [(m.get("user_id"), m.get("session_id")) for m in seen] == [
            ("meta-u", "meta-s")
        ] * 4

    def test_collect_runs_outside_the_scope(
        self, chain: Runnable[dict[str, Any], str]
    ) -> None:
        """Runs collected with ``collect_runs()`` carry the scope's ids."""
        with collect_runs() as collector, track_user("cr-u", session_id="cr-s"):
            chain.invoke({"question": "x"})

        (run,) = collector.traced_runs

        assert (
            run.metadata.get("user_id"),
            run.metadata.get("session_id"),
        ) == ("cr-u", "cr-s")

    def test_collect_runs_inside_the_scope_with_run_metadata_on(
        self, chain: Runnable[dict[str, Any], str]
    ) -> None:
        """``collect_runs()`` opened inside a scope sees the ids when run_metadata=True."""
        configure(run_metadata=True)
        with track_user("cr-u", session_id="cr-s"), collect_runs() as collector:
            chain.invoke({"question": "x"})

        (run,) = collector.traced_runs

        assert (
            run.metadata.get("user_id"),
            run.metadata.get("session_id"),
        ) == ("cr-u", "cr-s")

    def test_caller_metadata_merged_through_runnable_config(
        self, chain: Runnable[dict[str, Any], str]
    ) -> None:
        """Callers passing their own metadata keep the ids by merging runnable_config()'s."""
        from context_trace import runnable_config

        configure(run_metadata=True)
        recorder = MetadataRecorder()
        with track_user("keep"):
            metadata = {**runnable_config()["metadata"], "team": "search"}
            chain.invoke(
                {"question": "x"},
                config={"callbacks": [recorder], "metadata": metadata},
            )

        root = next(iter(recorder.chain_metadata.values()))

        assert (root["user_id"], root["team"]) == ("keep", "search")


class TestThreads:
    @staticmethod
    def _user_in_plain_thread() -> str | None:
        seen: list[str | None] = []
        worker = threading.Thread(target=lambda: seen.append(current_user()))
        worker.start()
        worker.join()
        return seen[0]

    def test_plain_thread_sees_no_user(self) -> None:
        """A plain thread starts with an empty context: no user."""
        with track_user("t-user"):
            assert self._user_in_plain_thread() is None

    def test_propagate_carries_the_scope(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """``propagate(fn)`` runs fn in the caller's scope in another thread."""
        seen: list[str | None] = []

        def work() -> None:
            seen.append(current_user())
            chain.invoke({"question": "from a thread"})

        with track_user("p-user"):
            worker = threading.Thread(target=propagate(work))
        worker.start()
        worker.join()

        assert seen == ["p-user"]
        assert [(c.user_id, c.answer) for c in records.conversations] == [
            ("p-user", "from a thread")
        ]

    def test_propagated_function_runs_concurrently(self) -> None:
        """One propagated function may run in several threads at once."""
        barrier = threading.Barrier(4)
        seen: list[str | None] = []

        def work() -> None:
            barrier.wait()
            seen.append(current_user())

        with track_user("many"):
            wrapped = propagate(work)
        workers = [threading.Thread(target=wrapped) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

        assert seen == ["many"] * 4

    def test_context_thread_pool_executor(self) -> None:
        """``ContextThreadPoolExecutor`` submit and map run in the submitter's scope."""
        with ContextThreadPoolExecutor(max_workers=2) as pool:
            with track_user("pool-user"):
                submitted = pool.submit(current_user)
                mapped = list(pool.map(lambda _: current_user(), range(4)))
            after = pool.submit(current_user).result()

        assert (
            submitted.result(),
            mapped,
            after,
        ) == ("pool-user", ["pool-user"] * 4, None)

    def test_plain_pool_sees_no_user(self) -> None:
        """A plain ``ThreadPoolExecutor`` does not carry the scope."""
        with ThreadPoolExecutor(max_workers=1) as pool, track_user("nobody"):
            assert pool.submit(current_user).result() is None

    def test_instrumented_pool_does_not_leak_a_scope_to_later_tasks(self) -> None:
        """A pool whose threads started inside alice's scope runs unscoped tasks unscoped."""
        from concurrent.futures import ThreadPoolExecutor

        instrument_threads()
        try:
            with ThreadPoolExecutor(2) as pool:
                with track_user("alice"):
                    inside = pool.submit(current_user).result()
                outside = [pool.submit(current_user).result() for _ in range(4)]
        finally:
            uninstrument_threads()

        assert "alice" == inside
        assert [None] * 4 == outside

    def test_instrument_threads_then_uninstrument(self) -> None:
        """``instrument_threads`` carries the scope into threads; uninstrument restores."""
        original_start = threading.Thread.start
        original_submit = ThreadPoolExecutor.submit

        instrument_threads()
        instrument_threads()  # twice is harmless
        with track_user("inst"):
            in_thread = self._user_in_plain_thread()
            with ThreadPoolExecutor(max_workers=1) as pool:
                in_pool = pool.submit(current_user).result()
        uninstrument_threads()
        uninstrument_threads()  # twice is harmless
        with track_user("inst"):
            after_thread = self._user_in_plain_thread()
            with ThreadPoolExecutor(max_workers=1) as pool:
                after_pool = pool.submit(current_user).result()

        assert (in_thread, in_pool) == ("inst", "inst")
        assert (after_thread, after_pool) == (None, None)
        assert threading.Thread.start is original_start
        assert ThreadPoolExecutor.submit is original_submit

    def test_instrumented_thread_records_for_the_user(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """With instrumented threads, a chain run in a new thread is attributed."""
        instrument_threads()
        with track_user("inst-rec"):
            worker = threading.Thread(
                target=lambda: chain.invoke({"question": "threaded"})
            )
            worker.start()
            worker.join()

        assert [(c.user_id, c.answer) for c in records.conversations] == [
            ("inst-rec", "threaded")
        ]

    def test_instrumented_thread_outside_scope(self) -> None:
        """Instrumented threads started outside a scope still see no user."""
        instrument_threads()

        assert self._user_in_plain_thread() is None


class TestDisabled:
    def test_configure_disabled(self, chain: Runnable[dict[str, Any], str]) -> None:
        """``configure(enabled=False)``: the user is set, nothing is recorded."""
        configure(enabled=False)
        with capture() as records, context_session(user_id="off") as session:
            assert (current_user(), current_handler()) == ("off", None)
            chain.invoke({"question": "x"})
            session.rate(1)

        assert records == []

    @pytest.mark.parametrize("value", ["1", "true", "yes"])
    def test_env_disabled(
        self,
        value: str,
        chain: Runnable[dict[str, Any], str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """``CONTEXT_TRACE_DISABLED`` is read at first use after a reset."""
        monkeypatch.setenv(_config.ENV_DISABLED, value)
        _runtime.reset()
        with capture() as records:

            @track_user("env-off")
            def handle() -> tuple[str | None, RecordingHandler | None]:
                chain.invoke({"question": "x"})
                return current_user(), current_handler()

            assert handle() == ("env-off", None)

        assert records == []

    def test_env_disabled_zero_records(
        self, chain: Runnable[dict[str, Any], str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``CONTEXT_TRACE_DISABLED=0`` keeps recording on."""
        monkeypatch.setenv(_config.ENV_DISABLED, "0")
        _runtime.reset()
        with capture() as records, track_user("env-on"):
            chain.invoke({"question": "x"})

        assert [c.user_id for c in records.conversations] == ["env-on"]
