"""The SQLite store's read models: the CLI's and the dashboard's, from one entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from context_trace._store.sqlite_store import SQLiteStore
from context_trace._store.ui_index import UIIndex

from .test_store_contract import rating, turn

NOW = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    """A store with two users' turns and one rating."""
    made = SQLiteStore(tmp_path / "store.db")
    made.write([turn("t1", at=NOW - 60), turn("t2", session="s2", user="bob", at=NOW)])
    made.write([rating("r1", turn_id="t1", at=NOW)])
    made.close()
    return made


def test_the_dashboard_is_reached_from_the_stores_reads(store: SQLiteStore) -> None:
    """store.reads().dashboard() answers the dashboard's pages over the same turns."""
    with UIIndex(store.path) as index:
        index.build()
    with store.reads() as reads:
        cli_users = sorted(u.user_id or "" for u in reads.users())
        dashboard = reads.dashboard(now=NOW + 60)
    try:
        overview = dashboard.overview("24h")
        page_users = sorted(row.user_id or "" for row in dashboard.users().items)
    finally:
        dashboard.close()

    assert (["alice", "bob"], ["alice", "bob"]) == (cli_users, page_users)
    assert (2, 1) == (overview.conversations, overview.rating_up)


def test_the_dashboard_needs_its_index(store: SQLiteStore) -> None:
    """Without the dashboard index the dashboard reads fail, naming the index."""
    with store.reads() as reads, pytest.raises(ValueError, match="dashboard index"):
        reads.dashboard()
