"""
The users' cost bounds the dashboard's index keeps priced for the first days
of its ranges, and cost per user over a range ranked by them, against figures
worked out by hand.

"Now" is Wednesday 2026-03-18 12:00 UTC, so the ranges start on 03-17 (24h:
the whole days after 03-17 12:00's day, and the rest of it), 03-12 (7d) and
02-17 (30d). ``model-a`` costs $2 per million input tokens (an override). The
turns are those of ``tests/ui/test_cost_users.py`` (input tokens only):

===  =====  ===========  =============  =========  ====
n    user   started      input tokens   cost ($)   plan
===  =====  ===========  =============  =========  ====
1    a      03-10 12:00  2,500,000      5.0        pro
2    a      03-18 10:00  50             0.0001     free
3    b      03-17 13:00  1,000          0.002      pro
4    c      03-15 12:00  1,500          0.003      free
5    c      03-18 11:00  500            0.001      pro
6    d      03-12 12:00  250            0.0005     pro
7    -      03-18 09:00  150            0.0003     pro
===  =====  ===========  =============  =========  ====

Each user's bound from a day is the cost of their turns from that day on:

- from 02-17: a 5.0001, c 0.004, b 0.002, d 0.0005, no user 0.0003;
- from 03-12: c 0.004, b 0.002, d 0.0005, no user 0.0003, a 0.0001;
- from 03-17: b 0.002, c 0.001, no user 0.0003, a 0.0001.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from context_trace._record import Usage
from context_trace._store import cost_users
from context_trace._store.analytics import Analytics
from context_trace._store.ui_index import UIIndex, default_index_path
from context_trace.analytics.pricing import Pricer
from tests.stores import write_records

from .test_cost import _at, _turn
from .test_cost_ranges import TURNS
from .test_cost_users import EXPECTED, PRICES, _records
from .test_retention import NOW

BOUNDS = {
    "2026-02-17": {"a": 5.0001, "c": 0.004, "b": 0.002, "d": 0.0005, "": 0.0003},
    "2026-03-12": {"c": 0.004, "b": 0.002, "d": 0.0005, "": 0.0003, "a": 0.0001},
    "2026-03-17": {"b": 0.002, "c": 0.001, "": 0.0003, "a": 0.0001},
}
_DAY = 86_400


def _index(path: Path, prices: Any = PRICES, now: float = NOW) -> None:
    """Bring the dashboard's index level under *prices* at *now*, as the app does."""
    with UIIndex(path, clock=lambda: now) as index:
        index.set_pricer(Pricer(prices))
        index.build()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """The turns of the table, indexed by a dashboard priced with PRICES."""
    path = write_records(tmp_path / "cost.db", _records(TURNS))
    _index(path)
    return path


def _bounds(path: Path) -> dict[str, dict[str, float]]:
    with sqlite3.connect(default_index_path(path)) as conn:
        rows = conn.execute(
            "SELECT first_day, user_key, bound FROM ui_cost_user_bound"
        ).fetchall()
    out: dict[str, dict[str, float]] = {}
    for day, user, bound in rows:
        out.setdefault(day, {})[user] = round(bound, 8)
    return out


def _rows(
    path: Path,
    range_: str = "7d",
    prices: Any = PRICES,
    segment: Any = (),
    since_day: Any = None,
    limit: int = 50,
    now: float = NOW,
) -> list[tuple[str | None, float]]:
    with Analytics(path, now=now, prices=Pricer(prices)) as analytics:
        report = analytics.cost(
            "user", range_, segment, since_day=since_day, limit=limit
        )
    return [(r.key, round(r.cost, 8)) for r in report.rows]


def _per_turn(start: float, extra: list[tuple[Any, ...]] = ()) -> list[Any]:
    """Each user's cost from *start*, summed turn by turn ($2 per million)."""
    costs: dict[str | None, float] = {}
    for _, user, when, tokens, _plan in [*TURNS, *extra]:
        if when >= start:
            costs[user] = costs.get(user, 0.0) + tokens * 2 / 1e6
    ranked = sorted(costs.items(), key=lambda kv: (-kv[1], kv[0] or ""))
    return [(user, round(cost, 8)) for user, cost in ranked]


