"""
Cost, against numbers worked out by hand.

"Now" is Wednesday 2026-03-18 12:00 UTC. Prices, dollars per million tokens:
``model-a`` is given (an override): input 2, output 10, cache read 0.5, cache
write 4, reasoning 20; ``gpt-4o`` comes from genai-prices (input 2.5, output
10, cache read 1.25); ``mystery-model`` has no price. The turns (n 1-6):

==  ====  ===========  ====  =============================  ================
n   user  started      plan  calls (in, out, cache r/w, rs)  cost ($)
==  ====  ===========  ====  =============================  ================
1   u1    03-17 10:00  pro   model-a 1000, 200, 400/100, 50  0.0041
2   u1    03-18 10:00  pro   gpt-4o 2000, 100, 1000/0, 0     0.00475
3   u2    03-17 12:00  free  mystery-model 500, 50           unpriced
4   u2    03-16 12:00  free  model-a 100, 10 + mystery 100,  0.0003 + unpriced
                             10
5   u3    03-10 12:00  pro   model-a 1,000,000, 0            2.0
6   -     03-17 13:00  free  no model call                   -
==  ====  ===========  ====  =============================  ================

Turn 1: (1000 - 400 - 100) * 2 + 400 * 0.5 + 100 * 4 + (200 - 50) * 10 + 50 *
20 = 4100 per million. Turn 2: 1000 * 2.5 + 1000 * 1.25 + 100 * 10 = 4750.
Turn 4's model-a call: 100 * 2 + 10 * 10 = 300.
"""

from __future__ import annotations

import calendar
import json
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from context_trace import track_user
from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, ModelCall, Usage
from context_trace._store.analytics import Analytics
from context_trace._store.cost import COST_TABLES
from context_trace._store.ui_index import UIIndex
from context_trace.analytics.pricing import Pricer, check_prices, load_prices
from context_trace.cli import main
from context_trace.testing import CapturedRecords
from context_trace.ui.app import create_app
from tests.core.test_record import CachingFakeChatModel
from tests.stores import greeting, write_records

from .test_retention import NOW

MODEL_A = {
    "input": 2,
    "output": 10,
    "cache_read": 0.5,
    "cache_write": 4,
    "reasoning": 20,
}
PRICES = {"model-a": MODEL_A}


def _at(day: str, hour: int) -> float:
    m, d = (int(p) for p in day.split("-"))
    return float(calendar.timegm((2026, m, d, hour, 0, 0)))


def _turn(
    n: int,
    user: str | None,
    when: float,
    plan: str,
    model: str | None = None,
    usage: Usage | None = None,
    calls: tuple[ModelCall, ...] = (),
) -> Conversation:
    return greeting(
        n,
        user,
        when,
        seconds=0.5,
        metadata={"plan": plan},
        model=model,
        usage=usage,
        model_calls=calls,
    )


def build_cost_store(path: Path) -> Path:
    turns = [
        _turn(1, "u1", _at("03-17", 10), "pro", "model-a",
              Usage(1000, 200, 1200, 400, 100, 50)),
        _turn(2, "u1", _at("03-18", 10), "pro", "gpt-4o",
              Usage(2000, 100, 2100, 1000, None, None)),
        _turn(3, "u2", _at("03-17", 12), "free", "mystery-model", Usage(500, 50, 550)),
        _turn(4, "u2", _at("03-16", 12), "free", "model-a", Usage(200, 20, 220),
              (ModelCall("model-a", Usage(100, 10, 110)),
               ModelCall("mystery-model", Usage(100, 10, 110)))),
        _turn(5, "u3", _at("03-10", 12), "pro", "model-a", Usage(1_000_000, 0, 1_000_000)),
        _turn(6, None, _at("03-17", 13), "free"),
    ]  # fmt: skip
    return write_records(path, turns, ui_index=True)


@pytest.fixture(scope="module")
def cost_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cost_store(tmp_path_factory.mktemp("cost") / "cost.db")


@pytest.fixture
def analytics(cost_store: Path) -> Iterator[Analytics]:
    with Analytics(cost_store, now=NOW, prices=PRICES) as opened:
        yield opened


