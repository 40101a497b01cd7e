"""Tests for ContextAPIExporter, driving the real getcontext client against a loopback server."""

# The house style asserts `expected == actual` (STYLE.md section 8); ruff's SIM300
# calls that a Yoda condition.

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from context_trace._exporters.base import ExportResult
from context_trace._exporters.context_api import ContextAPIExporter, Outcome
from context_trace._record import Conversation, Feedback, Message

from .context_server import (
    ROUTE_LOG,
    ROUTE_THREAD,
    ROUTE_THREAD_PATCH,
    FakeContextServer,
    Reply,
    free_port,
)

TOKEN = "test-token-123"
_LOGGER = "context_trace._exporters.context_api"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _token_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture every logger (azure's included) at DEBUG; the token must be in none."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        assert TOKEN not in record.getMessage(), record.name
        assert TOKEN not in repr(record.args), record.name


@pytest.fixture
def server() -> Iterator[FakeContextServer]:
    with FakeContextServer(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def make_exporter(
    server: FakeContextServer,
) -> Iterator[Callable[..., ContextAPIExporter]]:
    """Build exporters pointed at the fake server, fast by default; shut down after."""
    made: list[ContextAPIExporter] = []

    def make(**kwargs: Any) -> ContextAPIExporter:
        options: dict[str, Any] = {
            "endpoint": server.url,
            "jitter": 0.0,
            "backoff_base": 0.01,
            "timeout": 5.0,
            "connect_timeout": 5.0,
            "deadline": 10.0,
        }
        options.update(kwargs)
        exporter = ContextAPIExporter(TOKEN, **options)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.shutdown()


_counter = iter(range(1, 1_000_000))


def turn(
    *messages: Message,
    session_id: str | None = None,
    user_id: str | None = "user-1",
    metadata: dict[str, str] | None = None,
    error: str | None = None,
) -> Conversation:
    """A recorded turn; by default a question and its answer."""
    n = next(_counter)
    return Conversation(
        id=f"turn-{n}",
        user_id=user_id,
        session_id=session_id,
        started_at=1_700_000_000.0,
        ended_at=1_700_000_001.25,
        messages=messages
        or (Message("user", f"question {n}"), Message("assistant", f"answer {n}")),
        metadata=metadata if metadata is not None else {},
        error=error,
    )


def warnings_from_exporter(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.get_records("call")
        if r.name == _LOGGER and r.levelno == logging.WARNING
    ]


class TestPlainConversation:
    def test_delivered_with_bearer_token_and_string_metadata(
        self, server, make_exporter
    ):
        """A turn without a session is logged once, with the bearer token and str->str metadata."""
        exporter = make_exporter()
        record = turn(
            Message("system", "Be brief."),
            Message("user", "Hi"),
            Message("assistant", "Hello!"),
            metadata={"model": "gpt-test", "prompt_tokens": "12", "plan": "pro"},
        )

        result = exporter.export([record])

        assert ExportResult(exported=1) == result
        (request,) = server.requests
        assert ("POST", ROUTE_LOG) == (request.method, request.path)
        assert f"Bearer {TOKEN}" == request.header("Authorization")
        assert [] == server.errors
        conversation = request.body["conversation"]
        assert {
            "model": "gpt-test",
            "prompt_tokens": "12",
            "plan": "pro",
            "user_id": "user-1",
            "turn_id": record.id,
            "latency_ms": "1250",
        } == conversation["metadata"]
        assert [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!")] == [
            (m["role"], m["message"]) for m in conversation["messages"]
        ]
        assert [
            "2023-11-14T22:13:20.000Z",
            "2023-11-14T22:13:20.000Z",
            "2023-11-14T22:13:21.250Z",
        ] == [m["event_timestamp"] for m in conversation["messages"]]

    def test_history_kept_without_a_session_is_timed_before_the_answer(
        self, server, make_exporter
    ):
        """A session-less turn's history is sent in order, all of it at the turn's start."""
        exporter = make_exporter()
        record = turn(
            Message("user", "Q1"),
            Message("assistant", "A1"),
            Message("user", "Q2"),
            Message("assistant", "A2"),
        )

        exporter.export([record])

        (request,) = server.requests
        messages = request.body["conversation"]["messages"]
        assert [
            ("user", "Q1", "2023-11-14T22:13:20.000Z"),
            ("assistant", "A1", "2023-11-14T22:13:20.000Z"),
            ("user", "Q2", "2023-11-14T22:13:20.000Z"),
            ("assistant", "A2", "2023-11-14T22:13:21.250Z"),
        ] == [(m["role"], m["message"], m["event_timestamp"]) for m in messages]

    def test_failed_turn_carries_error_metadata(self, server, make_exporter):
        """A failed turn's error is split into error_type and error metadata."""
        exporter = make_exporter()

        exporter.export(
            [turn(Message("user", "Hi"), error="TimeoutError: model took too long")]
        )

        metadata = server.requests[0].body["conversation"]["metadata"]
        assert ("TimeoutError", "model took too long") == (
            metadata["error_type"],
            metadata["error"],
        )

    def test_tool_messages_become_assistant_text(self, server, make_exporter):
        """Tool calls are sent as assistant messages reading '[tool NAME] input → output'."""
        exporter = make_exporter()
        record = turn(
            Message("user", "Weather?"),
            Message("tool", "18C", name="weather", tool_input='{"city":"Oslo"}'),
            Message("tool", "ok", name="ping"),
            Message("assistant", "18C in Oslo."),
        )

        exporter.export([record])

        messages = server.requests[0].body["conversation"]["messages"]
        assert [
            ("assistant", '[tool weather] {"city":"Oslo"} → 18C', {"tool": "weather"}),
            ("assistant", "[tool ping] → ok", {"tool": "ping"}),
        ] == [(m["role"], m["message"], m.get("metadata")) for m in messages[1:3]]
        assert [] == server.errors

    def test_turn_without_messages_is_failed_without_request(
        self, server, make_exporter
    ):
        """A turn with no messages is given up on without a request."""
        exporter = make_exporter()
        empty = Conversation("t0", "u", None, 0.0, 1.0, messages=())

        assert [Outcome("failed", detail="no messages")] == exporter.export_each(
            [empty]
        )
        assert [] == server.requests


class TestSessions:
    def test_turns_append_to_one_thread(self, server, make_exporter):
        """Each session turn sends only its new messages to the thread named by the session id."""
        exporter = make_exporter()
        first = turn(
            Message("system", "Be brief."),
            Message("user", "Hi"),
            Message("assistant", "Hello!"),
            session_id="s1",
            metadata={"plan": "pro", "model": "gpt-test"},
        )
        second = turn(
            Message("user", "Bye"),
            Message("assistant", "Goodbye!"),
            session_id="s1",
            metadata={"plan": "pro", "model": "gpt-test"},
        )

        results = [exporter.export([first]), exporter.export([second])]

        assert [ExportResult(exported=1), ExportResult(exported=1)] == results
        bodies = [r.body["conversation"] for r in server.requests_to(ROUTE_THREAD)]
        assert ["s1", "s1"] == [b["id"] for b in bodies]
        assert [3, 2] == [len(b["messages"]) for b in bodies]
        assert ["Be brief.", "Hi", "Hello!", "Bye", "Goodbye!"] == [
            m["message"] for m in server.threads["s1"]
        ]
        assert {"plan": "pro", "user_id": "user-1", "session_id": "s1"} == bodies[1][
            "metadata"
        ]
        assert {
            "turn_id": second.id,
            "model": "gpt-test",
            "latency_ms": "1250",
        } == bodies[1]["messages"][-1]["metadata"]
        assert [] == server.errors

    def test_feedback_rates_last_assistant_message(self, server, make_exporter):
        """A rating PATCHes the thread with the rating at the last assistant message's position."""
        exporter = make_exporter()
        first = turn(session_id="s1")
        second = turn(
            Message("user", "Weather?"),
            Message("assistant", "Let me check."),
            Message("tool", "18C", name="weather"),
            session_id="s1",
        )
        feedback = Feedback(id="f1", session_id="s1", user_id="user-1", rating=-1)

        result = exporter.export([first, second, feedback])

        assert ExportResult(exported=3) == result
        patch = server.requests[-1]
        assert ("PATCH", "/api/v1/log/conversation/thread/s1") == (
            patch.method,
            patch.path,
        )
        assert [{}, {}, {}, {"rating": -1}] == patch.body
        assert [None, None, None, -1, None] == [
            m.get("rating") for m in server.threads["s1"]
        ]
        assert [] == server.errors

    def test_feedback_uses_transcript_source(self, server, make_exporter):
        """With transcript_source, the rated position comes from the stored transcript."""
        transcript = [
            Message("user", "Hi"),
            Message("assistant", "Hello!"),
            Message("user", "Thanks"),
        ]
        server.threads["s9"] = [
            {"role": "user"},
            {"role": "assistant"},
            {"role": "user"},
        ]
        exporter = make_exporter(transcript_source=lambda session_id: transcript)

        result = exporter.export(
            [Feedback(id="f", session_id="s9", user_id=None, rating=1)]
        )

        assert ExportResult(exported=1) == result
        assert [{}, {"rating": 1}] == server.requests_to(ROUTE_THREAD_PATCH)[0].body

    def test_feedback_for_unknown_session_fails_without_request(
        self, server, make_exporter, caplog
    ):
        """A rating for a session this process never sent fails, with one warning and no request."""
        exporter = make_exporter()

        outcomes = exporter.export_each(
            [Feedback(id="f", session_id="nope", user_id=None, rating=1)]
        )

        assert ["failed"] == [o.status for o in outcomes]
        assert [] == server.requests
        assert 1 == len(warnings_from_exporter(caplog))

    def test_least_recently_used_sessions_are_forgotten(self, server, make_exporter):
        """Beyond session_cache_size, the oldest session's transcript is forgotten."""
        exporter = make_exporter(session_cache_size=1)
        exporter.export([turn(session_id="old"), turn(session_id="new")])

        outcomes = exporter.export_each(
            [
                Feedback(id="f1", session_id="old", user_id=None, rating=1),
                Feedback(id="f2", session_id="new", user_id=None, rating=1),
            ]
        )

        assert ["failed", "delivered"] == [o.status for o in outcomes]

    def test_undelivered_turn_holds_later_records_of_its_session(
        self, server, make_exporter
    ):
        """After a session turn is left for later, its session's next records are not attempted."""
        exporter = make_exporter(max_attempts=1)
        server.script(ROUTE_THREAD, [503])

        outcomes = exporter.export_each(
            [
                turn(session_id="s1"),
                turn(session_id="s1"),
                Feedback(id="f", session_id="s1", user_id=None, rating=1),
                turn(session_id="s2"),
            ]
        )

        assert [("retry", 1), ("retry", 0), ("retry", 0), ("delivered", 1)] == [
            (o.status, o.attempts) for o in outcomes
        ]


class TestRetries:
    def test_transient_failures_then_delivered_exactly_once(
        self, server, make_exporter
    ):
        """503, 503, 201 delivers the turn once with two retries."""
        exporter = make_exporter()
        server.script(ROUTE_THREAD, [503, 503, 201])

        result = exporter.export([turn(session_id="s1")])

        assert ExportResult(exported=1, retried=2) == result
        assert [503, 503, 201] == [r.status for r in server.requests]
        assert 2 == len(server.threads["s1"])

    @pytest.mark.parametrize("status", [429, 502, 503, 504])
    def test_each_transient_status_is_retried(self, server, make_exporter, status):
        """429, 502, 503 and 504 are retried."""
        exporter = make_exporter()
        server.script(ROUTE_LOG, [status])

        assert ExportResult(exported=1, retried=1) == exporter.export([turn()])

    @pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 500])
    def test_permanent_statuses_are_not_retried(self, server, make_exporter, status):
        """Other 4xx answers, and 500, fail the record after one request."""
        exporter = make_exporter()
        server.script(ROUTE_LOG, [status])

        assert ExportResult(failed=1) == exporter.export([turn()])
        assert 1 == len(server.requests)

    def test_retry_after_seconds_is_waited_for(self, server, make_exporter):
        """429 with Retry-After: 1 is retried after about a second, not after the backoff."""
        exporter = make_exporter()
        server.script(ROUTE_LOG, [Reply(429, {"Retry-After": "1"})])

        started = time.monotonic()
        result = exporter.export([turn()])
        elapsed = time.monotonic() - started

        assert ExportResult(exported=1, retried=1) == result
        assert 0.9 <= elapsed < 5.0

    def test_retry_after_date_beyond_deadline_is_left_for_later(
        self, server, make_exporter
    ):
        """A Retry-After HTTP-date past the deadline ends the attempt at once, with the hint."""
        exporter = make_exporter(deadline=5.0)
        later = email.utils.formatdate(time.time() + 120, usegmt=True)
        server.script(ROUTE_LOG, [Reply(503, {"Retry-After": later})])

        (outcome,) = exporter.export_each([turn()])

        assert ("retry", 1) == (outcome.status, outcome.attempts)
        assert outcome.retry_after is not None
        assert 100 < outcome.retry_after <= 121

    def test_401_is_not_retried_and_warned_once(self, server, make_exporter, caplog):
        """401 fails at once; repeats log one WARNING naming status and route, never the token."""
        exporter = make_exporter()
        server.script(ROUTE_LOG, [401, 401])

        result = exporter.export([turn(), turn()])

        assert ExportResult(failed=2) == result
        assert 2 == len(server.requests)
        assert [
            "context_trace: Context API rejected a conversation: HTTP 401 on /api/v1/log/conversation"
        ] == warnings_from_exporter(caplog)

    def test_wrong_token_is_rejected_by_the_server(self, server):
        """The server's own token check answers 401, which is a permanent failure."""
        exporter = ContextAPIExporter("other-token-456", endpoint=server.url)
        try:
            assert ExportResult(failed=1) == exporter.export([turn()])
        finally:
            exporter.shutdown()

        assert [401] == [r.status for r in server.requests]

    def test_token_echoed_by_server_is_not_logged(self, server, make_exporter):
        """An error body that echoes the token does not bring it into the logs."""
        exporter = make_exporter(max_attempts=2)
        echo = {"message": f"bad header: Bearer {TOKEN}"}
        server.script(ROUTE_LOG, [Reply(503, body=echo), Reply(400, body=echo)])

        assert ExportResult(failed=1, retried=1) == exporter.export([turn()])

    def test_closed_port_gives_bounded_transient_failures(self, make_exporter):
        """Connection refused is retried max_attempts times, then failed, without raising."""
        exporter = make_exporter(
            endpoint=f"http://127.0.0.1:{free_port()}",
            max_attempts=3,
            circuit_threshold=100,
        )

        (outcome,) = exporter.export_each([turn()])

        assert ("retry", 3) == (outcome.status, outcome.attempts)
        assert outcome.detail.startswith("connection error")
        assert ExportResult(failed=1, retried=2) == exporter.export([turn()])

    def test_hung_server_gives_up_within_deadline(self, server, make_exporter):
        """A server slower than the read timeout costs at most the batch deadline."""
        exporter = make_exporter(timeout=0.5, connect_timeout=0.5, deadline=1.5)
        server.set_delay(10.0)

        started = time.monotonic()
        (outcome,) = exporter.export_each([turn()])
        elapsed = time.monotonic() - started

        assert "retry" == outcome.status
        assert outcome.attempts >= 2
        assert outcome.detail.startswith("timeout")
        assert elapsed < 2.5

    def test_batch_deadline_leaves_the_rest_pending(self, server, make_exporter):
        """Records not reached before the batch deadline are pending, not attempted."""
        exporter = make_exporter(
            deadline=15.0, clock=lambda: 10.0 * len(server.requests)
        )

        result = exporter.export([turn(), turn(), turn()])

        assert ExportResult(exported=2, pending=1) == result
        assert 2 == len(server.requests)


