"""PostgreSQL going away: outages, restarts mid-batch, the CLI's outbox and replay."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import psycopg
import pytest

import context_trace
from context_trace._exporters.outbox import OutboxExporter
from context_trace._exporters.postgres import PostgresSender
from context_trace._exporters.senders import POSTGRESQL as DESTINATION
from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._store.postgres import check
from context_trace.cli import main
from tests.conftest import echo_chain
from tests.exporters.test_sqlite import T0, turn

from .server import WRITER_PASSWORD, Server
from .test_store import wait_delivered

_WAIT = 120.0


def one(url: str, sql: str) -> Any:
    with psycopg.connect(url, options="-c search_path=context_trace") as conn:
        return conn.execute(sql).fetchone()


@pytest.fixture
def restarts(pg_server: Server) -> Iterator[Server]:
    """The server, started again after the test whatever happened."""
    yield pg_server
    with contextlib.suppress(RuntimeError):  # it is running
        pg_server.start()


def empty_outbox(path: Path) -> None:
    local = SQLiteExporter(path, keep_local=False)
    local.check()
    local.shutdown()


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


class TestOutage:
    def test_recording_goes_on_and_nothing_is_lost(
        self, restarts: Server, pg_url: str, tmp_path: Path
    ) -> None:
        """PostgreSQL stopped under load: turns wait on disk, all arrive once after."""
        context_trace.configure(
            store=pg_url, db_path=tmp_path / "outbox.db", host="h1", flush_interval=0.1
        )
        chain = echo_chain()
        stop_at, start_at, total = 100, 300, 400
        for i in range(total):
            if i == stop_at:
                context_trace.flush(10.0)
                restarts.stop()
            if i == start_at:
                # Every turn recorded during the outage is on the local disk.
                context_trace.flush(10.0)
                stats = context_trace.stats()
                assert (0, start_at - stop_at) == (stats["dropped"], stats["pending"])
                restarts.start()
            with (
                context_trace.track_user(f"u{i % 7}"),
                context_trace.context_session(f"s{i % 13}"),
            ):
                chain.invoke({"q": f"question {i}"})
        wait_delivered(_WAIT)

        stats = context_trace.stats()
        assert (0, 0) == (stats["dropped"], stats["failed"])
        assert (total, total, total, 13) == one(
            pg_url,
            "SELECT (SELECT count(*) FROM turns), (SELECT sum(turns) FROM sessions),"
            " (SELECT sum(turns) FROM users), (SELECT count(*) FROM sessions)",
        )

    def test_restart_mid_batch_stores_no_duplicate(
        self, restarts: Server, pg_url: str, tmp_path: Path
    ) -> None:
        """The server killed while batches are written: every turn counted once."""
        local = SQLiteExporter(tmp_path / "outbox.db", keep_local=False)
        total = 6000
        local.outbox_put(
            [
                turn(f"c{i}", user=f"u{i % 5}", session=f"s{i % 40}", at=T0 + i)
                for i in range(total)
            ],
            (DESTINATION,),
        )
        sender = PostgresSender(pg_url, host="h1")
        sender.store.open()  # the schema exists before the first poll below
        outbox = OutboxExporter(local, senders={DESTINATION: sender})
        done = threading.Event()

        def deliver() -> None:
            deadline = time.monotonic() + _WAIT
            while outbox.pending() and time.monotonic() < deadline:
                outbox.deliver()
                time.sleep(0.05)
            done.set()

        worker = threading.Thread(target=deliver)
        worker.start()
        while one(pg_url, "SELECT count(*) FROM turns")[0] == 0:
            time.sleep(0.01)
        restarts.stop("immediate")  # a crash: batches in flight are cut
        time.sleep(0.5)
        restarts.start()
        worker.join(_WAIT + 10)
        outbox.shutdown()

        assert done.is_set()
        assert (total, total, total, 40, 5) == one(
            pg_url,
            "SELECT (SELECT count(*) FROM turns), (SELECT sum(turns) FROM sessions),"
            " (SELECT sum(turns) FROM users), (SELECT count(*) FROM sessions),"
            " (SELECT count(*) FROM users)",
        )


class TestCLI:
    def test_outbox_says_what_is_wrong_without_the_password(
        self, pg_server: Server, tmp_path: Path
    ) -> None:
        """`context-trace outbox --store` names the problem; the password never shows."""
        db = tmp_path / "outbox.db"
        empty_outbox(db)
        url = pg_server.url(password="wrong-pw-123")
        code, out, err = run("outbox", "--db", str(db), "--store", url)
        assert 1 == code
        assert "wrong password" in out
        assert "***@127.0.0.1" in out
        assert "wrong-pw-123" not in out + err

    def test_outbox_reports_a_reachable_store(
        self, pg_url: str, tmp_path: Path
    ) -> None:
        """With a working store `context-trace outbox` says it is reachable."""
        db = tmp_path / "outbox.db"
        empty_outbox(db)
        check(pg_url)  # a writer created the schema
        code, out, _ = run("outbox", "--db", str(db), "--store", pg_url)
        assert 0 == code
        assert "reachable" in out
        assert WRITER_PASSWORD not in out

    def test_replay_delivers_postgres_rows(
        self, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`context-trace replay` delivers the outbox's rows to $CONTEXT_TRACE_STORE."""
        db = tmp_path / "outbox.db"
        local = SQLiteExporter(db, keep_local=False)
        local.outbox_put([turn("c1"), turn("c2")], (DESTINATION,))
        local.shutdown()
        monkeypatch.setenv("CONTEXT_TRACE_STORE", pg_url)
        code, out, _ = run("replay", "--db", str(db))
        assert (0, "delivered 2, failed 0, still pending 0\n") == (code, out)
        assert (2,) == one(pg_url, "SELECT count(*) FROM turns")

    def test_reads_users_sessions_show_stats(
        self, pg_url: str, pg_reader_url: str, tmp_path: Path
    ) -> None:
        """users, sessions, show and stats read the store with the read-only role."""
        sender = PostgresSender(pg_url, host="h")
        sender.export_each(
            [
                turn("c1", user="ann", session="s1"),
                turn("c2", user="ann", session="s1", at=T0 + 5),
            ]
        )
        sender.shutdown()
        base = ("--store", pg_reader_url, "--json")

        users = json.loads(run("users", *base)[1])
        sessions = json.loads(run("sessions", *base)[1])
        show = json.loads(run("show", "s1", *base)[1])
        stats = json.loads(run("stats", *base)[1])
        code, text, _ = run("show", "s1", "--store", pg_reader_url)
        assert [("ann", 2, 1)] == [
            (u["user_id"], u["conversations"], u["sessions"]) for u in users
        ]
        assert [("s1", 2)] == [(s["session_id"], s["turns"]) for s in sessions]
        assert ["c1", "c2"] == [t["conversation_id"] for t in show["turns"]]
        assert [2] == [d["conversations"] for d in stats]
        assert 0 == code
        assert "session s1" in text

    def test_ui_start_up_names_the_problem(self, pg_server: Server) -> None:
        """`context-trace ui --store` with an unknown database says so at start-up."""
        url = pg_server.url(database="nope_db")
        code, out, err = run("ui", "--store", url)
        assert 1 == code
        assert "the dashboard cannot start" in err
        assert "unknown database" in err
        assert WRITER_PASSWORD not in out + err


