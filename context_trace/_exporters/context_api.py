"""
The Context.ai exporter: delivers records through the official client, ``context-python``.

Records go through ``getcontext.ContextAPI`` and its generated models, so the wire
format, the ``Authorization: Bearer <token>`` header and the status handling are
the client's own. What each record becomes (the request, its messages and its
metadata) is written out in ``context_payload``, which builds them.

Delivery: each record is one request, made with our own retry loop (azure-core's
RetryPolicy is disabled) under the shared HTTP policy (``http_policy.py``).
Connection errors, timeouts and HTTP 429, 502, 503 and 504 are retried with
exponential backoff and jitter, or after the server's ``Retry-After``, within
``max_attempts`` and a per-batch ``deadline``. Other statuses (500 included) are
permanent. A circuit breaker stops calling an API that keeps failing:
records not attempted are reported as *pending* (``ExportResult.pending``, outcome
``"retry"`` with ``attempts == 0``) so that a durable outbox (the SQLite store) keeps
them; without one they are dropped by the pipeline. Delivery is at least once: a
request that timed out after the server processed it is sent again.

Session transcripts: a rating targets the thread's last assistant message, found
from ``transcript_source(session_id)`` when given (the SQLite store provides it),
else from what this exporter itself sent to that thread (a bounded in-process LRU,
``context_threads.py``).
The PATCH body follows the generated client (``[ThreadMessage]``, which has only
``rating``); Context's web documentation shows ``{"messages": [{"id", "rating"}]}``
with message ids returned at ingestion instead, which the client cannot express.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from azure.core.pipeline.policies import RetryPolicy, SansIOHTTPPolicy
from getcontext.generated import ContextAPI
from getcontext.generated import models as _models
from getcontext.token import Credential

from context_trace._record import (
    Conversation,
    Feedback,
    Message,
    Record,
)

from .base import ExportResult, Outcome, OutcomeStatus
from .context_attempt import attempt
from .context_checks import (
    _at_least_one,
    _check_endpoint,
    _check_token,
    _is_number,
    _non_negative,
    _positive,
)
from .context_payload import _LOG_BODY, _THREAD_BODY, _merge, _messages
from .context_payload import _TURN_KEYS as _TURN_KEYS
from .context_payload import _metadata as _metadata
from .context_threads import SentThreads
from .http_policy import (
    DEFAULT_CONTEXT_ENDPOINT,
    Backoff,
    CircuitBreaker,
)

__all__ = ["DEFAULT_ENDPOINT", "ContextAPIExporter", "Outcome", "OutcomeStatus"]

_logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = DEFAULT_CONTEXT_ENDPOINT
_DEFAULT_TIMEOUT = 10.0
_DEFAULT_CONNECT_TIMEOUT = 5.0
_DEFAULT_MAX_ATTEMPTS = 5
_DEFAULT_BACKOFF_BASE = 0.5
_DEFAULT_BACKOFF_MAX = 30.0
_DEFAULT_DEADLINE = 60.0
_DEFAULT_JITTER = 0.2
_DEFAULT_CIRCUIT_THRESHOLD = 5
_DEFAULT_CIRCUIT_COOLDOWN = 30.0
_DEFAULT_SESSION_CACHE_SIZE = 10_000

_ROUTE_LOG = "/api/v1/log/conversation"
_ROUTE_THREAD = "/api/v1/log/conversation/thread"
_ROUTE_THREAD_PATCH = "/api/v1/log/conversation/thread/{id}"


class ContextAPIExporter:
    """
    Deliver records to the Context.ai API with retries and a circuit breaker.

    Use it as the pipeline's exporter when conversations should go to Context. The
    ``context_payload`` module docstring describes what each record becomes on
    the wire.

    Args:
        token: The Context API token. It never appears in logs, ``repr`` or errors.
        endpoint: Base URL of the API. ``http://`` is accepted only for loopback
            hosts (127.0.0.0/8, ::1, localhost) or with *allow_insecure*.
        allow_insecure: Allow a plain ``http://`` endpoint on any host (the token is
            then sent unencrypted).
        timeout: Read timeout of each request, in seconds.
        connect_timeout: Connection timeout of each request, in seconds.
        max_attempts: Requests per record, first try included.
        backoff_base: Delay before the first retry, in seconds; doubles each retry.
        backoff_max: Upper bound of one backoff delay, in seconds.
        deadline: Seconds one :meth:`export` / :meth:`export_each` call may spend;
            records not attempted by then are left for later (pending).
        jitter: Each backoff delay is multiplied by a random factor in
            ``[1 - jitter, 1 + jitter]``; in ``[0, 1)``.
        clock: Monotonic clock in seconds, for the deadline and the circuit breaker.
        transcript_source: Returns a session's transcript so far (the messages of
            its turns in order), used to find the message a rating targets.
        circuit_threshold: Consecutive failed requests (transient failures, retries
            included) that open the circuit.
        circuit_cooldown: Seconds the circuit stays open before one probe request
            (longer when the failure that opened it carried a longer ``Retry-After``).
        session_cache_size: Sessions remembered in-process for ratings when there is
            no *transcript_source* (least recently used are forgotten first).

    Raises:
        TypeError: *token* is not a str, or a callable argument is not callable.
        ValueError: An argument is out of range, or *endpoint* is plain http on a
            non-loopback host without *allow_insecure*.
    """

    def __init__(
        self,
        token: str,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        allow_insecure: bool = False,
        timeout: float = _DEFAULT_TIMEOUT,
        connect_timeout: float = _DEFAULT_CONNECT_TIMEOUT,
        max_attempts: int = _DEFAULT_MAX_ATTEMPTS,
        backoff_base: float = _DEFAULT_BACKOFF_BASE,
        backoff_max: float = _DEFAULT_BACKOFF_MAX,
        deadline: float = _DEFAULT_DEADLINE,
        jitter: float = _DEFAULT_JITTER,
        clock: Callable[[], float] = time.monotonic,
        transcript_source: Callable[[str], Sequence[Message]] | None = None,
        circuit_threshold: int = _DEFAULT_CIRCUIT_THRESHOLD,
        circuit_cooldown: float = _DEFAULT_CIRCUIT_COOLDOWN,
        session_cache_size: int = _DEFAULT_SESSION_CACHE_SIZE,
    ) -> None:
        _check_token(token)
        self._endpoint, self._insecure = _check_endpoint(endpoint, allow_insecure)
        self._timeout = _positive("timeout", timeout)
        self._connect_timeout = _positive("connect_timeout", connect_timeout)
        self._max_attempts = _at_least_one("max_attempts", max_attempts)
        self._backoff_base = _non_negative("backoff_base", backoff_base)
        self._backoff_max = _non_negative("backoff_max", backoff_max)
        self._deadline = _positive("deadline", deadline)
        if not _is_number(jitter) or not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        self._jitter = float(jitter)
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__}")
        if transcript_source is not None and not callable(transcript_source):
            raise TypeError(
                f"transcript_source must be callable or None, got {type(transcript_source).__name__}"
            )
        self._clock = clock
        self._circuit_threshold = _at_least_one("circuit_threshold", circuit_threshold)
        self._circuit_cooldown = _non_negative("circuit_cooldown", circuit_cooldown)
        self._session_cache_size = _at_least_one(
            "session_cache_size", session_cache_size
        )

        self._token = token  # kept only to scrub it from text we log
        self._backoff = Backoff(self._backoff_base, self._backoff_max, self._jitter)
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards _closed
        self._closed = False
        self._warned: set[tuple[str, ...]] = set()
        self._threads = SentThreads(
            self._session_cache_size, transcript_source, self._warn_once
        )
        # Used from the exporting thread only.
        self._circuit = CircuitBreaker(
            self._circuit_threshold, self._circuit_cooldown, clock
        )

        self._client = ContextAPI(
            credential=Credential(token),
            endpoint=self._endpoint,
            # Retries are ours (deadline, circuit breaker, shutdown-aware waits).
            retry_policy=RetryPolicy.no_retries(),
            # azure-core's HttpLoggingPolicy logs every request and response at INFO;
            # a background exporter should not, and nothing here logs headers. Our
            # own DEBUG records cover each attempt.
            http_logging_policy=SansIOHTTPPolicy(),
            connection_timeout=self._connect_timeout,
            read_timeout=self._timeout,
            user_agent="context-trace",
        )

    # -- public API ----------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The API base URL requests go to."""
        return self._endpoint

    @property
    def circuit_open(self) -> bool:
        """True from the moment the circuit breaker trips until a probe succeeds."""
        return self._circuit.is_open

    @property
    def cooling_down(self) -> bool:
        """True while the open circuit waits out its cool-down (no request would be sent)."""
        return self._circuit.cooling_down

    def export(self, batch: Sequence[Record]) -> ExportResult:
        """
        Deliver *batch*; never raise.

        Built on :meth:`export_each`: ``"delivered"`` counts as exported, ``"failed"``
        and attempted ``"retry"`` outcomes as failed, and records never attempted
        (open circuit, deadline, shutdown) as pending.
        """
        outcomes = self.export_each(batch)
        return ExportResult(
            exported=sum(1 for o in outcomes if o.status == "delivered"),
            failed=sum(
                1
                for o in outcomes
                if o.status == "failed" or (o.status == "retry" and o.attempts)
            ),
            retried=sum(max(0, o.attempts - 1) for o in outcomes),
            pending=sum(1 for o in outcomes if o.status == "retry" and not o.attempts),
        )

    def export_each(self, batch: Sequence[Record]) -> list[Outcome]:
        """
        Deliver *batch* in order and say what happened to each record; never raise.

        Use it from a durable outbox: mark ``"delivered"`` records done, release
        ``"retry"`` records for another attempt after ``retry_after`` seconds, and
        mark ``"failed"`` records as given up. Once a session's record is left for
        later, that session's next records in the batch are left too (``"retry"``,
        not attempted), so a thread never receives turns out of order.

        Returns:
            One :class:`Outcome` per record, in batch order.
        """
        deadline_at = self._clock() + self._deadline
        held: set[str] = set()
        outcomes: list[Outcome] = []
        for record in batch:
            try:
                outcome = self._export_record(record, deadline_at, held)
            except Exception as exc:  # noqa: BLE001 - export must never raise
                detail = f"internal error ({type(exc).__name__})"
                self._warn_once(
                    ("internal", type(exc).__name__),
                    "context_trace: could not export a record to the Context API: %s",
                    self._scrub(f"{type(exc).__name__}: {exc}"),
                )
                outcome = Outcome("failed", detail=detail)
            if outcome.status == "retry" and record.session_id is not None:
                held.add(record.session_id)
            outcomes.append(outcome)
        return outcomes

    def shutdown(self, timeout: float | None = None) -> None:
        """
        Stop: interrupt a retry wait, then close the HTTP client. Idempotent.

        *timeout* is accepted for the :class:`~context_trace._exporters.base.Exporter`
        interface; closing does not block.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stopping.set()
        self._client.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self._endpoint!r}, token='***')"

    # -- one record ----------------------------------------------------------------

    def _export_record(
        self, record: Record, deadline_at: float, held: set[str]
    ) -> Outcome:
        if self._stopping.is_set():
            return Outcome("retry", detail="exporter shut down")
        if record.session_id is not None and record.session_id in held:
            return Outcome(
                "retry", detail="an earlier record of this session is not delivered yet"
            )
        if self._clock() >= deadline_at:
            return Outcome("retry", detail="batch deadline passed")
        if isinstance(record, Feedback):
            return self._export_feedback(record, deadline_at)
        if not record.messages:
            self._warn_once(
                ("empty",),
                "context_trace: a conversation with no messages was not sent to Context",
            )
            return Outcome("failed", detail="no messages")
        if record.session_id is None:
            return self._export_conversation(record, deadline_at)
        return self._export_turn(record, record.session_id, deadline_at)

    def _export_conversation(self, record: Conversation, deadline_at: float) -> Outcome:
        metadata = _metadata(record)
        messages = _messages(record)
        body = _LOG_BODY(
            conversation=_models.Conversation(messages=messages, metadata=metadata)
        )
        return self._deliver(
            "a conversation",
            _ROUTE_LOG,
            deadline_at,
            lambda kw: self._client.log.conversation(body=body, **kw),
        )

    def _export_turn(
        self, record: Conversation, session_id: str, deadline_at: float
    ) -> Outcome:
        metadata = _metadata(record)
        turn = {k: metadata.pop(k) for k in _TURN_KEYS if k in metadata}
        messages = _messages(record)
        messages[-1].metadata = _merge(messages[-1].metadata, turn)
        thread = _models.Thread(id=session_id, messages=messages, metadata=metadata)
        body = _THREAD_BODY(conversation=thread)
        outcome = self._deliver(
            "a session turn",
            _ROUTE_THREAD,
            deadline_at,
            lambda kw: self._client.log.conversation_thread(body=body, **kw),
        )
        if outcome.status == "delivered":
            self._threads.remember(session_id, record.messages)
        return outcome

    def _export_feedback(self, feedback: Feedback, deadline_at: float) -> Outcome:
        if feedback.rating not in (-1, 0, 1):
            self._warn_once(
                ("rating",),
                "context_trace: a rating other than -1, 0 or 1 was not sent to Context",
            )
            return Outcome(
                "failed", detail=f"rating {feedback.rating!r} is not -1, 0 or 1"
            )
        index = self._threads.last_assistant(feedback.session_id)
        if index is None:
            self._warn_once(
                ("unrated",),
                "context_trace: could not send a rating to Context: the session's last assistant "
                "message is unknown in this process (pass transcript_source to look it up)",
            )
            return Outcome("failed", detail="last assistant message unknown")
        body = [_models.ThreadMessage() for _ in range(index)]
        body.append(_models.ThreadMessage(rating=feedback.rating))
        session_id = feedback.session_id
        return self._deliver(
            "a rating",
            _ROUTE_THREAD_PATCH,
            deadline_at,
            lambda kw: self._client.log.update_conversation_thread(
                session_id, body=body, **kw
            ),
        )

    # -- delivery with retries -----------------------------------------------------

    def _deliver(
        self,
        what: str,
        route: str,
        deadline_at: float,
        send: Callable[[dict[str, Any]], object],
    ) -> Outcome:
        """Make the request until it succeeds, fails permanently or must wait."""
        wait = self._circuit.wait()
        if wait is not None:
            return Outcome("retry", retry_after=wait, detail="circuit open")
        probe = self._circuit.probing
        attempts = 0
        while True:
            remaining = deadline_at - self._clock()
            attempts += 1
            result = attempt(
                send,
                connect_timeout=min(self._connect_timeout, remaining),
                read_timeout=min(self._timeout, remaining),
                insecure=self._insecure,
                scrub=self._scrub,
            )
            if result is None:
                self._circuit_success()
                _logger.debug(
                    "context_trace: delivered %s on %s (attempt %d)",
                    what,
                    route,
                    attempts,
                )
                return Outcome("delivered", attempts=attempts)
            detail = f"{result.detail} on {route}"
            if not result.transient:
                self._circuit_success()  # the API answered: it is up
                self._warn_once(
                    ("rejected", str(result.status), route),
                    "context_trace: Context API rejected %s: %s",
                    what,
                    detail,
                )
                return Outcome("failed", attempts=attempts, detail=detail)
            _logger.debug(
                "context_trace: attempt %d for %s failed: %s", attempts, what, detail
            )
            self._circuit_failure(result.retry_after)
            delay = result.retry_after
            if delay is None:
                delay = self._backoff.delay(attempts - 1)
            reason = None
            if probe or self._circuit.is_open:
                reason = "circuit open"
            elif attempts >= self._max_attempts:
                reason = f"after {attempts} attempts"
            elif self._clock() + delay >= deadline_at:
                reason = "deadline reached"
            elif self._stopping.wait(delay):
                reason = "shutting down"
            if reason is not None:
                self._warn_once(
                    ("gave up", result.detail, route),
                    "context_trace: could not deliver %s to the Context API (%s): %s",
                    what,
                    reason,
                    detail,
                )
                if self._circuit.is_open:
                    delay = self._circuit.remaining()
                return Outcome(
                    "retry", retry_after=delay, attempts=attempts, detail=detail
                )

    # -- circuit breaker (the policy's; these only log) -----------------------------

    def _circuit_success(self) -> None:
        if self._circuit.success():
            _logger.info("context_trace: Context API reachable again; delivery resumed")

    def _circuit_failure(self, retry_after: float | None) -> None:
        # An open circuit waits at least as long as the server asked.
        cooldown = (
            None if retry_after is None else max(self._circuit_cooldown, retry_after)
        )
        if self._circuit.failure(cooldown):
            self._warn_once(
                ("circuit",),
                "context_trace: Context API failed %d times in a row; pausing delivery for %.1f s",
                self._circuit.failures,
                self._circuit_cooldown,
            )

    # -- logging -------------------------------------------------------------------

    def _warn_once(self, key: tuple[str, ...], msg: str, *args: object) -> None:
        """Log *msg* at WARNING the first time *key* is seen, at DEBUG afterwards."""
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        _logger.log(level, msg, *args)

    def _scrub(self, text: str) -> str:
        """*text* without the token (server answers or errors could echo it)."""
        return text.replace(self._token, "***")
