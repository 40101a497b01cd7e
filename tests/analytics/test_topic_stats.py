"""Per topic: satisfaction, error rate, p50 latency and a daily trend, kept as turns are assigned."""

from __future__ import annotations

import json
import sqlite3
import statistics
from datetime import datetime, timezone
from pathlib import Path

import pytest

from context_trace import cli
from context_trace._store.ui_index import UIIndex
from context_trace.analytics.topic_index import TopicIndex
from tests.stores import write_records
from tests.ui.conftest import NOW, turn

from .test_topic_index import INTENTS, _questions

DAY = 86_400.0


def write_store(path: Path, start: int = 0) -> None:
    """Six questions per intent from three users over three days; every third
    alarm turn fails, weather questions come with "useless!!!" (negative)."""
    by_intent = _questions()
    convs = []
    k = start
    for intent in INTENTS:
        for i, question in enumerate(by_intent[intent][start : start + 6]):
            text = f"{question} this is useless!!!" if intent == "weather" else question
            error = "TimeoutError: x" if intent == "alarm" and i % 3 == 0 else None
            convs.append(
                turn(f"c-{k}", ("ava", "ben", "cy")[i % 3], f"s-{intent}-{i}",
                     (i % 3) * DAY + 60 * k, 100 * (i + 1), text, error=error)
            )  # fmt: skip
            k += 1
    write_records(path, convs)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "traces.db"
    write_store(path)
    with UIIndex(path) as index:
        index.build()
    return path


def recount(store: Path, topics: Path) -> dict[str, dict[str, object]]:
    """Each topic's figures counted from the turns themselves."""
    conn = sqlite3.connect(topics)
    conn.execute("ATTACH ? AS store", (str(store),))
    conn.execute("ATTACH ? AS ui", (str(store) + ".ui-index",))
    rows = conn.execute(
        "SELECT t.topic_id, c.error IS NOT NULL, c.latency_ms, s.penalty,"
        " date(c.started_at, 'unixepoch') FROM topic_turns t"
        " JOIN store.conversations c ON c.n = t.n JOIN ui.sat_turns s ON s.n = t.n"
    ).fetchall()
    conn.close()
    out: dict[str, dict[str, object]] = {}
    for topic, failed, latency, penalty, day in rows:
        acc = out.setdefault(topic, {"turns": 0, "errors": 0, "scores": [],
                                     "latency": [], "days": {}})  # fmt: skip
        acc["turns"] += 1  # type: ignore[operator]
        acc["errors"] += failed  # type: ignore[operator]
        acc["scores"].append(max(0.0, min(1.0, 1 - penalty)))  # type: ignore[attr-defined]
        acc["latency"].append(latency)  # type: ignore[attr-defined]
        acc["days"][day] = acc["days"].get(day, 0) + 1  # type: ignore[attr-defined]
    return out


def check(rows: list, expected: dict[str, dict[str, object]]) -> None:
    assert {r.id for r in rows} == set(expected)
    for r in rows:
        e = expected[r.id]
        assert r.conversations == e["turns"]
        assert r.error_rate == pytest.approx(e["errors"] / e["turns"])  # type: ignore[operator]
        assert r.scored == e["turns"]
        assert r.satisfaction == pytest.approx(statistics.mean(e["scores"]))  # type: ignore[arg-type]
        exact = statistics.median_low(e["latency"])  # type: ignore[type-var]
        assert r.latency_p50_ms == pytest.approx(exact, rel=0.07)
        assert {d: n for d, n in r.trend if n} == e["days"]


def test_per_topic_figures_match_a_recount(store: Path) -> None:
    """Each topic's satisfaction, error rate, p50 latency and trend equal a recount
    of its turns, after incremental refreshes, new turns and a re-fit."""
    with TopicIndex(store) as index:
        for _ in range(4):
            index.refresh(max_rows=8)
        check(index.summary(), recount(store, index.path))
        write_store(store, start=6)
        with UIIndex(store) as ui:
            ui.build()
        index.build()
        check(index.summary(), recount(store, index.path))
        index.refit()
        rows = index.summary()
        check(rows, recount(store, index.path))
    assert min(r.satisfaction or 1.0 for r in rows) < 1.0  # "useless!!!"
    assert max(r.error_rate or 0.0 for r in rows) > 0.0  # the failed alarm turns


def test_a_range_counts_only_its_days(store: Path) -> None:
    """From a day on: only those days' turns, and one trend point per day to today."""
    # The newest turn's day: the turns of "today" (up to half an hour older than
    # the newest) fall on the day before when the suite runs just after midnight.
    today = datetime.fromtimestamp(NOW, timezone.utc).date().isoformat()
    con = sqlite3.connect(store)
    (on_today,) = con.execute(
        "SELECT count(*) FROM conversations WHERE date(started_at, 'unixepoch') >= ?",
        (today,),
    ).fetchone()
    con.close()
    assert 1 <= on_today <= 10  # 10 unless the day began within the last half hour
    with TopicIndex(store) as index:
        index.build()
        everything = index.summary()
        recent = index.summary(since_day=today, today=today)
    assert sum(r.conversations for r in recent) == on_today
    assert sum(r.conversations for r in everything) == 30
    assert all([d for d, _ in r.trend] == [today] for r in recent)
    assert sum(r.share for r in recent) == pytest.approx(1.0)


def test_topics_assigned_before_the_dashboard_index_get_their_scores(
    tmp_path: Path,
) -> None:
    """Turns given a topic with no dashboard index yet are assigned again once it exists,
    so that every topic's satisfaction counts all its turns."""
    path = tmp_path / "traces.db"
    write_store(path)
    with TopicIndex(path) as index:
        index.build()
        assert all(r.satisfaction is None for r in index.summary())
    with UIIndex(path) as ui:
        ui.build()
    with TopicIndex(path) as index:
        index.build()
        rows = index.summary()
    assert all(r.scored == r.conversations for r in rows)


def test_topics_json_carries_the_figures(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`context-trace topics --json`: per topic its satisfaction, error rate,
    p50 latency and per-day trend."""
    assert cli.main(["topics", "--db", str(store), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["topics"]
    assert {"satisfaction", "error_rate", "latency_p50_ms", "trend"} <= set(rows[0])
    assert all(
        sum(p["conversations"] for p in r["trend"]) == r["conversations"] for r in rows
    )
    assert all(r["satisfaction"] is not None for r in rows)


def test_dashboard_with_its_own_index_file_scores_topics(tmp_path: Path) -> None:
    """With the index elsewhere (`--index FILE`), topics still read their satisfaction from it."""
    from context_trace.ui.app import create_app

    path = tmp_path / "traces.db"
    write_store(path)
    index = UIIndex(path, tmp_path / "elsewhere" / "ui.index")
    app = create_app(path, index=index, refresh_interval=0)
    rows = app.test_client().get("/api/topics").get_json()["items"]
    app.extensions["context_trace_ui"].stop()
    index.close()
    assert rows
    assert all(r["scored"] == r["conversations"] for r in rows)
