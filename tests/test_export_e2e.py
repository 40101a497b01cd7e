"""End to end: scopes → recorder → pipeline → outbox → getcontext → a loopback Context API."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import context_trace as ct
from context_trace._exporters.context_api import ContextAPIExporter
from context_trace._exporters.outbox import OutboxExporter, replay
from context_trace._exporters.sqlite import SQLiteExporter

from .conftest import echo_chain
from .exporters.context_server import (
    ROUTE_LOG,
    ROUTE_THREAD,
    ROUTE_THREAD_PATCH,
    FakeContextServer,
    free_port,
)

FAKE_TOKEN = "test-token-e2e-8c1f"


@pytest.fixture
def server():
    with FakeContextServer(token=FAKE_TOKEN) as srv:
        yield srv


def fast_outbox(db: Path, endpoint: str, **remote_kwargs: object) -> OutboxExporter:
    """The configured shape (outbox + Context exporter) with quick retries."""
    remote_kwargs.setdefault("backoff_base", 0.01)
    remote_kwargs.setdefault("jitter", 0.0)
    store = SQLiteExporter(db, keep_local=True)
    remote = ContextAPIExporter(
        FAKE_TOKEN,
        endpoint=endpoint,
        transcript_source=store.session_messages,
        **remote_kwargs,
    )
    return OutboxExporter(store, remote)


def outbox_pending(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("select count(*) from outbox").fetchone()[0]
    finally:
        con.close()


class TestDeliveryThroughConfigure:
    def test_plain_turn_goes_to_the_conversation_route_with_bearer_auth(
        self, server, tmp_path
    ):
        """configure(token, endpoint) sends a scoped turn through getcontext."""
        ct.configure(token=FAKE_TOKEN, endpoint=server.url, db_path=tmp_path / "t.db")
        with ct.track_user("alice", metadata={"plan": "pro"}):
            assert "Hi there" == echo_chain().invoke({"q": "Hi there"})
        assert ct.flush(20)

        (request,) = server.requests_to(ROUTE_LOG)
        assert f"Bearer {FAKE_TOKEN}" == request.header("Authorization")
        assert [] == server.errors
        conversation = request.body["conversation"]
        assert ["system", "user", "assistant"] == [
            m["role"] for m in conversation["messages"]
        ]
        assert "alice" == conversation["metadata"]["user_id"]
        assert "pro" == conversation["metadata"]["plan"]
        assert all(isinstance(v, str) for v in conversation["metadata"].values())
        assert 0 == outbox_pending(tmp_path / "t.db")

    def test_session_turns_share_one_thread_and_the_rating_patches_it(
        self, server, tmp_path
    ):
        """Two turns of a session land in one thread; rate() sends a PATCH."""
        ct.configure(token=FAKE_TOKEN, endpoint=server.url, db_path=tmp_path / "t.db")
        chain = echo_chain()
        with ct.track_user("bob"), ct.context_session("sess-42") as session:
            chain.invoke({"q": "first"})
            chain.invoke({"q": "second"})
            session.rate(1)
        assert ct.flush(20)

        assert 2 == len(server.requests_to(ROUTE_THREAD))
        patches = [r for r in server.requests if r.method == "PATCH"]
        assert 1 == len(patches)
        assert "/api/v1/log/conversation/thread/sess-42" == patches[0].path
        assert ROUTE_THREAD_PATCH == patches[0].route
        texts = [m["message"] for m in server.threads["sess-42"]]
        assert ["You are helpful.", "first", "first", "second", "second"] == texts
        assert [] == server.errors


class TestTransientFailures:
    def test_503_503_201_is_delivered_exactly_once(self, server, tmp_path):
        """Two 503s then a 201: one stored conversation, two retries counted."""
        server.script(ROUTE_LOG, [503, 503, 201])
        ct.configure(exporter=fast_outbox(tmp_path / "t.db", server.url))
        with ct.track_user("carol"):
            echo_chain().invoke({"q": "retry me"})
        assert ct.flush(20)

        assert 3 == len(server.requests_to(ROUTE_LOG))
        assert 1 == len(server.conversations)
        stats = ct.stats()
        assert 1 == stats["exported"]
        assert 2 == stats["retried"]

    def test_backend_down_never_raises_and_keeps_records_on_disk(
        self, tmp_path, caplog
    ):
        """A closed port: every invoke returns normally and the turns wait in the outbox."""
        db = tmp_path / "down.db"
        endpoint = f"http://127.0.0.1:{free_port()}"
        ct.configure(exporter=fast_outbox(db, endpoint, max_attempts=2))
        chain = echo_chain()
        with caplog.at_level(logging.DEBUG):
            for i in range(20):
                with ct.track_user(f"user-{i}"):
                    assert f"q{i}" == chain.invoke({"q": f"q{i}"})
            assert ct.flush(30)

        assert 20 == outbox_pending(db)
        assert 0 == ct.stats()["exported"]

    def test_a_hung_backend_does_not_hold_up_the_app(self, server, tmp_path):
        """While the server sits on a request, invokes keep returning at once."""
        server.set_delay(60)  # the server holds every request until it is closed
        ct.configure(exporter=fast_outbox(tmp_path / "t.db", server.url, timeout=30.0))
        chain = echo_chain()
        with ct.track_user("dave"):
            chain.invoke({"q": "first"})
        server.wait_for(1, timeout=20)
        answers = []
        for i in range(25):
            with ct.track_user("dave"):
                answers.append(chain.invoke({"q": f"next {i}"}))

        assert [f"next {i}" for i in range(25)] == answers
        assert 1 == len(
            server.requests
        )  # the worker is still stuck on the first request


class TestSecrets:
    def test_token_never_reaches_logs_or_reprs(self, tmp_path, caplog):
        """With 401s and a dead port, no log record, repr or stat shows the token."""
        with (
            FakeContextServer(token="another-token") as wrong,
            caplog.at_level(logging.DEBUG),
        ):
            ct.configure(
                token=FAKE_TOKEN, endpoint=wrong.url, db_path=tmp_path / "a.db"
            )
            chain = echo_chain()
            for i in range(3):
                with ct.track_user(f"u{i}"):
                    chain.invoke({"q": "x"})
            assert ct.flush(20)
            assert 401 in {r.status for r in wrong.requests}
            exporter = ct._runtime._STATE.pipeline.exporter  # type: ignore[union-attr]
            shown = [repr(exporter), repr(ct.get_config()), str(ct.stats())]
            ct.configure(
                exporter=fast_outbox(
                    tmp_path / "b.db", f"http://127.0.0.1:{free_port()}", max_attempts=2
                )
            )
            with ct.track_user("u"):
                chain.invoke({"q": "y"})
            assert ct.flush(20)

        texts = [r.getMessage() for r in caplog.records]
        texts += [str(r.args) for r in caplog.records]
        texts += [r.exc_text or "" for r in caplog.records]
        assert any("401" in t for t in texts)
        assert not [t for t in texts + shown if FAKE_TOKEN in t]


class TestRedaction:
    def test_email_is_gone_before_the_server_and_the_file(self, server, tmp_path):
        """redact=['email'] applies to what the API receives and what SQLite keeps."""
        db = tmp_path / "r.db"
        ct.configure(
            token=FAKE_TOKEN,
            endpoint=server.url,
            db_path=db,
            keep_local=True,
            redact=["email"],
        )
        with ct.track_user("erin"):
            echo_chain().invoke({"q": "write to erin@example.com please"})
        assert ct.flush(20)
        ct.shutdown(10)

        (request,) = server.requests_to(ROUTE_LOG)
        assert "erin@example.com" not in request.raw.decode()
        assert "[EMAIL]" in request.raw.decode()
        assert b"erin@example.com" not in db.read_bytes()
        con = sqlite3.connect(db)
        try:
            stored = [t for (t,) in con.execute("select content from messages")]
        finally:
            con.close()
        assert "write to [EMAIL] please" in stored


class TestBoundedMemory:
    def test_tiny_queue_drops_and_counts(self, server, tmp_path):
        """With max_queue=5 and the worker stuck, the rest is dropped and counted."""
        server.set_delay(60)
        ct.configure(
            exporter=fast_outbox(tmp_path / "q.db", server.url, timeout=30.0),
            max_queue=5,
            max_batch=1,
        )
        chain = echo_chain()
        with ct.track_user("frank"):
            chain.invoke({"q": "first"})
        server.wait_for(1, timeout=20)  # the worker now hangs on that request
        for i in range(50):
            with ct.track_user("frank"):
                chain.invoke({"q": f"q{i}"})

        stats = ct.stats()
        assert 45 == stats["dropped"]
        assert 5 == stats["queued"]


class TestOutage:
    def test_turns_reach_the_disk_while_delivery_is_failing(self, tmp_path):
        """During an outage the worker keeps persisting; shutdown loses nothing recorded."""
        db = tmp_path / "outage.db"
        endpoint = f"http://127.0.0.1:{free_port()}"
        # Slow retries: each delivery pass is stuck for about 1.5 s on the dead port.
        ct.configure(
            exporter=fast_outbox(
                db, endpoint, max_attempts=3, backoff_base=0.5, circuit_threshold=1000
            ),
            flush_interval=0.05,
            max_batch=10,
        )
        chain = echo_chain()
        for i in range(120):
            with ct.track_user(f"user-{i % 6}"):
                chain.invoke({"q": f"q{i}"})

        ct.shutdown(3.0)  # bounded, whatever the backend does
        assert 120 == outbox_pending(db)

    def test_stats_pending_is_the_outbox_backlog(self, tmp_path):
        """stats()["pending"] reports the rows waiting on disk, not a running total."""
        db = tmp_path / "backlog.db"
        ct.configure(
            exporter=fast_outbox(db, f"http://127.0.0.1:{free_port()}", max_attempts=1)
        )
        chain = echo_chain()
        for i in range(7):
            with ct.track_user("u"):
                chain.invoke({"q": f"q{i}"})
        assert ct.flush(20)

        assert 7 == ct.stats()["pending"]
        assert 0 == ct.stats()["exported"]


class TestOutboxSurvivesACrash:
    def test_killed_process_rows_are_delivered_once_by_the_next_one(
        self, server, tmp_path
    ):
        """SIGKILL with the backend down; a new process with it up delivers each row once."""
        db = tmp_path / "crash.db"
        dead = f"http://127.0.0.1:{free_port()}"
        script = textwrap.dedent(
            f"""
            import os, signal, sys
            sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
            import context_trace as ct
            from tests.test_export_e2e import fast_outbox
            from tests.conftest import echo_chain
            ct.configure(exporter=fast_outbox({str(db)!r}, {dead!r}, max_attempts=1), flush_interval=60.0)
            chain = echo_chain()
            for i in range(40):
                with ct.track_user(f"user-{{i % 4}}"):
                    chain.invoke({{"q": f"question {{i}}"}})
                if i == 29:
                    ct.flush(30)  # 30 turns reach the disk; 10 stay in memory
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTEXT_")}
        first = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, timeout=120
        )
        assert -signal.SIGKILL == first.returncode, first.stderr.decode()
        on_disk = outbox_pending(db)
        assert 30 <= on_disk <= 40

        ct.configure(exporter=fast_outbox(db, server.url))  # starts delivering at once
        server.wait_for(on_disk, timeout=30)
        assert ct.flush(20)
        ct.shutdown(10)

        ids = [
            r.body["conversation"]["metadata"]["turn_id"]
            for r in server.requests_to(ROUTE_LOG)
        ]
        assert on_disk == len(ids)
        assert on_disk == len(set(ids))
        assert 0 == outbox_pending(db)

    def test_replay_delivers_the_backlog(self, server, tmp_path):
        """replay() (the CLI's `context-trace replay`) empties a left-over outbox."""
        db = tmp_path / "replay.db"
        ct.configure(
            exporter=fast_outbox(db, f"http://127.0.0.1:{free_port()}", max_attempts=1)
        )
        chain = echo_chain()
        for i in range(12):
            with ct.track_user(f"u{i}"):
                chain.invoke({"q": f"q{i}"})
        assert ct.flush(20)
        ct.shutdown(10)
        assert 12 == outbox_pending(db)
        seen: list[tuple[int, int]] = []

        delivered, failed, pending = replay(
            db, FAKE_TOKEN, server.url, progress=lambda d, a: seen.append((d, a))
        )

        assert (12, 0, 0) == (delivered, failed, pending)
        assert 12 == len(server.requests_to(ROUTE_LOG))
        assert (12, 12) == seen[-1]
