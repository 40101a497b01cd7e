"""
Segment filters and the comparison, against numbers worked out by hand.

"Now" is Wednesday 2026-03-18 12:00 UTC. The turns, in commit order (n 1-8):

==  =====  ============  =======  ====  =====  ======  ======
n   user   started       latency  plan  error  prompt  answer
==  =====  ============  =======  ====  =====  ======  ======
1   u1     03-17 10:00   100      pro          10      5
2   u1     03-17 11:00   200      pro   yes    10      5
3   u1     03-18 10:00   300      pro          10      5
4   u2     03-16 12:00   400      pro          20      10
5   u3     03-10 12:00   1000     free         30      0
6   u3     03-17 12:00   2000     free         30      0
7   -      03-17 13:00   50       free         0       0
8   u4     03-17 14:00   70       -            0       0
==  =====  ============  =======  ====  =====  ======  ======

Every turn has model fake-model. Ratings: up on 1 (03-17 10:30) and on 4
(03-16 12:30), down on 6 (03-17 12:30).
"""

from __future__ import annotations

import calendar
import json
import sqlite3
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from context_trace._record import Conversation, Feedback
from context_trace._store.analytics import Analytics
from context_trace._store.segments import _z_test, parse_segment, users_between
from context_trace._store.ui_index import UIIndex
from context_trace.cli import main
from context_trace.ui.app import create_app
from tests.stores import greeting, write_records

from ._plans import statement_plans
from .test_retention import NOW
from .test_retention import retention_store as retention_store


def _at(day: str, hour: int) -> float:
    m, d = (int(p) for p in day.split("-"))
    return float(calendar.timegm((2026, m, d, hour, 0, 0)))


_ROWS = [
    ("u1", "03-17", 10, 100, "pro", None, 10, 5),
    ("u1", "03-17", 11, 200, "pro", "ValueError: x", 10, 5),
    ("u1", "03-18", 10, 300, "pro", None, 10, 5),
    ("u2", "03-16", 12, 400, "pro", None, 20, 10),
    ("u3", "03-10", 12, 1000, "free", None, 30, 0),
    ("u3", "03-17", 12, 2000, "free", None, 30, 0),
    (None, "03-17", 13, 50, "free", None, 0, 0),
    ("u4", "03-17", 14, 70, None, None, 0, 0),
]


@pytest.fixture(scope="module")
def segment_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("segments") / "segments.db"
    records: list[Conversation | Feedback] = []
    for i, (user, day, hour, latency, plan, error, prompt, answer) in enumerate(
        _ROWS, 1
    ):
        started = _at(day, hour)
        metadata = {
            "model": "fake-model",
            "prompt_tokens": str(prompt),
            "completion_tokens": str(answer),
            "latency_ms": str(latency),
        }
        if plan is not None:
            metadata["plan"] = plan
        records.append(
            greeting(
                i, user, started, seconds=latency / 1000, metadata=metadata, error=error
            )
        )
    ratings = [
        Feedback("f1", "s-u1", "u1", 1, "c1", _at("03-17", 10) + 1800),
        Feedback("f3", "s-u2", "u2", 1, "c4", _at("03-16", 12) + 1800),
        Feedback("f2", "s-u3", "u3", -1, "c6", _at("03-17", 12) + 1800),
    ]
    return write_records(path, records, ratings, ui_index=True)


@pytest.fixture
def analytics(segment_store: Path) -> Iterator[Analytics]:
    with Analytics(segment_store, now=NOW) as opened:
        yield opened


PRO = (("plan", "pro"),)
FREE = (("plan", "free"),)


def test_segments_list_keys_and_values_not_measures(analytics):
    """The segments on offer are the metadata values, most turns first; token
    counts and latency are measures, not segments."""
    assert {
        "model": [["fake-model", 8]],
        "plan": [["pro", 4], ["free", 3]],
    } == analytics.segments()


