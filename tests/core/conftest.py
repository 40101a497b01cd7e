"""Fixtures for the core tests: clean global state, captured records, chains."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import Runnable

from context_trace import _config, _handler, uninstrument_threads
from context_trace._scopes import current_scope
from context_trace.testing import CapturedRecords, capture

from ._helpers import echo_chain


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Fresh config from a clean environment; nothing leaks between tests."""
    for name in list(os.environ):
        if name.startswith(("CONTEXT_", "GETCONTEXT_")):
            monkeypatch.delenv(name)
    # Never write to the real ~/.context_trace store, whatever a test does.
    monkeypatch.setenv(_config.ENV_DB, str(tmp_path / "traces.db"))
    _config.reset()
    yield
    uninstrument_threads()
    _config.reset()
    _handler._CLAIMED.clear()
    assert current_scope() is None, "a test leaked an active scope"


@pytest.fixture
def records() -> Iterator[CapturedRecords]:
    """Every record produced during the test, converted synchronously."""
    with capture() as captured:
        yield captured


@pytest.fixture
def chain() -> Runnable[dict[str, Any], str]:
    """``prompt | ParrotFakeChatModel | StrOutputParser``: answers with the question."""
    return echo_chain()
