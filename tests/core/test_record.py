"""The typed record: measurements in fields of their own, the app's metadata left as it gave it."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda

from context_trace import track_user
from context_trace._exporters import context_api, genai, semconv
from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import (
    COLUMN_KEYS,
    MEASURED_KEYS,
    TURN_KEYS,
    Conversation,
    Message,
    ModelCall,
    Usage,
    exported_metadata,
)
from context_trace._store.codec import record_from_json, record_to_json
from context_trace._store.reader import SQLiteReader
from context_trace.cli import commands
from context_trace.testing import CapturedRecords


class CachingFakeChatModel(ParrotFakeChatModel):
    """Echoes the last message and reports usage with cache and reasoning details."""

    prompt_tokens: int = 100

    def _generate(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> ChatResult:
        usage = {
            "input_tokens": self.prompt_tokens,
            "output_tokens": 20,
            "total_tokens": self.prompt_tokens + 20,
            "input_token_details": {"cache_read": 60, "cache_creation": 10},
            "output_token_details": {"reasoning": 8},
        }
        message = AIMessage(content=messages[-1].content, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])


class TestTypedUsage:
    def test_usage_with_cache_and_reasoning_details(
        self, records: CapturedRecords
    ) -> None:
        """Input, output, total, cache-read/write and reasoning tokens land in typed usage."""
        with track_user("u"):
            CachingFakeChatModel().invoke("hello")

        (turn,) = records.conversations
        assert Usage(100, 20, 120, 60, 10, 8) == turn.usage
        assert ("CachingFakeChatModel", ()) == (turn.model, turn.model_calls)

    def test_usage_summed_over_calls_with_each_call_kept(
        self, records: CapturedRecords
    ) -> None:
        """A turn of two model calls sums their usage and keeps each call's model and usage."""
        first = CachingFakeChatModel(prompt_tokens=5)
        second = CachingFakeChatModel(prompt_tokens=7)
        chain = first | RunnableLambda(lambda m: m.content) | second
        with track_user("u"):
            chain.invoke("hello", config={"tags": ["b", "a", "b"]})

        (turn,) = records.conversations
        one, two = Usage(5, 20, 25, 60, 10, 8), Usage(7, 20, 27, 60, 10, 8)
        assert (
            Usage(12, 40, 52, 120, 20, 16),
            (
                ModelCall("CachingFakeChatModel", one),
                ModelCall("CachingFakeChatModel", two),
            ),
            ("b", "a"),
            "RunnableSequence",
        ) == (turn.usage, turn.model_calls, turn.tags, turn.run_name)

    def test_no_usage_when_none_reported(self, records: CapturedRecords) -> None:
        """A model that reports no usage leaves usage None."""
        with track_user("u"):
            ParrotFakeChatModel().invoke("hello")

        (turn,) = records.conversations
        assert (None, "ParrotFakeChatModel") == (turn.usage, turn.model)


