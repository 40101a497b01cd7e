"""The recorder: one Conversation per root run, with the right messages and metadata."""

from __future__ import annotations

import itertools
import logging
import re
from collections import Counter
from typing import Any

import pytest
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import (
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import (
    ChatPromptTemplate,
    MessagesPlaceholder,
    PromptTemplate,
)
from langchain_core.runnables import (
    Runnable,
    RunnableGenerator,
    RunnableLambda,
    RunnableParallel,
)
from langchain_core.tools import tool
from langchain_core.tracers.context import collect_runs

from context_trace import (
    Conversation,
    Message,
    RecordingHandler,
    _convert,
    _handler,
    _measure,
    _runtime,
    context_session,
    current_handler,
    runnable_config,
    track_user,
)
from context_trace._record import Usage, exported_metadata
from context_trace.testing import CapturedRecords

from ._helpers import streaming_chain

HEX32 = re.compile(r"[0-9a-f]{32}")


@tool
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


class Boom(Exception):
    """The app's own error."""


class FailingChatModel(ParrotFakeChatModel):
    """A real chat model whose provider call fails."""

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        raise Boom("provider down")


def _usage_model(text: str) -> GenericFakeChatModel:
    usage = {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    return GenericFakeChatModel(
        messages=itertools.repeat(AIMessage(content=text, usage_metadata=usage))
    )


def _shape(conversation: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conversation.messages]


class TestConversationRecord:
    def test_fields_of_one_turn(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """id is the root run id; user, session, times and messages are filled in."""
        with context_session("s-fields", user_id="u-fields"), collect_runs() as runs:
            chain.invoke({"question": "What time is it?"})

        (conversation,) = records.conversations
        (root,) = runs.traced_runs

        assert root.id.hex == conversation.id
        assert HEX32.fullmatch(conversation.id)
        assert (
            conversation.user_id,
            conversation.session_id,
            conversation.error,
        ) == ("u-fields", "s-fields", None)
        assert conversation.started_at <= conversation.ended_at
        assert _shape(conversation) == [
            ("system", "You are terse."),
            ("user", "What time is it?"),
            ("assistant", "What time is it?"),
        ]

    def test_metadata_model_latency_tags(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """Metadata has the model name, latency_ms and the run's tags."""
        with track_user("u"):
            chain.invoke({"question": "x"}, config={"tags": ["beta", "search"]})

        metadata = exported_metadata(records.conversations[0])

        assert metadata["model"] == "ParrotFakeChatModel"
        assert metadata["latency_ms"].isdigit()
        assert str(records.conversations[0].latency_ms) == metadata["latency_ms"]
        assert metadata["tags"] == "beta,search"
        assert "prompt_tokens" not in metadata

    def test_token_usage_when_reported(self, records: CapturedRecords) -> None:
        """Token counts the model reports land in the metadata."""
        with track_user("u"):
            _usage_model("counted").invoke("count my tokens")

        metadata = exported_metadata(records.conversations[0])

        assert (
            metadata["prompt_tokens"],
            metadata["completion_tokens"],
            metadata["total_tokens"],
        ) == ("11", "7", "18")

    def test_token_usage_in_a_chain(self, records: CapturedRecords) -> None:
        """Usage is found when the model runs inside an LCEL chain."""
        chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | _usage_model(
            "in chain"
        )
        with track_user("u"):
            chain.invoke({"q": "x"})

        assert exported_metadata(records.conversations[0])["total_tokens"] == "18"

    def test_content_block_lists(self, records: CapturedRecords) -> None:
        """Text is taken from content-block lists, on input and on output."""
        message = HumanMessage(
            content=[
                {"type": "text", "text": "hi "},
                {"type": "text", "text": "there"},
            ]
        )
        with track_user("u"):
            ParrotFakeChatModel().invoke([message])

        assert _shape(records.conversations[0]) == [
            ("user", "hi there"),
            ("assistant", "hi there"),
        ]

    def test_history_is_left_to_earlier_turns(self, records: CapturedRecords) -> None:
        """In a session the system prompt and the new message are kept, not re-sent history."""
        prompt = ChatPromptTemplate.from_messages(
            [("system", "sys"), MessagesPlaceholder("history"), ("human", "{q}")]
        )
        chain = prompt | ParrotFakeChatModel() | StrOutputParser()
        history: list[BaseMessage] = [HumanMessage("earlier"), AIMessage("reply")]
        with track_user("u"), context_session():
            chain.invoke({"history": history, "q": "now"})
        with track_user("u"):
            chain.invoke({"history": history, "q": "now"})

        assert [
            [("system", "sys"), ("user", "now"), ("assistant", "now")],
            [
                ("system", "sys"),
                ("user", "earlier"),
                ("assistant", "reply"),
                ("user", "now"),
                ("assistant", "now"),
            ],
        ] == [_shape(c) for c in records.conversations]

    def test_only_the_first_model_call_gives_inputs(
        self, records: CapturedRecords
    ) -> None:
        """With two model calls, inputs are the first call's; the answer is the last."""
        first = ChatPromptTemplate.from_messages([("human", "{q}")])
        chain = (
            first
            | ParrotFakeChatModel()
            | (lambda m: f"refine: {m.content}")
            | ParrotFakeChatModel()
            | StrOutputParser()
        )
        with track_user("u"):
            chain.invoke({"q": "draft"})

        assert _shape(records.conversations[0]) == [
            ("user", "draft"),
            ("assistant", "refine: draft"),
        ]

    def test_caller_metadata_does_not_change_attribution(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """A config with its own metadata is still recorded for the scope's user."""
        with track_user("meta-user"):
            chain.invoke({"question": "x"}, config={"metadata": {"team": "a"}})

        assert [c.user_id for c in records.conversations] == ["meta-user"]


class TestAnswers:
    @pytest.mark.parametrize(
        ("finish", "expected"),
        [
            (lambda m: m, "hello"),
            (lambda m: m.content, "hello"),
            (lambda m: {"answer": m.content, "sources": [1]}, "hello"),
            (lambda m: {"output": m.content, "steps": 2}, "hello"),
            (lambda m: {"text": m.content, "n": 1}, "hello"),
            (
                lambda m: {"score": 0.5, "tags": ["a", "é"]},
                '{"score":0.5,"tags":["a","é"]}',
            ),
            (lambda m: [1, 2], "[1,2]"),
        ],
        ids=["message", "str", "answer-key", "output-key", "text-key", "json", "list"],
    )
    def test_final_answer_text(
        self, finish: Any, expected: str, records: CapturedRecords
    ) -> None:
        """The answer comes from an AIMessage, a str, a dict's key, or compact JSON."""
        chain = (
            ChatPromptTemplate.from_messages([("human", "{q}")])
            | ParrotFakeChatModel()
            | RunnableLambda(finish)
        )
        with track_user("u"):
            chain.invoke({"q": "hello"})

        assert expected == records.conversations[0].answer

    def test_tool_calls_and_usage_as_extra_fields_or_properties(self) -> None:
        """Fields a message carries as a pydantic extra or a property are read too."""
        from langchain_core.messages import ChatMessage
        from langchain_core.outputs import ChatGeneration, LLMResult

        calls = [{"name": "f", "args": {"x": 1}, "id": "c1"}]

        class PropertyCalls(BaseMessage):
            type: str = "ai"

            @property
            def tool_calls(self) -> list[dict[str, Any]]:
                return calls

        usage = {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
        extra_usage = ChatMessage(role="assistant", content="a", usage_metadata=usage)
        result = LLMResult(generations=[[ChatGeneration(message=extra_usage)]])

        assert [
            '[{"name":"f","args":{"x":1}}]',
            '[{"name":"f","args":{"x":1}}]',
            Usage(input_tokens=3, output_tokens=4, total_tokens=7),
        ] == [
            _convert.answer_text(
                ChatMessage(role="assistant", content="", tool_calls=calls)
            ),
            _convert.answer_text(PropertyCalls(content="")),
            _measure.usage(result),
        ]


class TestRunnables:
    def test_chat_model_invoked_directly(self, records: CapturedRecords) -> None:
        """A chat model called on its own is one turn."""
        with track_user("u"):
            ParrotFakeChatModel().invoke("direct")

        assert _shape(records.conversations[0]) == [
            ("user", "direct"),
            ("assistant", "direct"),
        ]

    def test_llm_with_string_prompt(self, records: CapturedRecords) -> None:
        """A string-prompt LLM records the user's text; the rendered prompt is detail."""
        llm = FakeListLLM(responses=["forty-two"])
        with track_user("u"):
            llm.invoke("What is the answer?")
            (PromptTemplate.from_template("Say {x}") | llm).invoke({"x": "hi"})

        first, second = records.conversations

        assert _shape(first) == [
            ("user", "What is the answer?"),
            ("assistant", "forty-two"),
        ]
        assert _shape(second) == [("user", "hi"), ("assistant", "forty-two")]
        assert "Say hi" == exported_metadata(second)["model_input"]
        assert exported_metadata(first)["model"] == "FakeListLLM"

    def test_runnable_parallel_is_one_turn(self, records: CapturedRecords) -> None:
        """RunnableParallel with two model branches is one record."""
        prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
        parallel = RunnableParallel(
            short=prompt | ParrotFakeChatModel() | StrOutputParser(),
            loud=prompt | ParrotFakeChatModel() | StrOutputParser() | shout,
        )
        with track_user("u"):
            result = parallel.invoke({"q": "both"})

        (conversation,) = records.conversations

        assert result == {"short": "both", "loud": "BOTH"}
        assert _shape(conversation)[0] == ("user", "both")
        assert conversation.answer == '{"short":"both","loud":"BOTH"}'

    def test_batch_one_record_per_input(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """``batch`` records one turn per input, each with its own answer."""
        questions = [f"q{i}" for i in range(5)]
        with track_user("u"):
            chain.batch([{"question": q} for q in questions])

        assert sorted(questions) == sorted(c.answer for c in records.conversations)
        assert len({c.id for c in records.conversations}) == 5

    async def test_abatch_one_record_per_input(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """``abatch`` records one turn per input."""
        questions = [f"a{i}" for i in range(5)]
        async with track_user("u"):
            await chain.abatch([{"question": q} for q in questions])

        assert sorted(questions) == sorted(c.answer for c in records.conversations)

    def test_stream_records_the_assembled_text(self, records: CapturedRecords) -> None:
        """``stream`` records one turn with the whole streamed answer."""
        chain = streaming_chain("several streamed words")
        with track_user("u"):
            chunks = list(chain.stream({"question": "go"}))

        assert len(chunks) == 5
        assert _shape(records.conversations[0]) == [
            ("user", "go"),
            ("assistant", "several streamed words"),
        ]

    async def test_astream_records_the_assembled_text(
        self, records: CapturedRecords
    ) -> None:
        """``astream`` records one turn with the whole streamed answer."""
        chain = streaming_chain("async streamed words")
        async with track_user("u"):
            chunks = [chunk async for chunk in chain.astream({"question": "go"})]

        assert len(chunks) == 5
        assert [c.answer for c in records.conversations] == ["async streamed words"]

    def test_model_stream_directly(self, records: CapturedRecords) -> None:
        """A chat model streamed on its own records the joined chunks."""
        with track_user("u"):
            "".join(str(c.content) for c in _usage_model("a b c").stream("s"))

        assert [c.answer for c in records.conversations] == ["a b c"]

    def test_tool_called_inside_a_lambda(self, records: CapturedRecords) -> None:
        """A tool called inside a RunnableLambda is a tool message; the user is the input."""

        def with_sum(question: str) -> str:
            return f"{question}: {add.invoke({'a': 2, 'b': 3})}"

        chain = RunnableLambda(with_sum) | ParrotFakeChatModel() | StrOutputParser()
        with track_user("u"):
            chain.invoke("sum")

        (conversation,) = records.conversations

        assert [
            Message("user", "sum"),
            Message("tool", "5", name="add", tool_input='{"a":2,"b":3}'),
            Message("assistant", "sum: 5"),
        ] == list(conversation.messages)

    def test_chain_with_a_tool_step(self, records: CapturedRecords) -> None:
        """A tool as a step of the chain is recorded; its output is the answer."""
        chain = (
            ChatPromptTemplate.from_messages([("human", "{q}")])
            | ParrotFakeChatModel()
            | StrOutputParser()
            | shout
        )
        with track_user("u"):
            chain.invoke({"q": "quiet"})

        assert [
            Message("user", "quiet"),
            Message("tool", "QUIET", name="shout", tool_input="quiet"),
            Message("assistant", "QUIET"),
        ] == list(records.conversations[0].messages)

    def test_nested_chain_is_one_record(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """A chain calling another chain inside a RunnableLambda records once."""
        outer = RunnableLambda(lambda x: chain.invoke(x) + "!") | RunnableLambda(
            lambda s: s.upper()
        )
        with track_user("u"), collect_runs() as runs:
            outer.invoke({"question": "nest"})

        (conversation,) = records.conversations

        assert [runs.traced_runs[0].id.hex] == [conversation.id]
        assert _shape(conversation) == [
            ("system", "You are terse."),
            ("user", "nest"),
            ("assistant", "NEST!"),
        ]

    def test_chain_without_a_model_is_not_a_conversation(
        self, records: CapturedRecords
    ) -> None:
        """Runs with no model call (a parser, a tool alone) record nothing."""
        with track_user("u"):
            StrOutputParser().invoke("text")
            shout.invoke("alone")
            RunnableLambda(lambda x: x * 2).invoke(2)

        assert records == []


class TestOneRecordPerRoot:
    def test_config_from_another_scope(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """A run seen by two scopes' recorders is recorded once, by the first."""
        with track_user("config-owner"):
            config = runnable_config()
        with track_user("ambient"):
            chain.invoke({"question": "once"}, config=config)

        assert [(c.user_id, c.answer) for c in records.conversations] == [
            ("config-owner", "once")
        ]

    def test_batch_with_config_from_another_scope(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """Each batch input is one record even when two recorders see it."""
        with track_user("config-owner"):
            config = runnable_config()
        with track_user("ambient"):
            chain.batch([{"question": "b1"}, {"question": "b2"}], config=config)

        assert sorted((c.user_id, c.answer or "") for c in records.conversations) == [
            ("config-owner", "b1"),
            ("config-owner", "b2"),
        ]

    def test_own_handler_passed_explicitly(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """Passing the scope's own handler by hand does not record twice."""
        with track_user("explicit"):
            chain.invoke({"question": "x"}, config={"callbacks": [current_handler()]})
            chain.invoke({"question": "y"}, config=runnable_config())

        assert [(c.user_id, c.answer) for c in records.conversations] == [
            ("explicit", "x"),
            ("explicit", "y"),
        ]

    def test_followed_turns_leave_no_state(
        self, chain: Runnable[dict[str, Any], str], records: CapturedRecords
    ) -> None:
        """The recorder that only follows another's root keeps no state after it."""
        with track_user("config-owner"):
            config = runnable_config()
            owner = current_handler()
        with track_user("ambient"):
            follower = current_handler()
            for i in range(20):
                chain.invoke({"question": f"q{i}"}, config=config)

        assert owner is not None
        assert follower is not None
        assert (
            owner.active_turns,
            follower.active_turns,
            len(_handler._CLAIMED),
        ) == (0, 0, 0)
        assert len(records.conversations) == 20


class TestFailures:
    def test_failed_chain_recorded_and_same_exception_raised(
        self, records: CapturedRecords
    ) -> None:
        """A turn that fails after the model is recorded; the app gets its own error."""
        error = Boom("parse failed")

        def fail(_: Any) -> str:
            raise error

        chain = (
            ChatPromptTemplate.from_messages([("human", "{q}")])
            | ParrotFakeChatModel()
            | RunnableLambda(fail)
        )
        with track_user("u"), pytest.raises(Boom) as caught:
            chain.invoke({"q": "will fail"})

        (conversation,) = records.conversations

        assert caught.value is error
        assert conversation.error == "Boom: parse failed"
        assert (
            exported_metadata(conversation)["error_type"],
            exported_metadata(conversation)["error"],
        ) == ("Boom", "parse failed")
        assert _shape(conversation)[0] == ("user", "will fail")

    def test_failing_model_recorded(self, records: CapturedRecords) -> None:
        """A model call that raises is recorded with the input and the error."""
        with track_user("u"), pytest.raises(Boom):
            FailingChatModel().invoke("hello?")

        (conversation,) = records.conversations

        assert _shape(conversation) == [("user", "hello?")]
        assert exported_metadata(conversation)["error_type"] == "Boom"

    def test_chain_failing_before_the_model(self, records: CapturedRecords) -> None:
        """A chain that fails before reaching its model is still recorded."""

        def fail(_: Any) -> str:
            raise Boom("bad input")

        chain = RunnableLambda(fail) | ParrotFakeChatModel()
        with track_user("u"), pytest.raises(Boom):
            chain.invoke("raw question")

        assert [(_shape(c), c.error) for c in records.conversations] == [
            ([("user", "raw question")], "Boom: bad input")
        ]

    def test_failure_while_streaming(self, records: CapturedRecords) -> None:
        """A stream that fails part-way is recorded as failed; the error reaches the app."""
        error = Boom("mid-stream")

        def explode(chunks: Any) -> Any:
            for chunk in chunks:
                if chunk.strip() == "two":
                    raise error
                yield chunk

        chain = streaming_chain("one two three") | RunnableGenerator(explode)
        received: list[str] = []

        def consume() -> None:
            received.extend(chain.stream({"question": "go"}))

        with track_user("u"), pytest.raises(Boom) as caught:
            consume()

        assert caught.value is error
        assert received == ["one", " "]
        assert [c.error for c in records.conversations] == ["Boom: mid-stream"]

    async def test_async_failure(self, records: CapturedRecords) -> None:
        """An async chain failure is recorded and re-raised unchanged."""
        error = Boom("async")

        async def fail(_: Any) -> str:
            raise error

        chain = ParrotFakeChatModel() | RunnableLambda(fail)
        async with track_user("u"):
            with pytest.raises(Boom) as caught:
                await chain.ainvoke("q")

        assert caught.value is error
        assert [c.error for c in records.conversations] == ["Boom: async"]


class TestSessionTranscript:
    def test_history_is_not_repeated(self, records: CapturedRecords) -> None:
        """Concatenated session records give system, u1, a1, u2, a2 with no repeats."""
        prompt = ChatPromptTemplate.from_messages(
            [
                ("system", "Be brief."),
                MessagesPlaceholder("history"),
                ("human", "{q}"),
            ]
        )
        chain = prompt | ParrotFakeChatModel() | StrOutputParser()
        history: list[BaseMessage] = []
        with context_session(user_id="u") as session:
            for question in ("u1", "u2"):
                answer = chain.invoke({"history": history, "q": question})
                history += [HumanMessage(question), AIMessage(answer)]

        transcript = [
            (m.role, m.content) for c in records.conversations for m in c.messages
        ]

        assert {session.id} == {c.session_id for c in records.conversations}
        assert transcript == [
            ("system", "Be brief."),
            ("user", "u1"),
            ("assistant", "u1"),
            ("user", "u2"),
            ("assistant", "u2"),
        ]

    def test_same_question_twice_recorded_twice(self, records: CapturedRecords) -> None:
        """Asking the same question again is a new user message, not history."""
        prompt = ChatPromptTemplate.from_messages(
            [MessagesPlaceholder("history"), ("human", "{q}")]
        )
        chain = prompt | ParrotFakeChatModel() | StrOutputParser()
        history: list[BaseMessage] = []
        with context_session(user_id="u"):
            for question in ("again", "again"):
                answer = chain.invoke({"history": history, "q": question})
                history += [HumanMessage(question), AIMessage(answer)]

        assert [_shape(c) for c in records.conversations] == [
            [("user", "again"), ("assistant", "again")],
            [("user", "again"), ("assistant", "again")],
        ]

    def test_separate_sessions_do_not_share_history(
        self, records: CapturedRecords
    ) -> None:
        """De-duplication is per session: a new session records its system prompt."""
        chain = (
            ChatPromptTemplate.from_messages([("system", "sys"), ("human", "{q}")])
            | ParrotFakeChatModel()
        )
        for _ in range(2):
            with context_session(user_id="u"):
                chain.invoke({"q": "hi"})

        assert [_shape(c) for c in records.conversations] == [
            [("system", "sys"), ("user", "hi"), ("assistant", "hi")]
        ] * 2

    def test_turns_outside_sessions_keep_everything(
        self, records: CapturedRecords
    ) -> None:
        """Without a session every turn keeps its full prompt."""
        chain = (
            ChatPromptTemplate.from_messages([("system", "sys"), ("human", "{q}")])
            | ParrotFakeChatModel()
        )
        with track_user("u"):
            chain.invoke({"q": "one"})
            chain.invoke({"q": "two"})

        assert [_shape(c)[0] for c in records.conversations] == [("system", "sys")] * 2


class TestRecorderRobustness:
    def test_a_child_starting_as_its_root_ends_is_let_go(
        self, records: CapturedRecords, caplog: pytest.LogCaptureFixture
    ) -> None:
        """
        A child run another thread starts while its root finishes: not an error.

        The root's end frees its run-id list; a child that found the root's turn
        just before is not added to it (the turn is already on its way out).
        """
        import uuid

        with track_user("u"):
            handler = current_handler()
        assert handler is not None
        root, child = uuid.uuid4(), uuid.uuid4()

        class EndsTheRootOnLookup(dict[int, Any]):
            armed = False  # set for the child's lookup of its parent

            def get(self, key: int, default: Any = None) -> Any:
                found = super().get(key, default)
                if key == root.int and self.armed:
                    self.armed = False
                    handler.on_chain_end("done", run_id=root)  # the other thread
                return found

        turns = EndsTheRootOnLookup()

        handler._turns = turns
        handler.on_chain_start({}, {"question": "q"}, run_id=root)
        turns.armed = True
        with caplog.at_level(logging.DEBUG, logger="context_trace"):
            handler.on_chat_model_start(
                {}, [[HumanMessage("q")]], run_id=child, parent_run_id=root
            )

        assert [] == [
            r.getMessage() for r in caplog.records if "failed" in r.getMessage()
        ]
        assert 0 == handler.active_turns

    def test_handler_flags(self) -> None:
        """The recorder never raises into LangChain and runs inline in async runs."""
        assert (
            RecordingHandler.raise_error,
            RecordingHandler.run_inline,
        ) == (False, True)

    def test_conversion_failure_is_logged_once(
        self,
        chain: Runnable[dict[str, Any], str],
        records: CapturedRecords,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A converter that raises never reaches the app and warns only once."""

        def broken(*args: Any, **kwargs: Any) -> Conversation:
            raise RuntimeError("converter bug")

        monkeypatch.setattr(_convert, "to_conversation", broken)
        with caplog.at_level(logging.DEBUG, logger="context_trace"), track_user("u"):
            answers = [chain.invoke({"question": f"q{i}"}) for i in range(3)]

        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]

        assert answers == ["q0", "q1", "q2"]
        assert records == []
        assert len(warnings) == 1
        assert "could not convert" in warnings[0].getMessage()

    def test_emit_failure_is_logged_once(
        self,
        chain: Runnable[dict[str, Any], str],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """An emit that raises inside the recorder never reaches the app."""

        def broken_emit(item: Any) -> None:
            raise RuntimeError("queue bug")

        monkeypatch.setattr(_runtime, "emit", broken_emit)
        with caplog.at_level(logging.DEBUG, logger="context_trace"), track_user("u"):
            handler = current_handler()
            answers = [chain.invoke({"question": f"q{i}"}) for i in range(3)]

        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]

        assert answers == ["q0", "q1", "q2"]
        assert len(warnings) == 1
        assert handler is not None
        assert handler.active_turns == 0
        assert len(_handler._CLAIMED) == 0

    def test_broken_pipeline_is_logged_once(
        self,
        chain: Runnable[dict[str, Any], str],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A pipeline that cannot start is logged once; the app keeps working."""

        def no_pipeline() -> Any:
            raise OSError("disk full")

        monkeypatch.setattr(_runtime, "_pipeline", no_pipeline)
        with (
            caplog.at_level(logging.DEBUG, logger="context_trace"),
            context_session(user_id="u") as session,
        ):
            answers = [chain.invoke({"question": f"q{i}"}) for i in range(3)]
            session.rate(1)

        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]

        assert answers == ["q0", "q1", "q2"]
        assert len(warnings) == 1
        assert "could not enqueue" in warnings[0].getMessage()

    def test_recorder_callback_failure_is_contained(
        self,
        chain: Runnable[dict[str, Any], str],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """An error inside a recorder callback is logged once, not raised."""

        def broken_enter(self: RecordingHandler, *args: Any) -> None:
            raise RuntimeError("state bug")

        monkeypatch.setattr(RecordingHandler, "_enter", broken_enter)
        with caplog.at_level(logging.DEBUG, logger="context_trace"), track_user("u"):
            answers = [chain.invoke({"question": f"q{i}"}) for i in range(2)]

        warnings = Counter(
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("context_trace")
        )
        langchain_logs = [r for r in caplog.records if r.name.startswith("langchain")]

        assert answers == ["q0", "q1"]
        assert {
            "context_trace: recorder failed in on_chain_start; the turn may be incomplete",
            "context_trace: recorder failed in on_chat_model_start; the turn may be incomplete",
        } == set(warnings)
        assert {1} == set(warnings.values())
        assert langchain_logs == []


class TestSessionAcrossRequests:
    def test_history_is_not_repeated_when_each_request_opens_the_session(
        self, records: CapturedRecords
    ) -> None:
        """One context_session(id) per request (the web pattern) still records each message once."""
        from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

        from context_trace import context_session, track_user

        prompt = ChatPromptTemplate.from_messages(
            [("system", "sys"), MessagesPlaceholder("history"), ("human", "{q}")]
        )
        chain = prompt | ParrotFakeChatModel()
        history: list[BaseMessage] = []
        for question in ("one", "two", "three"):
            with track_user("web-user"), context_session("web-session"):
                answer = chain.invoke({"q": question, "history": history}).content
            history += [HumanMessage(question), AIMessage(answer)]

        transcript = [m.content for c in records.conversations for m in c.messages]

        assert ["sys", "one", "one", "two", "two", "three", "three"] == transcript
