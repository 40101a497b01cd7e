"""
Per-user satisfaction kept in the dashboard's index, against numbers worked
out by hand, through incremental refreshes.

"Now" is 2026-03-18 12:00 UTC; a session has ended after 30 idle minutes.
A turn scores 1 less its signals' weights (rephrase 0.3, error 0.5, no answer
0.4, did not help 0.5, 👎 0.6, 👍 -0.2, ended right after a failure 0.2),
clamped to [0, 1]. The store grows in three steps, the index refreshed after
each:

1. u1 (s1): c1 "Where is my order?" 1.0; c2 the same again (rephrase) 0.7.
   u2 (s2): c4, c5 answered, 1.0 each. u3 (s3): c8, c9 on 03-18, 1.0 each.
   u4 (s4): c10 on 03-17 13:00 "I don't know." (no answer) 0.6; c11 on
   03-18 08:00, 1.0; c12 "That didn't help" (did not help) 0.5.
2. c3 (u1, s1, 03-17 10:02) fails: error 0.5, and s1 ends right after it:
   0.3. c6 (u2) is answered and rated 👎: 0.4. c4, indexed in step 1, is rated
   👍 now: still 1.0, one more signal.
3. u2's 👎 on c6 is replaced by a 👍: 1.0. u1 comes back to s1 (c7 at 10:20,
   answered, 1.0): s1 no longer ends on c3, which is 0.5 again.

Per user (turns, score, flagged):

======  ==================  =====================  ==================
user    step 1              step 2                 step 3
======  ==================  =====================  ==================
u1      2, 1.7/2 = 0.85, 1  3, 2.0/3 = 0.667, 2    4, 3.2/4 = 0.8, 2
u2      2, 1.0, 0           3, 2.4/3 = 0.8, 1      3, 1.0, 0
u3      2, 1.0, 0           same                   same
u4      3, 2.1/3 = 0.7, 2   same                   same
======  ==================  =====================  ==================
"""

from __future__ import annotations

import calendar
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Feedback, Message
from context_trace._satisfaction import analyze
from context_trace._store.analytics import Analytics
from context_trace._store.ui_index import UIIndex, default_index_path
from context_trace.ui.app import create_app

NOW = float(calendar.timegm((2026, 3, 18, 12, 0, 0)))


def _at(day: str, clock: str) -> float:
    m, d = (int(p) for p in day.split("-"))
    hh, mm = (int(p) for p in clock.split(":"))
    return float(calendar.timegm((2026, m, d, hh, mm, 0)))


def _turn(
    n: int, user: str, session: str, when: float, question: str, answer: str | None
) -> Conversation:
    messages = [Message("user", question)]
    if answer is not None:
        messages.append(Message("assistant", answer))
    return Conversation(
        id=f"c{n}",
        user_id=user,
        session_id=session,
        started_at=when,
        ended_at=when + 1,
        messages=tuple(messages),
        error=None if answer is not None else "TimeoutError: upstream",
    )