class TestAppMetadata:
    def test_clash_with_a_measurement_keeps_the_app_value_and_warns_once(
        self, records: CapturedRecords, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An app key named like a measurement keeps the app's value; one warning per key."""
        caplog.set_level(logging.DEBUG, logger="context_trace")
        with track_user("u2", metadata={"model": "exp-A", "latency_ms": "x"}):
            ParrotFakeChatModel().invoke("hi")
            ParrotFakeChatModel().invoke("again")

        first, second = records.conversations
        warned = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and "measurement" in r.getMessage()
        ]
        assert [{"model": "exp-A", "latency_ms": "x"}] * 2 == [
            first.metadata,
            second.metadata,
        ]
        assert ("ParrotFakeChatModel", None) == (first.model, first.error)
        assert 2 == len(warned)
        assert ["'model'", "'latency_ms'"] == [
            key for key in ("'model'", "'latency_ms'") if any(key in w for w in warned)
        ]

    def test_clash_is_exported_and_stored_with_the_app_value(
        self, records: CapturedRecords, tmp_path: Path
    ) -> None:
        """The store keeps the measured model in its column and the app's value in metadata."""
        with track_user("u2", metadata={"model": "exp-A", "latency_ms": "x"}):
            ParrotFakeChatModel().invoke("hi")
        store = SQLiteExporter(tmp_path / "store.sqlite")
        try:
            assert 1 == store.export(records.conversations).exported
        finally:
            store.shutdown()
        with SQLiteReader(tmp_path / "store.sqlite") as reader:
            (stored,) = reader.conversations()

        assert ("ParrotFakeChatModel", "exp-A", "x") == (
            stored.model,
            stored.metadata["model"],
            stored.metadata["latency_ms"],
        )
        assert {"model": "exp-A", "latency_ms": "x"} == {
            k: v
            for k, v in exported_metadata(records.conversations[0]).items()
            if k in ("model", "latency_ms")
        }

    def test_no_measurement_written_into_the_app_metadata(
        self, records: CapturedRecords
    ) -> None:
        """A measured turn's metadata holds only what the app gave."""
        with track_user("u", metadata={"plan": "pro"}):
            CachingFakeChatModel().invoke("hi", config={"tags": ["t"]})

        (turn,) = records.conversations
        assert ({"plan": "pro"}, ("t",)) == (turn.metadata, turn.tags)


class TestStoredUsageDetails:
    def test_store_keeps_cache_and_reasoning_counts_per_turn_and_call(
        self, records: CapturedRecords, tmp_path: Path
    ) -> None:
        """The store's metadata keeps cache-read, cache-write and reasoning counts, per call too."""
        first, second = CachingFakeChatModel(prompt_tokens=5), CachingFakeChatModel()
        chain = first | RunnableLambda(lambda m: m.content) | second
        with track_user("u"):
            CachingFakeChatModel().invoke("one")
            chain.invoke("two")
        store = SQLiteExporter(tmp_path / "store.sqlite")
        try:
            assert 2 == store.export(records.conversations).exported
        finally:
            store.shutdown()
        with SQLiteReader(tmp_path / "store.sqlite") as reader:
            one, two = sorted(reader.conversations(), key=lambda c: c.started_at)

        keys = ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
        assert ["60", "10", "8"] == [one.metadata.get(k) for k in keys]
        calls = json.loads(two.metadata["model_calls"])
        assert [[60, 10, 8], [60, 10, 8]] == [[c.get(k) for k in keys] for c in calls]


class TestRecordFormat:
    def test_format_2_round_trips_every_measurement(self) -> None:
        """A record with every measurement survives format 2 exactly, metadata untouched."""
        record = Conversation(
            id="r1",
            user_id="u",
            session_id=None,
            started_at=1.0,
            ended_at=2.5,
            messages=(
                Message("user", "q"),
                Message("tool", "boom", name="search", error=True),
                Message("assistant", "a"),
            ),
            metadata={"plan": "pro", "model": "exp-A"},
            model="m-1",
            usage=Usage(10, 5, 15, 4, None, 2),
            tags=("x", "y"),
            run_name="agent",
            model_calls=(ModelCall("m-0", None), ModelCall("m-1", Usage(10, 5, 15))),
            stream_abandoned=True,
            model_input="ctx\n\nq",
        )

        text = record_to_json(record)

        assert '"v":2' in text
        assert record == record_from_json(text)

    def test_unknown_format_is_refused(self) -> None:
        """A record of a format this version does not know is refused, naming the format."""
        with pytest.raises(ValueError, match="record format 9"):
            record_from_json('{"v": 9, "type": "feedback"}')