def test_overview_of_a_segment(analytics):
    """A segment's overview counts only its turns, ratings and users."""
    o = analytics.overview("all", segment=PRO)

    assert (4, 1, 0.25) == (o.conversations, o.errors, o.error_rate)
    assert (50, 25) == (o.prompt_tokens, o.completion_tokens)
    assert (2, 0) == (o.rating_up, o.rating_down)
    assert (("u1", 3), ("u2", 1)) == o.top_users
    assert [("2026-03-16", 1, 1), ("2026-03-17", 2, 1), ("2026-03-18", 1, 1)] == [
        (d.day, d.conversations, d.active_users) for d in o.days
    ]


def test_overview_of_a_segment_in_a_range(analytics):
    """7d with a segment: that segment's turns of the last 7 UTC days only."""
    o = analytics.overview("7d", segment=FREE)

    assert (2, 0, 1) == (o.conversations, o.rating_up, o.rating_down)
    assert ((None, 1), ("u3", 1)) == o.top_users
    assert "2026-03-12" == o.days[0].day


def test_last_24_hours_of_a_segment(analytics):
    """24h with a segment counts its turns since this time yesterday, exactly."""
    pro = analytics.overview("24h", segment=PRO)
    free = analytics.compare(FREE, (), "24h").a

    assert (1, 0) == (pro.conversations, pro.rating_up)  # 3 (03-18 10:00)
    assert (2, 1) == (free.conversations.value, free.users.value)  # 6 and 7
    assert (0.0, 1) == (free.rating_up_share.value, free.rating_up_share.count)


def test_an_index_without_the_segment_tables_gets_them(tmp_path, segment_store):
    """A sidecar made before segments existed is given them, from the store."""
    index_path = tmp_path / "old.ui-index"
    with UIIndex(segment_store, index_path) as index:
        index.build()
    conn = sqlite3.connect(index_path)
    for table in ("turn", "user", "day", "user_day", "hist", "s"):
        conn.execute(f"DROP TABLE ui_segment{'' if table == 's' else '_'}{table}")
    conn.commit()
    conn.close()

    with UIIndex(segment_store, index_path) as index:
        index.build()
    with Analytics(segment_store, index_path, now=NOW) as reopened:
        overview = reopened.overview("all", segment=PRO)

    assert [["pro", 4], ["free", 3]] == reopened_segments(segment_store, index_path)
    assert 4 == overview.conversations


def reopened_segments(store: Path, index: Path) -> list[list[Any]]:
    with Analytics(store, index, now=NOW) as analytics:
        return analytics.segments()["plan"]


def test_two_conditions_must_both_hold(analytics):
    """meta twice: a turn must have both values."""
    both = analytics.overview("all", segment=(("plan", "pro"), ("model", "fake-model")))
    none = analytics.overview("all", segment=(("plan", "pro"), ("model", "other")))

    assert (4, 0) == (both.conversations, none.conversations)


def test_conversations_of_a_segment_page_by_page(analytics):
    """The conversations list of a segment, newest first, in pages."""
    first = analytics.conversations(segment=PRO, limit=2)
    second = analytics.conversations(segment=PRO, limit=2, before=int(first.next))
    failed = analytics.conversations(segment=PRO, errors_only=True)

    assert ["c4", "c3"] == [c.conversation_id for c in first.items]
    assert ["c2", "c1"] == [c.conversation_id for c in second.items]
    assert None is second.next
    assert ["c2"] == [c.conversation_id for c in failed.items]


def test_users_of_a_segment_and_of_a_range(analytics):
    """Users filtered by segment (a turn in it) and by range (a turn in it)."""
    free = analytics.users(segment=FREE)
    recent = analytics.users(range_="24h", sort="user", descending=False)

    assert [None, "u3"] == [u.user_id for u in free.items]
    assert [None, "u1", "u3", "u4"] == [u.user_id for u in recent.items]
    assert 4 == recent.total


@pytest.mark.parametrize(
    "sort", ["last_seen", "conversations", "satisfaction", "cost", "user"]
)
def test_users_of_a_segment_are_looked_up_not_every_user_tested(analytics, sort):
    """The users table with a segment walks the segment's users (a lookup each)
    rather than testing every user of the store, whatever the sort."""
    page = analytics.users(segment=PRO, sort=sort)
    plans = statement_plans(
        analytics._conn, lambda: analytics.users(segment=PRO, sort=sort)
    )

    assert {"u1", "u2"} == {u.user_id for u in page.items}
    assert not [p for p in plans if p.startswith("SCAN ui_user_stats")], plans