def _by_key(report: Any) -> dict[str | None, tuple[float, int]]:
    return {r.key: (round(r.cost, 8), r.unpriced_calls) for r in report.rows}


def test_cost_by_model_prices_cache_and_reasoning_tokens(analytics):
    """Each model's cost prices plain input, cache reads and writes, output and
    reasoning at their own prices; an unpriced model costs nothing and is counted."""
    report = analytics.cost("model", "all")

    assert {
        "model-a": (2.0044, 0),
        "gpt-4o": (0.00475, 0),
        "mystery-model": (0.0, 2),
    } == _by_key(report)
    assert (round(report.total.cost, 8), report.total.calls) == (2.00915, 6)
    assert (report.total.unpriced_calls, report.total.turns) == (2, 5)
    assert ("mystery-model",) == report.unpriced_models
    sources = {m.model: m.source for m in report.models}
    assert {"model-a": "override", "gpt-4o": "genai-prices"} == {
        k: v for k, v in sources.items() if v
    }
    assert (1400, 1000) == (
        report.rows[0].cache_read_tokens + report.rows[1].cache_read_tokens,
        sum(r.cache_read_tokens for r in report.rows if r.key == "gpt-4o"),
    )


def test_an_override_reprices_the_history(cost_store):
    """Prices apply when read: an override of gpt-4o re-prices turn 2, nothing stored changes."""
    prices = {**PRICES, "GPT-4o": {"input": 1, "output": 1}}
    with Analytics(cost_store, now=NOW, prices=prices) as analytics:
        report = analytics.cost("model", "all")

    # 1000 plain + 1000 cache reads (at the input price) + 100 output, at $1/M.
    assert 0.0021 == round(_by_key(report)["gpt-4o"][0], 8)


def test_cost_per_user_and_the_no_user_turn_is_no_call(analytics):
    """Per user: u3's long turn costs most; the turn with no model call is neither cost nor unpriced."""
    report = analytics.cost("user", "all")

    assert {
        "u3": (2.0, 0),
        "u1": (0.00885, 0),
        "u2": (0.0003, 2),
    } == _by_key(report)
    assert ["u3", "u1", "u2"] == [r.key for r in report.rows]


def test_cost_per_session(analytics):
    """Per session, by its id, costliest first."""
    assert {
        "s-u3": (2.0, 0),
        "s-u1": (0.00885, 0),
        "s-u2": (0.0003, 2),
    } == _by_key(analytics.cost("session", "all"))
    assert ["s-u3"] == [r.key for r in analytics.cost("session", limit=1).rows]


def test_cost_per_session_in_the_last_24_hours(analytics):
    """From 03-17 12:00: turn 2 (s-u1, $0.00475) and turn 3 (s-u2, unpriced)."""
    report = analytics.cost("session", "24h")
    assert [("s-u1", 0.00475, 0), ("s-u2", 0.0, 1)] == [
        (r.key, round(r.cost, 8), r.unpriced_calls) for r in report.rows
    ]
    assert (2, 2, 1, 0.00475) == (
        report.total.turns, report.total.calls, report.total.unpriced_calls,
        round(report.total.cost, 8),
    )  # fmt: skip
    assert {"gpt-4o", "mystery-model"} == {m.model for m in report.models}


def test_cost_per_session_moves_with_turns_indexed_later(tmp_path):
    """A turn appended after the index was built adds its cost to its session."""
    path = build_cost_store(tmp_path / "cost.db")
    late = _turn(7, "u1", _at("03-18", 11), "pro", "model-a", Usage(1000, 100, 1100))
    write_records(path, [late])
    with UIIndex(path) as index:
        index.build()
    with Analytics(path, now=NOW, prices=PRICES) as opened:
        rows = _by_key(opened.cost("session", "24h"))
    # 0.00475 + (1000 * 2 + 100 * 10) / 1e6 = 0.00775
    assert {"s-u1": (0.00775, 0), "s-u2": (0.0, 1)} == rows


