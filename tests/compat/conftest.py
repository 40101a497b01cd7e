"""Fixtures for the compatibility tests: clean global state and an offline env."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from context_trace import _config, _runtime
from context_trace._scopes import current_scope
from context_trace.testing import CapturedRecords, capture

# LangSmith/LangChain switches that would turn on tracing (and network) from the
# environment of whoever runs the tests.
_TRACING_ENV = (
    "LANGSMITH_TRACING",
    "LANGSMITH_TRACING_V2",
    "LANGCHAIN_TRACING_V2",
    "LANGCHAIN_TRACING",
    "LANGSMITH_ENDPOINT",
    "LANGCHAIN_ENDPOINT",
    "LANGSMITH_API_KEY",
    "LANGCHAIN_API_KEY",
)


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Fresh config from a clean environment; nothing leaks between tests."""
    for name in list(os.environ):
        if name.startswith(("CONTEXT_", "GETCONTEXT_")):
            monkeypatch.delenv(name)
    for name in _TRACING_ENV:
        monkeypatch.delenv(name, raising=False)
    # Never write to the real ~/.context_trace store, whatever a test does.
    monkeypatch.setenv(_config.ENV_DB, str(tmp_path / "traces.db"))
    _runtime.reset()
    yield
    _runtime.reset()
    assert current_scope() is None, "a test leaked an active scope"


@pytest.fixture
def records() -> Iterator[CapturedRecords]:
    """Every record produced during the test, converted synchronously."""
    with capture() as captured:
        yield captured