def test_compare_two_segments(analytics):
    """Each figure of both segments, with the count it stands on."""
    result = analytics.compare(PRO, FREE)
    a, b = result.a, result.b

    assert (2, 4, 2.0) == (a.users.value, a.conversations.value,
                           a.conversations_per_user.value)  # fmt: skip
    assert (1.0, 2) == (a.rating_up_share.value, a.rating_up_share.count)
    assert (0.25, 4) == (a.error_rate.value, a.error_rate.count)
    # From the latency histogram: 400 ms is in bucket 52, 10 ** (52 / 20) = 398.
    assert (200, 398) == (a.latency_p50_ms.value, a.latency_p95_ms.value)
    assert 18.75 == a.tokens_per_conversation.value
    assert (None, 0) == (a.week1_retention.value, a.week1_retention.count)
    assert (1, 3, 3.0) == (b.users.value, b.conversations.value,
                           b.conversations_per_user.value)  # fmt: skip
    assert (0.0, 1) == (b.rating_up_share.value, b.rating_up_share.count)
    # 2000 ms is in bucket 66: 10 ** (66 / 20) = 1995.
    assert (1000, 1995) == (b.latency_p50_ms.value, b.latency_p95_ms.value)
    assert 20.0 == b.tokens_per_conversation.value
    assert [(False, None)] * 3 == [(d.significant, d.z) for d in result.differences]


def test_week1_retention_of_a_segment(retention_store):
    """Week-1 retention: of the users first seen in a week whose next week has
    ended, the share active in that next week (alice of alice, bob, carol, dave)."""
    with Analytics(retention_store, now=NOW) as analytics:
        result = analytics.compare((("model", "fake-model"),), ())

    assert (0.25, 4) == (result.a.week1_retention.value, result.a.week1_retention.count)
    assert result.b is None


@pytest.mark.parametrize(
    ("a", "b", "significant", "z"),
    [
        ((60, 100), (40, 100), True, 2.828),
        ((55, 100), (45, 100), False, 1.414),
        ((5, 8), (1, 8), False, None),
    ],
)
def test_two_proportion_z_test(a, b, significant, z):
    """Shares differ at |z| >= 1.96, tested only with 10 of each outcome a side."""
    result = _z_test("error_rate", a, b)

    assert (significant, z) == (result.significant, result.z)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["plan"], "meta must be KEY:VALUE, got 'plan'"),
        ([":pro"], "meta must be KEY:VALUE, got ':pro'"),
        (["plan:"], "meta must be KEY:VALUE, got 'plan:'"),
        (["a:b"] * 6, "meta can be given at most 5 times"),
        (["k:" + "v" * 201], "meta: key and value must be at most 200 characters"),
    ],
)
def test_bad_segments_are_refused(items, message):
    """A malformed segment is a ValueError naming the parameter."""
    with pytest.raises(ValueError, match=message):
        parse_segment(items, ":", "meta")


# --- the JSON API and pages -------------------------------------------------------


@pytest.fixture(scope="module")
def client(segment_store: Path) -> Iterator[Any]:
    app = create_app(segment_store, refresh_interval=0)
    yield app.test_client()
    app.extensions["context_trace_ui"].stop()


def test_api_segments_and_filtered_lists(client):
    """/api/segments lists the values; meta= filters the conversations list."""
    segments = client.get("/api/segments").get_json()
    listed = client.get("/api/conversations?meta=plan:pro&meta=model:fake-model")
    users = client.get("/api/users?meta=plan:free&sort=user&order=asc")

    assert [["pro", 4], ["free", 3]] == segments["keys"]["plan"]
    assert ["c4", "c3", "c2", "c1"] == [
        c["conversation_id"] for c in listed.get_json()["items"]
    ]
    assert [None, "u3"] == [u["user_id"] for u in users.get_json()["items"]]


def test_api_compare(client):
    """/api/compare puts both segments' figures and the tests side by side."""
    body = client.get("/api/compare?a=plan:pro&b=plan:free").get_json()

    assert {"value": 4, "count": 4} == body["a"]["conversations"]
    assert {"value": 0.0, "count": 3} == body["b"]["error_rate"]
    assert {"plan": "free"} == body["b"]["segment"]
    assert ["rating_up_share", "error_rate", "week1_retention"] == [
        d["measure"] for d in body["differences"]
    ]