def _priced(index: Path, table: str, key: str) -> dict[Any, tuple[float, int]]:
    """The index's priced cache, read straight from the sidecar file."""
    with sqlite3.connect(index) as conn:
        return {
            k: (round(cost, 8), unpriced)
            for k, cost, unpriced in conn.execute(
                f"SELECT {key}, cost, unpriced FROM {table}"
            )
        }


def _priced_store(tmp_path: Path, prices: Any = PRICES) -> tuple[Path, UIIndex]:
    path = build_cost_store(tmp_path / "cost.db")
    index = UIIndex(path)
    index.set_pricer(Pricer(prices))
    index.build()
    return path, index


def test_index_keeps_each_user_and_session_priced(tmp_path):
    """With the dashboard's prices, the index holds each user's and session's
    cost, and the reports read the same figures as when priced at read time."""
    path, index = _priced_store(tmp_path)
    index.close()

    assert {"u3": (2.0, 0), "u1": (0.00885, 0), "u2": (0.0003, 2)} == _priced(
        index.path, "ui_cost_user_priced", "user_key"
    )
    assert [(2.0, 0), (0.00885, 0), (0.0003, 2)] == sorted(
        _priced(index.path, "ui_cost_session_priced", "session_n").values(),
        reverse=True,
    )
    with Analytics(path, now=NOW, prices=Pricer(PRICES)) as opened:
        users = opened.cost("user", "all")
        sessions = opened.cost("session", "all")
        page = opened.users(sort="cost")
    assert {"u3": (2.0, 0), "u1": (0.00885, 0), "u2": (0.0003, 2)} == _by_key(users)
    assert ["s-u3", "s-u1", "s-u2"] == [r.key for r in sessions.rows]
    assert [(2.0, 0), (0.00885, 0), (0.0003, 2)] == list(_by_key(sessions).values())
    assert (6, 2, 2.00915) == (
        sessions.total.calls, sessions.total.unpriced_calls,
        round(sessions.total.cost, 8),
    )  # fmt: skip
    assert [("u3", 2.0), ("u1", 0.00885), ("u2", 0.0003), (None, None)] == [
        (u.user_id, None if u.cost is None else round(u.cost, 8)) for u in page.items
    ]


def test_a_price_change_reprices_the_kept_costs(tmp_path):
    """New prices (an override of gpt-4o at $1/M) re-price every kept cost; a
    reader with other prices than the index's still gets its own figures."""
    path, index = _priced_store(tmp_path)
    cheaper = {**PRICES, "gpt-4o": {"input": 1, "output": 1}}
    index.set_pricer(Pricer(cheaper))
    index.refresh()
    index.close()

    # u1: turn 1 ($0.0041) + turn 2 at $1/M (2100 tokens: $0.0021).
    assert (0.0062, 0) == _priced(index.path, "ui_cost_user_priced", "user_key")["u1"]
    with Analytics(path, now=NOW, prices=Pricer(cheaper)) as opened:
        assert (0.0062, 0) == _by_key(opened.cost("user", "all"))["u1"]
        assert (0.0062, 0) == _by_key(opened.cost("session", "all"))["s-u1"]
    with Analytics(path, now=NOW, prices=PRICES) as opened:
        assert (0.00885, 0) == _by_key(opened.cost("user", "all"))["u1"]
        page = opened.users(sort="cost")
    assert [("u3", 2.0), ("u1", 0.00885)] == [
        (u.user_id, round(u.cost or 0, 8)) for u in page.items[:2]
    ]


def test_index_refreshes_without_the_pricing_library(tmp_path, monkeypatch):
    """Models that cannot be priced (no genai-prices) leave the priced cache
    empty; the index still takes new turns."""
    monkeypatch.setitem(sys.modules, "genai_prices", None)
    path = build_cost_store(tmp_path / "cost.db")
    writer = SQLiteExporter(path)
    late = _turn(7, "u1", _at("03-18", 11), "pro", "gpt-4o", Usage(10, 1, 11))
    assert 0 == writer.export([late]).failed
    writer.shutdown()
    with UIIndex(path) as index:
        index.set_pricer(Pricer(PRICES))
        index.build()
        assert (7, 7) == index.counts()

    assert {} == _priced(index.path, "ui_cost_user_priced", "user_key")


