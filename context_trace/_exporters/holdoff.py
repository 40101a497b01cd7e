"""
What the senders that deliver a batch in one request (OTLP's, ``otlp.py``, and
PostgreSQL's, ``postgres.py``) share, written once: they hold off after a
failure.

One transient failure opens the sender's circuit (:class:`~.http_policy.CircuitBreaker`
with a threshold of one) for the server's ``Retry-After``, else the next
:class:`~.http_policy.Backoff` delay. While it is open the sender is
:attr:`HoldOffSender.cooling_down`, so the outbox claims no rows for it, and a
batch handed to it anyway comes back ``retry`` unsent; so does every batch after
its ``shutdown``.
"""

from __future__ import annotations

import threading
import time

from .base import Outcome
from .http_policy import Backoff, CircuitBreaker, Clock

__all__ = ["HoldOffSender"]


class HoldOffSender:
    """
    The hold-off state of a one-request sender; a subclass sends.

    Args:
        backoff: First delay in seconds, doubled per consecutive failure.
        max_backoff: The longest delay, in seconds.
        jitter: Random spread of each delay, 0.0 to 1.0.
        clock: Monotonic seconds (tests inject one).
    """

    def __init__(
        self,
        backoff: float,
        max_backoff: float,
        jitter: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._backoff = Backoff(backoff, max_backoff, jitter)
        # One failure opens it, for the backoff delay or the server's Retry-After.
        self._circuit = CircuitBreaker(1, backoff, clock)
        self._closed = threading.Event()

    @property
    def cooling_down(self) -> bool:
        """True while a backoff runs: the outbox does not claim rows for it."""
        return self._circuit.cooling_down

    def _unsent(self, n: int) -> list[Outcome] | None:
        """
        The outcomes of a batch of *n* records that is not sent (empty, the
        sender shut down, or a backoff runs), else None: send it.
        """
        if n == 0:
            return []
        if self._closed.is_set():
            return [Outcome("retry", retry_after=0.0, detail="shut down")] * n
        wait = self._circuit.wait()
        if wait is not None:  # a backoff runs: nothing is sent
            return [Outcome("retry", retry_after=wait, detail="circuit open")] * n
        return None

    def _hold_off(self, retry_after: float | None = None) -> float:
        """
        After a transient failure: open the circuit for *retry_after* (the
        server's), else the next backoff delay. Returns that delay in seconds.
        """
        delay = (
            retry_after
            if retry_after is not None
            else self._backoff.delay(self._circuit.failures)
        )
        self._circuit.failure(delay)
        return delay
