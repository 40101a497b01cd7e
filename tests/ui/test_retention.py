"""
Retention, against numbers worked out by hand on a small store.

"Now" is Wednesday 2026-03-18 12:00 UTC; the ISO weeks are those of Monday
02-23, 03-02, 03-09 and 03-16. The turns (12:00 UTC unless said):

- alice: 02-23, 03-02, Sunday 03-15 23:59:30, 03-17
- bob: 02-24, 02-25, 03-09, 03-11 (two turns)
- carol: 03-03, Monday 03-16 00:00:30
- dave: 03-06 (four turns)
- erin: 03-17
- no user: 03-10, 03-17 (never a user)

Weekly active (new + returning): 02-23 alice, bob (2 + 0); 03-02 alice, carol,
dave (2 + 1); 03-09 alice, bob (0 + 2); 03-16 alice, carol, erin (1 + 2).
Cohorts: 02-23 {alice, bob}: week 1 alice (1/2), week 2 both (2/2), week 3
alice (1/2); 03-02 {carol, dave}: week 1 nobody, week 2 carol (1/2); 03-09
empty; 03-16 {erin}. Months: February's DAU sum 3 over 28 days, MAU 2:
stickiness 3/56; March (to the 18th) DAU sum 9 over 18 days, MAU 5: 0.1.
Churn (active 03-05..03-11, not 03-12..03-18): dave (4 turns), bob (3);
alice came back.
"""

from __future__ import annotations

import calendar
import json
import sqlite3
import time
from datetime import date
from pathlib import Path

import pytest

from context_trace._record import Conversation, Message
from context_trace._store.analytics import Analytics
from context_trace._store.ui_index import UIIndex
from context_trace.cli import main
from context_trace.ui.app import create_app
from tests.stores import greeting, write_records

NOW = calendar.timegm((2026, 3, 18, 12, 0, 0))


def _at(day: str, clock: str = "12:00:00") -> float:
    y, m, d = (int(p) for p in day.split("-"))
    h, mi, s = (int(p) for p in clock.split(":"))
    return float(calendar.timegm((y, m, d, h, mi, s)))


_TURNS: list[tuple[str | None, float]] = [
    ("alice", _at("2026-02-23")),
    ("alice", _at("2026-03-02")),
    ("alice", _at("2026-03-15", "23:59:30")),
    ("alice", _at("2026-03-17")),
    ("bob", _at("2026-02-24")),
    ("bob", _at("2026-02-25")),
    ("bob", _at("2026-03-09")),
    ("bob", _at("2026-03-11")),
    ("bob", _at("2026-03-11", "13:00:00")),
    ("carol", _at("2026-03-03")),
    ("carol", _at("2026-03-16", "00:00:30")),
    ("dave", _at("2026-03-06")),
    ("dave", _at("2026-03-06", "13:00:00")),
    ("dave", _at("2026-03-06", "14:00:00")),
    ("dave", _at("2026-03-06", "15:00:00")),
    ("erin", _at("2026-03-17")),
    (None, _at("2026-03-10")),
    (None, _at("2026-03-17")),
]


def write_store(path: Path, turns: list[tuple[str | None, float]]) -> None:
    """The turns, written by the real writer, one session per user."""
    write_records(
        path,
        [
            greeting(i, user, started, metadata={"model": "fake-model"})
            for i, (user, started) in enumerate(turns)
        ],
    )


@pytest.fixture
def retention_store(tmp_path: Path) -> Path:
    path = tmp_path / "retention.db"
    write_store(path, _TURNS)
    with UIIndex(path) as index:
        index.build()
    return path


def _report(path: Path, **kwargs):
    with Analytics(path, now=NOW) as analytics:
        return analytics.retention(**kwargs)


