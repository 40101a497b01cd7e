"""The dashboard on a store in a directory it cannot write (a copy, a read-only mount)."""

from __future__ import annotations

from pathlib import Path

from tests.read_only import assert_read_only, no_write_override, read_only

from .conftest import Server, build_store


def test_dashboard_serves_a_store_in_a_read_only_directory(tmp_path: Path):
    """Pages and API read the store; the index goes to the user's cache directory."""
    handed = tmp_path / "handed-over"
    handed.mkdir()
    db = handed / "traces.db"
    build_store(db)
    cache = tmp_path / "cache"

    with read_only(handed):
        assert_read_only(handed)
        server = Server(
            db, env={"XDG_CACHE_HOME": str(cache)}, preexec_fn=no_write_override
        )
        try:
            pages = [server.get(page)[0] for page in ("/", "/users", "/conversations")]
            users = server.api("/api/users?sort=user&order=asc")
            found = server.api("/api/conversations?q=zebra")
            session = server.api("/api/session?id=s-a1")
        finally:
            code, err = server.stop()

    assert [200, 200, 200] == pages
    assert [None, "alice", "bob", "many"] == [u["user_id"] for u in users["items"]]
    assert ["c-n1"] == [c["conversation_id"] for c in found["items"]]
    assert ["c-a1", "c-a2", "c-a3"] == [t["conversation_id"] for t in session["turns"]]
    assert (0, ["traces.db"]) == (code, sorted(p.name for p in handed.iterdir()))
    assert [] != list((cache / "context-trace").glob("traces.db-*.ui-index")), err
