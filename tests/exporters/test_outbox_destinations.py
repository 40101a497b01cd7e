"""One outbox, several destinations: rows per destination, claimed and counted apart."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from context_trace._exporters.base import Outcome
from context_trace._exporters.outbox import OutboxExporter
from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Record
from context_trace._store import schema
from context_trace._store.reader import SQLiteReader

from .test_sqlite import turn


class ScriptedSender:
    """A sender that answers every record with the next scripted status."""

    def __init__(self, statuses: Sequence[str]) -> None:
        self.statuses = list(statuses)
        self.sent: list[str] = []
        self.cooling_down = False

    def export_each(self, batch: Sequence[Record]) -> list[Outcome]:
        out = []
        for record in batch:
            self.sent.append(record.id)
            status = self.statuses.pop(0) if self.statuses else "delivered"
            out.append(Outcome(status, retry_after=0.0, attempts=1))  # type: ignore[arg-type]
        return out

    def shutdown(self, timeout: float | None = None) -> None:
        pass


class TestDestinations:
    def test_claims_are_per_destination(self, tmp_path: Path) -> None:
        """A record queued for two destinations is one row each, claimed apart."""
        store = SQLiteExporter(tmp_path / "o.db", keep_local=False)
        try:
            store.outbox_put([turn("c1"), turn("c2")], ("context", "otlp"))
            otlp = store.outbox_claim(10, destination="otlp")
            context = store.outbox_claim(10, destination="context")
            again = store.outbox_claim(10, destination="otlp")
        finally:
            store.shutdown()

        assert (["c1", "c2"], ["c1", "c2"], []) == (
            [r.id for _, r in otlp],
            [r.id for _, r in context],
            again,
        )

    def test_a_claim_and_its_delivery_take_few_statements(self, tmp_path: Path) -> None:
        """Leasing and deleting 1,000 rows takes a few statements, not one per row."""
        store = SQLiteExporter(tmp_path / "o.db", keep_local=False)
        statements: list[str] = []
        try:
            store.outbox_put([turn(f"c{i}") for i in range(1000)], ("context",))
            store.store.run(lambda conn: conn.set_trace_callback(statements.append))
            claimed = store.outbox_claim(1000, destination="context")
            store.outbox_done([row_id for row_id, _ in claimed])
            store.store.run(lambda conn: conn.set_trace_callback(None))
            left = store.outbox_claim(1000, destination="context")
        finally:
            store.shutdown()
        writes = [s for s in statements if s.lstrip().startswith(("UPDATE", "DELETE"))]

        assert (1000, []) == (len(claimed), left)
        assert len(writes) <= 6, f"{len(writes)} statements for 1,000 rows"

    def test_each_destination_delivers_through_its_sender(self, tmp_path: Path) -> None:
        """Each sender gets its own rows; a failure is counted for its destination."""
        path = tmp_path / "o.db"
        store = SQLiteExporter(path, keep_local=False)
        context = ScriptedSender(["delivered", "delivered"])
        otlp = ScriptedSender(["failed", "delivered"])
        outbox = OutboxExporter(store, context, senders={"otlp": otlp})
        outbox.export([turn("c1"), turn("c2")])
        result = outbox.deliver()
        outbox.shutdown()

        with SQLiteReader(path) as reader:
            counts = reader.outbox_counts()
            per = reader.outbox_destinations()

        assert (["c1", "c2"], ["c1", "c2"]) == (context.sent, otlp.sent)
        assert (3, 1) == (result.exported, result.failed)
        assert {"pending": 0, "leased": 0, "dropped": 0, "failed": 1} == counts
        assert {"otlp": {"waiting": 0, "failed": 1}} == per

    def test_v2_rows_are_for_the_context_api(self, tmp_path: Path) -> None:
        """A v2 file's outbox rows are migrated to destination 'context'."""
        path = tmp_path / "v2.db"
        conn = sqlite3.connect(path)
        schema._create_v1(conn)
        schema._add_lease_holders(conn)
        conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 2")
        from context_trace._store.codec import record_to_json

        conn.execute(
            "INSERT INTO outbox (record_id, payload, created_at) VALUES (?, ?, 0)",
            ("c1", record_to_json(turn("c1"))),
        )
        conn.commit()
        conn.close()

        store = SQLiteExporter(path, keep_local=False)
        try:
            otlp = store.outbox_claim(10, destination="otlp")
            context = store.outbox_claim(10, destination="context")
        finally:
            store.shutdown()

        assert ([], ["c1"]) == (otlp, [r.id for _, r in context])
