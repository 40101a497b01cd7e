"""
The overview's top users over 7 and 30 days from the sums the index keeps per
range, against numbers worked out by hand.

"Now" is 2026-03-18 12:30 UTC: ``7d`` counts from 03-12, ``30d`` from 02-17
(whole UTC days, today included). The turns (user, started):

====  ============  =========================================
user  started       in
====  ============  =========================================
u1    03-11 23:59   30d only (the day before 7d's first)
u1    03-12 00:00   both (7d's first day, its first second)
u2    03-12 10:00   both
u2    03-15 10:00   both
u2    03-18 09:00   both
u3    02-16 23:59   neither (the day before 30d's first)
u3    02-17 00:00   30d only (its first day)
u3    02-20 10:00   30d only
u3    03-01 10:00   30d only
u4    03-13 10:00   both
-     03-18 12:00   both (no user)
====  ============  =========================================

7d: u2 3, then u1, u4 and the no-user row 1 each (by key: '' first).
30d: u2 and u3 3 each (by key), u1 2, then '' and u4 1 each.
"""

from __future__ import annotations

import calendar
import random
import sqlite3
import time
from pathlib import Path

from context_trace._record import Conversation
from context_trace._store.analytics import Analytics
from context_trace._store.ui_index import UIIndex, default_index_path
from tests.stores import greeting, write_records

NOW = float(calendar.timegm((2026, 3, 18, 12, 30, 0)))
DAY = 86_400.0


def _at(day: str, clock: str) -> float:
    m, d = (int(p) for p in day.split("-"))
    hh, mm = (int(p) for p in clock.split(":"))
    return float(calendar.timegm((2026, m, d, hh, mm, 59 if clock == "23:59" else 0)))


TURNS = [
    ("u1", "03-11", "23:59"), ("u1", "03-12", "00:00"),
    ("u2", "03-12", "10:00"), ("u2", "03-15", "10:00"), ("u2", "03-18", "09:00"),
    ("u3", "02-16", "23:59"), ("u3", "02-17", "00:00"), ("u3", "02-20", "10:00"),
    ("u3", "03-01", "10:00"), ("u4", "03-13", "10:00"), (None, "03-18", "12:00"),
]  # fmt: skip
TOP_7D = [("u2", 3), (None, 1), ("u1", 1), ("u4", 1)]
TOP_30D = [("u2", 3), ("u3", 3), ("u1", 2), (None, 1), ("u4", 1)]


def _turns(rows: list[tuple[str | None, str, str]], first: int) -> list[Conversation]:
    return [
        greeting(first + i, user, _at(day, clock))
        for i, (user, day, clock) in enumerate(rows)
    ]


def _top(path: Path, range_: str, now: float = NOW) -> list[tuple[str | None, int]]:
    with Analytics(path, now=now) as analytics:
        return list(analytics.overview(range_).top_users)


def _kept(path: Path) -> dict[int, tuple[str, dict[str, int]]]:
    """Each kept span: (its first day, {user_key: turns})."""
    with sqlite3.connect(default_index_path(path)) as conn:
        ranges = conn.execute("SELECT span, first_day FROM uw_range").fetchall()
        return {
            span: (
                first,
                dict(
                    conn.execute(
                        "SELECT user_key, conversations FROM uw_user WHERE span = ?",
                        (span,),
                    ).fetchall()
                ),
            )
            for span, first in ranges
        }


