"""
Write ``store_0_1.sqlite``, the store file the compatibility tests read.

The committed file was written by context_trace 0.1.0 (commit d6eee16), with
that release on the path::

    git archive 0.1.0 context_trace | tar -x -C /tmp/ct01
    PYTHONPATH=/tmp/ct01 python tests/exporters/data/write_store_0_1.py OUT

It holds two users, a session of two turns (the second re-sends the first's
history), a turn without a session, a rating, and two records left in the outbox.
"""

from __future__ import annotations

import sys

from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Feedback, Message

T0 = 1_700_000_000.0

FIRST = Conversation(
    id="c1",
    user_id="alice",
    session_id="s1",
    started_at=T0,
    ended_at=T0 + 1.5,
    messages=(Message("user", "hi"), Message("assistant", "hello")),
    metadata={"model": "fake-model", "total_tokens": "12"},
)
SECOND = Conversation(
    id="c2",
    user_id="alice",
    session_id="s1",
    started_at=T0 + 10,
    ended_at=T0 + 11,
    messages=(
        Message("user", "hi"),
        Message("assistant", "hello"),
        Message("user", "weather?"),
        Message("tool", "sunny", name="weather", tool_input='{"city": "Paris"}'),
        Message("assistant", "sunny"),
    ),
)
LONE = Conversation(
    id="c3",
    user_id="bob",
    session_id=None,
    started_at=T0 + 86_400,
    ended_at=T0 + 86_400.25,
    messages=(Message("user", "ping"), Message("assistant", "pong")),
    error="TimeoutError: slow",
)
RATING = Feedback(
    id="f1", session_id="s1", user_id="alice", rating=1, created_at=T0 + 12
)
QUEUED = (
    Conversation(
        id="q1",
        user_id="bob",
        session_id="s2",
        started_at=T0 + 100,
        ended_at=T0 + 101,
        messages=(Message("user", "queued"), Message("assistant", "later")),
    ),
    Feedback(id="q2", session_id="s2", user_id="bob", rating=-1, created_at=T0 + 102),
)


def main(path: str) -> None:
    """Write the records into a new store at *path*."""
    store = SQLiteExporter(path)
    result = store.export([FIRST, SECOND, LONE, RATING])
    if result.failed:
        raise SystemExit(f"export failed: {result}")
    store.outbox_put(QUEUED)
    store.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
