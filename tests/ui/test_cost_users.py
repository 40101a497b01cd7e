"""
Cost per user over a range from the index's per-user, per-day, per-model token
sums, against figures worked out by hand.

"Now" is Wednesday 2026-03-18 12:00 UTC; ``model-a`` costs $2 per million input
tokens (an override). The turns (input tokens only):

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

"7d" is the whole days from 03-12: c 0.004, b 0.002, d 0.0005, no user 0.0003,
a 0.0001 (its $5 turn is before the range). "30d" has every turn: a 5.0001 first.
"24h" is from 03-17 12:00: b 0.002, c 0.001, no user 0.0003, a 0.0001.
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
from .test_retention import NOW

PRICES = {"model-a": {"input": 2, "output": 10}}
EXPECTED = {
    "7d": [("c", 0.004), ("b", 0.002), ("d", 0.0005), (None, 0.0003), ("a", 0.0001)],
    "30d": [("a", 5.0001), ("c", 0.004), ("b", 0.002), ("d", 0.0005), (None, 0.0003)],
    "24h": [("b", 0.002), ("c", 0.001), (None, 0.0003), ("a", 0.0001)],
}
EXPECTED["all"] = EXPECTED["30d"]  # fmt: skip


def _records(turns: list[tuple[Any, ...]]) -> list[Any]:
    return [
        _turn(n, user, when, plan, "model-a", Usage(tokens, 0, tokens))
        for n, user, when, tokens, plan in turns
    ]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """The turns of the table, indexed."""
    path = write_records(tmp_path / "cost.db", _records(TURNS))
    with UIIndex(path) as index:
        index.build()
    return path


def _rows(
    path: Path, range_: str, prices: Any = PRICES, segment: Any = ()
) -> list[tuple[str | None, float]]:
    with Analytics(path, now=NOW, prices=Pricer(prices)) as analytics:
        report = analytics.cost("user", range_, segment, limit=50)
    return [(r.key, round(r.cost, 8)) for r in report.rows]


def _day_sums(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(default_index_path(path)) as conn:
        return conn.execute(
            "SELECT day, user_key, model, turns, calls, input FROM ui_cost_user_day"
            " ORDER BY day, user_key, model"
        ).fetchall()


def test_the_index_keeps_each_users_token_sums_per_day_and_model(store):
    """The index holds, per UTC day, user and model, the sums of its turns' tokens."""
    assert [
        ("2026-03-10", "a", "model-a", 1, 1, 2_500_000),
        ("2026-03-12", "d", "model-a", 1, 1, 250),
        ("2026-03-15", "c", "model-a", 1, 1, 1_500),
        ("2026-03-17", "b", "model-a", 1, 1, 1_000),
        ("2026-03-18", "", "model-a", 1, 1, 150),
        ("2026-03-18", "a", "model-a", 1, 1, 50),
        ("2026-03-18", "c", "model-a", 1, 1, 500),
    ] == _day_sums(store)


@pytest.mark.parametrize("range_", ["7d", "30d", "24h", "all"])
def test_cost_per_user_of_a_range_is_the_sum_of_its_turns_costs(store, range_):
    """Each user costs what their turns in the range cost, the costliest first."""
    assert EXPECTED[range_] == _rows(store, range_)


def test_cost_per_user_in_a_segment_over_a_range(store):
    """On the pro plan over 7 days, each user costs what their pro turns in it cost."""
    assert [("b", 0.002), ("c", 0.001), ("d", 0.0005), (None, 0.0003)] == _rows(
        store, "7d", segment=(("plan", "pro"),)
    )


@pytest.mark.parametrize("range_", ["7d", "24h"])
def test_a_price_override_reprices_cost_per_user_of_a_range(store, range_):
    """An override of model-a at $4/M doubles every user's cost when read."""
    dearer = {"model-a": {"input": 4, "output": 10}}
    doubled = [(user, round(2 * cost, 8)) for user, cost in EXPECTED[range_]]

    assert doubled == _rows(store, range_, prices=dearer)


def test_turns_indexed_later_move_cost_per_user_exactly(store):
    """A turn written after the index was built counts in its user's day and range."""
    # d's second turn: 10,000 tokens, $0.02, on 03-18.
    write_records(store, _records([(8, "d", _at("03-18", 11), 10_000, "free")]))
    with UIIndex(store) as index:
        index.refresh()

    assert [("d", 0.0205), ("c", 0.004), ("b", 0.002), (None, 0.0003),
            ("a", 0.0001)] == _rows(store, "7d")  # fmt: skip
    assert [("d", 0.02), ("b", 0.002), ("c", 0.001), (None, 0.0003),
            ("a", 0.0001)] == _rows(store, "24h")  # fmt: skip
    assert ("2026-03-18", "d", "model-a", 1, 1, 10_000) in _day_sums(store)


def test_an_index_without_the_per_user_day_sums_gains_them(store):
    """An index from before the per-user, per-day sums gains them from its turns' rows."""
    before = _day_sums(store)
    with sqlite3.connect(default_index_path(store)) as conn:
        conn.execute("DROP TABLE ui_cost_user_day")
    with UIIndex(store):  # opened, as the dashboard and the CLI open it
        pass

    assert EXPECTED["7d"] == _rows(store, "7d")
    assert before == _day_sums(store)


def test_each_limit_gives_the_costliest_users_however_the_walk_steps(
    store, monkeypatch
):
    """With a user whose day reports more cached than input tokens (priced above
    their cost by the walk's bound), each limit gives the first users of the
    whole ranking, however many users the walk prices at a time."""
    # e: 03-13, 100 input tokens of which 50,000 read from the cache (clamped
    # at 0 uncached); 03-14, 50,000 input tokens. Cached reads cost $0.01/M:
    # e's tokens cost (50,100 - 50,000) * $2/M + 50,000 * $0.01/M = $0.0007.
    write_records(
        store,
        [
            _turn(8, "e", _at("03-13", 12), "pro", "model-a",
                  Usage(100, 0, 100, 50_000)),
            _turn(9, "e", _at("03-14", 12), "pro", "model-a",
                  Usage(50_000, 0, 50_000)),
        ],
    )  # fmt: skip
    with UIIndex(store) as index:
        index.refresh()
    prices = {"model-a": {"input": 2, "output": 10, "cache_read": 0.01}}
    whole = [("c", 0.004), ("b", 0.002), ("e", 0.0007), ("d", 0.0005),
             (None, 0.0003), ("a", 0.0001)]  # fmt: skip
    with Analytics(store, now=NOW, prices=Pricer(prices)) as analytics:
        report = analytics.cost("user", "7d")
    assert whole == [(r.key, round(r.cost, 8)) for r in report.rows]

    for step in (1, 2, 256):
        monkeypatch.setattr(cost_users, "_BATCH", step)
        for limit in range(1, len(whole) + 2):
            with Analytics(store, now=NOW, prices=Pricer(prices)) as analytics:
                report = analytics.cost("user", "7d", limit=limit)
            assert whole[:limit] == [(r.key, round(r.cost, 8)) for r in report.rows]