def test_api_bad_segment_is_400(client):
    """A meta without a colon is a 400 naming meta."""
    response = client.get("/api/overview?meta=plan")

    assert 400 == response.status_code
    assert "meta must be KEY:VALUE, got 'plan'" == response.get_json()["error"]


def test_pages_keep_the_segment_in_their_links(client):
    """The overview offers the segments and keeps the chosen one in its range links."""
    page = client.get("/?range=all&meta=plan:pro").get_data(as_text=True)

    assert '<option value="plan:pro" selected>plan = pro (4)</option>' in page
    assert 'href="/?range=30d&amp;meta=plan%3Apro"' in page
    assert 'id="stat-conversations">4<' in page


def test_cli_compare_json(segment_store, capsys):
    """compare --json prints both segments' figures and the tests."""
    argv = ["compare", "--db", str(segment_store), "--segment-a", "plan=pro",
            "--segment-b", "plan=free", "--json"]  # fmt: skip

    assert 0 == main(argv)
    body = json.loads(capsys.readouterr().out)

    assert {"value": 2, "count": 2} == body["a"]["users"]
    assert {"value": 1, "count": 1} == body["b"]["users"]


def test_cli_compare_table(segment_store, capsys):
    """compare prints one line per figure, each value with its count."""
    argv = ["compare", "--db", str(segment_store), "--segment-a", "plan=pro",
            "--segment-b", "plan=free"]  # fmt: skip

    assert 0 == main(argv)
    out = capsys.readouterr().out

    line = next(row for row in out.splitlines() if row.startswith("error rate"))
    assert "25.0% (n=4)" in line
    assert "0.0% (n=3)" in line


def test_cli_compare_bad_segment(segment_store, capsys):
    """A segment without '=' is a usage error naming the option."""
    argv = ["compare", "--db", str(segment_store), "--segment-a", "plan",
            "--segment-b", "plan=free"]  # fmt: skip

    assert 2 == main(argv)
    assert "--segment-a must be KEY=VALUE, got 'plan'" in capsys.readouterr().err