class TestFork:
    def test_forked_child_delivers_on_a_connection_of_its_own(
        self, pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A forked worker's own connection: its exit leaves the parent's intact."""
        import os

        context_trace.configure(store=pg_url, db_path=tmp_path / "outbox.db", host="h")
        chain = echo_chain()
        with context_trace.track_user("parent"):
            chain.invoke({"q": "before fork"})
        wait_delivered()  # the parent's sender holds an open connection now
        pid = os.fork()
        if pid == 0:  # the child: record, deliver, close, exit
            code = 1
            try:
                with context_trace.track_user("child"):
                    chain.invoke({"q": "in child"})
                wait_delivered()
                context_trace.shutdown()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        with caplog.at_level("WARNING", logger="context_trace"):
            with context_trace.track_user("parent"):
                chain.invoke({"q": "after fork"})
            wait_delivered()

        assert 0 == os.waitstatus_to_exitcode(status)
        assert (3,) == one(pg_url, "SELECT count(*) FROM turns")
        assert "unavailable" not in caplog.text


def test_export_reads_the_store(pg_url: str, pg_reader_url: str) -> None:
    """`context-trace export --store` writes every turn of the shared store."""
    sender = PostgresSender(pg_url, host="h")
    sender.export_each([turn("c1", session="s1"), turn("c2", at=T0 + 5)])
    sender.shutdown()
    code, out, _ = run("export", "--store", pg_reader_url)
    assert 0 == code
    assert ["c1", "c2"] == [json.loads(line)["id"] for line in out.splitlines()]