STEP1: list[Conversation | Feedback] = [
    _turn(1, "u1", "s1", _at("03-17", "10:00"), "Where is my order?", "It ships today."),
    _turn(2, "u1", "s1", _at("03-17", "10:01"), "Where is my order?", "It ships today."),
    _turn(4, "u2", "s2", _at("03-17", "11:00"), "What is the weather in Paris?",
          "Sunny, 20 degrees."),
    _turn(5, "u2", "s2", _at("03-17", "11:01"), "Can you book a table for two?",
          "Booked for 8 pm."),
    _turn(8, "u3", "s3", _at("03-18", "09:00"), "How tall is Everest?", "8,849 m."),
    _turn(9, "u3", "s3", _at("03-18", "09:01"), "Who painted the Mona Lisa?",
          "Leonardo."),
    _turn(10, "u4", "s4", _at("03-17", "13:00"), "Can I export my invoices?",
          "I don't know."),
    _turn(11, "u4", "s4", _at("03-18", "08:00"), "Is there a status page?",
          "Yes, status.example.com."),
    _turn(12, "u4", "s4", _at("03-18", "08:01"), "That didn't help.", "Sorry."),
]  # fmt: skip
STEP2: list[Conversation | Feedback] = [
    _turn(3, "u1", "s1", _at("03-17", "10:02"), "How do I reset my password?", None),
    _turn(6, "u2", "s2", _at("03-17", "11:02"), "How do I cancel my plan?",
          "Go to Settings, then Plan."),
    Feedback("f6", "s2", "u2", -1, "c6", _at("03-17", "11:03")),
    Feedback("f4", "s2", "u2", 1, "c4", _at("03-17", "11:04")),
]  # fmt: skip
STEP3: list[Conversation | Feedback] = [
    Feedback("f6b", "s2", "u2", 1, "c6", _at("03-17", "11:05")),
    _turn(7, "u1", "s1", _at("03-17", "10:20"), "Thanks. Any news on shipping?",
          "It left the depot."),
]  # fmt: skip


def _write(path: Path, records: list[Conversation | Feedback]) -> None:
    store = SQLiteExporter(path)
    assert store.export(records).failed == 0
    store.shutdown()


def _refresh(path: Path) -> None:
    with UIIndex(path) as index:
        index.build()


def _sums(path: Path, range_: str = "all") -> dict[str, tuple[int, float, int]]:
    """Per user (turns, score, flagged turns), from the index's sums."""
    with Analytics(path, now=NOW) as analytics:
        rows = analytics.unhappy_users(limit=100, min_turns=1, range_=range_)
        everyone = {
            r["key"]: (r["turns"], r["score"], r["flagged_turns"]) for r in rows
        }
        for row in analytics.users(sort="satisfaction", limit=100).items:
            if row.user_id not in everyone:
                everyone[row.user_id] = (-1, round(row.satisfaction or 1.0, 3), 0)
    return everyone


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "traces.db"
    _write(path, STEP1)
    _refresh(path)
    return path


def _report_unhappy(path: Path, since: float | None) -> list[dict[str, Any]]:
    return analyze(path, since=since, now=NOW).unhappy(limit=None, min_turns=1)


def test_step_one_per_user_scores(store: Path) -> None:
    """Each user's turns, score and flagged turns are the hand-worked ones."""
    assert _sums(store) == {
        "u1": (2, 0.85, 1),
        "u4": (3, 0.7, 2),
        "u2": (-1, 1.0, 0),
        "u3": (-1, 1.0, 0),
    }


def test_appended_turns_and_late_ratings_move_the_sums_exactly(store: Path) -> None:
    """A failed turn that ends its session, a 👎 and a late 👍 on an indexed turn."""
    _write(store, STEP2)
    _refresh(store)
    assert _sums(store) == {
        "u1": (3, 0.667, 2),
        "u4": (3, 0.7, 2),
        "u2": (3, 0.8, 1),
        "u3": (-1, 1.0, 0),
    }
    with Analytics(store, now=NOW) as analytics:
        u1, _u4, u2 = analytics.unhappy_users(min_turns=1)
    assert u2["signals"] == {"rating_down": 1, "rating_up": 1}
    assert u1["signals"] == {"ended_after_failure": 1, "error": 1, "rephrase": 1}


def test_replaced_rating_and_resumed_session_move_the_sums_back(store: Path) -> None:
    """A 👎 replaced by a 👍, and a session that resumes after its failed turn."""
    _write(store, STEP2)
    _refresh(store)
    _write(store, STEP3)
    _refresh(store)
    assert _sums(store) == {
        "u4": (3, 0.7, 2),
        "u1": (4, 0.8, 2),
        "u2": (-1, 1.0, 0),
        "u3": (-1, 1.0, 0),
    }


