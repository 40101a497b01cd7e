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

from context_trace.testing import CapturedRecords, capture

from ._helpers import echo_chain


@pytest.fixture
def records() -> Iterator[CapturedRecords]:
    """Every record produced during the test, converted synchronously."""
    with capture() as captured:
        yield captured


@pytest.fixture
def chain() -> Runnable[dict[str, Any], str]:
    """``prompt | ParrotFakeChatModel | StrOutputParser``: answers with the question."""
    return echo_chain()
