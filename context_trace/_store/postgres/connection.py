"""
The PostgreSQL store's URLs and connections: URL checks and masking, and
:func:`connect`, which says which problem it is (:class:`StoreUnavailable`).
"""

from __future__ import annotations

from typing import Any

from context_trace._urls import safe_url as _safe_url

#: The schema the store's tables live in (the writer's role owns it).
SCHEMA = "context_trace"
_SCHEMES = ("postgresql://", "postgres://")
_CONNECT_TIMEOUT = 3.0
_STATEMENT_TIMEOUT_MS = 30_000


class StoreUnavailable(ValueError):
    """
    The PostgreSQL store cannot be used; ``reason`` says which problem it is.

    ``reason`` is one of ``"wrong password"``, ``"unknown database"``,
    ``"unreachable"``, ``"permission denied"`` or ``"newer schema"``. The
    message names the server by :func:`safe_url`, never with its password.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def is_postgres_url(value: object) -> bool:
    """Whether *value* is a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(value, str) and value.startswith(_SCHEMES)


def check_url(value: object, source: str = "store") -> str:
    """*value* if it is a PostgreSQL URL, else a ValueError naming *source*."""
    if not is_postgres_url(value):
        shown = (
            value.split(":", 1)[0] + ":…"  # never echo a URL: it holds a password
            if isinstance(value, str)
            else type(value).__name__
        )
        raise ValueError(
            f"{source} must be a postgresql:// URL (e.g. "
            f"'postgresql://user:password@host:5432/db'), got {shown!r}"
        )
    return str(value)


def safe_url(url: str) -> str:
    """*url* for messages, logs and ``repr``: the password is never shown."""
    return _safe_url(url)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ValueError(
            "a postgresql:// store needs psycopg: install 'context-trace[postgres]'"
        ) from exc
    return psycopg


def _classify(exc: BaseException) -> str:
    """Which of the three connection problems *exc* is."""
    state = getattr(exc, "sqlstate", None)
    text = str(exc).lower()
    if state in ("28P01", "28000") or "password" in text:
        return "wrong password"
    if state == "3D000" or ("database" in text and "does not exist" in text):
        return "unknown database"
    return "unreachable"


_EXPLAIN = {
    "wrong password": "the server refused the user name or password",
    "unknown database": "the server has no such database",
    "unreachable": "no PostgreSQL server answered there",
}


def connect(
    url: str, *, timeout: float = _CONNECT_TIMEOUT, read_only: bool = False
) -> Any:
    """
    A new psycopg connection to *url*, with the store's schema on its path.

    Raises:
        StoreUnavailable: wrong password, unknown database or unreachable host
            (``reason`` says which).
    """
    psycopg = _psycopg()
    options = f"-c search_path={SCHEMA} -c statement_timeout={_STATEMENT_TIMEOUT_MS}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    try:
        return psycopg.connect(
            url,
            connect_timeout=max(1, round(timeout)),
            application_name="context_trace",
            options=options,
            keepalives=1,
            keepalives_idle=30,
        )
    except psycopg.OperationalError as exc:
        reason = _classify(exc)
        raise StoreUnavailable(
            reason,
            f"cannot connect to the PostgreSQL store at {safe_url(url)}: "
            f"{reason} ({_EXPLAIN[reason]})",
        ) from None
    except psycopg.ProgrammingError:
        raise StoreUnavailable(
            "unreachable",
            f"cannot connect to the PostgreSQL store at {safe_url(url)}: "
            "the URL is not a valid PostgreSQL connection URL",
        ) from None
