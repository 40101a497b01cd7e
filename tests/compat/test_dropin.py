"""``context_trace.ContextCallbackHandler``: the drop-in for the community handler."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableParallel

import context_trace
from context_trace import (
    ContextCallbackHandler,
    InMemoryExporter,
    _compat,
    configure,
    context_session,
    flush,
    get_config,
    track_user,
)
from context_trace._exporters.base import ExportResult
from context_trace._record import Conversation, Record
from context_trace.testing import CapturedRecords

from ._models import HeaderLLM, HeaderParrot, echo_chain

TOKEN = "test-token-123"


def _texts(conversation: Any) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conversation.messages]


class TestSignature:
    def test_constructor_matches_the_community_signature(self) -> None:
        """The constructor takes token="", verbose=False and **kwargs, like the original."""
        params = inspect.signature(ContextCallbackHandler).parameters

        assert ["token", "verbose", "kwargs"] == list(params)
        assert "" == params["token"].default
        assert False is params["verbose"].default
        assert inspect.Parameter.VAR_KEYWORD == params["kwargs"].kind

    def test_accepts_verbose_and_unknown_kwargs(self) -> None:
        """verbose is kept as an attribute; unknown keyword arguments are ignored."""
        handler = ContextCallbackHandler(verbose=True, legacy_option=1)

        assert True is handler.verbose
        assert isinstance(handler, BaseCallbackHandler)

    def test_rejects_a_token_that_is_not_a_str(self) -> None:
        """A non-str token fails at construction with a TypeError naming it."""
        with pytest.raises(TypeError, match="token must be a str, got int"):
            ContextCallbackHandler(token=123)  # type: ignore[arg-type]

    def test_is_exported_from_the_package(self) -> None:
        """The drop-in is importable from context_trace and listed in __all__."""
        assert context_trace.ContextCallbackHandler is _compat.ContextCallbackHandler
        assert "ContextCallbackHandler" in context_trace.__all__


class TestToken:
    def test_explicit_token_configures_once_keeping_other_settings(
        self, tmp_path: Path
    ) -> None:
        """A token given while none is configured is configured; other settings stay."""
        configure(db_path=tmp_path / "kept.db", sample_rate=0.5)

        ContextCallbackHandler(token=TOKEN)
        config = get_config()
        ContextCallbackHandler(token=TOKEN)

        assert TOKEN == config.token
        assert tmp_path / "kept.db" == config.db_path
        assert 0.5 == config.sample_rate
        assert config is get_config()

    def test_token_never_shows_in_repr_or_logs(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Neither repr(handler), repr(config) nor any log line contains the token."""
        caplog.set_level(logging.DEBUG)

        handler = ContextCallbackHandler(TOKEN)
        ContextCallbackHandler("test-token-456")

        assert "<ContextCallbackHandler active_turns=0>" == repr(handler)
        assert TOKEN not in repr(get_config())
        assert not any("test-token" in record.getMessage() for record in caplog.records)

    def test_configured_token_wins_over_the_handler_token(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With CONTEXT_TOKEN set, a different handler token is ignored with a warning."""
        monkeypatch.setenv("CONTEXT_TOKEN", "test-token-env")
        caplog.set_level(logging.WARNING, logger="context_trace")

        ContextCallbackHandler(token=TOKEN)

        assert "test-token-env" == get_config().token
        assert [
            "context_trace: ContextCallbackHandler got a token that differs from "
            "the configured one; the configured token is used"
        ] == [r.getMessage() for r in caplog.records]

    def test_empty_token_falls_back_to_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a token argument, GETCONTEXT_TOKEN from the environment is used."""
        monkeypatch.setenv("GETCONTEXT_TOKEN", "test-token-env")

        ContextCallbackHandler()

        assert "test-token-env" == get_config().token

    def test_configured_exporter_is_left_alone(self) -> None:
        """With an explicit exporter configured, the handler's token changes nothing."""
        exporter = InMemoryExporter()
        configure(exporter=exporter)

        ContextCallbackHandler(token=TOKEN)

        assert None is get_config().token
        assert exporter is get_config().exporter


class TestRecordingWithoutScope:
    def test_model_with_handler_in_constructor(self, records: CapturedRecords) -> None:
        """The community pattern: handler on the chat model, user in its headers."""
        handler = ContextCallbackHandler()
        model = HeaderParrot(headers={"user_id": "123"}, callbacks=[handler])

        model.invoke("Hello there")

        assert [("123", [("user", "Hello there"), ("assistant", "Hello there")])] == [
            (c.user_id, _texts(c)) for c in records.conversations
        ]

    def test_lcel_chain_answer_without_a_text_key(
        self, records: CapturedRecords
    ) -> None:
        """LCEL chains return a str or any dict: no outputs["text"] is needed."""
        handler = ContextCallbackHandler()
        chain = echo_chain()
        parallel = RunnableParallel(reply=chain)

        chain.invoke({"question": "plain"}, config={"callbacks": [handler]})
        parallel.invoke({"question": "nested"}, config={"callbacks": [handler]})

        assert ["plain", "nested"] == [c.answer for c in records.conversations]
        assert [
            ("system", "You are terse."),
            ("user", "plain"),
            ("assistant", "plain"),
        ] == _texts(records.conversations[0])

    def test_shared_between_model_and_chain_records_one_turn(
        self, records: CapturedRecords
    ) -> None:
        """One handler on both the model and the chain records the turn once."""
        handler = ContextCallbackHandler()
        chain = echo_chain(
            HeaderParrot(headers={"user_id": "u-both"}, callbacks=[handler])
        )

        chain.invoke({"question": "once"}, config={"callbacks": [handler]})

        assert [("u-both", "once")] == [
            (c.user_id, c.answer) for c in records.conversations
        ]

    def test_two_instances_on_model_and_chain_record_one_turn(
        self, records: CapturedRecords
    ) -> None:
        """The docs' "wrong example": one instance on the model, another on the chain, one turn."""
        on_model, on_chain = ContextCallbackHandler(), ContextCallbackHandler()
        prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
        chat = HeaderParrot(headers={"user_id": "u-two"}, callbacks=[on_model])
        chain = prompt | chat

        chain.invoke({"question": "once"}, config={"callbacks": [on_chain]})
        chain.invoke({"question": "twice"}, config={"callbacks": [on_chain]})

        assert [("u-two", "once"), ("u-two", "twice")] == [
            (c.user_id, c.answer) for c in records.conversations
        ]

    def test_three_instances_under_concurrency_record_each_turn_once(
        self, records: CapturedRecords
    ) -> None:
        """Three drop-ins on one tree, 16 threads x 10 turns: each turn exactly once."""
        model_handler = ContextCallbackHandler()
        prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
        chain = (prompt | HeaderParrot(callbacks=[model_handler])).with_config(
            callbacks=[ContextCallbackHandler()]
        )
        outer = ContextCallbackHandler()

        def work(t: int) -> None:
            for i in range(10):
                chain.invoke({"question": f"{t}-{i}"}, config={"callbacks": [outer]})

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(work, range(16)))

        answers = sorted(c.answer for c in records.conversations)
        assert sorted(f"{t}-{i}" for t in range(16) for i in range(10)) == answers

    def test_bound_with_config(self, records: CapturedRecords) -> None:
        """chain.with_config(callbacks=[handler]) records every call."""
        handler = ContextCallbackHandler()
        chain = echo_chain().with_config(callbacks=[handler])

        chain.invoke({"question": "one"})
        chain.invoke({"question": "two"})

        assert [
            (None, "one"),
            (None, "two"),
        ] == [(c.user_id, c.answer) for c in records.conversations]

    async def test_async_invoke(self, records: CapturedRecords) -> None:
        """ainvoke with the handler records the turn with the header user."""
        handler = ContextCallbackHandler()
        chain = echo_chain(HeaderParrot(headers={"user_id": "async-user"}))

        await chain.ainvoke({"question": "hi async"}, config={"callbacks": [handler]})

        assert [("async-user", "hi async")] == [
            (c.user_id, c.answer) for c in records.conversations
        ]

    def test_completion_llm_with_headers(self, records: CapturedRecords) -> None:
        """A completion LLM (on_llm_start) is recorded and attributed from its headers."""
        handler = ContextCallbackHandler()
        llm = HeaderLLM(responses=["forty-two"], headers={"X-User-Id": "llm-user"})

        llm.invoke("What is the answer?", config={"callbacks": [handler]})

        assert [
            (
                "llm-user",
                [("user", "What is the answer?"), ("assistant", "forty-two")],
            )
        ] == [(c.user_id, _texts(c)) for c in records.conversations]

    def test_keeps_no_state_between_turns(self, records: CapturedRecords) -> None:
        """After the turns end the handler tracks no run: no shared message list."""
        handler = ContextCallbackHandler()
        chain = echo_chain()

        for question in ("a", "b", "c"):
            chain.invoke({"question": question}, config={"callbacks": [handler]})

        assert 0 == handler.active_turns
        expected = [["You are terse.", q, q] for q in "abc"]
        assert expected == [
            [m.content for m in c.messages] for c in records.conversations
        ]

    def test_disabled_records_nothing(self, records: CapturedRecords) -> None:
        """With recording disabled the handler lets the chain run and records nothing."""
        configure(enabled=False)
        handler = ContextCallbackHandler()

        answer = echo_chain().invoke(
            {"question": "off"}, config={"callbacks": [handler]}
        )

        assert "off" == answer
        assert [] == records.conversations

    def test_never_waits_for_the_export(self) -> None:
        """invoke returns while the exporter is stuck on the export thread."""
        entered = threading.Event()
        release = threading.Event()
        export_threads: list[str] = []
        exported: list[Record] = []

        class StuckExporter:
            def export(self, batch: Sequence[Record]) -> ExportResult:
                export_threads.append(threading.current_thread().name)
                entered.set()
                release.wait(10.0)
                exported.extend(batch)
                return ExportResult.success(len(batch))

            def shutdown(self, timeout: float | None = None) -> None:
                release.set()

        configure(exporter=StuckExporter(), max_batch=1)
        handler = ContextCallbackHandler()
        chain = echo_chain()

        first = chain.invoke({"question": "first"}, config={"callbacks": [handler]})
        second = chain.invoke({"question": "second"}, config={"callbacks": [handler]})
        stuck_while_returned = entered.wait(10.0) and not release.is_set()
        release.set()

        assert True is flush(10.0)
        assert (first, second) == ("first", "second")
        assert True is stuck_while_returned
        assert {"context-trace-exporter"} == set(export_threads)
        assert [
            "first",
            "second",
        ] == [r.answer for r in exported if isinstance(r, Conversation)]


