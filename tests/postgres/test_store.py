"""The PostgreSQL store: delivery, idempotence, sessions across hosts, schema, roles."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

import context_trace
from context_trace._exporters.postgres import PostgresSender
from context_trace._store.postgres import (
    PostgresReads,
    PostgresStore,
    StoreUnavailable,
    check,
    latest_version,
    migrate,
)
from tests.conftest import echo_chain
from tests.exporters.test_sqlite import T0, rating, texts, turn

from .server import WRITER_PASSWORD, Server


def count(url: str, sql: str) -> Any:
    with psycopg.connect(url, options="-c search_path=context_trace") as conn:
        return conn.execute(sql).fetchone()[0]


def wait_delivered(timeout: float = 60.0) -> None:
    """Flush until the outbox is empty (the sender may be backing off)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        context_trace.flush(5.0)
        if context_trace.stats()["pending"] == 0:
            return
        assert time.monotonic() < deadline, context_trace.stats()
        time.sleep(0.2)


class TestConfigure:
    def test_turns_reach_postgres_through_the_outbox(
        self, pg_url: str, pg_reader_url: str, tmp_path: Path
    ) -> None:
        """configure(store=...) records turns into the outbox, then into PostgreSQL."""
        context_trace.configure(store=pg_url, db_path=tmp_path / "outbox.db", host="h1")
        chain = echo_chain()
        with context_trace.track_user("alice"), context_trace.context_session("s1"):
            chain.invoke({"q": "hello"})
            chain.invoke({"q": "again"})
        wait_delivered()

        with PostgresReads(pg_reader_url) as reads:
            transcript = reads.session_messages("s1")
            users = reads.users()
        assert [
            ("system", "You are helpful."),
            ("user", "hello"),
            ("assistant", "hello"),
            ("user", "again"),
            ("assistant", "again"),
        ] == texts(transcript)
        assert [("alice", 2, 1)] == [
            (u.user_id, u.conversations, u.sessions) for u in users
        ]
        assert {"h1"} == {
            r[0] for r in _rows(pg_url, "SELECT DISTINCT host FROM turns")
        }

    def test_store_from_the_environment(
        self, pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """CONTEXT_TRACE_STORE and CONTEXT_TRACE_HOST configure the shared store."""
        monkeypatch.setenv("CONTEXT_TRACE_STORE", pg_url)
        monkeypatch.setenv("CONTEXT_TRACE_HOST", "env-host")
        with context_trace.track_user("bob"):
            echo_chain().invoke({"q": "hi"})
        wait_delivered()

        assert [("env-host", "bob")] == _rows(pg_url, "SELECT host, user_id FROM turns")

    def test_the_sender_factory_builds_the_postgresql_sender(
        self, pg_url: str, pg_reader_url: str
    ) -> None:
        """build_senders (configure's and replay's) gives a PostgresSender for the URL."""
        from context_trace._exporters.senders import build_senders

        senders = build_senders(["postgresql"], store_url=pg_url, host="h9")
        try:
            (sender,) = senders.values()
            sender.export_each([turn("f1")])
        finally:
            for made in senders.values():
                made.shutdown(5.0)

        assert (["postgresql"], PostgresSender, [("h9", "f1")]) == (
            list(senders),
            type(sender),
            _rows(pg_url, "SELECT host, id FROM turns"),
        )

    def test_configure_gets_its_sender_from_the_factory(
        self, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """configure(store=...) asks build_senders for the postgresql destination."""
        from context_trace._exporters import senders as factory

        asked: list[list[str]] = []
        real = factory.build_senders

        def spy(destinations: Any, **kwargs: Any) -> Any:
            asked.append(list(destinations))
            return real(destinations, **kwargs)

        monkeypatch.setattr(factory, "build_senders", spy)
        context_trace.configure(store=pg_url, db_path=tmp_path / "outbox.db")

        assert [["postgresql"]] == asked

    def test_local_sqlite_stays_the_default(self, tmp_path: Path) -> None:
        """Without a store the turns go to the local SQLite file, as before."""
        config = context_trace.configure(db_path=tmp_path / "t.db")
        assert config.store is None

    def test_not_a_postgres_url_is_refused(self) -> None:
        """store= must be a postgresql:// URL; the message never echoes the value."""
        with pytest.raises(ValueError, match="store must be a postgresql:// URL") as e:
            context_trace.configure(store="mysql://u:topsecret@h/db")
        assert "topsecret" not in str(e.value)


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, options="-c search_path=context_trace") as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


class TestConnectionErrors:
    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            ("password", "wrong password"),
            ("database", "unknown database"),
            ("host", "unreachable"),
        ],
    )
    def test_configure_says_which_problem(
        self, pg_server: Server, kind: str, expected: str, tmp_path: Path
    ) -> None:
        """Wrong password, unknown database, unreachable host: configure says which."""
        url = {
            "password": pg_server.url(password="not-the-password-xyz"),
            "database": pg_server.url(database="no_such_db"),
            "host": f"postgresql://ct_writer:{WRITER_PASSWORD}@127.0.0.1:1/postgres",
        }[kind]
        with pytest.raises(ValueError, match=expected) as error:
            context_trace.configure(store=url, db_path=tmp_path / "o.db")
        message = str(error.value)
        assert "not-the-password-xyz" not in message
        assert WRITER_PASSWORD not in message
        assert "***@127.0.0.1" in message


