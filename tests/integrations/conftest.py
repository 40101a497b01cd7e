"""Fixtures for the web integration tests (the clean-state fixture is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from context_trace import InMemoryExporter, configure


@pytest.fixture
def exporter() -> InMemoryExporter:
    """An in-memory exporter behind the real background pipeline."""
    exp = InMemoryExporter()
    configure(exporter=exp)
    return exp
