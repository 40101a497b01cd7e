"""
Retention of a segment and in a time zone from the index's aggregates (no read
of the turns), against numbers worked out by hand.

"Now" is Wednesday 2026-03-18 12:00 UTC; the zone is Etc/GMT-1 (UTC+1 all
year). The turns (``plan`` in the scope's metadata):

- ann (pro): Monday 03-09 12:00, Sunday 03-15 23:30 (Monday 03-16 00:30 local)
- ben (free): 03-10 12:00, 03-16 12:00
- cat (pro): 03-16 12:00
- dan (pro): Wednesday 03-11 23:30 (Thursday 03-12 00:30 local)

Segment plan=pro, weeks of 03-09 and 03-16:

- UTC: daily 03-15 ann, 03-16 cat; weekly 03-09 ann, dan (2 new), 03-16 cat
  (1 new); cohort 03-09 {ann, dan} has nobody in week 1; churned (active
  03-05..03-11, silent 03-12..03-18): dan, 1 turn.
- UTC+1: daily 03-12 dan, 03-15 nobody, 03-16 ann and cat (cat new); weekly
  03-09 ann, dan (2 new), 03-16 ann, cat (1 new, 1 returning); cohort 03-09
  {ann, dan}: ann in week 1 (1/2); nobody churned (dan's last day is 03-12).
- Either: 3 users; March's DAU sum 4 over 18 days, MAU 3: stickiness 4/54.

Incremental: the index first holds ann's 03-09 turn, ben's and cat's; the
rest arrive later, with a late turn of cat's on Monday 03-02, which moves cat
to the cohort of 03-02 (UTC+1, three weeks): cohorts 03-02 {cat} (0, 1),
03-09 {ann, dan} (1), 03-16 empty; weekly 03-02 1 new, 03-09 2 new, 03-16 two
returning.
"""

from __future__ import annotations

import calendar
import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Message
from context_trace._store.analytics import Analytics
from context_trace._store.ui_index import UIIndex
from context_trace.cli import main
from tests.ui._plans import statement_plans

NOW = calendar.timegm((2026, 3, 18, 12, 0, 0))
PLUS_ONE = ZoneInfo("Etc/GMT-1")
PRO = (("plan", "pro"),)
_TURN_TABLES = {"conversations", "ui_segment_turn"}


def _at(day: str, clock: str = "12:00") -> float:
    y, m, d = (int(p) for p in day.split("-"))
    h, mi = (int(p) for p in clock.split(":"))
    return float(calendar.timegm((y, m, d, h, mi, 0)))


_PLANS = {"ann": "pro", "ben": "free", "cat": "pro", "dan": "pro"}
_FIRST = [
    ("ann", _at("2026-03-09")),
    ("ben", _at("2026-03-10")),
    ("cat", _at("2026-03-16")),
]
_LATER = [
    ("ann", _at("2026-03-15", "23:30")),
    ("ben", _at("2026-03-16")),
    ("dan", _at("2026-03-11", "23:30")),
]


def _write(path: Path, turns: list[tuple[str, float]], first: int = 0) -> None:
    store = SQLiteExporter(path)
    records = [
        Conversation(
            id=f"c{first + i}", user_id=user, session_id=f"s-{user}",
            started_at=started, ended_at=started + 0.1,
            messages=(Message("user", "hi"), Message("assistant", "hello")),
            metadata={"plan": _PLANS[user]},
        )
        for i, (user, started) in enumerate(turns)
    ]  # fmt: skip
    assert 0 == store.export(records).failed
    store.shutdown()


@pytest.fixture
def plan_store(tmp_path: Path) -> Path:
    """The turns above, indexed with the UTC+1 zone kept."""
    path = tmp_path / "plans.db"
    _write(path, _FIRST + _LATER)
    with UIIndex(path, zones=[PLUS_ONE]) as index:
        index.build()
    return path