def test_weekly_active_new_and_returning(retention_store):
    """Weekly active users split into new and returning, ISO weeks from Monday UTC."""
    report = _report(retention_store, weeks=4)

    assert "2026-02-23" == report.since
    assert [
        ("2026-02-23", 2, 2, 0),
        ("2026-03-02", 3, 2, 1),
        ("2026-03-09", 2, 0, 2),
        ("2026-03-16", 3, 1, 2),
    ] == [(p.period, p.active, p.new, p.returning) for p in report.weekly]
    assert 5 == report.users


def test_daily_active_users_leave_out_turns_with_no_user(retention_store):
    """Daily active users count users, not the turns with no user."""
    report = _report(retention_store, weeks=4)
    daily = {p.period: (p.active, p.new) for p in report.daily}

    assert (2, 1) == daily["2026-03-17"]  # alice, erin (new); not the anonymous turn
    assert (1, 0) == daily["2026-03-15"]  # alice at 23:59:30 on Sunday
    assert (1, 0) == daily["2026-03-16"]  # carol at 00:00:30 on Monday
    assert (0, 0) == daily["2026-03-10"]  # only a turn with no user
    assert 24 == len(report.daily)  # 02-23 to 03-18


def test_monthly_active_users_and_stickiness(retention_store):
    """Stickiness is the month's mean DAU over its MAU (to today for this month)."""
    report = _report(retention_store, weeks=4)

    assert [("2026-02", 2, 2, 0), ("2026-03", 5, 3, 2)] == [
        (p.period, p.active, p.new, p.returning) for p in report.monthly
    ]
    assert 3 / 56 == pytest.approx(report.monthly[0].stickiness)
    assert 0.1 == pytest.approx(report.monthly[1].stickiness)
    assert 0.1 == pytest.approx(report.stickiness)


def test_weekly_cohorts(retention_store):
    """Each first-seen week's share active in week 1, 2, ... after it."""
    report = _report(retention_store, weeks=4)

    assert [
        ("2026-02-23", 2, (1, 2, 1), (0.5, 1.0, 0.5)),
        ("2026-03-02", 2, (0, 1), (0.0, 0.5)),
        ("2026-03-09", 0, (0,), (0.0,)),
        ("2026-03-16", 1, (), ()),
    ] == [(c.week, c.users, c.active, c.retained) for c in report.cohorts]


def test_churned_users_most_active_first(retention_store):
    """Churned: active in the 7 days before the last 7 and not since, most turns first."""
    report = _report(retention_store, weeks=4)

    assert 2 == report.churned_total
    assert [("dave", 4), ("bob", 3)] == [
        (u.user_id, u.previous_conversations) for u in report.churned
    ]
    assert _at("2026-03-11", "13:00:00") == report.churned[1].last_seen


def test_since_starts_at_its_iso_week(retention_store):
    """--since a Thursday covers from that ISO week's Monday."""
    report = _report(retention_store, since=date(2026, 3, 5))

    assert "2026-03-02" == report.since
    assert ["2026-03-02", "2026-03-09", "2026-03-16"] == [
        c.week for c in report.cohorts
    ]


@pytest.mark.parametrize("weeks", [0, -1, 105])
def test_weeks_out_of_range_is_refused(retention_store, weeks):
    """weeks outside 1..104 is a ValueError naming weeks."""
    with pytest.raises(ValueError, match="weeks must be from 1 to 104"):
        _report(retention_store, weeks=weeks)


def test_an_index_without_the_activity_tables_gets_them(retention_store):
    """A sidecar built before the weekly, monthly and cohort tables existed is filled in."""
    index_path = Path(str(retention_store) + ".ui-index")
    conn = sqlite3.connect(index_path)
    conn.execute("DROP TABLE ui_user_week")
    conn.execute("DROP TABLE ui_user_month")
    conn.execute("DROP TABLE ui_cohort_week")
    conn.commit()
    conn.close()

    with UIIndex(retention_store) as index:
        index.build()

    report = _report(retention_store, weeks=4)
    assert [2, 3, 2, 3] == [p.active for p in report.weekly]
    assert [2, 2, 0, 1] == [c.users for c in report.cohorts]


