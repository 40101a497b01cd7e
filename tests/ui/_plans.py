"""The query plans of the statements a call runs: how a read is done, which
tests check where a change is about work rather than results."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def statement_plans(conn: sqlite3.Connection, call: Callable[[], object]) -> list[str]:
    """The ``EXPLAIN QUERY PLAN`` lines of every query *call* runs on *conn*."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
    return [
        row[3]
        for sql in statements
        if sql.lstrip().upper().startswith(("SELECT", "WITH"))
        for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")
    ]