def _report(path: Path, **kwargs: Any) -> Any:
    """The retention report, checking that no table of turns was read for it."""
    read: set[str] = set()

    def watch(action: int, table: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_READ and table is not None:
            read.add(table)
        return sqlite3.SQLITE_OK

    with Analytics(path, now=NOW) as analytics:
        analytics._conn.set_authorizer(watch)
        report = analytics.retention(**kwargs)
    assert set() == read & _TURN_TABLES, "read the turns"
    return report


def _weekly(report: Any) -> list[tuple[str, int, int, int]]:
    return [(p.period, p.active, p.new, p.returning) for p in report.weekly]


def _daily(report: Any, *days: str) -> list[int]:
    active = {p.period: p.active for p in report.daily}
    return [active[d] for d in days]


def test_a_segment_in_utc_reads_the_aggregates(plan_store):
    """plan=pro in UTC: its days, weeks, cohorts and churn, without reading turns."""
    report = _report(plan_store, weeks=2, segment=PRO)

    assert 3 == report.users
    assert [1, 1, 1] == _daily(report, "2026-03-11", "2026-03-15", "2026-03-16")
    assert [("2026-03-09", 2, 2, 0), ("2026-03-16", 1, 1, 0)] == _weekly(report)
    assert ("2026-03-09", 2, (0,)) == (
        report.cohorts[0].week, report.cohorts[0].users, report.cohorts[0].active
    )  # fmt: skip
    assert [("dan", 1)] == [
        (u.user_id, u.previous_conversations) for u in report.churned
    ]
    assert pytest.approx(4 / 54) == report.stickiness


def test_a_segment_in_utc_plus_one_moves_late_turns_to_the_next_day(plan_store):
    """In UTC+1, 23:30 UTC turns count on the next local day: days, cohort, churn."""
    report = _report(plan_store, weeks=2, segment=PRO, tz=PLUS_ONE)

    assert "2026-03-18" == report.today
    assert 3 == report.users
    assert [0, 1, 0, 2] == _daily(
        report, "2026-03-11", "2026-03-12", "2026-03-15", "2026-03-16"
    )
    assert [p.new for p in report.daily if p.period == "2026-03-16"] == [1]
    assert [("2026-03-09", 2, 2, 0), ("2026-03-16", 2, 1, 1)] == _weekly(report)
    assert ("2026-03-09", 2, (1,), (0.5,)) == (
        report.cohorts[0].week, report.cohorts[0].users,
        report.cohorts[0].active, report.cohorts[0].retained,
    )  # fmt: skip
    assert (0, ()) == (report.churned_total, report.churned)
    assert pytest.approx(4 / 54) == report.stickiness


def test_the_whole_store_in_utc_plus_one_reads_the_aggregates(plan_store):
    """No segment, UTC+1: ben counts too (03-16 has three users), from aggregates."""
    report = _report(plan_store, weeks=2, tz=PLUS_ONE)

    assert 4 == report.users
    assert [1, 0, 3] == _daily(report, "2026-03-12", "2026-03-15", "2026-03-16")
    assert [("2026-03-09", 3, 3, 0), ("2026-03-16", 3, 1, 2)] == _weekly(report)


def test_aggregates_equal_reading_the_turns(plan_store):
    """The aggregate path gives the turn-reading path's report, segment or zone."""
    from context_trace._store.retention import retention_of_turns

    with sqlite3.connect(plan_store) as conn:
        rows = conn.execute(
            "SELECT user_id, started_at, json_extract(metadata, '$.plan')"
            " FROM conversations"
        ).fetchall()
    for segment in ((), PRO):
        for zone in (None, PLUS_ONE):
            if not segment and zone is None:
                continue
            turns = [(u, t) for u, t, plan in rows if not segment or plan == "pro"]
            expected = retention_of_turns(turns, now=NOW, weeks=3, tz=zone)
            assert expected == _report(plan_store, weeks=3, segment=segment, tz=zone)


def test_incremental_refresh_moves_the_aggregates_exactly(tmp_path):
    """Turns indexed later, one before a user's first, move days and cohorts."""
    path = tmp_path / "later.db"
    _write(path, _FIRST)
    index = UIIndex(path, zones=[PLUS_ONE])
    try:
        index.build()
        before = _report(path, weeks=3, segment=PRO, tz=PLUS_ONE)
        _write(path, [*_LATER, ("cat", _at("2026-03-02"))], first=len(_FIRST))
        while not index.refresh(2):  # two turns a chunk: several chunks
            pass
    finally:
        index.close()
    after = _report(path, weeks=3, segment=PRO, tz=PLUS_ONE)

    assert [("2026-03-09", 1, (0,)), ("2026-03-16", 1, ())] == [
        (c.week, c.users, c.active) for c in before.cohorts[1:]
    ]
    assert [
        ("2026-03-02", 1, (0, 1)),
        ("2026-03-09", 2, (1,)),
        ("2026-03-16", 0, ()),
    ] == [(c.week, c.users, c.active) for c in after.cohorts]
    assert [
        ("2026-03-02", 1, 1, 0),
        ("2026-03-09", 2, 2, 0),
        ("2026-03-16", 2, 0, 2),
    ] == _weekly(after)
    assert 3 == after.users


def test_an_index_opened_without_the_zone_keeps_it_up_to_date(tmp_path):
    """A refresh by a process that did not name the zone still counts its turns."""
    path = tmp_path / "kept.db"
    _write(path, _FIRST)
    with UIIndex(path, zones=[PLUS_ONE]) as index:
        index.build()
    _write(path, _LATER, first=len(_FIRST))
    with UIIndex(path) as index:
        index.build()

    report = _report(path, weeks=2, segment=PRO, tz=PLUS_ONE)
    assert [("2026-03-09", 2, 2, 0), ("2026-03-16", 2, 1, 1)] == _weekly(report)


def test_cli_takes_the_zone_from_the_environment(plan_store, capsys, monkeypatch):
    """CONTEXT_TRACE_TZ sets retention's zone; an unknown one is a usage error naming it."""
    args = ["retention", "--db", str(plan_store), "--since", "2026-03-09", "--json"]
    monkeypatch.setenv("CONTEXT_TRACE_TZ", "Etc/GMT-1")
    assert 0 == main([*args, "--meta", "plan=pro"])
    body = __import__("json").loads(capsys.readouterr().out)
    monkeypatch.setenv("CONTEXT_TRACE_TZ", "Mars/Olympus")
    bad = main(args)
    err = capsys.readouterr().err
    ui_bad = main(["ui", "--db", str(plan_store)])
    ui_err = capsys.readouterr().err

    weekly = {p["period"]: p["active"] for p in body["weekly"]}
    assert 2 == weekly["2026-03-16"]  # ann's 23:30 UTC Sunday turn is Monday in UTC+1
    assert (2, 2) == (bad, ui_bad)
    assert "CONTEXT_TRACE_TZ: unknown time zone 'Mars/Olympus'" in err
    assert "CONTEXT_TRACE_TZ: unknown time zone 'Mars/Olympus'" in ui_err


@pytest.mark.parametrize("segment", [(), PRO])
def test_churn_in_a_kept_zone_is_read_by_ranges_not_per_user(plan_store, segment):
    """Retention in a kept zone reads the churned users' earlier turns without
    a subquery run for every churned user: one range of days when many churn,
    a lookup each only when few do."""
    with Analytics(plan_store, now=NOW) as analytics:
        report = analytics.retention(weeks=2, segment=segment, tz=PLUS_ONE)
        plans = statement_plans(
            analytics._conn,
            lambda: analytics.retention(weeks=2, segment=segment, tz=PLUS_ONE),
        )

    assert report.churned_total == len(report.churned)
    assert [] == [p for p in plans if p.startswith("CORRELATED")], plans


@pytest.fixture
def zoned_client(plan_store: Path) -> Any:
    """The dashboard over the turns above, started in the UTC+1 zone."""
    from context_trace.ui.app import create_app

    return create_app(plan_store, tz=PLUS_ONE, refresh_interval=0).test_client()


def test_the_api_takes_a_kept_zone_per_request(zoned_client):
    """?tz= picks UTC or the dashboard's zone per request: dan's 23:30 UTC turn
    on 03-11 counts on 03-11 in UTC and on 03-12 in UTC+1, ann's of 03-15 on
    03-16 (hand-worked from the turns above)."""

    def daily(query: str) -> list[int]:
        response = zoned_client.get(f"/api/retention?since=2026-03-09{query}")
        assert 200 == response.status_code, response.json
        active = {p["period"]: p["active"] for p in response.json["daily"]}
        return [
            active[d] for d in ("2026-03-11", "2026-03-12", "2026-03-15", "2026-03-16")
        ]

    assert [1, 0, 1, 2] == daily("&tz=UTC")
    assert [0, 1, 0, 3] == daily("&tz=Etc/GMT-1")
    assert [0, 1, 0, 3] == daily("")  # the dashboard's own zone
    page = zoned_client.get("/retention?tz=UTC")
    assert 200 == page.status_code
    assert b"UTC days" in page.data


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        ("Mars/Olympus", "tz: unknown time zone 'Mars/Olympus'"),
        ("../etc", "tz: unknown time zone '../etc'"),
        ("Asia/Tokyo", "tz: this dashboard keeps its figures in UTC and Etc/GMT-1"),
    ],
)
def test_a_zone_the_dashboard_does_not_keep_is_a_400_naming_tz(
    zoned_client, zone, message
):
    """A bad zone, or one whose figures the index does not keep (reading the
    turns instead would take seconds at scale), is a 400 that names tz."""
    response = zoned_client.get(f"/api/retention?tz={zone}")
    page = zoned_client.get(f"/retention?tz={zone}")

    assert 400 == response.status_code
    assert response.json["error"].startswith(message)
    assert (400, message.encode()) == (page.status_code, message.encode())
    assert message.replace("'", "&#39;").encode() in page.data