class TestSender:
    def test_delivered_twice_is_stored_once(self, pg_url: str) -> None:
        """A batch delivered again (an answer lost) stores nothing twice."""
        sender = PostgresSender(pg_url, host="h1")
        batch = [turn("c1", session="s1"), turn("c2", session="s1", at=T0 + 10)]
        first = sender.export_each(batch)
        again = sender.export_each([*batch, turn("c3", session="s1", at=T0 + 20)])
        sender.shutdown()

        assert {"delivered"} == {o.status for o in first + again}
        assert (3, 3, 3) == (
            count(pg_url, "SELECT count(*) FROM turns"),
            count(pg_url, "SELECT turns FROM sessions WHERE id = 's1'"),
            count(pg_url, "SELECT turns FROM users WHERE id = 'u1'"),
        )

    def test_a_batch_of_turns_is_one_statement(
        self, pg_server: Server, pg_url: str
    ) -> None:
        """A batch of turns and its session and user counts cost the server one statement."""
        database = pg_url.rsplit("/", 1)[1]
        pg_server.admin(f"ALTER DATABASE {database} SET log_statement = 'all'")
        store = PostgresStore(pg_url, host="h1")
        store.open()
        pid = store._connection().info.backend_pid
        start = len(pg_server.log.read_text(errors="replace"))
        batch = [turn(f"c{i}", session=f"s{i % 3}", at=T0 + i) for i in range(10)]
        store.write(batch)
        store.close()

        log = pg_server.log.read_text(errors="replace")[start:]
        statements = [
            line.rsplit(": ", 1)[-1][:60]
            for line in log.splitlines()
            if f"[{pid}]" in line and ("statement: " in line or " execute " in line)
        ]
        assert 1 == len([s for s in statements if s not in ("BEGIN", "COMMIT")]), (
            statements
        )
        assert (10, 10, 10) == (
            count(pg_url, "SELECT count(*) FROM turns"),
            count(pg_url, "SELECT sum(turns) FROM sessions"),
            count(pg_url, "SELECT turns FROM users WHERE id = 'u1'"),
        )

    def test_nul_characters_do_not_fail_the_batch(self, pg_url: str) -> None:
        """A NUL character (which PostgreSQL text refuses) is replaced, not fatal."""
        sender = PostgresSender(pg_url, host="h1")
        outcomes = sender.export_each([turn("c1", user="a\x00b", error="E: \x00")])
        sender.shutdown()
        assert ["delivered"] == [o.status for o in outcomes]
        assert "a\ufffdb" == count(pg_url, "SELECT user_id FROM turns")

    def test_repr_and_logs_never_show_the_password(
        self, pg_server: Server, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The sender's repr and its retry warning name the server without password."""
        url = f"postgresql://ct_writer:{WRITER_PASSWORD}@127.0.0.1:1/postgres"
        sender = PostgresSender(url, host="h1")
        with caplog.at_level("DEBUG", logger="context_trace"):
            outcomes = sender.export_each([turn("c1")])
        sender.shutdown()
        assert ["retry"] == [o.status for o in outcomes]
        shown = repr(sender) + caplog.text
        assert "unreachable" in caplog.text
        assert "***@127.0.0.1:1" in shown
        assert WRITER_PASSWORD not in shown

    def test_config_repr_masks_the_password(self, pg_url: str, tmp_path: Path) -> None:
        """repr(Config) shows the store without its password."""
        config = context_trace.configure(store=pg_url, db_path=tmp_path / "o.db")
        assert "***@127.0.0.1" in repr(config)
        assert WRITER_PASSWORD not in repr(config) + str(config)


def system_turn(id: str, at: float, messages: tuple[tuple[str, str], ...]) -> Any:
    return turn(id, session="s", at=at, messages=messages)


class TestSessionsAcrossHosts:
    def test_one_transcript_in_order_history_once(
        self, pg_url: str, pg_reader_url: str
    ) -> None:
        """Turns of one session from two hosts, delivered out of order: one transcript."""
        a = PostgresSender(pg_url, host="a")
        b = PostgresSender(pg_url, host="b")
        sys_ = ("system", "Be brief.")
        # Host a serves turns 1 and 3, host b turn 2; each host's first turn of
        # the session holds the system prompt and the history it re-sent.
        t1 = turn(
            "t1",
            session="s",
            at=T0,
            messages=(sys_, ("user", "q1"), ("assistant", "a1")),
        )
        t2 = turn(
            "t2",
            session="s",
            at=T0 + 10,
            messages=(
                sys_,
                ("user", "q1"),
                ("assistant", "a1"),
                ("user", "q2"),
                ("assistant", "a2"),
            ),
        )
        t3 = turn(
            "t3",
            session="s",
            at=T0 + 20,
            messages=(
                ("user", "q2"),
                ("assistant", "a2"),
                ("user", "q3"),
                ("assistant", "a3"),
            ),
        )
        # b's outbox was held up: turn 3 arrives first, then 2, then 1.
        a.export_each([t3])
        b.export_each([t2])
        a.export_each([t1])
        a.shutdown()
        b.shutdown()

        with PostgresReads(pg_reader_url) as reads:
            messages = texts(reads.session_messages("s"))
            turns = [t.id for t in reads.session_turns("s")]
            sessions = reads.sessions()
        assert ["t1", "t2", "t3"] == turns
        assert [
            ("system", "Be brief."),
            ("user", "q1"),
            ("assistant", "a1"),
            ("user", "q2"),
            ("assistant", "a2"),
            ("user", "q3"),
            ("assistant", "a3"),
        ] == messages
        assert [("s", 3, T0, T0 + 20.5)] == [
            (s.session_id, s.turns, s.started_at, s.last_at) for s in sessions
        ]

    def test_changed_system_prompt_is_kept(
        self, pg_url: str, pg_reader_url: str
    ) -> None:
        """A system prompt that changed is recorded again, whichever host served it."""
        a = PostgresSender(pg_url, host="a")
        b = PostgresSender(pg_url, host="b")
        a.export_each(
            [
                turn(
                    "t1",
                    session="s",
                    at=T0,
                    messages=(("system", "v1"), ("user", "q1"), ("assistant", "a1")),
                )
            ]
        )
        b.export_each(
            [
                turn(
                    "t2",
                    session="s",
                    at=T0 + 10,
                    messages=(
                        ("system", "v2"),
                        ("user", "q1"),
                        ("assistant", "a1"),
                        ("user", "q2"),
                        ("assistant", "a2"),
                    ),
                )
            ]
        )
        a.shutdown()
        b.shutdown()
        with PostgresReads(pg_reader_url) as reads:
            messages = texts(reads.session_messages("s"))
        assert [
            ("system", "v1"),
            ("user", "q1"),
            ("assistant", "a1"),
            ("system", "v2"),
            ("user", "q1"),
            ("assistant", "a1"),
            ("user", "q2"),
            ("assistant", "a2"),
        ] == messages

    def test_rating_from_another_host_reaches_the_turn(
        self, pg_url: str, pg_reader_url: str
    ) -> None:
        """A rating sent on host b before host a's turn arrives still rates that turn."""
        a = PostgresSender(pg_url, host="a")
        b = PostgresSender(pg_url, host="b")
        b.export_each([rating("r1", "s", 1, at=T0 + 5)])
        a.export_each(
            [turn("t1", session="s", at=T0), turn("t2", session="s", at=T0 + 10)]
        )
        b.export_each([rating("r2", "s", -1, at=T0 + 30)])
        a.shutdown()
        b.shutdown()

        with PostgresReads(pg_reader_url) as reads:
            stored = [(f.id, f.conversation_id, f.rating) for f in reads.ratings("s")]
            turns = [(t.id, t.rating) for t in reads.session_turns("s")]
            session = reads.sessions()[0]
        assert [("r1", "t1", 1), ("r2", "t2", -1)] == stored
        assert [("t1", 1), ("t2", -1)] == turns
        assert (1, 1, T0 + 30) == (
            session.rating_up,
            session.rating_down,
            session.last_at,
        )


class TestSchema:
    def test_hosts_starting_at_once_migrate_once(self, pg_url: str) -> None:
        """Eight hosts migrating at once: each version applied once, none fails."""
        errors: list[BaseException] = []
        applied: list[list[int]] = []
        start = threading.Barrier(8)

        def host() -> None:
            try:
                with psycopg.connect(
                    pg_url, options="-c search_path=context_trace"
                ) as conn:
                    start.wait()
                    applied.append(migrate(conn))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=host) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [] == errors
        every = list(range(1, latest_version() + 1))
        assert [every] == [a for a in applied if a]
        assert [(1, "initial"), (2, "ingest_order")] == _rows(
            pg_url, "SELECT version, name FROM schema_migrations ORDER BY version"
        )

    def test_writer_without_its_schema_is_told_what_to_do(
        self, pg_server: Server
    ) -> None:
        """A writer with no schema of its own and no CREATE gets the DBA's command."""
        url = pg_server.url(database=pg_server.database(schema=False))
        with pytest.raises(
            StoreUnavailable, match="CREATE SCHEMA context_trace AUTHORIZATION"
        ):
            check(url)

    def test_reader_role_reads_and_cannot_write(
        self, pg_url: str, pg_reader_url: str
    ) -> None:
        """The read-only role reads every view and is refused any write."""
        sender = PostgresSender(pg_url, host="h1")
        sender.export_each([turn("c1", session="s1"), rating("r1", "s1", 1)])
        sender.shutdown()

        with PostgresReads(pg_reader_url) as reads:
            seen = (
                len(reads.users()),
                len(reads.sessions()),
                len(reads.daily_stats()),
                reads.transcript("s1") is not None,
                len(reads.ratings("s1")),
            )
        store = PostgresStore(pg_reader_url, host="reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            store.write([turn("c2")])
        store.close()
        assert (1, 1, 1, True, 1) == seen


def test_import_does_not_load_psycopg() -> None:
    """`import context_trace` keeps the core light: psycopg loads only for a store."""
    import subprocess
    import sys

    code = "import context_trace, sys; print('psycopg' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "False" == done.stdout.strip()


class TestReads:
    def test_export_streams_turns_with_history_once(
        self, pg_url: str, pg_reader_url: str
    ) -> None:
        """conversations(since=...) drops history stored before *since* too."""
        sender = PostgresSender(pg_url, host="a")
        q1 = (("user", "q1"), ("assistant", "a1"))
        sender.export_each(
            [
                turn("t1", session="s", at=T0, messages=q1),
                turn("t2", session="s", at=T0 + 10, messages=(*q1, ("user", "q2"))),
                turn("t3", at=T0 + 20, messages=(*q1, ("user", "q3"))),
            ]
        )
        sender.shutdown()
        with PostgresReads(pg_reader_url) as reads:
            everything = [(c.id, texts(c.messages)) for c in reads.conversations()]
            later = [(c.id, texts(c.messages)) for c in reads.conversations(T0 + 5)]
        assert [
            ("t1", [("user", "q1"), ("assistant", "a1")]),
            ("t2", [("user", "q2")]),
            ("t3", [("user", "q1"), ("assistant", "a1"), ("user", "q3")]),
        ] == everything
        assert everything[1:] == later

    def test_tool_errors_are_counted(self, pg_url: str, pg_reader_url: str) -> None:
        """A turn that answered although a tool failed counts as a tool error."""
        sender = PostgresSender(pg_url, host="a")
        sender.export_each(
            [
                turn("t1", session="s", metadata={"failed_tools": "search"}),
                turn("t2", session="s", at=T0 + 5, error="ValueError: x"),
            ]
        )
        sender.shutdown()
        with PostgresReads(pg_reader_url) as reads:
            user = reads.users(sort="tool_errors")[0]
            session = reads.sessions()[0]
        assert (1, 1, 1, 1) == (
            user.tool_errors,
            user.errors,
            session.tool_errors,
            session.errors,
        )
