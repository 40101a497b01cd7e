"""
Retention with a segment and in a time zone, against the hand-worked store of
test_retention.py (its docstring lists the turns; "now" is Wednesday
2026-03-18 12:00 UTC). Here bob's five turns carry ``model: other`` and the
others ``model: fake-model``.

Segment ``model: other`` (bob alone): weekly active 02-23 1 new, 03-02 none,
03-09 1 returning, 03-16 none; churned: bob, 3 turns in 03-05..03-11.

Europe/Paris (UTC+1 in these weeks): alice's Sunday 03-15 23:59:30 UTC turn is
Monday 03-16 00:59:30 there, so in the week of 03-16: week 03-09 has bob only
(1 returning), 03-15 no active user and 03-16 two (alice and carol).
"""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from context_trace._store.ui_index import UIIndex
from context_trace.cli import main
from context_trace.ui.app import create_app
from tests.stores import greeting, write_records

from .test_retention import _TURNS, _report

OTHER = (("model", "other"),)


@pytest.fixture
def model_store(tmp_path: Path) -> Path:
    """The hand-worked turns, bob's answered by model 'other'."""
    path = tmp_path / "retention.db"
    records = [
        greeting(i, user, started,
                 metadata={"model": "other" if user == "bob" else "fake-model"})
        for i, (user, started) in enumerate(_TURNS)
    ]  # fmt: skip
    return write_records(path, records, ui_index=True)


def _weekly(report):
    return [(p.period, p.active, p.new, p.returning) for p in report.weekly]


def test_a_segment_counts_only_its_users(model_store):
    """Segment model=other: bob's weeks, cohort and churn only."""
    report = _report(model_store, weeks=4, segment=OTHER)

    assert [
        ("2026-02-23", 1, 1, 0),
        ("2026-03-02", 0, 0, 0),
        ("2026-03-09", 1, 0, 1),
        ("2026-03-16", 0, 0, 0),
    ] == _weekly(report)
    assert 1 == report.users
    assert ("2026-02-23", 1, (0, 1, 0)) == (
        report.cohorts[0].week, report.cohorts[0].users, report.cohorts[0].active,
    )  # fmt: skip
    assert [("bob", 3)] == [
        (u.user_id, u.previous_conversations) for u in report.churned
    ]


def test_reading_the_turns_in_utc_equals_the_index(model_store):
    """The turn-reading path (a time zone given: UTC) gives the index's report."""
    assert _report(model_store, weeks=4) == _report(
        model_store, weeks=4, tz=ZoneInfo("UTC")
    )


def test_a_segment_of_every_turn_equals_the_whole_store(tmp_path):
    """A segment every turn is in (model=fake-model here) reports as no segment."""
    from .test_retention import write_store

    path = tmp_path / "all.db"
    write_store(path, _TURNS)
    with UIIndex(path) as index:
        index.build()

    assert _report(path, weeks=4) == _report(
        path, weeks=4, segment=(("model", "fake-model"),)
    )


def test_a_time_zone_moves_a_late_sunday_turn_to_monday(model_store):
    """In Europe/Paris, alice's 23:59 UTC Sunday turn counts on Monday 03-16."""
    report = _report(model_store, weeks=4, tz=ZoneInfo("Europe/Paris"))
    daily = {p.period: p.active for p in report.daily}

    assert (0, 2) == (daily["2026-03-15"], daily["2026-03-16"])
    assert ("2026-03-09", 1, 0, 1) == _weekly(report)[2]


def test_api_and_page_honour_the_segment(model_store):
    """/api/retention and /retention with meta=model:other report bob alone."""
    app = create_app(model_store, refresh_interval=0)
    client = app.test_client()
    try:
        body = client.get("/api/retention?weeks=52&meta=model:other").get_json()
        page = client.get("/retention?meta=model:other")
    finally:
        app.extensions["context_trace_ui"].stop()

    assert 1 == body["users"]
    assert 200 == page.status_code
    assert "1 users in all" in page.get_data(as_text=True)


def test_cli_retention_tz_and_meta(model_store, capsys):
    """--tz and --meta reach the report; a bad zone is a usage error naming --tz."""
    args = ["retention", "--db", str(model_store), "--since", "2026-02-23", "--json"]
    code = main([*args, "--meta", "model=other", "--tz", "Europe/Paris"])
    body = json.loads(capsys.readouterr().out)
    bad = main([*args, "--tz", "Mars/Olympus"])
    err = capsys.readouterr().err

    assert 0 == code
    assert 1 == body["users"]
    assert 2 == bad
    assert "--tz: unknown time zone 'Mars/Olympus'" in err


def test_ui_refuses_an_unknown_time_zone(model_store, capsys):
    """context-trace ui --tz with an unknown zone exits 2 before serving."""
    code = main(["ui", "--db", str(model_store), "--tz", "Nowhere/Land"])

    assert 2 == code
    assert "--tz: unknown time zone 'Nowhere/Land'" in capsys.readouterr().err


def test_ui_time_zone_buckets_retention(model_store):
    """create_app(tz=...) buckets the dashboard's retention in that zone's days."""
    days = {}
    for zone in (None, ZoneInfo("Europe/Paris")):
        app = create_app(model_store, refresh_interval=0, tz=zone)
        try:
            body = app.test_client().get("/api/retention?since=2026-03-09").get_json()
        finally:
            app.extensions["context_trace_ui"].stop()
        daily = {p["period"]: p["active"] for p in body["daily"]}
        days[str(zone)] = (daily["2026-03-15"], daily["2026-03-16"])

    assert {"None": (1, 1), "Europe/Paris": (0, 2)} == days
