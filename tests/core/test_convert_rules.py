"""
The converter's rules one by one, each on hand-built turn parts.

``_convert.to_conversation`` runs these rules in order; the recorder tests check
the whole through real chains. Here every rule gets a ``Turn`` built by hand
(a real ``Scope`` and ``Session``, real LangChain messages and results) with
only the parts that rule reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, LLMResult

from context_trace import Message, Scope, Session, _measure, _rules
from context_trace._record import ModelCall, Usage
from context_trace._runtree import build_spans, span_id
from context_trace._turn import ModelResult, ModelRun, Received, RunNode, ToolRun, Turn

ROOT = 1 << 70


def _turn(
    user_id: str | None = None,
    session: Session | None = None,
    metadata: dict[str, str] | None = None,
) -> Turn:
    """A turn whose root run is ``ROOT``, attributed as given."""
    scope = Scope(user_id, session, metadata or {}, None)
    return Turn(UUID(int=ROOT), scope, None, False)


def _call(
    key: int,
    model_input: Any = "",
    params: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    serialized: dict[str, Any] | None = None,
) -> ModelRun:
    return ModelRun(key, model_input, serialized, metadata, params)


def _result(message: AIMessage) -> ModelResult:
    return ModelResult(message, "", None, None)


@pytest.fixture(autouse=True)
def _fresh_system_prompts() -> Iterator[None]:
    """Each test starts with no system prompt recorded for any session."""
    _rules.reset_header_sessions()
    yield
    _rules.reset_header_sessions()


class TestModelCalls:
    def test_keeps_the_model_calls_in_start_order(self) -> None:
        """The model calls among a turn's steps, in order, without the tool runs."""
        turn = _turn()
        first, second = _call(1), _call(3)
        turn.steps = [first, ToolRun(2, "search", "q"), second]

        assert [first, second] == _rules.model_calls(turn)


class TestAbandoned:
    def test_a_generator_exit_is_an_abandoned_stream(self) -> None:
        """A root ended by GeneratorExit (an async stream closed early) is abandoned."""
        turn = _turn()
        turn.error = GeneratorExit()

        assert _rules.abandoned(turn, [], {})

    def test_a_cancel_before_any_token_is_not(self) -> None:
        """A cancelled ainvoke that streamed nothing is not an abandoned stream."""
        turn = _turn()
        turn.error = asyncio.CancelledError()

        assert not _rules.abandoned(turn, [_call(1)], {})
        turn.tokens = [(1, "Hel")]
        assert _rules.abandoned(turn, [_call(1)], {})

    def test_an_unfinished_call_in_a_clean_turn_is_abandoned(self) -> None:
        """A turn that ended without error before its model call ended is abandoned."""
        turn = _turn()
        calls = [_call(1), _call(2)]
        done = {1: _result(AIMessage("a")), 2: _result(AIMessage("b"))}

        assert _rules.abandoned(turn, calls, {1: done[1]})
        assert not _rules.abandoned(turn, calls, done)


class TestUserInput:
    def test_reads_the_inputs_at_the_roots_end_first(self) -> None:
        """The inputs a stream gave at its end win over those at its start."""
        turn = _turn()
        turn.chain_inputs = {"question": "start"}
        turn.end_inputs = {"question": "end"}

        inputs, users = _rules.user_input(turn, [])

        assert {"question": "end"} == inputs
        assert [Message("user", "end")] == users

    def test_a_model_invoked_directly_reads_its_own_input(self) -> None:
        """With no chain input, the first model call's messages are the input."""
        turn = _turn()
        asked = [SystemMessage("be brief"), HumanMessage("hi")]

        inputs, users = _rules.user_input(turn, [_call(ROOT, asked)])

        assert inputs is asked
        assert [Message("user", "hi")] == users

    def test_falls_back_to_what_the_model_was_asked(self) -> None:
        """No user text in the inputs: the answering call's prompt, else the JSON."""
        call = _call(1, [HumanMessage("from the prompt")])

        assert [Message("user", "from the prompt")] == _rules.fallback_users(
            [], call, {"n": 3}
        )
        assert [Message("user", '{"n":3}')] == _rules.fallback_users([], None, {"n": 3})


