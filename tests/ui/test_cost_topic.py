"""
Cost per topic from the topics file's per-topic, per-day token sums, against
figures worked out turn by turn.

"Now" is Wednesday 2026-03-18 12:00 UTC. Twenty turns ask questions of five
intents (four each, from ``tests/analytics/intents.csv``). Turn ``i`` (1-20)
starts ``i - 1`` days before 03-18 10:00 and uses ``MODELS[i % 3]`` with
``1000 * i`` input and ``10 * i`` output tokens, so (dollars per million:
``model-a`` 2 and 10, an override; ``gpt-4o`` 2.5 and 10, from genai-prices)
a ``model-a`` turn costs ``0.0021 * i``, a ``gpt-4o`` turn ``0.0026 * i``, and a
``mystery-model`` turn nothing (one unpriced call). A topic's cost is the sum
over the turns the topics file assigned to it; "7d" is the whole days from
03-12, turns 1-7.
"""

from __future__ import annotations

import csv
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from context_trace._record import Conversation, Message, Usage
from context_trace._store.analytics import Analytics
from context_trace._store.ui_index import UIIndex
from context_trace.analytics.topic_index import TopicIndex
from tests.stores import write_records

from .test_cost import _at
from .test_retention import NOW

MODELS = ("mystery-model", "model-a", "gpt-4o")
# Dollars per token of input, of output (mystery-model: no price).
PER_TOKEN = {"model-a": (2e-6, 10e-6), "gpt-4o": (2.5e-6, 10e-6)}
PRICES = {"model-a": {"input": 2, "output": 10}}
INTENTS = ("alarm", "weather", "calories", "translate", "music")
FIXTURE = Path(__file__).parents[1] / "analytics" / "intents.csv"


def _questions() -> list[str]:
    with FIXTURE.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        q
        for intent in INTENTS
        for q in [r["text"] for r in rows if r["intent"] == intent][:4]
    ]


def _turn(i: int, question: str, day_offset: int | None = None) -> Conversation:
    started = _at("03-18", 10) - 86_400 * (i - 1 if day_offset is None else day_offset)
    user = f"u{i % 4}"
    return Conversation(
        id=f"c{i}",
        user_id=user,
        session_id=f"s-{user}",
        started_at=started,
        ended_at=started + 0.5,
        messages=(Message("user", question), Message("assistant", "ok")),
        model=MODELS[i % 3],
        usage=Usage(1000 * i, 10 * i, 1010 * i),
        metadata={"plan": _plan(i)},
    )


def _plan(i: int) -> str:
    """Turns of an even number are on the pro plan, the others on free."""
    return "pro" if i % 2 == 0 else "free"


def _cost(i: int, prices: dict[str, tuple[float, float]] = PER_TOKEN) -> float:
    price = prices.get(MODELS[i % 3])
    return 0.0 if price is None else 1000 * i * price[0] + 10 * i * price[1]


def _expected(
    assigned: dict[int, str],
    turns: Iterable[int],
    prices: dict[str, tuple[float, float]] = PER_TOKEN,
) -> dict[str | None, tuple[float, int]]:
    """Per topic (None: no topic yet), the turns' costs and unpriced calls summed."""
    out: dict[str | None, list[Any]] = defaultdict(lambda: [0.0, 0])
    for i in turns:
        row = out[assigned.get(i)]
        row[0] += _cost(i, prices)
        row[1] += MODELS[i % 3] not in prices
    return {k: (round(v[0], 9), v[1]) for k, v in out.items()}


def _report(
    path: Path,
    topics: Path,
    range_: str = "all",
    prices: Any = PRICES,
    segment: tuple[tuple[str, str], ...] = (),
) -> Any:
    with Analytics(path, now=NOW, prices=prices) as analytics:
        analytics.attach_topics(topics)
        return analytics.cost("topic", range_, segment)


def _by_key(report: Any) -> dict[str | None, tuple[float, int]]:
    return {r.key: (round(r.cost, 9), r.unpriced_calls) for r in report.rows}


def _sums(topics: Path) -> dict[tuple[str, ...], tuple[int, int, int, int]]:
    """
    The topics file's sums, read from the file: per topic, day and model, and
    per plan, topic, day and model.
    """
    with sqlite3.connect(topics) as conn:
        return {
            tuple(key): (turns, calls, i, o)
            for *key, turns, calls, i, o in [
                *conn.execute(
                    "SELECT topic_id, day, model, turns, calls, input, output"
                    " FROM topic_costs"
                ),
                *conn.execute(
                    "SELECT value, topic_id, day, model, turns, calls, input, output"
                    " FROM topic_segment_costs WHERE key = 'plan'"
                ),
            ]
        }


def _recount(
    assigned: dict[int, str], turns: Iterable[int]
) -> dict[tuple[str, ...], tuple[int, int, int, int]]:
    """The same sums worked out here from each turn's topic, plan, day and tokens."""
    out: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for i in turns:
        if i not in assigned:
            continue
        day = f"2026-{_day_of(i)}"
        key = (assigned[i], day, MODELS[i % 3])
        for row in (out[key], out[(_plan(i), *key)]):
            for k, v in enumerate((1, 1, 1000 * i, 10 * i)):
                row[k] += v
    return {k: (v[0], v[1], v[2], v[3]) for k, v in out.items()}


