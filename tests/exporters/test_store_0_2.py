"""A store file written by context_trace 0.2.0 (measurements in metadata, record format 1) still works."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from context_trace._exporters.context_api import ContextAPIExporter
from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Feedback
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
