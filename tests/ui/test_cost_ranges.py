"""
Cost per session over a range, the costliest first, against figures worked out
by hand.

"Now" is Wednesday 2026-03-18 12:00 UTC; ``model-a`` costs $2 per million input
tokens (an override). Sessions (``s-<user>``) and their turns:

=====  ===========  =============  =========  ====
user   started      input tokens   cost ($)   plan
=====  ===========  =============  =========  ====
a      03-10 12:00  2,500,000      5.0        pro
a      03-18 10:00  50             0.0001     free
b      03-17 13:00  1,000          0.002      pro
c      03-15 12:00  1,500          0.003      free
c      03-18 11:00  500            0.001      pro
d      03-12 12:00  250            0.0005     pro
-      03-18 09:00  150            0.0003     pro  (no user: no session)
=====  ===========  =============  =========  ====

"7d" is the whole days from 03-12: s-c 0.004, s-b 0.002, s-d 0.0005, no session
0.0003, s-a 0.0001 (its $5 turn is before the range). "24h" is from 03-17 12:00:
s-b 0.002, s-c 0.001, no session 0.0003, s-a 0.0001. On the pro plan only, s-a
costs $5 for all time and nothing in either range, s-c only its 03-18 turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from context_trace._record import Usage
from context_trace._store import cost_sources
from context_trace._store.analytics import Analytics
from context_trace._store.ui_index import UIIndex
from context_trace.analytics.pricing import Pricer
from tests.stores import write_records

from .test_cost import _at, _turn
from .test_retention import NOW

PRICES = {"model-a": {"input": 2, "output": 10}}
WEEK = [("s-c", 0.004), ("s-b", 0.002), ("s-d", 0.0005), (None, 0.0003),
        ("s-a", 0.0001)]  # fmt: skip
DAY = [("s-b", 0.002), ("s-c", 0.001), (None, 0.0003), ("s-a", 0.0001)]


# (id, user, time, tokens, plan): one model, input tokens only.
TURNS = [
    (1, "a", _at("03-10", 12), 2_500_000, "pro"),
    (2, "a", _at("03-18", 10), 50, "free"),
    (3, "b", _at("03-17", 13), 1_000, "pro"),
    (4, "c", _at("03-15", 12), 1_500, "free"),
    (5, "c", _at("03-18", 11), 500, "pro"),
    (6, "d", _at("03-12", 12), 250, "pro"),
    (7, None, _at("03-18", 9), 150, "pro"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The turns of the table, indexed and priced under PRICES."""
    path = write_records(
        tmp_path_factory.mktemp("ranges") / "cost.db",
        [
            _turn(n, user, when, plan, "model-a", Usage(tokens, 0, tokens))
            for n, user, when, tokens, plan in TURNS
        ],
    )
    with UIIndex(path) as index:
        index.set_pricer(Pricer(PRICES))
        index.build()
    return path


def _rows(
    path: Path, range_: str, limit: int | None, segment: Any = ()
) -> list[tuple[str | None, float]]:
    with Analytics(path, now=NOW, prices=Pricer(PRICES)) as analytics:
        report = analytics.cost("session", range_, segment, limit=limit)
    return [(r.key, round(r.cost, 8)) for r in report.rows]


@pytest.mark.parametrize("step", [1, 2, 128])
@pytest.mark.parametrize(("range_", "expected"), [("7d", WEEK), ("24h", DAY)])
def test_the_costliest_sessions_of_a_range(store, monkeypatch, step, range_, expected):
    """Each limit gives the range's costliest sessions by their cost in the range,
    however many sessions the walk reads at a time; a session whose costly turn is
    before the range ranks by its turns in it."""
    monkeypatch.setattr(cost_sources, "_WALK_BATCH", step)

    assert expected == _rows(store, range_, None)
    for limit in range(1, len(expected) + 2):
        assert expected[:limit] == _rows(store, range_, limit)


PRO = {
    "all": [("s-a", 5.0), ("s-b", 0.002), ("s-c", 0.001), ("s-d", 0.0005),
            (None, 0.0003)],
    "7d": [("s-b", 0.002), ("s-c", 0.001), ("s-d", 0.0005), (None, 0.0003)],
    "24h": [("s-b", 0.002), ("s-c", 0.001), (None, 0.0003)],
}  # fmt: skip


@pytest.mark.parametrize(("step", "most"), [(1, 1_500), (2, 1_500), (128, 1_500),
                                            (1, 2)])  # fmt: skip
@pytest.mark.parametrize("range_", ["all", "7d", "24h"])
def test_the_costliest_sessions_of_a_segment(store, monkeypatch, step, most, range_):
    """In a segment (plan:pro), each limit gives the sessions costliest by their
    turns in it and the range, whether the walk finishes or leaves it to the turns."""
    monkeypatch.setattr(cost_sources, "_WALK_BATCH", step)
    monkeypatch.setattr(cost_sources, "_WALK_MAX", most)
    expected = PRO[range_]

    assert expected == _rows(store, range_, None, (("plan", "pro"),))
    for limit in range(1, len(expected) + 2):
        assert expected[:limit] == _rows(store, range_, limit, (("plan", "pro"),))
