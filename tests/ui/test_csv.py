"""CSV export of every dashboard table: ``?format=csv`` on the JSON endpoints,
properly quoted, with cells that a spreadsheet would run as a formula defused."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest

from tests.stores import with_metadata, write_records

from .conftest import Server, turn

# User ids a spreadsheet would read as formulas, and one that needs quoting.
HOSTILE = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", 'a "b", c\nd']


@pytest.fixture(scope="module")
def csv_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One turn per hostile user id (plan=pro for two of them)."""
    path = tmp_path_factory.mktemp("csv-ui") / "traces.db"
    convs = [
        with_metadata(
            turn(f"c{i}", user, f"s{i}", 3600 - i, 100 + i, text=user),
            plan="pro" if i < 2 else "free",
        )
        for i, user in enumerate(HOSTILE)
    ]
    with Server(write_records(path, convs)) as server:
        yield server


def read_csv(server: Server, path: str) -> list[dict[str, str]]:
    status, body = server.get(path)
    assert 200 == status, body
    assert server.last_headers["Content-Type"].startswith("text/csv")
    assert "attachment" in server.last_headers["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(body, newline="")))


def guarded(value: str) -> str:
    return "'" + value if value[:1] in "=+-@" else value


def test_users_csv_quotes_and_defuses_formulas(csv_server):
    """Every user id comes back whole; those starting = + - @ get a quote first."""
    rows = read_csv(csv_server, "/api/users?format=csv&sort=user&order=asc")

    assert sorted(guarded(u) for u in HOSTILE) == sorted(r["user_id"] for r in rows)
    assert {"1"} == {r["conversations"] for r in rows}


def test_conversations_csv_honours_the_filters(csv_server):
    """The conversations CSV lists the filtered turns, the segment's only."""
    rows = read_csv(csv_server, "/api/conversations?format=csv&meta=plan:pro")

    assert sorted(guarded(u) for u in HOSTILE[:2]) == sorted(r["user_id"] for r in rows)
    assert "preview" in rows[0]


def test_user_sessions_csv(csv_server):
    """A user's sessions as CSV: one row per session."""
    rows = read_csv(csv_server, "/api/user?id=%2B1&format=csv")

    assert ["s1"] == [r["session_id"] for r in rows]
    assert "'+1" == rows[0]["user_id"]


@pytest.mark.parametrize(
    ("table", "column"),
    [("weekly", "period"), ("monthly", "period"), ("daily", "period"),
     ("cohorts", "week"), ("churned", "user_id")],
)  # fmt: skip
def test_retention_tables_as_csv(csv_server, table, column):
    """Each retention table has a CSV with its header (churned: none here)."""
    status, body = csv_server.get(f"/api/retention?format=csv&table={table}")
    header = next(csv.reader(io.StringIO(body)))

    assert 200 == status
    assert column == header[0]


def test_retention_cohorts_csv_counts(csv_server):
    """The cohort CSV's current week holds the five users."""
    rows = read_csv(csv_server, "/api/retention?format=csv&table=cohorts&weeks=1")

    assert [("5")] == [r["users"] for r in rows]


def test_compare_segments_and_overview_csv(csv_server):
    """Compare: a row per measure, both sides with counts; segments and top users."""
    compare = read_csv(csv_server, "/api/compare?format=csv&a=plan:pro&b=plan:free")
    segments = read_csv(csv_server, "/api/segments?format=csv")
    top = read_csv(csv_server, "/api/overview?format=csv&table=top_users&range=all")

    by_measure = {r["measure"]: r for r in compare}
    assert ("2", "3") == (by_measure["users"]["a"], by_measure["users"]["b"])
    assert "2" == by_measure["conversations"]["a_count"]
    assert {("plan", "pro", "2"), ("plan", "free", "3")} <= {
        (r["key"], r["value"], r["turns"]) for r in segments
    }
    assert 5 == len(top)


def test_topics_and_unhappy_csv_have_headers(csv_server):
    """Topics and unhappy users answer CSV too (a header, rows if any)."""
    for path in ("/api/topics?format=csv", "/api/unhappy?format=csv&range=all"):
        status, body = csv_server.get(path)

        assert 200 == status
        assert body.splitlines()[0]


@pytest.mark.parametrize(
    ("path", "message"),
    [("/api/users?format=xml", "format must be json or csv"),
     ("/api/retention?format=csv&table=x",
      "table must be one of churned, cohorts, daily, monthly, weekly")],
)  # fmt: skip
def test_bad_format_or_table_is_a_400(csv_server, path, message):
    """An unknown format or table is a 400 naming the choices."""
    status, body = csv_server.get(path)

    assert 400 == status
    assert message == body["error"]


@pytest.mark.parametrize(
    ("page", "link"),
    [("/users", "/api/users?format=csv"),
     ("/conversations?meta=plan:pro", "/api/conversations?meta=plan%3Apro&amp;format=csv"),
     ("/user?id=%2B1", "/api/user?id=%2B1&amp;format=csv"),
     ("/retention", "/api/retention?table=cohorts&amp;format=csv"),
     ("/?range=all", "/api/overview?range=all&amp;table=top_users&amp;format=csv"),
     ("/topics", "/api/topics?format=csv")],
)  # fmt: skip
def test_each_table_has_a_csv_link(csv_server, page, link):
    """Each page's table links to its CSV, with the page's filters."""
    _, body = csv_server.get(page)

    assert f'href="{link}"' in body


@pytest.mark.parametrize("by", ["model", "user"])
def test_cost_csv_has_the_reports_rows(csv_server, by):
    """The cost report's rows as CSV, keyed by its grouping, the same as its JSON."""
    status, report = csv_server.get(f"/api/cost?by={by}")
    assert 200 == status, report
    rows = read_csv(csv_server, f"/api/cost?by={by}&format=csv")

    assert [r["key"] for r in report["rows"]] == [
        r[by] if r[by][:1] != "'" else r[by][1:] for r in rows
    ]
    assert [str(r["turns"]) for r in report["rows"]] == [r["turns"] for r in rows]
    assert report["rows"], "the fixture's turns have a model and tokens"
    models = read_csv(csv_server, "/api/cost?format=csv&table=models")
    assert [m["model"] for m in report["models"]] == [m["model"] for m in models]
