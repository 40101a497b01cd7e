"""The index's per-hour cost sums and the 24-hour cost by model read from them."""

from __future__ import annotations

import sqlite3

from context_trace._record import Conversation, Usage
from context_trace._store.analytics import Analytics
from context_trace._store.ui_index import UIIndex
from tests.stores import write_records

from .test_cost import PRICES, _at, _turn
from .test_retention import NOW  # 2026-03-18 12:00 UTC


def _turns() -> list[Conversation]:
    return [
        # 24h from NOW starts at 03-17 12:00 exactly: 11:59:59 is out.
        _turn(1, "u1", _at("03-17", 12) - 1, "pro", "model-a", Usage(1000, 0, 1000)),
        _turn(2, "u1", _at("03-17", 12), "pro", "model-a", Usage(100, 0, 100)),
        _turn(3, "u2", _at("03-17", 23) + 3599, "pro", "model-a", Usage(10, 0, 10)),
        _turn(4, "u2", _at("03-18", 0), "pro", "model-a", Usage(1, 0, 1)),
    ]  # fmt: skip


def test_index_keeps_cost_per_hour_on_the_hour_edges(tmp_path):
    """The index keeps each UTC hour's token sums per model; a turn on the hour
    counts in the hour it starts, one a second before in the hour before."""
    db = write_records(tmp_path / "h.db", _turns(), ui_index=True)
    conn = sqlite3.connect(f"{db}.ui-index")
    rows = conn.execute(
        "SELECT hour, model, turns, input FROM ui_cost_hour ORDER BY hour"
    ).fetchall()
    conn.close()
    h = int(_at("03-17", 12)) // 3600
    assert [
        (h - 1, "model-a", 1, 1000),
        (h, "model-a", 1, 100),
        (h + 11, "model-a", 1, 10),
        (h + 12, "model-a", 1, 1),
    ] == rows


def test_24h_cost_by_model_counts_the_partial_first_hour(tmp_path):
    """The 24-hour cost by model counts the turns from its mid-hour start on,
    the whole hours of its first day and all of the next day, and no earlier turn."""
    db = write_records(tmp_path / "h.db", _turns(), ui_index=True)
    # 24h from 03-18 12:30 starts at 03-17 12:30: turn 2 (12:00) is out.
    with Analytics(db, now=NOW + 1800, prices=PRICES) as analytics:
        half = analytics.cost("model", "24h").total.cost
        # Two new turns in the first, partial hour and in a whole hour.
        write_records(
            db,
            [_turn(5, "u3", _at("03-17", 12) + 1800, "pro", "model-a",
                   Usage(100_000, 0, 100_000)),
             _turn(6, "u3", _at("03-17", 13), "pro", "model-a", Usage(0, 1000, 1000))],
            ui_index=True,
        )  # fmt: skip
    with Analytics(db, now=NOW + 1800, prices=PRICES) as analytics:
        later = analytics.cost("model", "24h").total.cost
    assert round(half, 8) == round((10 + 1) * 2 / 1e6, 8)
    assert round(later, 8) == round((10 + 1 + 100_000) * 2 / 1e6 + 1000 * 10 / 1e6, 8)


def test_sidecar_from_before_gains_cost_per_hour_from_its_turns(tmp_path):
    """An index built before the per-hour sums gains them from its turns' rows
    on the next build, and the 24-hour cost by model stays the same."""
    db = write_records(tmp_path / "h.db", _turns(), ui_index=True)
    conn = sqlite3.connect(f"{db}.ui-index")
    kept = conn.execute("SELECT * FROM ui_cost_hour ORDER BY hour").fetchall()
    conn.execute("DROP TABLE ui_cost_hour")
    conn.commit()
    conn.close()

    with UIIndex(db) as rebuilt:
        rebuilt.build()
    conn = sqlite3.connect(f"{db}.ui-index")
    assert kept == conn.execute("SELECT * FROM ui_cost_hour ORDER BY hour").fetchall()
    conn.close()
    with Analytics(db, now=NOW, prices=PRICES) as analytics:
        assert round((100 + 10 + 1) * 2 / 1e6, 8) == round(
            analytics.cost("model", "24h").total.cost, 8
        )