def _by_turns(turns: list[Conversation], now: float, days: int) -> list[object]:
    """The top ten users from the turns themselves (the per-turn path)."""
    day = time.gmtime(now - (days - 1) * DAY)
    first = calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0))
    counts: dict[str, int] = {}
    for t in turns:
        if t.started_at >= first:
            key = t.user_id or ""
            counts[key] = counts.get(key, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return [(k or None, n) for k, n in top]


def _index(path: Path, clock: list[float]) -> UIIndex:
    return UIIndex(path, clock=lambda: clock[0])


def test_top_users_of_7_and_30_days_from_the_kept_sums(tmp_path: Path) -> None:
    """The kept per-range sums hold each user's turns from the range's first day, edge seconds included."""
    path = write_records(tmp_path / "traces.db", _turns(TURNS, 0))
    with _index(path, [NOW]) as index:
        index.build()
    assert _kept(path) == {
        7: ("2026-03-12", {"u1": 1, "u2": 3, "u4": 1, "": 1}),
        30: ("2026-02-17", {"u1": 2, "u2": 3, "u3": 3, "u4": 1, "": 1}),
    }
    assert TOP_7D == _top(path, "7d")
    assert TOP_30D == _top(path, "30d")


def test_turns_indexed_later_move_the_kept_sums(tmp_path: Path) -> None:
    """Turns indexed by later refreshes, some before a range's first day, move exactly its users' sums."""
    path = write_records(tmp_path / "traces.db", _turns(TURNS, 0))
    late = [
        ("u4", "03-18", "12:10"), ("u4", "03-18", "12:20"), ("u4", "03-17", "08:00"),
        ("u3", "03-12", "00:00"), ("u3", "03-11", "23:59"), ("u5", "02-16", "23:59"),
    ]  # fmt: skip
    with _index(path, [NOW]) as index:
        index.build()
        write_records(path, _turns(late[:3], 100), _turns(late[3:], 200))
        while not index.refresh(max_rows=2):
            pass
    assert _kept(path) == {
        7: ("2026-03-12", {"u1": 1, "u2": 3, "u3": 1, "u4": 4, "": 1}),
        30: ("2026-02-17", {"u1": 2, "u2": 3, "u3": 5, "u4": 4, "": 1}),
    }
    assert [("u4", 4), ("u2", 3), (None, 1), ("u1", 1), ("u3", 1)] == _top(path, "7d")
    assert [("u3", 5), ("u4", 4), ("u2", 3), ("u1", 2), (None, 1)] == _top(path, "30d")


def test_a_new_day_moves_the_first_days_on(tmp_path: Path) -> None:
    """With no new turn, the next UTC day's refresh drops the day that left each range (and its emptied users)."""
    path = write_records(tmp_path / "traces.db", _turns(TURNS, 0))
    clock = [NOW]
    with _index(path, clock) as index:
        index.build()
        clock[0] = NOW + DAY  # 03-19: 7d from 03-13, 30d from 02-18
        index.refresh()
    assert _kept(path) == {
        7: ("2026-03-13", {"u2": 2, "u4": 1, "": 1}),
        30: ("2026-02-18", {"u1": 2, "u2": 3, "u3": 2, "u4": 1, "": 1}),
    }
    assert [("u2", 2), (None, 1), ("u4", 1)] == _top(path, "7d", NOW + DAY)
    assert [("u2", 3), ("u1", 2), ("u3", 2), (None, 1), ("u4", 1)] == _top(
        path, "30d", NOW + DAY
    )


def test_the_clock_going_back_or_jumping_recounts_the_ranges(tmp_path: Path) -> None:
    """A clock moved back a day, then 40 days on, gives the sums of the turns in each range."""
    path = write_records(tmp_path / "traces.db", _turns(TURNS, 0))
    clock = [NOW]
    turns = _turns(TURNS, 0)
    with _index(path, clock) as index:
        index.build()
        for now in (NOW - DAY, NOW + 40 * DAY, NOW):
            clock[0] = now
            index.refresh()
            assert _by_turns(turns, now, 7) == _top(path, "7d", now)
            assert _by_turns(turns, now, 30) == _top(path, "30d", now)
    assert _kept(path)[7] == ("2026-03-12", {"u1": 1, "u2": 3, "u4": 1, "": 1})


def test_an_index_without_the_kept_sums_gains_them(tmp_path: Path) -> None:
    """An index from before the per-range sums gains them, counted from its per-user days."""
    path = write_records(tmp_path / "traces.db", _turns(TURNS, 0))
    with _index(path, [NOW]) as index:
        index.build()
    with sqlite3.connect(default_index_path(path)) as conn:
        for table in ("uw_meta", "uw_range", "uw_user"):
            conn.execute(f"DROP TABLE {table}")
    with _index(path, [NOW]) as index:  # opened and refreshed, as the dashboard does
        index.refresh()
    assert _kept(path)[30] == (
        "2026-02-17",
        {"u1": 2, "u2": 3, "u3": 3, "u4": 1, "": 1},
    )
    assert TOP_30D == _top(path, "30d")


def test_turns_indexed_by_an_older_dashboard_are_counted(tmp_path: Path) -> None:
    """Sums that stop short of the turns indexed (an older version refreshed the index) are counted again."""
    path = write_records(tmp_path / "traces.db", _turns(TURNS, 0))
    with _index(path, [NOW]) as index:
        index.build()
        write_records(path, _turns([("u4", "03-18", "12:10")], 100))
        index.build()
    with sqlite3.connect(default_index_path(path)) as conn:
        # As an older version leaves it: the last turn indexed, not in the sums.
        conn.execute("UPDATE uw_meta SET value = value - 1 WHERE key = 'last_n'")
        conn.execute(
            "UPDATE uw_user SET conversations = conversations - 1 WHERE user_key = 'u4'"
        )
    with _index(path, [NOW]) as index:  # the next dashboard start
        index.refresh()
    assert _kept(path)[7] == ("2026-03-12", {"u1": 1, "u2": 3, "u4": 2, "": 1})
    assert [("u2", 3), ("u4", 2), (None, 1), ("u1", 1)] == _top(path, "7d")


def test_many_users_over_many_refreshes_and_days_equal_the_turns(
    tmp_path: Path,
) -> None:
    """Random turns over 40 days, indexed in small chunks as the days pass, rank as the turns themselves do."""
    rng = random.Random(5)
    turns = [
        greeting(
            i,
            None if rng.random() < 0.1 else f"u{rng.randrange(40):02d}",
            NOW - rng.uniform(-2, 40) * DAY,
        )
        for i in range(1500)
    ]
    path = write_records(tmp_path / "traces.db", turns[:500])
    clock = [NOW - 3 * DAY]
    with _index(path, clock) as index:
        index.build()
        for step, batch in enumerate((turns[500:1000], turns[1000:])):
            write_records(path, batch)
            clock[0] += DAY
            while not index.refresh(max_rows=97):
                pass
            written = turns[: 1000 + 500 * step]
            for days in (7, 30):
                assert _by_turns(written, clock[0], days) == _top(
                    path, f"{days}d", clock[0]
                )
