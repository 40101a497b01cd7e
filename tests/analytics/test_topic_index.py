"""A store's topics: assigned per turn, stable across refreshes, the CLI and the dashboard hook."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import context_trace
from context_trace import _runtime, cli
from context_trace.analytics.topic_index import TopicIndex, default_topics_path
from context_trace.analytics.topics import MISC
from tests.conftest import echo_chain

FIXTURE = Path(__file__).with_name("intents.csv")
INTENTS = ("alarm", "weather", "calories", "translate", "music")
USERS = ("ava", "ben", "cy")


def _questions() -> dict[str, list[str]]:
    with FIXTURE.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {i: [r["text"] for r in rows if r["intent"] == i] for i in INTENTS}


def _record(path: Path, asks: list[tuple[str, str]]) -> None:
    """Each (user, question) as a real LangChain turn in that user's session."""
    _runtime.configure(db_path=path, token=None)
    chain = echo_chain()
    for user, question in asks:
        with context_trace.track_user(user), context_trace.context_session(f"s-{user}"):
            chain.invoke({"q": question})
    assert _runtime.flush(10.0)


def _first_asks() -> list[tuple[str, str]]:
    by_intent = _questions()
    return [
        (USERS[k % len(USERS)], q)
        for intent in INTENTS
        for k, q in enumerate(by_intent[intent][:6])
    ]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "traces.db"
    _record(path, _first_asks())
    return path


def _topic_by_question(index: TopicIndex, path: Path) -> dict[str, str]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT n, messages_json FROM conversations").fetchall()
    finally:
        conn.close()
    found = index.assignments()
    return {json.loads(m)[-2][1]: found[n] for n, m in rows}


def test_turns_keep_their_topics_and_new_turns_join_incrementally(store: Path) -> None:
    """A refresh assigns only the new turns; earlier turns keep their topic ids."""
    with TopicIndex(store) as index:
        index.build()
        before = index.assignments()
        model = index.model
        assert model is not None
        assert len(before) == 30
        by_question = _topic_by_question(index, store)
        _record(store, [("ava", "please set an alarm for 9 am"),
                        ("dan", "how many calories in an orange")])  # fmt: skip
        assert index.refresh() is True
        after = index.assignments()
        assert index.model is not None
        assert index.model.ids == model.ids
    assert {n: after[n] for n in before} == before
    assert len(after) == 32
    now = _topic_by_question(TopicIndex(store), store)
    assert now["please set an alarm for 9 am"] == by_question["set an alarm for 7 am"]
    assert (
        now["how many calories in an orange"]
        == by_question["how many calories are in a banana"]
    )


def test_same_store_gives_the_same_topics(store: Path, tmp_path: Path) -> None:
    """Two topic files built from one store hold the same topics and assignments."""
    with TopicIndex(store) as a, TopicIndex(store, tmp_path / "other.topics") as b:
        a.build()
        b.build()
        assert a.model is not None
        assert b.model is not None
        assert a.model.topics == b.model.topics
        assert a.assignments() == b.assignments()


def test_refit_on_demand_keeps_ids(store: Path) -> None:
    """refit() on unchanged data gives the same ids and assignments."""
    with TopicIndex(store) as index:
        index.build()
        before = index.assignments()
        ids = index.model.ids if index.model else []
        index.refit()
        assert index.model is not None
        assert index.model.ids == ids
        assert index.assignments() == before


def test_store_doubling_refits_and_topics_that_stayed_keep_ids(store: Path) -> None:
    """When the store has doubled, a refresh re-fits; the old topics keep their ids."""
    with TopicIndex(store) as index:
        index.build()
        assert index.model is not None
        old = set(index.model.ids)
        by_intent = _questions()
        _record(store, [(USERS[k % 3], q) for i in INTENTS for k, q in
                        enumerate(by_intent[i][2:])] * 2)  # fmt: skip
        index.build()
        assert index.model is not None
        assert index.model.fitted_on == 90
        assert len(old & set(index.model.ids)) >= len(old) - 1
        assert len(index.assignments()) == 90


def test_summary_counts_conversations_users_and_share(store: Path) -> None:
    """Per topic: its turns, distinct users and share; shares sum to 1."""
    with TopicIndex(store) as index:
        index.build()
        rows = index.summary()
        ava = index.summary(user="ava")
    assert sum(r.conversations for r in rows) == 30
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert all(1 <= r.users <= 3 for r in rows)
    assert sum(r.conversations for r in ava) == 10
    real = [r for r in rows if r.id != MISC]
    assert real
    assert all(r.question and r.terms for r in real)


def test_topics_file_starts_over_for_another_store(store: Path, tmp_path: Path) -> None:
    """A topics file left by another store under the same name is rebuilt."""
    with TopicIndex(store) as index:
        index.build()
    other = tmp_path / "second" / "traces.db"
    other.parent.mkdir()
    _record(other, [("zed", "tell me a joke"), ("zed", "make me laugh with a joke")])
    target = default_topics_path(store)
    with TopicIndex(other, target) as index:
        index.build()
        assert len(index.assignments()) == 2


