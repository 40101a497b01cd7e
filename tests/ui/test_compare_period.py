"""
Comparing two periods (this week against last week, or two ranges of days),
against numbers worked out by hand.

The turns, on days relative to this ISO week's Monday M (12:00 UTC; ``plan``
in the scope's metadata):

- this week: ann (pro) M twice (12:00, 13:00), cat (free) M, a turn with no
  user M (the current week may have no other day yet)
- last week: ann (pro) M-7, ben (free) M-6 (failed) and M-5

This week against last (all turns): 4 conversations from 2 users (ann, cat:
2.0 each) and no error, against 3 from 2 (ann, ben: 1.5) with 1 error in 3.
With plan=pro: ann's 2 against ann's 1. Days M-7..M-6 against M-5..M+1: 2
turns from ann and ben (1 error) against 5 from ben, ann and cat.
"""

from __future__ import annotations

import calendar
import json
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Message
from context_trace._store.analytics import Analytics
from context_trace._store.compare_period import DayRange
from context_trace._store.retention import week_of
from context_trace._store.ui_index import UIIndex
from context_trace.cli import main
from context_trace.ui.app import create_app

_PLANS = {"ann": "pro", "ben": "free", "cat": "free", None: None}
# (user, days after Monday, hour, failed)
_TURNS = [
    ("ann", 0, 12, False), ("ann", 0, 13, False), ("cat", 0, 12, False),
    (None, 0, 12, False), ("ann", -7, 12, False), ("ben", -6, 12, True),
    ("ben", -5, 12, False),
]  # fmt: skip


def _monday() -> date:
    return week_of(date(*time.gmtime()[:3]))


def _at(day: date, hour: int) -> float:
    return float(calendar.timegm((day.year, day.month, day.day, hour, 0, 0)))


@pytest.fixture
def period_store(tmp_path: Path) -> Path:
    """The turns above, this week being the current UTC ISO week."""
    path = tmp_path / "periods.db"
    monday = _monday()
    store = SQLiteExporter(path)
    records = []
    for i, (user, offset, hour, failed) in enumerate(_TURNS):
        started = _at(monday + timedelta(days=offset), hour)
        plan = _PLANS[user]
        records.append(
            Conversation(
                id=f"c{i}", user_id=user,
                session_id=None if user is None else f"s-{user}",
                started_at=started, ended_at=started + 0.1,
                messages=(Message("user", "hi"), Message("assistant", "hello")),
                metadata={} if plan is None else {"plan": plan},
                error="RuntimeError: boom" if failed else None,
            )
        )  # fmt: skip
    assert 0 == store.export(records).failed
    store.shutdown()
    with UIIndex(path) as index:
        index.build()
    return path


def _sides(result):
    return [
        (
            s.conversations.value, s.users.value, s.conversations_per_user.value,
            s.error_rate.value, s.error_rate.count,
        )
        for s in (result.a, result.b)
    ]  # fmt: skip


def test_this_week_against_last_week(period_store):
    """period=week: this ISO week so far against the whole one before, with counts."""
    monday = _monday()
    with Analytics(period_store) as analytics:
        result = analytics.compare_periods(period="week")

    assert [(4, 2, 2.0, 0.0, 4), (3, 2, 1.5, pytest.approx(1 / 3), 3)] == _sides(result)
    assert f"{monday}..{date(*time.gmtime()[:3])}" == result.a.segment["days"]
    assert (
        f"{monday - timedelta(days=7)}..{monday - timedelta(days=1)}"
        == result.b.segment["days"]
    )
    assert (4, 3) == (
        result.a.cost_per_conversation.count, result.b.cost_per_conversation.count
    )  # fmt: skip
    tests = {d.measure: d for d in result.differences}
    assert tests["error_rate"].z is None  # too few of each outcome to test


def test_a_segment_value_over_two_periods(period_store):
    """period=week with plan=pro: ann's turns only on each side."""
    with Analytics(period_store) as analytics:
        result = analytics.compare_periods((("plan", "pro"),), period="week")

    assert [(2, 1, 2.0, 0.0, 2), (1, 1, 1.0, 0.0, 1)] == _sides(result)
    assert "pro" == result.a.segment["plan"]


def test_two_ranges_of_days(period_store):
    """Any two ranges of whole UTC days, both ends included."""
    m = _monday()
    with Analytics(period_store) as analytics:
        result = analytics.compare_periods(
            a=DayRange(m - timedelta(days=7), m - timedelta(days=6)),
            b=DayRange(m - timedelta(days=5), m + timedelta(days=1)),
        )

    assert [(2, 2, 1.0, 0.5, 2), (5, 3, pytest.approx(5 / 3), 0.0, 5)] == _sides(result)


def test_api_period_mode_and_its_bad_input(period_store):
    """/api/compare?period=week answers both sides; bad values are 400s naming them."""
    app = create_app(period_store, refresh_interval=0)
    client = app.test_client()
    try:
        body = client.get("/api/compare?period=week&meta=plan:pro").get_json()
        page = client.get("/compare?period=week")
        bad_period = client.get("/api/compare?period=fortnight")
        bad_range = client.get(
            "/api/compare?a_range=monday&b_range=2026-01-01..2026-01-02"
        )
        lone = client.get("/api/compare?a_range=2026-01-01..2026-01-02")
    finally:
        app.extensions["context_trace_ui"].stop()

    assert (2, 1) == (
        body["a"]["conversations"]["value"], body["b"]["conversations"]["value"]
    )  # fmt: skip
    assert 200 == page.status_code
    assert "Cost per conversation" in page.get_data(as_text=True)
    assert 400 == bad_period.status_code
    assert "period must be one of week, month" in bad_period.get_data(as_text=True)
    assert 400 == bad_range.status_code
    assert "a_range must be FIRST..LAST" in bad_range.get_data(as_text=True)
    assert 400 == lone.status_code
    assert "a_range needs b_range too" in lone.get_data(as_text=True)


def test_cli_compare_period(period_store, capsys):
    """compare --period week --json; a bad --a-range is a usage error naming it."""
    args = ["compare", "--db", str(period_store), "--json"]
    code = main([*args, "--period", "week", "--meta", "plan=pro"])
    body = json.loads(capsys.readouterr().out)
    bad = main([*args, "--a-range", "2026-01-05..2026-01-01", "--b-range",
                "2026-01-01..2026-01-02"])  # fmt: skip
    err = capsys.readouterr().err
    neither = main(args)
    err_neither = capsys.readouterr().err

    assert 0 == code
    assert (2, 1) == (
        body["a"]["conversations"]["value"], body["b"]["conversations"]["value"]
    )  # fmt: skip
    assert 2 == bad
    assert "--a-range: 2026-01-01 is before 2026-01-05" in err
    assert 2 == neither
    assert "--segment-a and --segment-b, or --period" in err_neither


def test_cli_compare_period_table_keeps_its_columns_apart(period_store, capsys):
    """The table's side B starts after side A's widest cell, with a gap: a long
    period label (two ranges of days) does not run into B's."""
    code = main(["compare", "--db", str(period_store), "--a-range",
                 "2026-01-01..2026-01-07", "--b-range", "2026-01-08..2026-01-14"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()

    assert 0 == code
    start = lines[0].index("B: days=")
    assert lines[0][start - 2 : start] == "  "
    assert all(len(line) <= start or line[start - 2 : start] == "  "
               for line in lines[1:11])  # fmt: skip
