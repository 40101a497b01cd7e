"""
Helper process for ``test_sqlite.py``: write records into a shared SQLite store.

Usage: ``python _sqlite_writer.py PATH PREFIX COUNT BATCH``. The process imports
everything, then waits for a line on stdin so that the test can start several
writers at the same moment. It exits 0 when every batch was stored, else 1.
"""

from __future__ import annotations

import sys

from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Message

T0 = 1_700_000_000.0
SHARED_SESSIONS = 5


def records(prefix: str, count: int) -> list[Conversation]:
    """Turns with unique text, spread over sessions every writer shares."""
    return [
        Conversation(
            id=f"{prefix}-{i}",
            user_id=f"user-{i % 7}",
            session_id=f"shared-{i % SHARED_SESSIONS}",
            started_at=T0 + i,
            ended_at=T0 + i + 0.25,
            messages=(
                Message("user", f"{prefix} question {i}"),
                Message("tool", "result", name="search", tool_input="{}"),
                Message("assistant", f"{prefix} answer {i}"),
            ),
        )
        for i in range(count)
    ]


def main(argv: list[str]) -> int:
    path, prefix, count, batch = argv[0], argv[1], int(argv[2]), int(argv[3])
    todo = records(prefix, count)
    exporter = SQLiteExporter(path, busy_timeout=60.0)
    sys.stdin.readline()  # the start signal
    failed = 0
    try:
        for start in range(0, count, batch):
            failed += exporter.export(todo[start : start + batch]).failed
    finally:
        exporter.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