def test_the_index_keeps_each_users_cost_bound_from_each_ranges_first_day(store):
    """Per first day of a range (24h, 7d, 30d at now), each user's cost from it on."""
    assert BOUNDS == _bounds(store)


@pytest.mark.parametrize(
    ("range_", "since_day", "start"),
    [
        ("24h", None, NOW - _DAY),
        ("7d", None, _at("03-12", 0)),
        ("30d", None, _at("02-17", 0)),
        # Whole days from a Friday and a Monday: both cut an ISO week.
        ("all", "2026-03-13", _at("03-13", 0)),
        ("all", "2026-03-16", _at("03-16", 0)),
    ],
)
def test_cost_per_user_over_ranges_that_cut_weeks_equals_the_per_turn_sums(
    store, range_, since_day, start
):
    """Ranked by the kept bounds, each user costs what their turns from the
    range's start cost, summed one by one, the costliest first."""
    from datetime import date

    day = None if since_day is None else date.fromisoformat(since_day)

    assert _per_turn(start) == _rows(store, range_, since_day=day)


def test_a_price_override_reprices_the_kept_bounds(store):
    """A dashboard started with model-a at $4/M re-prices every kept bound, and
    each user's cost over a range doubles."""
    dearer = {"model-a": {"input": 4, "output": 10}}
    _index(store, dearer)

    assert {
        day: {user: round(2 * cost, 8) for user, cost in users.items()}
        for day, users in BOUNDS.items()
    } == _bounds(store)
    assert [(u, round(2 * c, 8)) for u, c in EXPECTED["7d"]] == _rows(
        store, prices=dearer
    )


def test_turns_indexed_later_move_the_bounds_exactly(store):
    """A turn written after the index was built adds its cost to each kept day
    it falls on or after, and to its user's cost over each range."""
    # d, 03-18 11:00, 10,000 tokens ($0.02); b, 03-01 (late), 5,000 ($0.01).
    late = [(8, "d", _at("03-18", 11), 10_000, "free"),
            (9, "b", _at("03-01", 12), 5_000, "pro")]  # fmt: skip
    write_records(store, _records(late))
    _index(store)

    bounds = _bounds(store)
    assert 0.0205 == bounds["2026-03-12"]["d"]
    assert 0.02 == bounds["2026-03-17"]["d"]
    assert 0.012 == bounds["2026-02-17"]["b"]
    assert 0.002 == bounds["2026-03-12"]["b"]
    assert _per_turn(_at("03-12", 0), late) == _rows(store, "7d")
    assert _per_turn(_at("02-17", 0), late) == _rows(store, "30d")
    assert _per_turn(NOW - _DAY, late) == _rows(store, "24h")


def test_a_user_whose_turns_straddle_a_week_edge_and_a_first_day(store):
    """A user with turns on each side of the 03-12 midnight (7d's first day)
    and of the 03-16 midnight (an ISO week's first day) costs, over a range,
    the turns on its side only; the kept bound counts the turns from its day."""
    # e: 03-11 23:00 $1, 03-12 00:00 $0.1, 03-15 23:00 $0.01, 03-16 00:00 $0.001.
    edge = [(8, "e", _at("03-11", 23), 500_000, "pro"),
            (9, "e", _at("03-12", 0), 50_000, "pro"),
            (10, "e", _at("03-15", 23), 5_000, "pro"),
            (11, "e", _at("03-16", 0), 500, "pro")]  # fmt: skip
    write_records(store, _records(edge))
    _index(store)
    from datetime import date

    assert 0.111 == _bounds(store)["2026-03-12"]["e"]
    assert [("e", 0.111), *EXPECTED["7d"]] == _rows(store, "7d")
    assert ("e", 0.001) in _rows(store, "all", since_day=date(2026, 3, 16))
    assert _per_turn(_at("03-16", 0), edge) == _rows(
        store, "all", since_day=date(2026, 3, 16)
    )