class TestConstruction:
    def test_records_build_as_dataclasses_do(self) -> None:
        """Records take their fields by position or name, with their defaults, and stay frozen."""
        by_name = Conversation(
            id="c",
            user_id=None,
            session_id="s",
            started_at=1.0,
            ended_at=2.0,
            messages=(Message("user", "q"),),
        )
        by_position = Conversation("c", None, "s", 1.0, 2.0, (Message("user", "q"),))

        assert by_name == by_position
        assert ("c", {}, None, (), False) == (
            by_name.id,
            by_name.metadata,
            by_name.model,
            by_name.tags,
            by_name.stream_abandoned,
        )
        assert Message("tool", "x", None, None, False) == Message("tool", "x")
        assert Usage(None, None, None, None, None, None) == Usage()
        assert ModelCall("m", None) == ModelCall("m")
        with pytest.raises(dataclasses.FrozenInstanceError):
            by_name.id = "other"  # type: ignore[misc]

    def test_each_record_gets_its_own_metadata(self) -> None:
        """A record built without metadata gets a fresh dict, not one shared with others."""
        first = Conversation("a", None, None, 1.0, 2.0, ())
        second = Conversation("b", None, None, 1.0, 2.0, ())

        assert first.metadata is not second.metadata

    def test_bad_arguments_raise_type_error(self) -> None:
        """A missing or unknown argument raises TypeError, as a dataclass does."""
        with pytest.raises(TypeError, match="content"):
            Message("user")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="colour"):
            Message("user", "q", colour="red")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="messages"):
            Conversation("a", None, None, 1.0, 2.0)  # type: ignore[call-arg]

    def test_format_1_metadata_is_lifted_on_construction(self) -> None:
        """A record built with 0.2's measurement keys in metadata has them in its fields."""
        record = Conversation(
            "a", None, None, 1.0, 2.0, (), metadata={"model": "m", "prompt_tokens": "3"}
        )

        assert ("m", 3) == (record.model, record.usage and record.usage.input_tokens)

    def test_replace_and_signature_follow_the_fields(self) -> None:
        """dataclasses.replace works and the signature names every field in order."""
        record = Conversation("a", None, None, 1.0, 2.0, ())

        assert "b" == dataclasses.replace(record, id="b").id
        assert [f.name for f in dataclasses.fields(Conversation)] == list(
            inspect.signature(Conversation).parameters
        )


def _measured_turn() -> Conversation:
    return Conversation(
        id="n1",
        user_id="u",
        session_id="s",
        started_at=1.0,
        ended_at=2.0,
        messages=(
            Message("user", "q"),
            Message("tool", "boom", name="search", error=True),
            Message("assistant", "a"),
        ),
        metadata={"plan": "pro"},
        error="ValueError: bad",
        model="m-1",
        usage=Usage(10, 5, 15, 4, 2, 3),
        tags=("x",),
        run_name="agent",
        model_calls=(ModelCall("m-0"), ModelCall("m-1", Usage(10, 5, 15))),
        stream_abandoned=True,
        model_input="ctx",
    )


class TestOneSourceOfNames:
    def test_destinations_take_the_names_from_the_record_module(self) -> None:
        """Context's per-turn keys and the CSV columns are built from the record module's names."""
        assert ("turn_id", *TURN_KEYS) == context_api._TURN_KEYS
        start = commands._CSV_COLUMNS.index(COLUMN_KEYS[0])
        assert COLUMN_KEYS == commands._CSV_COLUMNS[start : start + len(COLUMN_KEYS)]
        assert not hasattr(genai, "_OWN_METADATA")

    def test_context_payload_carries_every_measured_name_and_otlp_none(self) -> None:
        """Context gets every measured name as metadata; OTLP's app metadata holds the app's keys only."""
        turn = _measured_turn()

        sent = context_api._metadata(turn)
        (root, *_) = genai.record_spans(turn)

        assert {*MEASURED_KEYS, "turn_id", "user_id", "session_id", "plan"} == set(sent)
        assert {"plan": "pro"} == json.loads(str(root.attributes[semconv.OI_METADATA]))
        assert "agent" == root.name
