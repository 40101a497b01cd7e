"""OTLP/HTTP on the wire, to a real receiver on 127.0.0.1, through the outbox."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.prompts import ChatPromptTemplate

import context_trace as ct
from context_trace._store.reader import SQLiteReader

from .receiver import OTLPReceiver

REPO = Path(__file__).resolve().parents[2]
SECRET = "sekrit-otlp-key-123"


def _chain() -> Any:
    return ChatPromptTemplate.from_messages([("human", "{q}")]) | ParrotFakeChatModel()


def _configure(receiver: OTLPReceiver, db: Path, **kwargs: Any) -> None:
    ct.configure(
        exporter="otlp",
        otlp_endpoint=receiver.url,
        db_path=db,
        flush_interval=0.05,
        **kwargs,
    )


def _turns(n: int, user: str = "u1") -> None:
    with ct.track_user(user):
        for i in range(n):
            _chain().invoke({"q": f"question {i}"})


def _roots(receiver: OTLPReceiver) -> list[Any]:
    return [s for s in receiver.accepted() if s.parent_id is None]


class TestHappyPath:
    def test_turns_arrive_as_spans(
        self, receiver: OTLPReceiver, tmp_path: Path
    ) -> None:
        """Three turns: one request, a root and a chat span each, nothing left on disk."""
        _configure(receiver, tmp_path / "t.db")
        _turns(3)
        assert ct.flush(10)

        spans = receiver.accepted()
        roots = _roots(receiver)
        assert (1, 6, 3) == (len(receiver.requests), len(spans), len(roots))
        assert ["question 0", "question 1", "question 2"] == [
            r.attributes["input.value"] for r in roots
        ]
        assert {"u1"} == {s.attributes["user.id"] for s in spans}
        assert "application/x-protobuf" == receiver.requests[0][1]["content-type"]
        assert "unknown_service" == spans[0].resource["service.name"]
        with SQLiteReader(tmp_path / "t.db") as reader:
            assert 0 == reader.outbox_counts()["pending"]
            assert 0 == len(reader.users())  # exporter="otlp": no local copy

    def test_sqlite_and_otlp(
        self, receiver: OTLPReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """CONTEXT_TRACE_EXPORTER=sqlite,otlp plus OTEL_* env: local store and OTLP."""
        monkeypatch.setenv("CONTEXT_TRACE_EXPORTER", "sqlite,otlp")
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.removesuffix("/v1/traces")
        )
        monkeypatch.setenv("OTEL_SERVICE_NAME", "chat-api")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        monkeypatch.setenv("CONTEXT_TRACE_DB", str(tmp_path / "both.db"))
        monkeypatch.setenv("CONTEXT_TRACE_FLUSH_INTERVAL", "0.05")
        _turns(2)
        assert ct.flush(10)

        with SQLiteReader(tmp_path / "both.db") as reader:
            stored = reader.users()[0].conversations
        assert (2, 2) == (len(_roots(receiver)), stored)
        assert {"service.name": "chat-api", "deployment.environment": "test"} == (
            receiver.accepted()[0].resource
        )


class TestRetries:
    def test_503_503_200_delivers_once(
        self, receiver: OTLPReceiver, tmp_path: Path
    ) -> None:
        """Two 503s, then 200: the turn arrives exactly once, after three requests."""
        receiver.respond([503, 503])
        _configure(receiver, tmp_path / "t.db")
        _turns(1)
        assert receiver.wait_accepted(2)
        assert ct.flush(10)

        assert ([503, 503, 200], 1) == (
            [st for st, _, _ in receiver.requests],
            len(_roots(receiver)),
        )
        with SQLiteReader(tmp_path / "t.db") as reader:
            assert 0 == reader.outbox_counts()["pending"]

    def test_429_honours_retry_after(
        self, receiver: OTLPReceiver, tmp_path: Path
    ) -> None:
        """429 with Retry-After: 1 waits at least a second before the next try."""
        receiver.respond([(429, {"Retry-After": "1"})])
        _configure(receiver, tmp_path / "t.db")
        _turns(1)
        assert receiver.wait_accepted(2)

        assert [429, 200] == [st for st, _, _ in receiver.requests]
        assert receiver.times[1] - receiver.times[0] >= 1.0

    def test_400_is_dropped_and_counted(
        self, receiver: OTLPReceiver, tmp_path: Path
    ) -> None:
        """A 400 is not retried: the rows are deleted and counted as failed for otlp."""
        receiver.respond([400])
        _configure(receiver, tmp_path / "t.db")
        _turns(2)
        assert ct.flush(10)
        stats = ct.stats()
        ct.shutdown()

        with SQLiteReader(tmp_path / "t.db") as reader:
            per = reader.outbox_destinations()
        assert (1, 2) == (len(receiver.requests), stats["failed"])
        assert {"otlp": {"waiting": 0, "failed": 2}} == per


class TestHeaders:
    def test_headers_sent_and_never_logged(
        self,
        receiver: OTLPReceiver,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """OTEL_EXPORTER_OTLP_HEADERS reach the backend; no log line or repr shows them."""
        caplog.set_level(logging.DEBUG, logger="context_trace")
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_HEADERS",
            f"authorization=Bearer%20{SECRET},x-tenant=acme",
        )
        receiver.respond([503, 401])
        _configure(receiver, tmp_path / "t.db")
        _turns(1)
        assert receiver.wait_requests(2)
        assert ct.flush(10)
        shown = repr(ct.get_config()) + repr(ct._runtime._pipeline().exporter)

        headers = receiver.requests[0][1]
        assert (f"Bearer {SECRET}", "acme") == (
            headers["authorization"],
            headers["x-tenant"],
        )
        assert [] == [r for r in caplog.records if SECRET in r.getMessage()]
        assert SECRET not in caplog.text
        assert SECRET not in shown
        assert any("HTTP 401" in r.getMessage() for r in caplog.records)

    def test_bad_headers_variable_is_a_clear_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A malformed OTEL_EXPORTER_OTLP_HEADERS names the variable, not the value."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Bearer {SECRET}")
        with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_HEADERS") as info:
            ct.configure(exporter="otlp")

        assert SECRET not in str(info.value)


# A process that records N turns with the OTLP backend down, then waits.
RECORD = textwrap.dedent(
    """
    import sys
    import context_trace as ct
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
    from langchain_core.prompts import ChatPromptTemplate

    db, endpoint, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ct.configure(exporter="otlp", otlp_endpoint=endpoint, db_path=db,
                 flush_interval=0.05)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | ParrotFakeChatModel()
    with ct.track_user("u1"):
        for i in range(n):
            chain.invoke({"q": f"question {i}"})
    ct.flush(5)
    print("recorded", ct.stats()["pending"] + 0, flush=True)
    sys.stdin.read()  # killed here
    """
)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestCrash:
    def test_sigkill_then_new_process_delivers_exactly_once(
        self, receiver: OTLPReceiver, tmp_path: Path
    ) -> None:
        """Backend down, SIGKILL; the next process delivers every turn exactly once."""
        db = tmp_path / "crash.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTEXT")}
        env["PYTHONPATH"] = str(REPO)
        down = f"http://127.0.0.1:{_closed_port()}/v1/traces"
        proc = subprocess.Popen(
            [sys.executable, "-c", RECORD, str(db), down, "20"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("recorded")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        with SQLiteReader(db) as reader:
            waiting = reader.outbox_destinations()["otlp"]["waiting"]

        _configure(receiver, db)  # the new process: delivers at start
        assert ct.flush(10)
        roots = _roots(receiver)

        assert (-signal.SIGKILL, 20) == (proc.returncode, waiting)
        assert 20 == len(roots)
        assert 20 == len({r.trace_id for r in roots})
        assert [f"question {i}" for i in range(20)] == sorted(
            (r.attributes["input.value"] for r in roots),
            key=lambda q: int(q.split()[1]),
        )


class TestRequestSpan:
    def test_request_span_is_the_parent_on_the_wire(
        self, receiver: OTLPReceiver, tmp_path: Path, memory: Any
    ) -> None:
        """The app's request span, current at turn start, is the root's parent."""
        provider = memory[0]
        _configure(receiver, tmp_path / "t.db")
        with provider.get_tracer("app").start_as_current_span("POST /chat") as request:
            _turns(1)
        assert ct.flush(10)
        context = request.get_span_context()
        (root,) = [s for s in receiver.accepted() if s.name == "RunnableSequence"]
        chat = next(s for s in receiver.accepted() if s.name.startswith("chat "))

        assert (f"{context.trace_id:032x}", f"{context.span_id:016x}") == (
            root.trace_id,
            root.parent_id,
        )
        assert (root.trace_id, root.span_id) == (chat.trace_id, chat.parent_id)


class TestReplayCommand:
    def test_replay_delivers_otlp_rows_without_a_token(
        self, receiver: OTLPReceiver, tmp_path: Path
    ) -> None:
        """context-trace outbox shows OTLP rows; replay sends them to OTEL_* endpoint."""
        db = tmp_path / "replay.db"
        down = f"http://127.0.0.1:{_closed_port()}/v1/traces"
        ct.configure(exporter="otlp", otlp_endpoint=down, db_path=db)
        _turns(3)
        assert ct.flush(10)
        ct.shutdown()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CONTEXT", "OTEL_"))
        }
        env["PYTHONPATH"] = str(REPO)
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = receiver.url

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "context_trace", *args, "--db", str(db)],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                check=False,
            )

        before = cli("outbox")
        replayed = cli("replay")

        assert "  otlp          3 waiting, 0 failed" in before.stdout.splitlines()
        assert (0, "delivered 3, failed 0, still pending 0\n") == (
            replayed.returncode,
            replayed.stdout,
        )
        assert 3 == len(_roots(receiver))