def test_unpriced_calls_are_counted_and_cost_nothing_in_the_ranking(store):
    """A user whose calls have no price is ranked at no cost, after the priced
    users, with each unpriced call counted; a priced user's unpriced call too."""
    mystery = [
        _turn(8, "f", _at("03-16", 12), "pro", "model-x", Usage(9_000_000, 0, 9e6)),
        _turn(9, "b", _at("03-16", 12), "pro", "model-x", Usage(7_000_000, 0, 7e6)),
    ]
    write_records(store, mystery)
    _index(store)

    assert 0.0 == _bounds(store)["2026-03-12"]["f"]
    assert 0.002 == _bounds(store)["2026-03-12"]["b"]
    with Analytics(store, now=NOW, prices=Pricer(PRICES)) as analytics:
        report = analytics.cost("user", "7d", limit=50)
    assert [*EXPECTED["7d"], ("f", 0.0)] == [
        (r.key, round(r.cost, 8)) for r in report.rows
    ]
    unpriced = {r.key: r.unpriced_calls for r in report.rows}
    assert (1, 1, 0) == (unpriced["f"], unpriced["b"], unpriced["c"])
    assert ("model-x",) == report.unpriced_models


def test_the_kept_first_days_follow_the_clock(store):
    """A day later, the index keeps the bounds from the new ranges' first days;
    readers a day on, before the index moves, get the same figures."""
    later = NOW + _DAY
    expected = _per_turn(_at("03-13", 0))
    assert expected == _rows(store, "7d", now=later)  # kept day 03-12: a bound

    write_records(store, _records([(8, "d", _at("03-19", 11), 10_000, "free")]))
    _index(store, now=later)

    assert {"2026-02-18", "2026-03-13", "2026-03-18"} == set(_bounds(store))
    assert {"b": 0.002, "c": 0.004, "d": 0.02, "": 0.0003, "a": 0.0001} == _bounds(
        store
    )["2026-03-13"]
    assert [("d", 0.02), *expected] == _rows(store, "7d", now=later)


@pytest.mark.parametrize("step", [1, 2, 256])
def test_cost_per_user_in_a_segment_over_a_range_walks_the_bounds(
    store, monkeypatch, step
):
    """On the pro plan over 7 days, each limit gives the first users of the
    whole ranking (their pro turns' cost), however many the walk prices at a
    time."""
    monkeypatch.setattr(cost_users, "_BATCH", step)
    whole = [("b", 0.002), ("c", 0.001), ("d", 0.0005), (None, 0.0003)]
    for limit in range(1, len(whole) + 2):
        assert whole[:limit] == _rows(store, segment=(("plan", "pro"),), limit=limit)


def test_an_index_with_priced_costs_gains_the_bounds_when_first_opened(store):
    """An index priced before the bounds were kept answers as before, and the
    dashboard's first open under its prices fills them."""
    with sqlite3.connect(default_index_path(store)) as conn:
        conn.execute("DROP TABLE ui_cost_user_bound")
        conn.execute("DROP TABLE ui_cost_bound_day")
    assert EXPECTED["7d"] == _rows(store, "7d")  # read from the per-day rows

    _index(store)

    assert BOUNDS == _bounds(store)
    assert EXPECTED["7d"] == _rows(store, "7d")


def test_an_open_index_moves_its_first_days_when_the_day_turns(store):
    """The dashboard's index, left open, keeps the new ranges' first days once
    the UTC day turns, with no new turn in the store."""
    clock = [NOW]
    with UIIndex(store, clock=lambda: clock[0]) as index:
        index.set_pricer(Pricer(PRICES))
        index.build()
        clock[0] += _DAY
        index.refresh()

    assert {"2026-02-18", "2026-03-13", "2026-03-18"} == set(_bounds(store))


def test_bounds_another_version_left_behind_are_not_used(store, monkeypatch):
    """Turns priced into the cache by code that keeps no bounds (an older
    version) leave the kept bounds unused until the next refresh sums them anew."""
    from context_trace._store import cost_priced

    monkeypatch.setattr(cost_users, "_BATCH", 1)  # the walk stops at the bounds
    write_records(store, _records([(8, "d", _at("03-18", 11), 10_000, "free")]))
    with monkeypatch.context() as patch:
        patch.setattr(cost_priced, "keep_bounds", lambda *args: None)
        _index(store)

    assert [("d", 0.0205)] == _rows(store, "7d", limit=1)

    _index(store)

    assert 0.0205 == _bounds(store)["2026-03-12"]["d"]
    assert [("d", 0.0205)] == _rows(store, "7d", limit=1)