def test_a_reader_before_the_session_ended_does_not_count_its_end(store: Path) -> None:
    """At 10:10, 8 minutes after c3 failed, s1 has not ended: c3 scores 0.5."""
    _write(store, STEP2)
    _refresh(store)
    with Analytics(store, now=_at("03-17", "10:10")) as analytics:
        rows = analytics.unhappy_users(min_turns=1)
    (u1,) = [r for r in rows if r["key"] == "u1"]
    assert (u1["key"], u1["score"], u1["signals"]) == (
        "u1", round(2.2 / 3, 3), {"error": 1, "rephrase": 1},
    )  # fmt: skip


@pytest.mark.parametrize("range_", ["all", "7d", "24h"])
def test_unhappy_equals_the_report_over_the_store(store: Path, range_: str) -> None:
    """/api/unhappy from the sums equals Report.unhappy over every turn, each step."""
    since = {"all": None, "7d": NOW - 7 * 86_400, "24h": NOW - 86_400}[range_]
    for step in (STEP2, STEP3):
        _write(store, step)
        _refresh(store)
        with Analytics(store, now=NOW) as analytics:
            got = analytics.unhappy_users(
                limit=100, min_turns=1, evidence=5, range_=range_
            )
        assert got == _report_unhappy(store, since)


def test_24h_counts_the_partial_first_day(store: Path) -> None:
    """From 03-17 12:00: u4's three turns (one on 03-17 13:00), not u1's or u2's."""
    _write(store, STEP2)
    _refresh(store)
    with Analytics(store, now=NOW) as analytics:
        rows = analytics.unhappy_users(min_turns=1, range_="24h")
    assert [(r["key"], r["turns"], r["score"]) for r in rows] == [("u4", 3, 0.7)]


def test_api_unhappy_and_users_page(store: Path) -> None:
    """/api/unhappy lists u1 then u2 (3 turns each); /users sorts them by score."""
    _write(store, STEP2)
    _refresh(store)
    client = create_app(store, refresh_interval=0).test_client()
    body = client.get("/api/unhappy").get_json()
    assert [(u["key"], u["score"]) for u in body["users"]] == [
        ("u1", 0.667), ("u4", 0.7), ("u2", 0.8),
    ]  # fmt: skip
    users = client.get("/api/users?sort=satisfaction&order=asc").get_json()["items"]
    assert [u["user_id"] for u in users] == ["u1", "u4", "u2", "u3"]


# u5 asks once on each of four days, in a session of its own each; their
# answers are rated 👎 later on 03-08 and 03-15. Running totals per day
# (turns, score sum, flagged): 03-01 (1, 1.0, 0), 03-08 (2, 1.4, 1), 03-12
# (3, 2.4, 1), 03-15 (4, 2.8, 2). From 03-11 12:00 (7d): c22, c23, 1.4/2 = 0.7.
SPREAD: list[Conversation | Feedback] = [
    _turn(20, "u5", "s20", _at("03-01", "09:00"), "Do you ship to Norway?", "Yes."),
    _turn(21, "u5", "s21", _at("03-08", "09:00"), "How long does it take?", "A week."),
    _turn(22, "u5", "s22", _at("03-12", "09:00"), "Can I pay by card?", "Yes."),
    _turn(23, "u5", "s23", _at("03-15", "09:00"), "Is there a discount?", "No."),
]  # fmt: skip
SPREAD_RATINGS: list[Conversation | Feedback] = [
    Feedback("f21", "s21", "u5", -1, "c21", _at("03-16", "10:00")),
    Feedback("f23", "s23", "u5", -1, "c23", _at("03-16", "10:01")),
]


