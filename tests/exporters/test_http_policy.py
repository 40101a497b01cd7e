"""
The HTTP delivery policy, one suite run against both senders.

Every test runs twice: once against ``ContextAPIExporter`` talking to the
loopback Context API (``context_server.py``), once against ``OTLPSender``
talking to the loopback OTLP receiver (``tests/otel/receiver.py``). Both are set
up the same way: one request per record (the outbox retries), a circuit that
opens at the first transient failure for one second, no jitter, and a clock the
test moves by hand.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from context_trace._exporters.base import Outcome, Sender
from context_trace._exporters.context_api import ContextAPIExporter
from context_trace._exporters.http_policy import (
    TRANSIENT_STATUSES,
    is_loopback,
    retry_after_seconds,
    safe_url,
)
from context_trace._exporters.otlp import OTLPSender
from context_trace._exporters.outbox import OutboxExporter
from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Message
from context_trace._store.reader import SQLiteReader
from tests.otel.receiver import OTLPReceiver

from .context_server import ROUTE_LOG, FakeContextServer, Reply, free_port

SECRET = "sekrit-policy-key-789"
COOLDOWN = 1.0


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def turn(i: int = 0) -> Conversation:
    return Conversation(
        id=f"t{i}",
        user_id="u1",
        session_id=None,
        started_at=1.0,
        ended_at=2.0,
        messages=(
            Message("user", f"question {i}"),
            Message("assistant", f"answer {i}"),
        ),
    )


class Backend:
    """A real loopback server for one sender, and the sender pointed at it."""

    name: str

    def script(self, replies: list[int | tuple[int, dict[str, str]]]) -> None:
        """The next answers, in order; then success."""
        raise NotImplementedError

    def statuses(self) -> list[int]:
        """The status of every request answered so far."""
        raise NotImplementedError

    def sender(self, clock: FakeClock, endpoint: str | None = None) -> Sender:
        """A sender with the suite's policy settings, carrying SECRET."""
        raise NotImplementedError


class ContextBackend(Backend):
    name = "context"

    def __init__(self, server: FakeContextServer) -> None:
        self.server = server

    def script(self, replies: list[int | tuple[int, dict[str, str]]]) -> None:
        self.server.script(
            ROUTE_LOG,
            [Reply(*r) if isinstance(r, tuple) else Reply(r) for r in replies],
        )

    def statuses(self) -> list[int]:
        return [r.status for r in self.server.requests]

    def sender(self, clock: FakeClock, endpoint: str | None = None) -> Sender:
        return ContextAPIExporter(
            SECRET,
            endpoint=endpoint or self.server.url,
            max_attempts=1,
            circuit_threshold=1,
            circuit_cooldown=COOLDOWN,
            backoff_base=COOLDOWN,
            jitter=0.0,
            clock=clock,
        )


class OTLPBackend(Backend):
    name = "otlp"

    def __init__(self, receiver: OTLPReceiver) -> None:
        self.receiver = receiver

    def script(self, replies: list[int | tuple[int, dict[str, str]]]) -> None:
        self.receiver.respond(replies)

    def statuses(self) -> list[int]:
        return [status for status, _, _ in self.receiver.requests]

    def sender(self, clock: FakeClock, endpoint: str | None = None) -> Sender:
        return OTLPSender(
            endpoint or self.receiver.url,
            headers={"authorization": f"Bearer {SECRET}"},
            backoff=COOLDOWN,
            jitter=0.0,
            clock=clock,
        )