def test_topics_command_lists_topics_as_json(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`context-trace topics --json` lists each topic with its counts and label."""
    assert cli.main(["topics", "--db", str(store), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = data["topics"]
    assert sum(r["conversations"] for r in rows) == 30
    assert {
        "id",
        "label",
        "terms",
        "question",
        "conversations",
        "users",
        "share",
    } <= set(rows[0])
    assert cli.main(["topics", "--db", str(store), "--json", "--refit"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)["topics"]] == [
        r["id"] for r in rows
    ]


def test_topics_command_prints_a_table(store: Path) -> None:
    """`python -m context_trace topics` prints one row per topic under a header."""
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.run(
        [sys.executable, "-m", "context_trace", "topics", "--db", str(store)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["TOPIC", "CONVERSATIONS", "USERS", "SHARE"]
    assert len(lines) >= 4
    assert any("alarm" in line for line in lines[1:])


def test_topics_command_n_topics_and_bad_values(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--topics 3 --refit gives three topics; --topics 0 is a usage error."""
    argv = ["topics", "--db", str(store), "--json", "--refit", "--topics", "3"]
    assert cli.main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["topics"]
    assert len([r for r in rows if r["id"] != MISC]) == 3
    assert cli.main(["topics", "--db", str(store), "--topics", "0"]) == 2
    assert "--topics" in capsys.readouterr().err


def test_topics_command_missing_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing store is a one-line error with exit status 1."""
    assert cli.main(["topics", "--db", str(tmp_path / "none.db")]) == 1
    assert "no database at" in capsys.readouterr().err


def test_dashboard_refresh_assigns_topics(store: Path) -> None:
    """The dashboard's index refresh gives new turns their topic (the hook)."""
    from context_trace.ui.app import create_app

    app = create_app(store, refresh_interval=0)
    client = app.test_client()
    assert client.get("/").status_code == 200
    with TopicIndex(store) as index:
        assert len(index.assignments()) == 30
    _record(store, [("ava", "will it rain tomorrow")])
    assert client.get("/").status_code == 200
    with TopicIndex(store) as index:
        assert len(index.assignments()) == 31


def _recount(path: Path) -> dict[str, tuple[int, int]]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT topic_id, count(*), count(DISTINCT nullif(user_key, ''))"
            " FROM topic_turns GROUP BY topic_id"
        ).fetchall()
    finally:
        conn.close()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_totals_kept_incrementally_match_a_recount(store: Path) -> None:
    """Per-topic turns and users, kept chunk by chunk, equal a recount after refreshes and a re-fit."""
    with TopicIndex(store) as index:
        for _ in range(3):
            index.refresh(max_rows=7)
        _record(
            store, [("dan", "what's the weather tomorrow"), ("ava", "tell me a joke")]
        )
        index.build()
        counted = {r.id: (r.conversations, r.users) for r in index.summary()}
        assert counted == _recount(index.path)
        index.refit()
        counted = {r.id: (r.conversations, r.users) for r in index.summary()}
        assert counted == _recount(index.path)
    with TopicIndex(store, n_topics=3) as index:  # other topics: every turn moves
        index.refit()
        counted = {r.id: (r.conversations, r.users) for r in index.summary()}
        assert counted == _recount(index.path)
        assert len(counted) <= 4


def test_counting_a_chunk_out_looks_up_its_turns_only(store: Path) -> None:
    """Counting a chunk's earlier topics out looks its turns up in topic_turns, never scanning every assigned turn."""
    from context_trace.analytics.topic_schema import _APPLY, _APPLY_CHUNK, CHUNK_COSTS

    with TopicIndex(store) as index:
        index.build()
        conn = index._conn
        for statement in (*_APPLY, *CHUNK_COSTS):
            conn.execute(statement, (0, 1) if "?" in statement else ())
        count_out = [s for s in _APPLY_CHUNK if "topic_turns t " in s]
        assert len(count_out) == 5
        for statement in count_out:
            plan = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {statement}")]
            assert not [line for line in plan if line.startswith("SCAN t")], plan


def test_topics_file_keeps_a_page_cache_for_a_big_stores_indexes(store: Path) -> None:
    """The topics file's connection caches at least 32 MiB of pages (SQLite's default, 2 MiB, thrashes on a million turns)."""
    with TopicIndex(store) as index:
        kib = -index._conn.execute("PRAGMA cache_size").fetchone()[0]
    assert kib >= 32 * 1024


def test_a_chunks_assignments_are_written_by_one_statement(store: Path) -> None:
    """Assigning a chunk of turns writes them with one statement, not one per turn."""
    traced: list[str] = []
    with TopicIndex(store) as index:
        index._conn.set_trace_callback(traced.append)
        index.build()
        assigned = len(index.assignments())
    writes = [s for s in traced if s.startswith("INSERT INTO temp.chunk_assign")]
    assert assigned == 30
    assert len(writes) == 1