def test_turns_indexed_later_move_the_kept_costs_exactly(tmp_path):
    """A turn appended after the index was priced adds its exact cost to its
    user and session (and a new user appears), for all time and in a range."""
    path, index = _priced_store(tmp_path)
    writer = SQLiteExporter(path)
    late = [
        _turn(7, "u1", _at("03-18", 11), "pro", "model-a", Usage(1000, 100, 1100)),
        _turn(8, "u4", _at("03-18", 11), "pro", "model-a", Usage(10, 1, 11)),
    ]
    assert 0 == writer.export(late).failed
    writer.shutdown()
    index.refresh()
    index.close()

    # u1 / s-u1: 0.00885 + (1000 * 2 + 100 * 10) / 1e6; u4: (10 * 2 + 10) / 1e6.
    assert {
        "u3": (2.0, 0), "u1": (0.01185, 0), "u2": (0.0003, 2), "u4": (0.00003, 0),
    } == _priced(index.path, "ui_cost_user_priced", "user_key")  # fmt: skip
    with Analytics(path, now=NOW, prices=Pricer(PRICES)) as opened:
        sessions = _by_key(opened.cost("session", "all"))
        users = _by_key(opened.cost("user", "all"))
        day = _by_key(opened.cost("session", "24h"))
        week = _by_key(opened.cost("session", "7d"))
        top = opened.cost("session", "7d", limit=1)
    assert {
        "s-u3": (2.0, 0), "s-u1": (0.01185, 0), "s-u2": (0.0003, 2),
        "s-u4": (0.00003, 0),
    } == sessions  # fmt: skip
    assert (0.01185, 0) == users["u1"]
    # From 03-17 12:00, s-u1 and s-u2 straddle the start (turns 1 and 4 are
    # before it), s-u4 is wholly in it: 0.00475 + 0.003 for s-u1.
    assert {"s-u1": (0.00775, 0), "s-u4": (0.00003, 0), "s-u2": (0.0, 1)} == day
    assert ["s-u1", "s-u4", "s-u2"] == list(day)
    # Whole days from 03-12: all but turn 5 (s-u3, 03-10).
    assert {
        "s-u1": (0.01185, 0), "s-u2": (0.0003, 2), "s-u4": (0.00003, 0),
    } == week  # fmt: skip
    assert ["s-u1"] == [r.key for r in top.rows]


def test_cost_per_topic(cost_store, tmp_path):
    """Per topic, from the topics file's turn assignments; an unassigned turn has none."""
    from context_trace.analytics.topic_index import _SCHEMA

    topics = tmp_path / "cost.db.topics"
    conn = sqlite3.connect(topics)
    for statement in _SCHEMA:
        conn.execute(statement)
    # Turns 1 and 5 (n = 1, 5) ask about billing, turn 2 about refunds.
    conn.executemany(
        "INSERT INTO topic_turns (n, topic_id, user_key, session_n, day, failed)"
        " VALUES (?, ?, ?, ?, '2026-01-01', 0)",
        [(1, "billing", "u1", 1), (5, "billing", "u3", 4), (2, "refunds", "u1", 1)],
    )
    conn.commit()
    conn.close()
    with Analytics(cost_store, now=NOW, prices=PRICES) as analytics:
        with pytest.raises(ValueError, match="by topic needs the store's topics"):
            analytics.cost("topic")
        analytics.attach_topics(topics)
        report = analytics.cost("topic", "all")

    assert {
        "billing": (2.0041, 0),
        "refunds": (0.00475, 0),
        None: (0.0003, 2),
    } == _by_key(report)


def test_cost_per_day_and_range(analytics):
    """Per UTC day over a range: 7d leaves out 03-10."""
    assert {
        "03-10": (2.0, 0),
        "03-16": (0.0003, 1),
        "03-17": (0.0041, 1),
        "03-18": (0.00475, 0),
    } == {k[5:]: v for k, v in _by_key(analytics.cost("day", "all")).items()}
    week = analytics.cost("day", "7d")
    assert ["2026-03-16", "2026-03-17", "2026-03-18"] == [r.key for r in week.rows]
    assert 0.00915 == round(week.total.cost, 8)
    assert 0.00475 == round(analytics.cost("model", "24h").total.cost, 8)