class TestFinalAnswer:
    def test_follows_the_roots_output(self) -> None:
        """The answer is the root's output; the call that said it is the answering one."""
        turn = _turn()
        turn.output = {"answer": "two"}
        calls = [_call(1), _call(2)]
        results = {1: _result(AIMessage("one")), 2: _result(AIMessage("two"))}

        answer, answering = _rules.final_answer(turn, calls, results, False)

        assert ("two", calls[1]) == (answer, answering)

    def test_an_empty_output_falls_back_to_the_answering_call(self) -> None:
        """A root that returned nothing textual gets its last call's text."""
        turn = _turn()
        turn.output = ""
        calls = [_call(1)]

        answer, _ = _rules.final_answer(
            turn, calls, {1: _result(AIMessage("said"))}, False
        )

        assert "said" == answer

    def test_an_abandoned_stream_answers_with_its_tokens(self) -> None:
        """An abandoned stream's answer is the tokens its open call streamed."""
        turn = _turn()
        calls = [_call(1), _call(2)]
        chunk = ChatGenerationChunk(message=AIMessageChunk(content="lo"))
        turn.tokens = [(1, "old"), (2, "Hel"), (2, chunk)]

        answer, answering = _rules.final_answer(
            turn, calls, {1: _result(AIMessage("old"))}, True
        )

        assert ("Hello", calls[1]) == (answer, answering)

    def test_an_abandoned_graph_stream_answers_with_what_was_received(self) -> None:
        """A LangGraph messages stream's answer is what its consumer received."""
        turn = _turn()
        calls = [_call(1)]
        received = Received("bare")
        received.items = [
            (AIMessageChunk(content="Hi", id="m1"), {}),
            (AIMessageChunk(content=" there", id="m1"), {}),
        ]
        turn.received = received
        turn.tokens = [(1, "Hi there, and more")]

        answer, answering = _rules.final_answer(turn, calls, {}, True)

        assert ("Hi there", calls[0]) == (answer, answering)


class TestAnswersUser:
    def test_a_refusal_without_a_model_is_a_conversation(self) -> None:
        """A root that answered other text than the user's is a conversation."""
        turn = _turn()
        turn.output = "I can't help with that."
        users = [Message("user", "hack it")]

        assert _rules.answers_user(turn, users, "I can't help with that.")

    def test_a_parser_or_a_pass_through_is_not(self) -> None:
        """A parser, or a root that returned the user's own words, is not."""
        turn = _turn()
        turn.output = "same"
        users = [Message("user", "same")]
        assert not _rules.answers_user(turn, users, "same")
        turn.output = "other"
        turn.name = "StrOutputParser"
        assert not _rules.answers_user(turn, users, "other")


class TestAttribution:
    def test_the_scope_wins(self) -> None:
        """The scope's user and session win over the model's headers."""
        turn = _turn("u1", Session("s1"))
        headers = {"extra_headers": {"X-User-Id": "h-u", "X-Session-Id": "h-s"}}

        assert ("u1", "s1") == _rules.attribution(turn, [_call(1, params=headers)])

    def test_headers_then_the_frameworks_session(self) -> None:
        """No scope ids: the headers' user, then the framework's thread id."""
        turn = _turn()
        turn.configurable = {"thread_id": "t-9"}
        headers = {"headers": {"user_id": "h-u"}}

        assert ("h-u", "t-9") == _rules.attribution(turn, [_call(1, params=headers)])


class TestSystemPrompt:
    def test_a_turn_without_a_session_always_records_it(self) -> None:
        """With no session id the system prompt is recorded every time."""
        call = _call(1, [SystemMessage("be brief"), HumanMessage("hi")])

        for _ in range(2):
            assert Message("system", "be brief") == _rules.system_prompt(call, None)

    def test_a_session_records_it_when_it_changes(self) -> None:
        """In a session, a system prompt is recorded only when it differs."""
        brief = _call(1, [SystemMessage("be brief"), HumanMessage("hi")])
        long = _call(2, [SystemMessage("be long"), HumanMessage("hi")])

        assert [True, False, True] == [
            _rules.system_prompt(call, "s1") is not None
            for call in (brief, brief, long)
        ]