def _running(path: Path, user: str) -> list[tuple[str, int, float, int]]:
    """A user's running totals per day, as the index keeps them."""
    conn = sqlite3.connect(default_index_path(path))
    try:
        rows = conn.execute(
            "SELECT day, turns, round(score_sum, 9), flagged FROM usat_user_cum"
            " WHERE user_key = ? ORDER BY day",
            (user,),
        ).fetchall()
    finally:
        conn.close()
    return [(day, turns, score, flagged) for day, turns, score, flagged in rows]


def test_late_ratings_move_the_running_totals_of_later_days(store: Path) -> None:
    """A 👎 on an old turn moves its day's running total and every later day's."""
    _write(store, SPREAD)
    _refresh(store)
    assert _running(store, "u5") == [
        ("2026-03-01", 1, 1.0, 0), ("2026-03-08", 2, 2.0, 0),
        ("2026-03-12", 3, 3.0, 0), ("2026-03-15", 4, 4.0, 0),
    ]  # fmt: skip
    _write(store, SPREAD_RATINGS)
    _refresh(store)
    assert _running(store, "u5") == [
        ("2026-03-01", 1, 1.0, 0), ("2026-03-08", 2, 1.4, 1),
        ("2026-03-12", 3, 2.4, 1), ("2026-03-15", 4, 2.8, 2),
    ]  # fmt: skip


@pytest.mark.parametrize("range_", ["7d", "30d"])
def test_ranges_across_days_equal_the_report(store: Path, range_: str) -> None:
    """A range starting between a user's days counts exactly their later days."""
    _write(store, SPREAD + STEP2)
    _refresh(store)
    _write(store, SPREAD_RATINGS + STEP3)
    _refresh(store)
    since = {"7d": NOW - 7 * 86_400, "30d": NOW - 30 * 86_400}[range_]
    with Analytics(store, now=NOW) as analytics:
        got = analytics.unhappy_users(limit=100, min_turns=1, range_=range_)
    assert got == _report_unhappy(store, since)
    (u5,) = [r for r in got if r["key"] == "u5"]
    assert (u5["turns"], u5["score"], u5["flagged_turns"]) == (
        {"7d": (2, 0.7, 1), "30d": (4, 0.7, 2)}[range_]
    )


def test_an_index_from_before_the_running_totals_gets_them(store: Path) -> None:
    """Without running totals the range is read per day; the next refresh adds them."""
    _write(store, SPREAD)
    _refresh(store)
    conn = sqlite3.connect(default_index_path(store))
    conn.execute("DROP TABLE usat_user_cum")
    conn.commit()
    conn.close()
    with Analytics(store, now=NOW) as analytics:
        before = analytics.unhappy_users(limit=100, min_turns=1, range_="7d")
    assert before == _report_unhappy(store, NOW - 7 * 86_400)
    _write(store, SPREAD_RATINGS)
    _refresh(store)
    assert _running(store, "u5") == [
        ("2026-03-01", 1, 1.0, 0), ("2026-03-08", 2, 1.4, 1),
        ("2026-03-12", 3, 2.4, 1), ("2026-03-15", 4, 2.8, 2),
    ]  # fmt: skip
    with Analytics(store, now=NOW) as analytics:
        after = analytics.unhappy_users(limit=100, min_turns=1, range_="7d")
    assert after == _report_unhappy(store, NOW - 7 * 86_400)


def test_equal_scores_go_by_flagged_turns_then_key(store: Path) -> None:
    """u4 (2.1/3) and u5 (2.8/4) both score 0.7 with 2 flagged turns: u4 first."""
    _write(store, SPREAD + STEP2)
    _refresh(store)
    _write(store, SPREAD_RATINGS + STEP3)
    _refresh(store)
    report = _report_unhappy(store, NOW - 30 * 86_400)
    assert [r["key"] for r in report] == ["u4", "u5", "u1"]
    with Analytics(store, now=NOW) as analytics:
        for range_ in ("all", "30d"):
            rows = analytics.unhappy_users(limit=100, min_turns=1, range_=range_)
            assert [r["key"] for r in rows] == ["u4", "u5", "u1"]