def test_cost_of_a_segment(analytics):
    """A segment (plan=pro) counts only its turns, for every range and grouping."""
    pro = (("plan", "pro"),)

    assert 2.00885 == round(analytics.cost("model", "all", pro).total.cost, 8)
    assert 0.00885 == round(analytics.cost("model", "7d", pro).total.cost, 8)
    assert {"u3": (2.0, 0), "u1": (0.00885, 0)} == _by_key(
        analytics.cost("user", "all", pro)
    )
    both = (("plan", "free"), ("model", "mystery-model"))
    report = analytics.cost("model", "all", both)
    assert (0.0, 1) == (report.total.cost, report.total.unpriced_calls)


def test_users_sort_by_cost_with_cost_column(analytics):
    """The users table sorts by cost (highest first) and shows each user's cost."""
    page = analytics.users(sort="cost")

    assert [("u3", 2.0), ("u1", 0.00885), ("u2", 0.0003), (None, None)] == [
        (u.user_id, None if u.cost is None else round(u.cost, 8)) for u in page.items
    ]
    assert [0, 0, 2, 0] == [u.unpriced_calls for u in page.items]
    ascending = analytics.users(sort="cost", descending=False)
    assert None is ascending.items[0].user_id


def test_session_page_cost_per_turn(analytics):
    """A session shows each turn's cost and the total; an unpriced call is counted."""
    u1 = analytics.session("s-u1")
    u2 = analytics.session("s-u2")

    assert [0.0041, 0.00475] == [round(t.cost or 0, 8) for t in u1.turns]
    assert 0.00885 == round(u1.cost or 0, 8)
    assert [(None, 1, 1), (0.0003, 2, 1)] == [
        (None if t.cost is None else round(t.cost, 8), t.calls, t.unpriced_calls)
        for t in sorted(u2.turns, key=lambda t: t.conversation_id)
    ]


def test_recorded_usage_details_are_priced(
    tmp_path, context_trace_records: CapturedRecords
):
    """A real model's cache and reasoning details reach the store and its cost."""
    with track_user("u"):
        CachingFakeChatModel().invoke("hello")
    path = tmp_path / "live.db"
    write_records(path, context_trace_records.conversations, ui_index=True)
    prices = {"cachingfakechatmodel": MODEL_A}
    with Analytics(path, prices=prices) as analytics:
        report = analytics.cost("model", "all")

    row = report.rows[0]
    assert (100, 20, 60, 10, 8) == (
        row.input_tokens,
        row.output_tokens,
        row.cache_read_tokens,
        row.cache_write_tokens,
        row.reasoning_tokens,
    )
    # 30 plain * 2 + 60 * 0.5 + 10 * 4 + 12 * 10 + 8 * 20 = 410 per million.
    assert 0.00041 == round(row.cost, 8)