PLACEMENTS = ["config", "model constructor", "model and config", "with_config"]


def _call(placement: str, handler: ContextCallbackHandler, question: str) -> Any:
    """Invoke a chain with the handler passed the way *placement* says."""
    model_callbacks = (
        [handler] if placement in ("model constructor", "model and config") else None
    )
    chain: Any = echo_chain(
        HeaderParrot(headers={"user_id": "header-user"}, callbacks=model_callbacks)
    )
    if placement == "with_config":
        chain = chain.with_config(callbacks=[handler])
    config = (
        {"callbacks": [handler]} if placement in ("config", "model and config") else {}
    )
    return chain, {"question": question}, config


class TestInsideScope:
    @pytest.mark.parametrize("placement", PLACEMENTS)
    def test_recorded_once_for_the_scope_user(
        self, records: CapturedRecords, placement: str
    ) -> None:
        """Passed explicitly inside track_user, the turn is recorded once, for the scope."""
        handler = ContextCallbackHandler()
        chain, inputs, config = _call(placement, handler, "in scope")

        with track_user("scope-user"):
            chain.invoke(inputs, config=config)

        assert [("scope-user", "in scope")] == [
            (c.user_id, c.answer) for c in records.conversations
        ]
        assert 0 == handler.active_turns

    @pytest.mark.parametrize("placement", PLACEMENTS)
    async def test_recorded_once_for_the_scope_user_async(
        self, records: CapturedRecords, placement: str
    ) -> None:
        """The same with ainvoke inside async with track_user."""
        handler = ContextCallbackHandler()
        chain, inputs, config = _call(placement, handler, "in async scope")

        async with track_user("scope-user"):
            await chain.ainvoke(inputs, config=config)

        assert [("scope-user", "in async scope")] == [
            (c.user_id, c.answer) for c in records.conversations
        ]

    def test_session_scope_keeps_its_session(self, records: CapturedRecords) -> None:
        """Inside context_session the turns carry the session and its header user fills in."""
        handler = ContextCallbackHandler()
        chain, inputs, config = _call("config", handler, "q1")

        with context_session("sess-1"):
            chain.invoke(inputs, config=config)

        assert [("header-user", "sess-1", "q1")] == [
            (c.user_id, c.session_id, c.answer) for c in records.conversations
        ]

    def test_sampled_out_session_records_nothing(
        self, records: CapturedRecords
    ) -> None:
        """A session sampled out by sample_rate=0 is not recorded by the drop-in either."""
        configure(sample_rate=0.0)
        handler = ContextCallbackHandler()
        chain, inputs, config = _call("config", handler, "dropped")

        with context_session("sess-out"):
            answer = chain.invoke(inputs, config=config)

        assert "dropped" == answer
        assert [] == records.conversations