def _day_of(i: int) -> str:
    import time

    return time.strftime("%m-%d", time.gmtime(_at("03-18", 10) - 86_400 * (i - 1)))


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Path]:
    """(the store of twenty turns with its index, its topics file, built)."""
    path = write_records(
        tmp_path / "cost.db",
        [_turn(i, q) for i, q in enumerate(_questions(), 1)],
        ui_index=True,
    )
    with TopicIndex(path) as topics:
        topics.build()
    return path, topics.path


def _assigned(path: Path) -> dict[int, str]:
    """Turn i (conversation ``c<i>``) -> its topic id, as the topics file has it."""
    with TopicIndex(path) as topics:
        found = topics.assignments()
    with sqlite3.connect(path) as conn:
        ids = dict(conn.execute("SELECT n, id FROM conversations"))
    return {int(ids[n][1:]): topic for n, topic in found.items()}


def test_topics_file_keeps_each_topics_token_sums_per_day_and_model(store):
    """The topics file holds, per topic, day and model, the sums of its turns' tokens."""
    path, topics = store
    assigned = _assigned(path)
    assert len(set(assigned.values())) > 1

    assert _recount(assigned, range(1, 21)) == _sums(topics)


def test_cost_per_topic_is_the_sum_of_its_turns_costs(store):
    """Per topic, for all time and over 7 days, each topic costs what its turns cost."""
    path, topics = store
    assigned = _assigned(path)

    assert _expected(assigned, range(1, 21)) == _by_key(_report(path, topics))
    assert _expected(assigned, range(1, 8)) == _by_key(_report(path, topics, "7d"))
    report = _report(path, topics)
    assert (round(sum(_cost(i) for i in range(1, 21)), 9), 6) == (
        round(report.total.cost, 9),
        report.total.unpriced_calls,
    )


def test_cost_per_topic_in_a_segment_is_the_sum_of_its_turns_costs(store):
    """In a segment (plan:pro, the even turns), each topic costs what its turns in it cost."""
    path, topics = store
    assigned = _assigned(path)
    pro = [i for i in range(1, 21) if _plan(i) == "pro"]
    segment = (("plan", "pro"),)

    assert _expected(assigned, pro) == _by_key(_report(path, topics, segment=segment))
    assert _expected(assigned, [i for i in pro if i < 8]) == _by_key(
        _report(path, topics, "7d", segment=segment)
    )


def test_a_price_override_reprices_cost_per_topic(store):
    """An override of gpt-4o at $1/M re-prices every topic's gpt-4o turns when read."""
    path, topics = store
    cheaper = {**PRICES, "gpt-4o": {"input": 1, "output": 1}}
    per_token = {**PER_TOKEN, "gpt-4o": (1e-6, 1e-6)}

    assert _expected(_assigned(path), range(1, 21), prices=per_token) == _by_key(
        _report(path, topics, prices=cheaper)
    )


def test_turns_indexed_later_move_cost_per_topic_exactly(store):
    """New turns count under no topic until the topics file assigns them, then in theirs."""
    path, topics = store
    questions = _questions()
    # Turns 21-23 (03-18 10:00), asking again three questions of the fixture.
    late = [_turn(i, questions[i - 21], day_offset=0) for i in (21, 22, 23)]
    write_records(path, late)
    with UIIndex(path) as index:
        index.build()
    before = _assigned(path)
    week = [*range(1, 8), 21, 22, 23]  # the late turns' day is 03-18

    assert _expected(before, range(1, 24)) == _by_key(_report(path, topics))
    assert _expected(before, week) == _by_key(_report(path, topics, "7d"))
    assert None in _by_key(_report(path, topics, "7d"))

    with TopicIndex(path) as index:
        index.build()
    after = _assigned(path)
    assert set(after) == set(range(1, 24))
    assert _expected(after, range(1, 24)) == _by_key(_report(path, topics))
    assert _expected(after, week) == _by_key(_report(path, topics, "7d"))


def test_a_refit_moves_cost_per_topic_exactly(store):
    """A re-fit with another number of topics moves each turn's tokens to its new topic."""
    path, topics = store
    before = _assigned(path)
    with TopicIndex(path, n_topics=2) as index:
        index.refit()
    after = _assigned(path)
    assert after != before

    assert _recount(after, range(1, 21)) == _sums(topics)
    assert _expected(after, range(1, 21)) == _by_key(_report(path, topics))


def test_a_version_3_topics_file_gains_its_sums(store):
    """A topics file from before the sums gains them from its assignments when opened."""
    path, topics = store
    with sqlite3.connect(topics) as conn:
        conn.execute("DROP TABLE topic_costs")
        conn.execute("DROP TABLE topic_segment_costs")
        conn.execute("PRAGMA user_version = 3")
    assigned = _assigned(path)

    assert _recount(assigned, range(1, 21)) == _sums(topics)
    assert _expected(assigned, range(1, 21)) == _by_key(_report(path, topics))


def test_cost_rows_come_from_the_dashboards_index_when_it_has_them(tmp_path, store):
    """With the dashboard's index level, assigning reads the turns' cost rows from it, not the store's metadata, and sums the same as without it."""
    path, topics = store
    traced: list[str] = []
    with TopicIndex(path, tmp_path / "again.topics") as index:
        index._conn.set_trace_callback(traced.append)
        index.build()
    with TopicIndex(path, tmp_path / "alone.topics", scores=tmp_path / "none") as alone:
        alone.build()

    assert not [s for s in traced if "model_calls" in s]
    assert [s for s in traced if "ui.ui_cost_turn" in s]
    assert [s for s in traced if "ui.ui_segment_turn" in s]
    assert _sums(tmp_path / "again.topics") == _sums(topics)
    assert _sums(tmp_path / "alone.topics") == _sums(topics)