def test_pricing_makes_no_network_call(monkeypatch):
    """genai-prices is read from its bundled snapshot: no socket is opened."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pricing tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)

    price = Pricer().price("gpt-4o-mini")

    assert price is not None
    assert ("genai-prices", 0.15, 0.6) == (price.source, price.input, price.output)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ([1], TypeError, "prices must be a mapping of model name"),
        ({"m": {"input": 1}}, ValueError, r"prices\['m'\] must give output"),
        ({"m": {"input": 1, "output": -1}}, ValueError, r"output'\] must be a finite"),
        (
            {"m": {"input": 1, "output": 1, "cached": 1}},
            ValueError,
            "unknown key 'cached'",
        ),
        ({"m": {"input": "1", "output": 1}}, TypeError, r"input'\] must be a number"),
        ({"": {"input": 1, "output": 1}}, ValueError, "non-empty string"),
    ],
)
def test_bad_prices_are_refused_naming_the_parameter(value, error, message):
    """configure(prices=...) refuses bad prices at once, naming the parameter."""
    import context_trace

    with pytest.raises(error, match=message):
        context_trace.configure(prices=value)
    with pytest.raises(error, match=message):
        check_prices(value)


def test_prices_file_json_and_toml(tmp_path):
    """--prices reads JSON or TOML, and names itself in its errors."""
    (tmp_path / "p.json").write_text(json.dumps(PRICES))
    (tmp_path / "p.toml").write_text(
        '["model-a"]\ninput = 2\noutput = 10\ncache_read = 0.5\n'
        "cache_write = 4\nreasoning = 20\n"
    )
    assert load_prices(tmp_path / "p.json") == load_prices(tmp_path / "p.toml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"--prices: .*bad\.json does not parse"):
        load_prices(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="--prices: cannot read"):
        load_prices(tmp_path / "missing.json")


def test_cli_cost_by_user_json_with_prices_file(cost_store, tmp_path, capsys):
    """context-trace cost --by user --json prices from --prices and filters by --meta."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))

    code = main(["cost", "--db", str(cost_store), "--by", "user", "--json",
                 "--prices", str(prices), "--meta", "plan:pro"])  # fmt: skip

    assert 0 == code
    out = json.loads(capsys.readouterr().out)
    assert [("u3", 2.0), ("u1", 0.00885)] == [
        (r["key"], round(r["cost"], 8)) for r in out["rows"]
    ]


def test_cli_cost_table_shows_unpriced(cost_store, tmp_path, capsys):
    """The cost table names the unpriced model and counts its calls."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))

    assert 0 == main(["cost", "--db", str(cost_store), "--prices", str(prices)])

    out = capsys.readouterr().out
    assert "mystery-model" in out
    assert "2 calls unpriced" in out
    assert "$2.0044" in out  # model-a


def test_cli_cost_table_prints_a_dash_for_an_unpriced_model(cost_store, capsys):
    """A row whose calls are all unpriced costs "-", not $0.0000; a priced row its cost."""
    assert 0 == main(["cost", "--db", str(cost_store), "--by", "model"])

    rows = {
        line.split()[0]: line.split()[-1]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(("mystery-model", "gpt-4o"))
    }
    assert rows == {"mystery-model": "-", "gpt-4o": "$0.0047"}


def test_cli_cost_bad_prices_file_is_a_usage_error(cost_store, tmp_path, capsys):
    """A bad --prices file is refused with exit status 2, naming --prices."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"m": {"input": 1}}))

    assert 2 == main(["cost", "--db", str(cost_store), "--prices", str(bad)])
    assert "--prices" in capsys.readouterr().err


def test_cli_users_sort_cost(cost_store, tmp_path, capsys):
    """context-trace users --sort cost lists the costliest first, with a cost column."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))

    code = main(["users", "--db", str(cost_store), "--sort", "cost", "--json",
                 "--prices", str(prices)])  # fmt: skip

    assert 0 == code
    rows = json.loads(capsys.readouterr().out)
    assert ["u3", "u1", "u2"] == [r["user_id"] for r in rows[:3]]
    assert 2.0 == round(rows[0]["cost"], 8)


def test_api_cost_and_overview_tile(cost_store, tmp_path):
    """/api/cost answers by model, user and day with a segment; the overview shows cost and unpriced."""
    client = create_app(cost_store, prices=PRICES, refresh_interval=0).test_client()

    by_user = client.get("/api/cost?by=user&range=all&meta=plan:pro").get_json()
    assert [("u3", 2.0), ("u1", 0.00885)] == [
        (r["key"], round(r["cost"], 8)) for r in by_user["rows"]
    ]
    by_model = client.get("/api/cost?range=all").get_json()
    assert 2 == by_model["total"]["unpriced_calls"]
    assert 400 == client.get("/api/cost?by=planet").status_code
    page = client.get("/?range=all").get_data(as_text=True)
    assert 'id="tile-cost"' in page
    assert "2 calls unpriced" in page
    users = client.get("/users?sort=cost").get_data(as_text=True)
    assert "$2.0000" in users


def test_dashboard_takes_the_configured_prices(cost_store):
    """A dashboard served by the app's process prices with configure(prices=...)."""
    import context_trace

    context_trace.configure(
        db_path=cost_store.with_name("other.db"), prices={"mystery-model": MODEL_A}
    )
    client = create_app(cost_store, refresh_interval=0).test_client()

    body = client.get("/api/cost?range=all").get_json()

    # Turn 3: 500 * 2 + 50 * 10 = 1500; turn 4's call: 100 * 2 + 10 * 10 = 300.
    rows = {r["key"]: r for r in body["rows"]}
    assert 0.0018 == round(rows["mystery-model"]["cost"], 8)
    assert 0 == rows["mystery-model"]["unpriced_calls"]


