"""Fixtures shared by the web integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from context_trace import InMemoryExporter, _config, configure


@pytest.fixture(autouse=True)
def _clean_context_trace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """Fresh configuration and pipeline per test; no CONTEXT_* variables leak in."""
    for name in list(os.environ):
        if name.startswith(("CONTEXT_", "GETCONTEXT_")):
            monkeypatch.delenv(name)
    # Never write to ~/.context_trace, even when a test uses the default store.
    monkeypatch.setenv(_config.ENV_DB, str(tmp_path / "default-store.db"))
    _config.reset()
    yield
    _config.reset()


@pytest.fixture
def exporter() -> InMemoryExporter:
    """An in-memory exporter behind the real background pipeline."""
    exp = InMemoryExporter()
    configure(exporter=exp)
    return exp
