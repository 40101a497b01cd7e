"""
The store factories the contract suite runs against.

Each factory builds an empty store for one test; a second implementation adds
its own factory (and its ``pytest`` parameter) to ``STORES``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from context_trace._store.base import Store
from context_trace._store.sqlite_store import SQLiteStore


def _sqlite(tmp_path: Path) -> Store:
    return SQLiteStore(tmp_path / "store.db")


#: Store name -> factory of an empty store in a test's temporary directory.
STORES: dict[str, Callable[[Path], Store]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store of each implementation, closed after the test."""
    made = STORES[request.param](tmp_path)
    try:
        yield made
    finally:
        made.close(5.0)
