"""
Fixtures for the core tests: captured records, a chain, and clean state.

``tests/conftest.py`` resets the configuration and the ``CONTEXT_*`` environment
around every test; this adds what the core tests also need to start clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.runnables import Runnable

from context_trace import _config, uninstrument_threads
from context_trace._scopes import current_scope
from context_trace.testing import CapturedRecords, capture

from ._helpers import echo_chain

# LangSmith switches: they would make run_metadata="auto" behave differently and
# send traces over the network.
_TRACING_ENV = (
    "LANGSMITH_TRACING",
    "LANGSMITH_TRACING_V2",
    "LANGCHAIN_TRACING_V2",
    "LANGCHAIN_TRACING",
)


@pytest.fixture(autouse=True)
def _clean_core_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No tracing env, no thread instrumentation, and no scope left active."""
    for name in _TRACING_ENV:
        monkeypatch.delenv(name, raising=False)
    _config.reset()  # re-read the environment without the tracing switches
    yield
    uninstrument_threads()
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