def _reads(analytics: Analytics, call: Any) -> set[str]:
    """The tables *call* (given *analytics*) reads."""
    read: set[str] = set()

    def watch(action: int, table: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_READ and table is not None:
            read.add(table)
        return sqlite3.SQLITE_OK

    analytics._conn.set_authorizer(watch)
    try:
        call(analytics)
    finally:
        analytics._conn.set_authorizer(None)
    return read


@pytest.mark.parametrize("range_", ["all", "7d", "30d"])
def test_comparing_segments_reads_the_index_not_the_store(analytics, range_):
    """Two segments compared over whole days read the index's tables only:
    neither the store's turns nor its ratings (a pass over every rating)."""
    read = _reads(analytics, lambda a: a.compare(PRO, FREE, range_))

    assert set() == read & {"conversations", "feedback", "ui_segment_turn"}


def test_a_segments_ratings_follow_a_replaced_rating(tmp_path: Path):
    """A turn rated up, then down (the newer rating replaces the row): after a
    refresh the segment counts the down rating only, as a fresh index does."""
    path = tmp_path / "rated.db"
    turns = [
        greeting(1, "u1", _at("03-17", 10), metadata={"plan": "pro"}),
        greeting(2, "u2", _at("03-17", 11), metadata={"plan": "free"}),
    ]
    up = Feedback("f1", "s-u1", "u1", 1, "c1", _at("03-17", 12))
    write_records(path, turns, [up], ui_index=True)
    with Analytics(path, now=NOW) as before:
        first = before.compare(PRO, FREE).a
    down = Feedback("f2", "s-u1", "u1", -1, "c1", _at("03-17", 13))
    write_records(path, [down], ui_index=True)
    with Analytics(path, now=NOW) as after:
        second = after.compare(PRO, FREE).a
        overview = after.overview("all", segment=PRO)
    fresh = tmp_path / "fresh.ui-index"
    with UIIndex(path, fresh) as index:
        index.build()
    with Analytics(path, fresh, now=NOW) as rebuilt:
        again = rebuilt.compare(PRO, FREE).a

    assert first is not None
    assert second is not None
    assert again is not None
    assert (1.0, 1) == (first.rating_up_share.value, first.rating_up_share.count)
    assert (0.0, 1) == (second.rating_up_share.value, second.rating_up_share.count)
    assert (0, 1) == (overview.rating_up, overview.rating_down)
    assert second.rating_up_share == again.rating_up_share


@pytest.mark.parametrize(
    ("segment", "first", "last", "users"),
    [
        (PRO, "2026-03-16", "2026-03-17", 2),  # u2, u1; u1 again on 03-18
        (PRO, "2026-03-16", "2026-03-18", 2),  # the ISO week so far
        (FREE, "2026-03-16", "2026-03-22", 1),  # u3 (a no-user turn is no user)
        ((), "2026-03-16", "2026-03-16", 1),  # u2
        ((), "2026-03-16", "2026-03-17", 4),  # u1, u2, u3, u4
        ((), "2026-03-01", "2026-03-31", 4),  # the whole month
        (FREE, "2026-03-01", "2026-03-09", 0),  # u3's first turn is on 03-10
        (FREE, "2026-03-01", None, 1),  # u3
        (PRO, "2026-03-17", None, 1),  # u1 (u2 was last seen on 03-16)
        (PRO, "2026-03-17", "2026-04-30", 1),  # u1: no turn after it, as no end
        ((), "2026-03-17", "2026-04-30", 3),  # u1, u3, u4 (u2's last was 03-16)
        ((), "2026-03-10", "2026-03-16", 2),  # u3, u2: 7 days, turns after them
    ],
)
def test_users_between_two_days(analytics, segment, first, last, users):
    """The users with a turn (in the segment) from one UTC day to another,
    whichever way they are counted (a week or month so far, an open range,
    a few days, more days)."""
    assert users == users_between(analytics._conn, segment, first, last)


@pytest.mark.parametrize("period", ["week", "month"])
@pytest.mark.parametrize("segment", [(), PRO])
def test_comparing_periods_counts_users_without_sorting_their_days(
    analytics, period, segment
):
    """This week (month) so far against the last: each side's users come from
    the index's weekly (monthly) users, not from sorting every (day, user) row."""
    plans = statement_plans(
        analytics._conn, lambda: analytics.compare_periods(segment, period=period)
    )

    assert [] == [p for p in plans if "count(DISTINCT)" in p], plans


def test_a_segments_week1_retention_is_read_from_its_user_rows(analytics):
    """Week-1 retention of a segment comes from its users' rows in the index
    (first turn and week 1 kept there), not from a lookup of each user's
    weeks: at 1M turns a segment has tens of thousands of users."""
    result = analytics.compare(PRO, FREE)
    read = _reads(analytics, lambda a: a.compare(PRO, FREE))

    assert result.a is not None
    assert set() == read & {"ui_user_week", "ui_user_stats"}


def test_the_week1_scan_agrees_with_the_kept_week1_columns(retention_store):
    """The fallback for an index without week-1 columns (a scan of the users'
    rows and weeks) gives the same (retained, users) as the kept columns, for
    a segment and for the whole store (alice of alice, bob, carol, dave)."""
    from context_trace._store.retention import week_of
    from context_trace._store.segment_sql import week1_scan
    from context_trace._store.segments import kept_week1

    # The cohorts whose week 1 has ended: first seen before last week.
    today = datetime.fromtimestamp(NOW, timezone.utc).date()
    end = float(
        ((week_of(today) - timedelta(weeks=1)) - date(1970, 1, 1)).days * 86_400
    )
    segment = (("model", "fake-model"),)
    with Analytics(retention_store, now=NOW) as analytics:
        conn = analytics._conn
        scanned = week1_scan(conn, segment, 0.0, end)
        kept = kept_week1(conn, segment, 0.0, end)
        everyone = week1_scan(conn, (), 0.0, end)

    assert (1, 4) == scanned
    assert kept == scanned
    assert (1, 4) == everyone
