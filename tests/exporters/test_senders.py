"""The one sender factory that configure and replay share."""

from __future__ import annotations

from pathlib import Path

import pytest

import context_trace as ct
from context_trace._exporters.context_api import ContextAPIExporter
from context_trace._exporters.outbox import OutboxExporter
from context_trace._exporters.senders import build_senders
from context_trace._store.sqlite_store import SQLiteStore


def test_a_sender_per_destination_in_order(tmp_path: Path) -> None:
    """context and otlp each get their sender, in the order asked."""
    pytest.importorskip("opentelemetry")
    from context_trace._exporters.otlp import OTLPSender

    store = SQLiteStore(tmp_path / "store.db")
    senders = build_senders(
        ["otlp", "context"],
        transcripts=store,
        token="t0k",
        endpoint="http://127.0.0.1:9",
        otlp_endpoint="http://127.0.0.1:9/v1/traces",
    )
    try:
        assert (["otlp", "context"], OTLPSender, ContextAPIExporter) == (
            list(senders),
            type(senders["otlp"]),
            type(senders["context"]),
        )
    finally:
        for sender in senders.values():
            sender.shutdown(1.0)


def test_an_unknown_destination_is_named() -> None:
    """A destination other than context, otlp or postgresql is a ValueError naming it."""
    with pytest.raises(
        ValueError,
        match="destination must be 'context', 'otlp' or 'postgresql', got 'kafka'",
    ):
        build_senders(["kafka"])


def test_the_postgresql_destination_needs_a_url() -> None:
    """Without store_url the postgresql sender is refused, naming store_url."""
    with pytest.raises(ValueError, match="store_url is required"):
        build_senders(["postgresql"])


def test_the_context_destination_needs_a_token() -> None:
    """Without a token the context sender is refused, naming the token."""
    with pytest.raises(ValueError, match="token is required"):
        build_senders(["context"], endpoint="http://127.0.0.1:9")


def test_configure_builds_its_senders_with_the_factory(tmp_path: Path) -> None:
    """configure(token=...) gives the outbox the factory's Context sender over its store."""
    ct.configure(token="t0k", endpoint="http://127.0.0.1:9", db_path=tmp_path / "x.db")
    try:
        exporter = ct._runtime._pipeline().exporter
        assert isinstance(exporter, OutboxExporter)
        assert ["context"] == list(exporter.senders)
        assert isinstance(exporter.senders["context"], ContextAPIExporter)
    finally:
        ct.shutdown(1.0)
