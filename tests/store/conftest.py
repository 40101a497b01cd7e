"""
The store factories the contract suite runs against.

Each factory builds an empty store for one test; a second implementation adds
its own factory (and its ``pytest`` parameter) to ``STORES``. Where stores
differ by design, the suite's fixtures say which stores an operation applies
to, and why (``WITH_OUTBOX``, ``RESOLVE_WHEN_WRITTEN``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from context_trace._store.base import ReportStore, Store
from context_trace._store.sqlite_store import SQLiteStore


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> ReportStore:
    return SQLiteStore(tmp_path / "store.db")


def _postgresql(request: pytest.FixtureRequest, tmp_path: Path) -> ReportStore:
    from context_trace._store.postgres import PostgresStore

    # A fresh database on the session's real server (tests/postgres/fixtures.py).
    url: str = request.getfixturevalue("pg_url")
    return PostgresStore(url, host="contract-host")


#: Store name -> factory of an empty store for one test.
STORES: dict[str, Callable[[pytest.FixtureRequest, Path], ReportStore]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
}

#: The stores with an outbox of their own. A PostgreSQL store is a destination:
#: each host's outbox is its local SQLite file, which delivers to it.
WITH_OUTBOX = ("sqlite",)

#: The stores that resolve (or refuse) a rating when it is written, and say so
#: in the write's result. PostgreSQL receives ratings from several hosts, maybe
#: before the turn they rate, so it resolves them when read (same rules).
RESOLVE_WHEN_WRITTEN = ("sqlite",)


def _made(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ReportStore]:
    made = STORES[name](request, tmp_path)
    try:
        yield made
    finally:
        made.close(5.0)


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReportStore]:
    """An empty store of each implementation, closed after the test."""
    yield from _made(request.param, request, tmp_path)


@pytest.fixture(params=WITH_OUTBOX)
def outbox_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store of each implementation that has an outbox."""
    for made in _made(request.param, request, tmp_path):
        assert isinstance(made, Store)
        yield made


@pytest.fixture(params=RESOLVE_WHEN_WRITTEN)
def resolving_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ReportStore]:
    """An empty store of each implementation that resolves ratings when written."""
    yield from _made(request.param, request, tmp_path)
