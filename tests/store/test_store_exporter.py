"""
The exporters over a store: StoreExporter writes it, OutboxExporter delivers from its outbox.

They run over the stores with an outbox (fixture ``outbox_store``): a store
without one (PostgreSQL, a destination) is written by its sender instead
(``tests/postgres``).
"""

from __future__ import annotations

from collections.abc import Sequence

from context_trace._exporters.base import ExportResult, Outcome
from context_trace._exporters.outbox import OutboxExporter
from context_trace._exporters.sqlite import StoreExporter
from context_trace._record import Record
from context_trace._store.base import Store

from .test_store_contract import rating, turn


class RecordingSender:
    """A sender that delivers every record and keeps what it got, with the transcript."""

    cooling_down = False

    def __init__(self, store: Store) -> None:
        self.store = store
        self.got: list[tuple[str, list[str]]] = []

    def export_each(self, batch: Sequence[Record]) -> list[Outcome]:
        for record in batch:
            transcript = self.store.session_transcript(record.session_id or "")
            self.got.append((record.id, [m.content for m in transcript]))
        return [Outcome("delivered", attempts=1) for _ in batch]

    def shutdown(self, timeout: float | None = None) -> None:
        return None


def test_store_exporter_writes_any_store(outbox_store: Store) -> None:
    """StoreExporter exports into the store; a rating with no target is rejected."""
    store = outbox_store
    exporter = StoreExporter(store)

    result = exporter.export([turn("t1"), rating("r1"), rating("r2", session="nope")])

    with store.reads() as reads:
        ids = [c.id for c in reads.conversations()]
        rated = [f.conversation_id for f in reads.ratings("s1")]
    assert (ExportResult(exported=2, rejected=1), ["t1"], ["t1"]) == (
        result,
        ids,
        rated,
    )


def test_store_exporter_never_raises_on_bad_input(outbox_store: Store) -> None:
    """A batch with a non-record fails as a result, not an exception."""
    exporter = StoreExporter(outbox_store)

    assert ExportResult.failure(2) == exporter.export([turn("t1"), object()])  # type: ignore[list-item]


def test_the_outbox_exporter_delivers_from_the_stores_outbox(
    outbox_store: Store,
) -> None:
    """OutboxExporter queues in the store's outbox, delivers, and reads transcripts there."""
    store = outbox_store
    sender = RecordingSender(store)
    outbox = OutboxExporter(StoreExporter(store, keep_local=True), sender)

    queued = outbox.export([turn("t1", ask="hi", answer="hello")])
    delivered = outbox.deliver()

    assert (ExportResult(), 1, 0) == (
        queued,
        delivered.exported,
        store.outbox.counts()["pending"],
    )
    assert [("t1", ["hi", "hello"])] == sender.got