# --- the command line: a store around the real clock --------------------------
# The CLI reads the clock, so this store is placed by the current ISO week's
# Monday M (00:00 UTC), never after now: alice at M - 14 d, M - 7 d and M;
# bob at M - 14 d; carol at M - 7 d; erin at M (each + 1 h but those at M).
# Weekly (3 weeks): M - 14 alice, bob (2 new); M - 7 alice, carol (1 + 1);
# M alice, erin (1 + 1). Cohorts: M - 14 {alice, bob} 1/2 a week after, 1/2
# two weeks after; M - 7 {carol} 0/1; M {erin}. Churned: carol (1 turn): her
# day M - 7 is in the 7 days before the last 7 whatever weekday today is.


def _monday() -> float:
    today = _utc_today()
    monday = today.toordinal() - today.weekday()
    return float((monday - date(1970, 1, 1).toordinal()) * 86_400)


def _utc_today() -> date:
    return date.fromisoformat(time.strftime("%Y-%m-%d", time.gmtime()))


@pytest.fixture
def clock_store(tmp_path: Path) -> tuple[Path, float]:
    monday = _monday()
    week = 7 * 86_400.0
    path = tmp_path / "clock.db"
    write_store(
        path,
        [
            ("alice", monday - 2 * week + 3600),
            ("bob", monday - 2 * week + 3600),
            ("alice", monday - week + 3600),
            ("carol", monday - week + 3600),
            ("alice", monday),
            ("erin", monday),
        ],
    )
    return path, monday


def _day(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def test_cli_retention_json(clock_store, capsys):
    """retention --json prints the weekly actives, cohorts and churned users."""
    path, monday = clock_store
    week = 7 * 86_400.0
    weeks = [_day(monday - 2 * week), _day(monday - week), _day(monday)]

    assert 0 == main(["retention", "--db", str(path), "--weeks", "3", "--json"])
    body = json.loads(capsys.readouterr().out)

    assert [[weeks[0], 2, 2, 0], [weeks[1], 2, 1, 1], [weeks[2], 2, 1, 1]] == [
        [p["period"], p["active"], p["new"], p["returning"]] for p in body["weekly"]
    ]
    assert [
        [weeks[0], 2, [0.5, 0.5]],
        [weeks[1], 1, [0.0]],
        [weeks[2], 1, []],
    ] == [[c["week"], c["users"], c["retained"]] for c in body["cohorts"]]
    assert 1 == body["churned_total"]
    assert [["carol", 1]] == [
        [u["user_id"], u["previous_conversations"]] for u in body["churned"]
    ]


def test_cli_retention_table(clock_store, capsys):
    """retention prints the weekly table, the cohort shares and the churned users."""
    path, monday = clock_store

    assert 0 == main(["retention", "--db", str(path), "--weeks", "3"])
    out = capsys.readouterr().out

    first = _day(monday - 14 * 86_400.0)
    assert f"{first:<12}{2:>8}{2:>8}{0:>11}" in out.splitlines()
    assert f"{first:<12}{2:>6}{'50%':>6}{'50%':>6}" in out.splitlines()
    assert "Churned: 1 active in the 7 days before the last 7, none since" in out
    assert out.splitlines()[-1].startswith("carol ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--weeks", "0"], "expected a whole number from 1 to 104, got '0'"),
        (["--weeks", "x"], "expected a whole number from 1 to 104, got 'x'"),
        (["--since", "2026-13-01"], "expected a day as YYYY-MM-DD, got '2026-13-01'"),
    ],
)
def test_cli_retention_bad_options(clock_store, capsys, argv, message):
    """Bad --weeks or --since is a usage error (2) naming what was expected."""
    path, _ = clock_store

    assert 2 == main(["retention", "--db", str(path), *argv])
    assert message in capsys.readouterr().err


def test_cli_retention_since_in_the_future(clock_store, capsys):
    """--since after today is a usage error saying so."""
    path, _ = clock_store

    assert 2 == main(["retention", "--db", str(path), "--since", "2999-01-01"])
    assert "since must not be after today" in capsys.readouterr().err