class TestKeptHistory:
    def test_only_a_turn_without_a_session_keeps_it(self) -> None:
        """What the input re-sent before the user's words is kept with no session."""
        earlier = [HumanMessage("before"), AIMessage("reply")]
        inputs = {"messages": [*earlier, HumanMessage("now")]}
        calls = [_call(1, [SystemMessage("sys"), *earlier, HumanMessage("now")])]
        users = [Message("user", "now")]

        kept = _rules.kept_history(inputs, users, calls, None)

        assert [Message("user", "before"), Message("assistant", "reply")] == kept
        assert [] == _rules.kept_history(inputs, users, calls, "s1")


class TestStepMessages:
    def test_tool_runs_and_text_beside_tool_calls(self) -> None:
        """Tool runs become tool messages; a call's text beside tool calls is kept."""
        asking = _call(1)
        answering = _call(3)
        failed = ToolRun(2, "search", {"q": "x"})
        failed.output, failed.is_error = ValueError("down"), True
        calls_tool = AIMessage(
            "Let me look.", tool_calls=[{"name": "search", "args": {}, "id": "c1"}]
        )
        results = {1: _result(calls_tool), 3: _result(AIMessage("done"))}

        messages = _rules.step_messages([asking, failed, answering], results, answering)

        assert [
            Message("assistant", "Let me look."),
            Message(
                "tool",
                "ValueError: down",
                name="search",
                tool_input='{"q":"x"}',
                error=True,
            ),
        ] == messages


class TestAppMetadata:
    def test_the_apps_own_keys_and_the_scope_wins(self, caplog: Any) -> None:
        """LangChain's keys are left out, the scope's values win, a clash is logged."""
        turn = _turn(metadata={"plan": "pro", "model": "exp-A"})
        turn.run_metadata = {
            "ls_provider": "openai",
            "thread_id": "t",
            "user_id": "u",
            "plan": "free",
            "n": 3,
            "beta": True,
        }

        with caplog.at_level(logging.WARNING, logger="context_trace"):
            metadata = _rules.app_metadata(turn)

        assert {"plan": "pro", "n": "3", "beta": "true", "model": "exp-A"} == metadata
        assert "'model'" in caplog.text


class TestModelsAndUsage:
    def test_sums_every_call_and_names_the_answering_model(self) -> None:
        """Usage is summed over the calls; each call's model is kept when several."""
        first = _call(1, params={"model": "small"})
        second = _call(2, params={"model": "asked"})
        counts = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
        results = {
            1: _result(AIMessage("a", usage_metadata=counts)),
            2: _result(
                AIMessage(
                    "b",
                    usage_metadata=counts,
                    response_metadata={"model_name": "served"},
                )
            ),
        }

        model, total, per_call = _rules.models_and_usage(
            [first, second], results, second
        )

        assert "served" == model
        assert Usage(6, 4, 10) == total
        assert (
            ModelCall("small", Usage(3, 2, 5)),
            ModelCall("served", Usage(3, 2, 5)),
        ) == per_call

    def test_one_call_keeps_no_per_call_list(self) -> None:
        """A single call's model and usage are the turn's own: no per-call list."""
        call = _call(1, serialized={"name": "Parrot"})

        assert ("Parrot", None, ()) == _rules.models_and_usage(
            [call], {1: _result(AIMessage("a"))}, call
        )