@pytest.fixture(params=["context", "otlp"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each test runs against both senders, each with its real loopback server."""
    if request.param == "context":
        with FakeContextServer(token=SECRET) as server:
            yield ContextBackend(server)
    else:
        with OTLPReceiver() as receiver:
            yield OTLPBackend(receiver)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_sender(backend: Backend, clock: FakeClock) -> Iterator[Any]:
    """Build senders for the backend; shut them down after the test."""
    made: list[Sender] = []

    def make(endpoint: str | None = None) -> Sender:
        sender = backend.sender(clock, endpoint)
        made.append(sender)
        return sender

    yield make
    for sender in made:
        sender.shutdown(1.0)


def send(sender: Sender, i: int = 0) -> Outcome:
    (outcome,) = sender.export_each([turn(i)])
    return outcome


class TestTransientStatuses:
    @pytest.mark.parametrize("status", sorted(TRANSIENT_STATUSES))
    def test_transient_status_is_retried_after_the_backoff(
        self, backend, make_sender, clock, status
    ):
        """429, 502, 503 and 504 leave the record for later; after the backoff it is delivered."""
        sender = make_sender()
        backend.script([status])

        first = send(sender)
        clock.advance(COOLDOWN)
        second = send(sender)

        assert ("retry", 1, COOLDOWN) == (
            first.status,
            first.attempts,
            first.retry_after,
        )
        assert "delivered" == second.status
        assert [status, 200 if backend.name == "otlp" else 201] == backend.statuses()

    def test_no_answer_is_transient(self, make_sender):
        """A closed port (connection refused) leaves the record for later, never fails it."""
        sender = make_sender(endpoint=f"http://127.0.0.1:{free_port()}/v1/traces")

        outcome = send(sender)

        assert ("retry", 1) == (outcome.status, outcome.attempts)

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 500])
    def test_other_statuses_drop_the_record_after_one_request(
        self, backend, make_sender, status
    ):
        """4xx (but 429) and 500 fail the record at once; the next record goes straight out."""
        sender = make_sender()
        backend.script([status])

        outcomes = [send(sender, 0), send(sender, 1)]

        assert [("failed", 1), ("delivered", 1)] == [
            (o.status, o.attempts) for o in outcomes
        ]
        assert 2 == len(backend.statuses())
        assert not sender.cooling_down


class TestRetryAfter:
    def test_retry_after_seconds_holds_the_sender_off(
        self, backend, make_sender, clock
    ):
        """Retry-After: 7 is the record's retry delay; nothing is sent until it has passed."""
        sender = make_sender()
        backend.script([(503, {"Retry-After": "7"})])

        first = send(sender)
        clock.advance(6.5)
        early = send(sender)
        clock.advance(0.5)
        due = send(sender)

        assert ("retry", 7.0) == (first.status, first.retry_after)
        assert ("retry", 0) == (early.status, early.attempts)
        assert "delivered" == due.status
        assert 2 == len(backend.statuses())

    def test_retry_after_http_date_is_honoured(self, backend, make_sender):
        """A Retry-After HTTP-date two minutes ahead becomes a ~120 s retry delay."""
        sender = make_sender()
        later = email.utils.formatdate(time.time() + 120, usegmt=True)
        backend.script([(429, {"Retry-After": later})])

        outcome = send(sender)

        assert "retry" == outcome.status
        assert outcome.retry_after is not None
        assert 100 < outcome.retry_after <= 121
        assert sender.cooling_down


class TestCircuitBreaker:
    def test_circuit_opens_then_a_probe_closes_it(self, backend, make_sender, clock):
        """After a transient failure nothing is sent for the cool-down; a good probe closes it."""
        sender = make_sender()
        backend.script([503])

        send(sender, 0)
        opened = sender.cooling_down
        held = send(sender, 1)
        requests_while_open = len(backend.statuses())
        clock.advance(COOLDOWN)
        probe = send(sender, 2)
        after = send(sender, 3)

        assert (True, 1) == (opened, requests_while_open)
        assert ("retry", 0) == (held.status, held.attempts)
        assert ("delivered", "delivered") == (probe.status, after.status)
        assert not sender.cooling_down
        assert 3 == len(backend.statuses())

    def test_failed_probe_opens_it_again(self, backend, make_sender, clock):
        """A probe that fails transiently opens the circuit for another cool-down."""
        sender = make_sender()
        backend.script([503, 502])

        send(sender, 0)
        clock.advance(COOLDOWN)
        probe = send(sender, 1)
        reopened = sender.cooling_down
        clock.advance(COOLDOWN * 2)  # a second failure may back off longer
        recovered = send(sender, 2)

        assert ("retry", 1, True) == (probe.status, probe.attempts, reopened)
        assert "delivered" == recovered.status


class TestThroughTheOutbox:
    def test_dropped_records_are_counted_failed_and_transient_ones_kept(
        self, backend, make_sender, tmp_path: Path
    ):
        """Through the outbox a 400 is counted failed and deleted; a 503 keeps the row."""
        path = tmp_path / "policy.db"
        outbox = OutboxExporter(
            SQLiteExporter(path, keep_local=False),
            senders={backend.name: make_sender()},
        )
        backend.script([400])
        outbox.export([turn(0)])
        rejected = outbox.deliver()
        backend.script([503])
        outbox.export([turn(1)])
        kept = outbox.deliver()
        outbox.shutdown(1.0)

        with SQLiteReader(path) as reader:
            per = reader.outbox_destinations()

        assert (0, 1) == (rejected.exported, rejected.failed)
        assert (0, 0, 1) == (kept.exported, kept.failed, kept.pending)
        assert {backend.name: {"waiting": 1, "failed": 1}} == per


class TestSecrets:
    def test_secret_never_logged_nor_shown(
        self, backend, make_sender, clock, caplog: pytest.LogCaptureFixture
    ):
        """Through a 503 and a 401 the token or header value is in no log line and no repr."""
        caplog.set_level(logging.DEBUG)
        sender = make_sender()
        backend.script([503, 401])

        send(sender, 0)
        clock.advance(COOLDOWN)
        send(sender, 1)

        assert [401] == backend.statuses()[1:]
        assert SECRET not in repr(sender)
        assert [] == [
            r.name
            for r in caplog.records
            if SECRET in r.getMessage() or SECRET in repr(r.args)
        ]
        assert any("HTTP 401" in r.getMessage() for r in caplog.records)

    def test_endpoint_secrets_never_shown(self):
        """User info and query strings of an endpoint are masked in every message."""
        url = f"https://user:{SECRET}@collector.example:4318/v1/traces?key={SECRET}"

        shown = safe_url(url)

        assert "https://***@collector.example:4318/v1/traces?***" == shown
        assert SECRET not in repr(OTLPSender(url))
        with pytest.raises(ValueError, match="endpoint") as info:
            ContextAPIExporter("t0ken", endpoint=url)
        assert SECRET not in str(info.value)


class TestPolicyHelpers:
    @pytest.mark.parametrize(
        ("host", "expected"),
        [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True),
         ("localhost", True), ("LocalHost", True), ("0.0.0.0", False), ("::", False),
         ("10.0.0.1", False), ("example.org", False)],
    )  # fmt: skip
    def test_is_loopback(self, host: str, expected: bool):
        """Only addresses that stay on this machine count as loopback."""
        assert expected == is_loopback(host)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("3", 3.0), (" 1.5 ", 1.5), ("-4", 0.0), ("soon", None), ("", None),
         (None, None), ("nan", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
    )  # fmt: skip
    def test_retry_after_values(self, value: str | None, expected: float | None):
        """Retry-After: seconds, a past HTTP-date (0), or nothing usable (None)."""
        assert expected == retry_after_seconds(value)