def test_cli_retention_missing_store(tmp_path, capsys):
    """A missing store is a data error (1), not a traceback."""
    assert 1 == main(["retention", "--db", str(tmp_path / "none.db")])
    assert "no database at" in capsys.readouterr().err


def test_api_retention(clock_store):
    """/api/retention answers the report; a bad weeks or since is a 400 naming it."""
    path, monday = clock_store
    app = create_app(path, refresh_interval=0)
    client = app.test_client()
    try:
        body = client.get("/api/retention?weeks=3").get_json()
        weeks = client.get("/api/retention?weeks=0")
        since = client.get("/api/retention?since=March")
    finally:
        app.extensions["context_trace_ui"].stop()

    assert [2, 2, 2] == [p["active"] for p in body["weekly"]]
    assert _day(monday - 14 * 86_400.0) == body["since"]
    assert (400, "weeks must be from 1 to 104, got 0") == (
        weeks.status_code,
        weeks.get_json()["error"],
    )
    assert (400, "since must be a day as YYYY-MM-DD, got 'March'") == (
        since.status_code,
        since.get_json()["error"],
    )


def test_retention_page_and_user_activity(clock_store):
    """The Retention page shades each cohort cell by its share and links churned
    users; a user's weekly conversations (charted on their page) come from /api/user."""
    path, monday = clock_store
    first, last = _day(monday - 14 * 86_400.0), _day(monday - 7 * 86_400.0)
    app = create_app(path, refresh_interval=0)
    client = app.test_client()
    try:
        page = client.get("/retention?weeks=3").get_data(as_text=True)
        user = client.get("/api/user?id=alice").get_json()["activity"]
    finally:
        app.extensions["context_trace_ui"].stop()

    assert f'<tr><td>{first}</td><td class="num">2</td>' in page
    assert '<td class="num heat-5" title="1 of 2">50%</td>' in page
    assert '<td class="num heat-0" title="0 of 1">0%</td>' in page
    assert '<a class="user" href="/user?id=carol">carol</a>' in page
    weeks = {w["day"]: w["conversations"] for w in user}
    assert (1, 1, 1) == (weeks[first], weeks[last], weeks[_day(monday)])


def test_a_late_earlier_turn_moves_its_user_to_an_earlier_cohort(tmp_path):
    """A turn that started before the user's first one, written later, moves the
    user to that week's cohort: the index updated in place equals a fresh one."""
    path = tmp_path / "late.db"
    write_store(path, _TURNS)
    with UIIndex(path) as index:
        index.build()
        # erin (first seen 03-17) turns out to have come on 03-04 as well.
        late = Conversation(
            id="late", user_id="erin", session_id="s-erin",
            started_at=_at("2026-03-04"), ended_at=_at("2026-03-04") + 0.1,
            messages=(Message("user", "hi"),), metadata={},
        )  # fmt: skip
        write_records(path, [late])
        index.build()
    live = _report(path, weeks=4)
    Path(str(path) + ".ui-index").unlink()
    with UIIndex(path) as index:
        index.build()
    fresh = _report(path, weeks=4)

    assert [
        ("2026-02-23", 2, (1, 2, 1)),
        ("2026-03-02", 3, (0, 2)),  # carol, dave, erin: erin back in week 2
        ("2026-03-09", 0, (0,)),
        ("2026-03-16", 0, ()),
    ] == [(c.week, c.users, c.active) for c in live.cohorts]
    assert fresh == live


def test_a_report_reads_the_users_totals_once_for_new_users(retention_store):
    """New users per day and per month and the users in all come from one pass
    over the per-user totals, not one each."""
    from tests.ui._plans import statement_plans

    with Analytics(retention_store, now=NOW) as analytics:
        report = analytics.retention(weeks=2)
        plans = statement_plans(analytics._conn, lambda: analytics.retention(weeks=2))

    assert report.users > 0
    assert 1 == len([p for p in plans if p.startswith("SCAN ui_user_stats")]), plans