class TestMeasure:
    def test_the_response_names_the_model_before_the_request(self) -> None:
        """The response's model name wins; without one, the model asked for."""
        call = _call(1, params={"model": "asked"})
        served = LLMResult(
            generations=[[ChatGeneration(message=AIMessage("x"))]],
            llm_output={"model_name": "served"},
        )

        assert "served" == _measure.model_name(call, served)
        assert "asked" == _measure.model_name(call, None)
        assert "served" == _measure.response_model(served)

    def test_the_requested_model_falls_back_in_order(self) -> None:
        """Params, then ``ls_model_name``, then the class name, then its id."""
        assert "m" == _measure.requested_model(
            _call(1, metadata={"ls_model_name": "m"}, serialized={"name": "C"})
        )
        assert "C" == _measure.requested_model(_call(1, serialized={"name": "C"}))
        assert "Last" == _measure.requested_model(
            _call(1, serialized={"id": ["a", "Last"]})
        )
        assert _measure.requested_model(_call(1)) is None

    def test_usage_from_metadata_details_or_llm_output(self) -> None:
        """``usage_metadata`` with its details, else the ``llm_output`` counts."""
        counts: Any = {
            "input_tokens": 10,
            "output_tokens": 4,
            "total_tokens": 14,
            "input_token_details": {"cache_read": 6},
            "output_token_details": {"reasoning": 2},
        }
        detailed = _result(AIMessage("x", usage_metadata=counts))
        legacy = ModelResult(
            None,
            "x",
            None,
            {"token_usage": {"prompt_tokens": 1, "completion_tokens": 2}},
        )

        assert Usage(10, 4, 14, 6, None, 2) == _measure.usage(detailed)
        assert Usage(1, 2, 0) == _measure.usage(legacy)
        assert _measure.usage(_result(AIMessage("x"))) is None

    def test_finish_reasons_of_each_generation(self) -> None:
        """Each generation's finish (or stop) reason, where it reports one."""
        result = ModelResult(
            AIMessage("x", response_metadata={"stop_reason": "end_turn"}),
            "",
            None,
            None,
        )

        assert ("end_turn",) == _measure.finish_reasons(result)


class TestModelInput:
    def test_kept_only_when_it_is_not_the_users_words(self) -> None:
        """What the model saw is kept when a template or context changed it."""
        call = _call(1, [HumanMessage("Context: x\n\nQ: hi")])

        assert "Context: x\n\nQ: hi" == _rules.model_input(
            call, [Message("user", "hi")]
        )
        assert (
            _rules.model_input(call, [Message("user", "Context: x\n\nQ: hi")]) is None
        )


class TestRedacted:
    def test_redacts_texts_tool_inputs_the_error_and_the_model_input(self) -> None:
        """Every text the record carries goes through the redactor; None stays None."""
        messages = [Message("tool", "out", name="t", tool_input="in")]

        out = _rules.redacted(str.upper, messages, "Boom: x", None)

        assert (
            [Message("tool", "OUT", name="t", tool_input="IN")],
            "BOOM: X",
            None,
        ) == out
        assert (messages, "e", "p") == _rules.redacted(None, messages, "e", "p")


class TestTraceIds:
    def test_the_apps_span_as_hex(self) -> None:
        """The app's span becomes a 32-digit trace id and a 16-digit span id."""
        turn = _turn()
        assert (None, None) == _rules.trace_ids(turn)
        turn.trace_parent = (0xAB, 0xCD)

        assert (f"{0xAB:032x}", f"{0xCD:016x}") == _rules.trace_ids(turn)


class TestSpans:
    def test_spans_skip_chains_and_keep_times_and_parents(self) -> None:
        """A span's parent is its nearest span ancestor; a chain in between is none."""
        turn = _turn()
        turn.started, turn.ended = 100.0, 110.0
        chain, model, tool = 2, 3, 4
        turn.tree = {
            chain: RunNode(ROOT, 101.0),
            model: RunNode(chain, 102.0),
            tool: RunNode(model, 104.0),
        }
        turn.tree[model].ended = 103.0
        turn.tree[tool].tool_call_id = "c1"  # never ended: ends with the turn
        asked = _call(model, params={"model": "m"}, metadata={"ls_provider": "p"})
        turn.steps = [asked, ToolRun(tool, "search", "q")]
        turn.results = {model: _result(AIMessage("x"))}

        spans = build_spans(turn)

        assert [
            ("chat", "m", None, 102.0, 103.0, "p", None),
            ("tool", "search", span_id(model), 104.0, 110.0, None, "c1"),
        ] == [
            (
                s.kind,
                s.name,
                s.parent_id,
                s.started_at,
                s.ended_at,
                s.provider,
                s.tool_call_id,
            )
            for s in spans
        ]
