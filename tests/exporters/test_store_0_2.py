"""A store file written by context_trace 0.2.0 (measurements in metadata, record format 1) still works."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from context_trace._exporters.context_api import ContextAPIExporter
from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import (
    Conversation,
    Feedback,
    ModelCall,
    Usage,
    exported_metadata,
)
from context_trace._store.codec import message_row, record_from_json
from context_trace._store.reader import SQLiteReader

from .context_server import ROUTE_THREAD, ROUTE_THREAD_PATCH, FakeContextServer
from .data.write_store_0_2 import FIRST, QUEUED, SECOND

FILE_0_2 = Path(__file__).with_name("data") / "store_0_2.sqlite"
TOKEN = "test-token-0-2"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A copy of the 0.2.0 file (the tests write to it)."""
    path = tmp_path / "store.sqlite"
    shutil.copyfile(FILE_0_2, path)
    return path


@pytest.fixture
def exporter(store: Path) -> Iterator[SQLiteExporter]:
    writer = SQLiteExporter(store)
    yield writer
    writer.shutdown()


def test_reader_reads_0_2_measurements(store: Path) -> None:
    """The reader reports the model, tokens, tool errors and app metadata a 0.2.0 writer stored."""
    with SQLiteReader(store) as reader:
        stored = {c.id: c for c in reader.conversations()}

    first = stored[FIRST.id]
    second = stored[SECOND.id]
    assert ("fake-model", 7, 5, 12, 1500) == (
        first.model,
        first.prompt_tokens,
        first.completion_tokens,
        first.total_tokens,
        first.latency_ms,
    )
    assert ("pro", "beta,search") == (first.metadata["plan"], first.metadata["tags"])
    assert (True, False) == (second.tool_error, first.tool_error)
    assert 5 == len(stored)  # the queued turn is kept locally too


def test_outbox_of_0_2_file_delivers_the_same_payload(
    exporter: SQLiteExporter,
) -> None:
    """Records a 0.2.0 writer queued (format 1) decode and reach Context with their metadata."""
    claimed = exporter.outbox_claim(10, destination="context")
    records = [record for _, record in claimed]
    with FakeContextServer(token=TOKEN) as server:
        sender = ContextAPIExporter(TOKEN, endpoint=server.url, jitter=0.0)
        try:
            result = sender.export(records)
        finally:
            sender.shutdown()
        turn = server.requests_to(ROUTE_THREAD)[0].body["conversation"]
        patched = server.requests_to(ROUTE_THREAD_PATCH)

    assert (2, 0) == (result.exported, result.failed)
    assert [Conversation, Feedback] == [type(r) for r in records]
    assert {
        "tenant": "acme",
        "user_id": "bob",
        "session_id": "s2",
        "run_name": "agent",
    } == (turn["metadata"])
    assert {
        "turn_id": QUEUED[0].id,
        "model": "fake-model",
        "latency_ms": "1000",
        "prompt_tokens": "3",
        "completion_tokens": "2",
        "total_tokens": "5",
        "tags": "queued",
    } == turn["messages"][-1]["metadata"]
    assert 1 == len(patched)


def test_format_1_rows_read_back_as_typed_records(store: Path) -> None:
    """A 0.2.0 outbox row (format 1) reads back with typed measurements and the app's metadata only."""
    conn = sqlite3.connect(store)
    try:
        (payload,) = conn.execute(
            "SELECT payload FROM outbox WHERE destination = 'otlp' AND record_id = ?",
            (QUEUED[0].id,),
        ).fetchone()
    finally:
        conn.close()

    record = record_from_json(payload)

    assert '"v":1' in payload
    assert isinstance(record, Conversation)
    assert (
        {"tenant": "acme"},
        "fake-model",
        Usage(3, 2, 5),
        ("queued",),
        "agent",
        QUEUED[0].spans,
        QUEUED[0].trace_id,
    ) == (
        record.metadata,
        record.model,
        record.usage,
        record.tags,
        record.run_name,
        record.spans,
        record.trace_id,
    )
    assert exported_metadata(QUEUED[0]) == exported_metadata(record)


def test_format_1_model_calls_and_flags_read_back() -> None:
    """Format 1's model_calls JSON, stream_abandoned and model_input become typed fields."""
    row = {
        "v": 1,
        "type": "conversation",
        "id": SECOND.id,
        "user_id": SECOND.user_id,
        "session_id": SECOND.session_id,
        "started_at": SECOND.started_at,
        "ended_at": SECOND.ended_at,
        "messages": [message_row(m) for m in SECOND.messages],
        "metadata": {**SECOND.metadata, "stream_abandoned": "true"},
        "error": None,
    }

    record = record_from_json(json.dumps(row))

    assert isinstance(record, Conversation)
    assert (
        {"plan": "pro"},
        (
            ModelCall("router", Usage(8, 1, 9)),
            ModelCall("fake-model", Usage(12, 3, 15)),
        ),
        True,
        "Context: it is sunny\n\nweather?",
        ("weather",),
    ) == (
        record.metadata,
        record.model_calls,
        record.stream_abandoned,
        record.model_input,
        record.failed_tools,
    )