def test_api_compare_has_cost_per_conversation(cost_store):
    """The comparison gains cost per conversation, with its count."""
    client = create_app(cost_store, prices=PRICES, refresh_interval=0).test_client()

    body = client.get("/api/compare?a=plan:pro&b=plan:free").get_json()

    # pro: 2.00885 over 3 turns; free: 0.0003 over 3 turns (turn 6 made no call).
    assert 0.66961667 == round(body["a"]["cost_per_conversation"]["value"], 8)
    assert 3 == body["a"]["cost_per_conversation"]["count"]
    assert 0.0001 == round(body["b"]["cost_per_conversation"]["value"], 8)


def test_index_of_an_older_sidecar_gains_cost_tables(tmp_path):
    """A sidecar built before cost gets its cost tables filled from the store on open."""
    path = build_cost_store(tmp_path / "old.db")
    index = Path(f"{path}.ui-index")
    conn = sqlite3.connect(index)
    for table in COST_TABLES[1:]:
        conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()

    with UIIndex(path) as rebuilt:
        rebuilt.build()
    with Analytics(path, now=NOW, prices=PRICES) as analytics:
        assert 2.00915 == round(analytics.cost("model", "all").total.cost, 8)


def test_import_and_configure_prices_stay_light(tmp_path):
    """`import context_trace` and configure(prices=...) never load genai-prices."""
    code = (
        "import sys, context_trace; "
        f"context_trace.configure(db_path={str(tmp_path / 'x.db')!r},"
        " prices={'m': {'input': 1, 'output': 2}}); "
        "print('genai_prices' in sys.modules, context_trace.get_config().prices)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert "False {'m': {'input': 1.0, 'output': 2.0}}" == out.stdout.strip()


def test_cli_compare_prices_the_cost_per_conversation(cost_store, tmp_path, capsys):
    """context-trace compare --prices shows each segment's cost per conversation."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))

    code = main(["compare", "--db", str(cost_store), "--segment-a", "plan=pro",
                 "--segment-b", "plan=free", "--prices", str(prices)])  # fmt: skip

    assert 0 == code
    line = next(
        x for x in capsys.readouterr().out.splitlines() if x.startswith("cost per")
    )
    assert ["$0.66962", "(n=3)", "$0.00010", "(n=3)"] == line.split()[3:]


def test_cli_segments_read_the_same_in_every_command(cost_store, tmp_path, capsys):
    """cost, retention and compare take a segment as KEY=VALUE or KEY:VALUE alike,
    and a condition with neither is a usage error naming the option and KEY=VALUE."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    reports = []
    for form in ("plan=pro", "plan:pro"):
        for command in (
            ["cost", "--by", "user", "--prices", str(prices), "--meta", form],
            ["retention", "--meta", form],
            ["compare", "--segment-a", form, "--segment-b", "plan=free"],
        ):
            assert 0 == main([*command, "--db", str(cost_store), "--json"]), command
            reports.append(json.loads(capsys.readouterr().out))
    assert reports[:3] == reports[3:]
    assert ["u3", "u1"] == [r["key"] for r in reports[0]["rows"]]

    assert 2 == main(["retention", "--db", str(cost_store), "--meta", "plan"])
    assert "--meta must be KEY=VALUE, got 'plan'" in capsys.readouterr().err
