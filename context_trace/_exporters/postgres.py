"""
The outbox's ``postgresql`` destination: batches of turns into a shared database.

:class:`PostgresSender` is a :class:`~.base.Sender`: the durable outbox
(``outbox.py``) claims rows from the host's local SQLite file and hands them
here on the export worker, so the app never waits on PostgreSQL. One batch is
one transaction (``_store/postgres``): it commits whole or not at all, and a
batch delivered again after a lost answer stores nothing twice.

The delivery policy is the other senders' (``http_policy.py``), without the
HTTP: a connection error, a server restarting or shutting down, a deadlock or
a serialization failure is transient (the rows go back to the outbox with a
backoff, and the circuit stays open that long so nothing is sent meanwhile);
a record PostgreSQL refuses for its data is dropped and counted, the batch is
split so only that record is. Messages name the server by its safe URL (no
password).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from typing import Any

from context_trace._log import log_once
from context_trace._record import Record

from .base import Outcome
from .holdoff import HoldOffSender
from .http_policy import Clock

__all__ = ["PostgresSender", "default_host"]

_logger = logging.getLogger(__name__)

_DEFAULT_BACKOFF = 0.5
_MAX_BACKOFF = 10.0


def default_host() -> str:
    """This host's identity: the machine's name."""
    return socket.gethostname() or "unknown-host"


class PostgresSender(HoldOffSender):
    """
    Deliver turns and ratings to a PostgreSQL store; never raises.

    Args:
        url: ``postgresql://user:password@host:port/db``; shown only without
            its password.
        host: This host's identity, stored with every row (default: the
            machine's name).
        backoff: First retry delay in seconds, doubled per consecutive failure
            (at most 10 s).
        jitter: Random spread of each delay, 0.0 to 1.0.
        clock: Monotonic seconds (tests inject one).

    Raises:
        ValueError: *url* is not a PostgreSQL URL.

    .. versionadded:: 0.3.0
    """

    def __init__(
        self,
        url: str,
        *,
        host: str | None = None,
        backoff: float = _DEFAULT_BACKOFF,
        jitter: float = 0.2,
        clock: Clock = time.monotonic,
    ) -> None:
        from context_trace._store.postgres import PostgresStore

        self._store = PostgresStore(url, host=host or default_host())
        super().__init__(backoff, _MAX_BACKOFF, jitter, clock)
        self.batches = 0  #: transactions committed (benchmarks read it)

    def __repr__(self) -> str:
        return f"PostgresSender({self._store.location!r}, host={self._store.host!r})"

    @property
    def store(self) -> Any:
        """The :class:`~context_trace._store.postgres.PostgresStore` written to."""
        return self._store

    @property
    def location(self) -> str:
        """The server, without its password."""
        return str(self._store.location)

    def export_each(self, batch: Sequence[Record]) -> list[Outcome]:
        """Write *batch* in one transaction; one :class:`Outcome` per record."""
        n = len(batch)
        unsent = self._unsent(n)
        if unsent is not None:
            return unsent
        kind, detail = self._write(batch)
        if kind == "ok":
            self._circuit.success()
            return [Outcome("delivered", attempts=1)] * n
        if kind == "transient":
            delay = self._hold_off()
            log_once(
                _logger,
                f"postgres.retry.{detail}",
                "context_trace: PostgreSQL store %s unavailable (%s); retrying in %.1f s",
                self.location,
                detail,
                delay,
            )
            return [Outcome("retry", retry_after=delay, attempts=1, detail=detail)] * n
        # The server answered but refused the data: find the records it refuses.
        self._circuit.success()
        if n == 1:
            log_once(
                _logger,
                "postgres.rejected",
                "context_trace: PostgreSQL store %s refused a record (%s); dropped",
                self.location,
                detail,
            )
            return [Outcome("failed", attempts=1, detail=detail)]
        half = n // 2
        return self.export_each(batch[:half]) + self.export_each(batch[half:])

    def _write(self, batch: Sequence[Record]) -> tuple[str, str]:
        """``("ok" | "transient" | "refused", detail)``; never raises."""
        from context_trace._store.postgres import StoreUnavailable

        psycopg = _psycopg()
        try:
            self._store.write(batch)
            self.batches += 1
            return "ok", ""
        except StoreUnavailable as exc:
            return "transient", exc.reason
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            return "refused", _state(exc)
        except psycopg.Error as exc:
            # Connection lost, server restarting, deadlock, privileges not yet
            # granted: the rows wait in the outbox for the store to come back.
            return "transient", _state(exc)
        except RuntimeError:
            return "transient", "closed"
        except Exception as exc:  # noqa: BLE001 - never raise into the worker
            log_once(
                _logger,
                "postgres.bug",
                "context_trace: could not write to the PostgreSQL store",
                exc_info=True,
            )
            return "refused", type(exc).__name__

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop: cut a statement in progress short; undelivered rows stay on disk."""
        self._closed.set()
        self._store.cancel()
        self._store.close(timeout)

    def after_fork(self) -> None:
        """In a fork child: a connection of its own."""
        self._store.after_fork()


def _psycopg() -> Any:
    import psycopg

    return psycopg


def _state(exc: BaseException) -> str:
    """A short reason: the SQLSTATE, else the error's class name."""
    state = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__} {state}" if state else type(exc).__name__