class TestCircuitBreaker:
    def make(
        self, make_exporter: Callable[..., ContextAPIExporter], clock: FakeClock
    ) -> ContextAPIExporter:
        return make_exporter(
            clock=clock, max_attempts=1, circuit_threshold=2, circuit_cooldown=30.0
        )

    def test_opens_after_consecutive_failures(self, server, make_exporter):
        """After threshold transient failures the rest of the batch is pending, unattempted."""
        clock = FakeClock()
        exporter = self.make(make_exporter, clock)
        server.script(ROUTE_LOG, [503, 503])

        outcomes = exporter.export_each([turn(), turn(), turn()])

        assert [("retry", 1), ("retry", 1), ("retry", 0)] == [
            (o.status, o.attempts) for o in outcomes
        ]
        assert 30.0 == outcomes[2].retry_after
        assert exporter.circuit_open
        assert 2 == len(server.requests)

    def test_open_circuit_makes_no_requests(self, server, make_exporter):
        """While open, export returns pending at once without touching the network."""
        clock = FakeClock()
        exporter = self.make(make_exporter, clock)
        server.script(ROUTE_LOG, [503, 503])
        exporter.export([turn(), turn()])
        clock.advance(29.0)

        result = exporter.export([turn(), turn(session_id="s"), turn()])

        assert ExportResult(pending=3) == result
        assert 2 == len(server.requests)

    def test_half_open_probe_success_closes(self, server, make_exporter):
        """After the cool-down one probe goes out; its success closes the circuit."""
        clock = FakeClock()
        exporter = self.make(make_exporter, clock)
        server.script(ROUTE_LOG, [503, 503])
        exporter.export([turn(), turn()])
        clock.advance(31.0)

        result = exporter.export([turn(), turn()])

        assert ExportResult(exported=2) == result
        assert not exporter.circuit_open

    def test_half_open_probe_failure_reopens(self, server, make_exporter):
        """A failed probe opens the circuit for another cool-down."""
        clock = FakeClock()
        exporter = self.make(make_exporter, clock)
        server.script(ROUTE_LOG, [503, 503, 503])
        exporter.export([turn(), turn()])
        clock.advance(31.0)

        result = exporter.export([turn(), turn()])

        assert ExportResult(failed=1, pending=1) == result
        assert exporter.circuit_open
        assert 3 == len(server.requests)

    def test_permanent_errors_do_not_open_it(self, server, make_exporter):
        """4xx answers show the API is up: they never open the circuit."""
        exporter = self.make(make_exporter, FakeClock())
        server.script(ROUTE_LOG, [400, 400, 400])

        assert ExportResult(failed=3) == exporter.export([turn(), turn(), turn()])
        assert not exporter.circuit_open


