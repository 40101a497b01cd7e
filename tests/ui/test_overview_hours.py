"""
The overview's 24 hours from the per-hour sums, against numbers worked out by hand.

"Now" is 2026-03-18 12:30 UTC, so the range starts at 03-17 12:30, mid-hour.
The turns (user, started, latency ms, failed):

====  ====  ============  =======  ======
turn  user  started       latency  failed
====  ====  ============  =======  ======
a     u1    03-17 12:10   900      no      before the range
b     u1    03-17 12:40   40       no      the partial first hour (read from the store)
c     u2    03-17 13:05   10       yes     whole hours (read from the sums)
d     u2    03-18 09:00   30       no
e     -     03-18 12:20   20       no
f     u3    03-18 12:25   50       no      appended after the index was built
====  ====  ============  =======  ======

Before f: 4 turns, 1 error; latencies 10, 20, 30, 40: p50 (nearest rank 2) 20,
p95 (rank 4) 40; 03-17 has b, c (users u1, u2), 03-18 has d, e (u2, no user);
top users u2 (2), then u1 and the no-user row (1 each, by key: '' first).
After f: 5 turns; latencies 10 ... 50: p50 (rank 3) 30, p95 (rank 5) 50.
"""

from __future__ import annotations

import calendar
from pathlib import Path

from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Message
from context_trace._store.analytics import Analytics
from context_trace._store.ui_index import UIIndex

NOW = float(calendar.timegm((2026, 3, 18, 12, 30, 0)))


def _turn(name: str, user: str | None, day: str, clock: str, ms: int, failed: bool):
    m, d = (int(p) for p in day.split("-"))
    hh, mm = (int(p) for p in clock.split(":"))
    started = float(calendar.timegm((2026, m, d, hh, mm, 0)))
    return Conversation(
        id=name, user_id=user, session_id=None, started_at=started,
        ended_at=started + ms / 1000,
        messages=(Message("user", "hi"), Message("assistant", "hello")),
        error="boom" if failed else None,
    )  # fmt: skip


TURNS = [
    _turn("a", "u1", "03-17", "12:10", 900, False),
    _turn("b", "u1", "03-17", "12:40", 40, False),
    _turn("c", "u2", "03-17", "13:05", 10, True),
    _turn("d", "u2", "03-18", "09:00", 30, False),
    _turn("e", None, "03-18", "12:20", 20, False),
]


def _write(path: Path, turns: list[Conversation]) -> None:
    store = SQLiteExporter(path)
    assert store.export(turns).failed == 0
    store.shutdown()


def _figures(path: Path) -> tuple[object, ...]:
    with Analytics(path, now=NOW) as analytics:
        o = analytics.overview("24h")
    return (
        o.conversations, o.errors, o.latency_p50_ms, o.latency_p95_ms,
        [(d.day, d.conversations, d.active_users) for d in o.days],
        list(o.top_users),
    )  # fmt: skip


def test_24h_from_the_hours_and_its_partial_first_hour(tmp_path: Path) -> None:
    """Whole hours from the sums, the first half hour from the store: exact figures."""
    path = tmp_path / "traces.db"
    _write(path, TURNS)
    with UIIndex(path) as index:
        index.build()
    assert _figures(path) == (
        4, 1, 20, 40,
        [("2026-03-17", 2, 2), ("2026-03-18", 2, 2)],
        [("u2", 2), (None, 1), ("u1", 1)],
    )  # fmt: skip


def test_turns_appended_after_the_build_move_the_hours(tmp_path: Path) -> None:
    """A turn indexed by a later refresh moves the count and the percentiles."""
    path = tmp_path / "traces.db"
    _write(path, TURNS)
    with UIIndex(path) as index:
        index.build()
        _write(path, [_turn("f", "u3", "03-18", "12:25", 50, False)])
        index.build()
        tables = dict(
            index._conn.execute(
                "SELECT hour, conversations FROM uh_hour ORDER BY hour"
            ).fetchall()
        )
    assert _figures(path) == (
        5, 1, 30, 50,
        [("2026-03-17", 2, 2), ("2026-03-18", 3, 3)],
        [("u2", 2), (None, 1), ("u1", 1), ("u3", 1)],
    )  # fmt: skip
    # Turn a's hour and the ones after it, up to f's (12:00 on 03-18: e and f).
    assert tables[int(NOW // 3600)] == 2