class TestConcurrency:
    THREADS = 64
    CALLS = 20

    def test_shared_instance_across_threads(self) -> None:
        """64 threads share one handler: 1280 turns, each once, each for its user."""
        exporter = InMemoryExporter()
        configure(exporter=exporter)
        handler = ContextCallbackHandler()
        config = {"callbacks": [handler]}
        scoped_chain = echo_chain(ParrotFakeChatModel())
        barrier = threading.Barrier(self.THREADS)

        def worker(index: int) -> list[str]:
            user = f"user-{index}"
            by_header = index % 2 == 1
            chain = (
                echo_chain(HeaderParrot(headers={"user_id": user}))
                if by_header
                else scoped_chain
            )
            answers = []
            barrier.wait()
            for call in range(self.CALLS):
                question = f"{user} call {call}"
                if by_header:
                    answers.append(chain.invoke({"question": question}, config=config))
                else:
                    with track_user(user):
                        answers.append(
                            chain.invoke({"question": question}, config=config)
                        )
            return answers

        with ThreadPoolExecutor(self.THREADS) as pool:
            results = list(pool.map(worker, range(self.THREADS)))
        assert True is flush(30.0)
        conversations = exporter.conversations
        mismatched = [
            c
            for c in conversations
            if c.user_id is None or not c.answer.startswith(f"{c.user_id} call ")
        ]
        per_user = {}
        for c in conversations:
            per_user[c.user_id] = per_user.get(c.user_id, 0) + 1

        assert [
            [f"user-{i} call {n}" for n in range(self.CALLS)] for i in range(64)
        ] == (results)
        assert self.THREADS * self.CALLS == len(conversations)
        assert self.THREADS * self.CALLS == len({c.id for c in conversations})
        assert [] == mismatched
        assert {f"user-{i}": self.CALLS for i in range(self.THREADS)} == per_user
        assert 0 == handler.active_turns

    async def test_shared_instance_across_tasks(self) -> None:
        """100 asyncio tasks share one handler: every turn once, for its own user."""
        exporter = InMemoryExporter()
        configure(exporter=exporter)
        handler = ContextCallbackHandler()
        config = {"callbacks": [handler]}
        scoped_chain = echo_chain()

        async def task(index: int) -> None:
            user = f"user-{index}"
            for call in range(5):
                question = f"{user} call {call}"
                if index % 2:
                    chain = echo_chain(HeaderParrot(headers={"X-User-Id": user}))
                    await chain.ainvoke({"question": question}, config=config)
                else:
                    async with track_user(user):
                        await scoped_chain.ainvoke(
                            {"question": question}, config=config
                        )

        await asyncio.gather(*(task(i) for i in range(100)))
        assert True is flush(30.0)
        conversations = exporter.conversations

        assert 500 == len(conversations)
        assert 500 == len({c.id for c in conversations})
        assert [
            c
            for c in conversations
            if c.user_id is None or not c.answer.startswith(f"{c.user_id} call ")
        ] == []