class TestShutdown:
    def test_shutdown_interrupts_a_retry_wait(self, server, make_exporter):
        """shutdown() ends a Retry-After wait at once; the record is left for later."""
        exporter = make_exporter(deadline=60.0)
        server.script(ROUTE_LOG, [Reply(503, {"Retry-After": "30"})])
        results: list[ExportResult] = []
        worker = threading.Thread(
            target=lambda: results.append(exporter.export([turn()]))
        )
        worker.start()
        server.wait_for(1)

        started = time.monotonic()
        exporter.shutdown()
        worker.join(timeout=5.0)

        assert time.monotonic() - started < 1.0
        assert [ExportResult(failed=1)] == results

    def test_shutdown_is_idempotent_and_later_records_are_pending(
        self, server, make_exporter
    ):
        """Shutting down twice is fine; records exported afterwards are pending."""
        exporter = make_exporter()
        exporter.shutdown()
        exporter.shutdown()

        assert ExportResult(pending=1) == exporter.export([turn()])
        assert [] == server.requests


class TestConfiguration:
    def test_plain_http_on_public_host_is_rejected(self):
        """A non-loopback http:// endpoint without allow_insecure raises, naming endpoint."""
        with pytest.raises(ValueError, match="endpoint") as excinfo:
            ContextAPIExporter(TOKEN, endpoint="http://example.invalid")

        assert TOKEN not in str(excinfo.value)

    def test_allow_insecure_accepts_plain_http(self):
        """allow_insecure=True accepts a plain http endpoint (no request is made)."""
        exporter = ContextAPIExporter(
            TOKEN, endpoint="http://example.invalid/", allow_insecure=True
        )
        exporter.shutdown()

        assert "http://example.invalid" == exporter.endpoint

    @pytest.mark.parametrize(
        "endpoint",
        [
            "http://127.0.0.1:9",
            "http://127.8.9.10:9",
            "http://[::1]:9",
            "http://localhost:9",
            "http://LOCALHOST:9",
            "https://api.example.com",
        ],
    )
    def test_loopback_and_https_endpoints_are_accepted(self, endpoint):
        """Loopback http and any https endpoint need no allow_insecure."""
        exporter = ContextAPIExporter(TOKEN, endpoint=endpoint)
        exporter.shutdown()

        assert endpoint == exporter.endpoint

    def test_default_endpoint_is_context(self):
        """The default endpoint is Context's production API (never contacted here)."""
        exporter = ContextAPIExporter(TOKEN)
        exporter.shutdown()

        assert "https://api.context.ai" == exporter.endpoint

    def test_repr_hides_the_token(self):
        """repr shows the endpoint and a masked token."""
        exporter = ContextAPIExporter(TOKEN, endpoint="http://127.0.0.1:9")
        exporter.shutdown()

        assert "ContextAPIExporter(endpoint='http://127.0.0.1:9', token='***')" == repr(
            exporter
        )

    @pytest.mark.parametrize(
        ("token", "kwargs", "error", "match"),
        [
            (123, {}, TypeError, "token must be a str"),
            ("", {}, ValueError, "token must not be empty"),
            ("test token", {}, ValueError, "token must not contain whitespace"),
            ("test-token\n", {}, ValueError, "token must not contain whitespace"),
            (
                TOKEN,
                {"endpoint": "ftp://example.com"},
                ValueError,
                "endpoint must be an http",
            ),
            (TOKEN, {"endpoint": "https://"}, ValueError, "endpoint must be an http"),
            (
                TOKEN,
                {"endpoint": "https://u:p@example.com"},
                ValueError,
                "endpoint must not contain",
            ),
            (TOKEN, {"timeout": -1}, ValueError, "timeout must be a positive"),
            (
                TOKEN,
                {"timeout": float("nan")},
                ValueError,
                "timeout must be a positive",
            ),
            (
                TOKEN,
                {"connect_timeout": 0},
                ValueError,
                "connect_timeout must be a positive",
            ),
            (TOKEN, {"deadline": 0}, ValueError, "deadline must be a positive"),
            (
                TOKEN,
                {"max_attempts": 0},
                ValueError,
                "max_attempts must be an int >= 1",
            ),
            (
                TOKEN,
                {"max_attempts": 2.5},
                ValueError,
                "max_attempts must be an int >= 1",
            ),
            (
                TOKEN,
                {"max_attempts": True},
                ValueError,
                "max_attempts must be an int >= 1",
            ),
            (
                TOKEN,
                {"backoff_base": -0.1},
                ValueError,
                "backoff_base must be a number >= 0",
            ),
            (
                TOKEN,
                {"backoff_max": -1},
                ValueError,
                "backoff_max must be a number >= 0",
            ),
            (TOKEN, {"jitter": 1.0}, ValueError, r"jitter must be in \[0, 1\)"),
            (TOKEN, {"jitter": -0.1}, ValueError, r"jitter must be in \[0, 1\)"),
            (TOKEN, {"clock": 3}, TypeError, "clock must be callable"),
            (
                TOKEN,
                {"transcript_source": "x"},
                TypeError,
                "transcript_source must be callable",
            ),
            (
                TOKEN,
                {"circuit_threshold": 0},
                ValueError,
                "circuit_threshold must be an int",
            ),
            (
                TOKEN,
                {"circuit_cooldown": -1},
                ValueError,
                "circuit_cooldown must be a number",
            ),
            (
                TOKEN,
                {"session_cache_size": 0},
                ValueError,
                "session_cache_size must be an int",
            ),
        ],
    )
    def test_bad_arguments_raise_clearly(self, token, kwargs, error, match):
        """Each invalid argument raises with a message naming it (never echoing the token)."""
        with pytest.raises(error, match=match) as excinfo:
            ContextAPIExporter(token, **{"endpoint": "http://127.0.0.1:9", **kwargs})

        assert TOKEN not in str(excinfo.value)
