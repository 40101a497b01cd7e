"""
The HTTP delivery policy every sender follows, each rule written once.

Both HTTP senders (the Context API's, ``context_api.py``, and OTLP's,
``otlp.py``), and so ``replay``, which delivers through them, take from here:

- **Which answers are worth another try**: :data:`TRANSIENT_STATUSES` (429, 502,
  503, 504, the set OpenTelemetry's OTLP/HTTP specification names) and no
  answer at all (connection refused or reset, a timeout). Every other status
  means the request itself is wrong and would fail again: it is dropped and
  counted. HTTP 500 is not retried; ARCHITECTURE.md ("Delivery policy") says why.
- **How long to wait**: the server's ``Retry-After`` (delta-seconds or an
  HTTP-date; :func:`retry_after_seconds`), else :class:`Backoff` (exponential,
  with jitter, capped).
- **When to stop calling**: :class:`CircuitBreaker`. After *threshold*
  consecutive transient failures it opens for a cool-down, then lets one probe
  through: success closes it, failure opens it again. While it is open a sender
  sends nothing and the outbox leaves the rows on disk.
- **URL safety**: :func:`safe_url` (from the leaf ``_urls.py``, which the
  PostgreSQL store uses too) is the only form of an endpoint that reaches a
  message (user info and query masked); :func:`is_loopback` decides where plain
  http may carry a token.
- **Where to send by default**: :data:`DEFAULT_CONTEXT_ENDPOINT`,
  :data:`DEFAULT_OTLP_TRACES_ENDPOINT`.

Standard library only (and ``_urls.py``, itself so): the OTLP sender needs
nothing else.
"""

from __future__ import annotations

import email.utils
import ipaddress
import math
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone

from context_trace._urls import safe_url

__all__ = [
    "DEFAULT_CONTEXT_ENDPOINT",
    "DEFAULT_OTLP_TRACES_ENDPOINT",
    "TRANSIENT_STATUSES",
    "Backoff",
    "CircuitBreaker",
    "is_loopback",
    "is_transient",
    "retry_after_seconds",
    "safe_url",
]

#: The Context API's base URL.
DEFAULT_CONTEXT_ENDPOINT = "https://api.context.ai"
#: An OpenTelemetry Collector on this machine (OTLP/HTTP's default port).
DEFAULT_OTLP_TRACES_ENDPOINT = "http://localhost:4318/v1/traces"

#: Statuses retried (with ``Retry-After`` honoured). OTLP/HTTP's retryable set:
#: too many requests, bad gateway, unavailable, gateway timeout.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})

Clock = Callable[[], float]


def is_transient(status: int | None) -> bool:
    """Whether an answer (None: no answer at all) is worth another try."""
    return status is None or status in TRANSIENT_STATUSES


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), if any."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class Backoff:
    """
    Exponential backoff with jitter: ``base * 2**retry``, spread, then capped.

    Args:
        base: The first delay, in seconds.
        maximum: The longest delay, in seconds.
        jitter: Each delay is multiplied by a random factor in
            ``[1 - jitter, 1 + jitter]``.
    """

    __slots__ = ("_base", "_jitter", "_maximum", "_random")

    def __init__(self, base: float, maximum: float, jitter: float) -> None:
        self._base = base
        self._maximum = maximum
        self._jitter = jitter
        self._random = random.Random()

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number *retry* (0 for the first)."""
        factor = self._random.uniform(1.0 - self._jitter, 1.0 + self._jitter)
        return float(min(self._maximum, self._base * 2.0**retry * factor))


class CircuitBreaker:
    """
    Stops calling a backend that keeps failing; one probe after each cool-down.

    Used from one thread (the export worker). A sender calls :meth:`wait`
    before a request, then :meth:`success` or :meth:`failure` with its result.

    Args:
        threshold: Consecutive transient failures that open the circuit.
        cooldown: Seconds it stays open before the probe (a failure may name
            its own, e.g. the server's ``Retry-After``).
        clock: Monotonic seconds (tests inject one).
    """

    __slots__ = (
        "_clock",
        "_cooldown",
        "_failures",
        "_open_until",
        "_probing",
        "threshold",
    )

    def __init__(
        self, threshold: int, cooldown: float, clock: Clock = time.monotonic
    ) -> None:
        self.threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._open_until: float | None = None  # set while the circuit is open
        self._probing = False  # half-open: one probe request in flight

    @property
    def failures(self) -> int:
        """Consecutive transient failures so far."""
        return self._failures

    @property
    def is_open(self) -> bool:
        """True from the moment the circuit trips until a request succeeds."""
        return self._open_until is not None

    @property
    def probing(self) -> bool:
        """True while the request let through after a cool-down is in flight."""
        return self._probing

    @property
    def cooling_down(self) -> bool:
        """True while the open circuit waits out its cool-down (nothing may be sent)."""
        open_until = self._open_until
        return open_until is not None and self._clock() < open_until

    def remaining(self) -> float:
        """Seconds of cool-down left (0 when closed or due for the probe)."""
        open_until = self._open_until
        return 0.0 if open_until is None else max(0.0, open_until - self._clock())

    def wait(self) -> float | None:
        """None if a request may go out now, else seconds until the probe."""
        if self._open_until is None:
            return None
        left = self._open_until - self._clock()
        if left > 0:
            return left
        self._probing = True  # half-open: this request is the probe
        return None

    def success(self) -> bool:
        """The backend answered: close. Returns whether the circuit was open."""
        was_open = self._open_until is not None
        self._failures = 0
        self._open_until = None
        self._probing = False
        return was_open

    def failure(self, cooldown: float | None = None) -> bool:
        """
        Count a transient failure; open (again) at the threshold or after a probe.

        Args:
            cooldown: Seconds to stay open this time; None for the default.

        Returns:
            Whether this failure opened a closed circuit.
        """
        self._failures += 1
        if not (self._probing or self._failures >= self.threshold):
            return False
        opened = self._open_until is None
        wait = self._cooldown if cooldown is None else cooldown
        self._open_until = self._clock() + wait
        self._probing = False
        return opened


def is_loopback(host: str) -> bool:
    """Whether *host* only reaches this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
