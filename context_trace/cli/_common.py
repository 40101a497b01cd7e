"""
What every command of ``context-trace`` shares: exit statuses, :class:`_CLIError`,
and opening the store (SQLite, or the PostgreSQL store ``--store`` names).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path
from typing import Any, TextIO

from context_trace import _config
from context_trace._store.base import Reads
from context_trace._store.sqlite_store import SQLiteStore

_PROG = "context-trace"
_EXIT_OK = 0
_EXIT_DATA = 1
_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130
_NO_USER = "(no user)"  # the row totalling turns recorded without a user
_HINT = "run 'context-trace demo' or record something first"
# The demo's default size (the same as _demo.DEFAULT_*, which a test checks):
# written out here so that commands other than `demo` never import the demo app.
_DEMO_USERS = 6
_DEMO_SESSIONS = 4
_DEMO_TURNS = 3
# The demo's own store: never the app's (``$CONTEXT_TRACE_DB``, traces.db).
_DEMO_DB = "~/.context_trace/demo.db"


class _CLIError(Exception):
    """A problem reported as one line on stderr, with an exit status."""

    def __init__(self, message: str, code: int = _EXIT_DATA) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- the store
def _db_path(args: argparse.Namespace) -> Path:
    raw = getattr(args, "db", None)
    return Path(raw).expanduser() if raw else _config.default_db_path()


def _describe(exc: BaseException, path: Path) -> str:
    """One line for an error met opening or reading the store."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    text = str(cause)
    if isinstance(cause, sqlite3.OperationalError) and "locked" in text:
        return f"database at {path} is locked by another process; try again later"
    return " ".join(str(exc).split())


#: The commands that read a PostgreSQL store (``--store`` or $CONTEXT_TRACE_STORE).
STORE_COMMANDS = ("users", "sessions", "show", "stats", "export", "outbox", "replay")
#: The commands that read a PostgreSQL store through its local cache (a SQLite
#: file in the store's own format, see ``_store/postgres/cache.py``): the
#: dashboard and the analytics, which read the dashboard's index.
CACHE_COMMANDS = ("ui", "topics", "unhappy", "retention", "compare", "cost")
# The PostgreSQL store this run reads, set by use_store() before a command runs.
_POSTGRES: list[str] = []


def store_url(args: argparse.Namespace) -> str | None:
    """``--store``, else $CONTEXT_TRACE_STORE, else None (the SQLite file)."""
    raw = getattr(args, "store", None) or os.environ.get(_config.ENV_STORE, "")
    return raw.strip() or None


def _reads_cache(args: argparse.Namespace) -> bool:
    """Whether the command reads a PostgreSQL store through the local cache."""
    if args.command in CACHE_COMMANDS:
        return True
    # `users --sort cost` reads the dashboard's cost sums.
    return args.command == "users" and getattr(args, "sort", None) == "cost"


def use_store(args: argparse.Namespace) -> None:
    """Read the PostgreSQL store this run names, or refuse a command that cannot."""
    _POSTGRES.clear()
    url = store_url(args)
    cache = getattr(args, "cache", None)
    if url is None:
        if cache is not None:
            raise _CLIError(
                "--cache is the local copy of a PostgreSQL store: give the store"
                f" too (--store URL or {_config.ENV_STORE})",
                _EXIT_USAGE,
            )
        return
    from context_trace._store.postgres import check_url

    try:
        check_url(url, "--store")
    except ValueError as exc:
        raise _CLIError(str(exc), _EXIT_USAGE) from None
    if args.command == "demo":
        return  # the demo records into a store of its own
    if _reads_cache(args):
        if args.command == "ui":
            _ui_store_check(url)
        synced = sync_cache(url, cache, sys.stderr)
        args.db = str(synced.path)
        if args.command == "ui":
            args.postgres_cache = synced  # kept in step while it serves
        else:
            synced.close()
        return
    if args.command not in STORE_COMMANDS:
        every = (*STORE_COMMANDS, *CACHE_COMMANDS)
        raise _CLIError(
            f"'{args.command}' does not read a PostgreSQL store (only "
            f"{', '.join(every)}); unset {_config.ENV_STORE} or drop --store",
            _EXIT_USAGE,
        )
    if args.command not in ("outbox", "replay"):
        _POSTGRES.append(url)


def sync_cache(url: str, path: str | None, out: TextIO) -> Any:
    """
    The store's local cache, brought level with it now.

    The first copy of a big store takes a while: its progress goes to *out*.
    """
    from context_trace._store.postgres.cache import PostgresCache

    try:
        cache = PostgresCache(url, Path(path).expanduser() if path else None)
    except ValueError as exc:  # StoreUnavailable says which problem, no password
        raise _CLIError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise _CLIError(f"cannot use the local cache of {_safe(url)}: {exc}") from None
    try:
        pending = cache.pending()
        if pending > 50_000:
            print(
                f"Copying {pending:,} turns from {cache.location} into {cache.path}"
                " ...",
                file=out,
            )
            out.flush()
        shown = [time.monotonic()]

        def progress(copied: int) -> None:
            if time.monotonic() - shown[0] >= 5:
                shown[0] = time.monotonic()
                print(f"  {copied:,} / {pending:,}", file=out)
                out.flush()

        cache.build(progress)
    except Exception as exc:
        cache.close()
        if isinstance(exc, (ValueError, OSError, sqlite3.Error)) or type(
            exc
        ).__module__.startswith("psycopg"):
            raise _CLIError(
                f"cannot copy {cache.location} into {cache.path}:"
                f" {_safe_text(str(exc), url)}"
            ) from None
        raise
    return cache


def _safe(url: str) -> str:
    from context_trace._store.postgres import safe_url

    return safe_url(url)


def _safe_text(text: str, url: str) -> str:
    """*text* in one line, never with the password of *url*."""
    from urllib.parse import unquote, urlsplit

    password = urlsplit(url).password
    text = " ".join(text.split())
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return text


def _ui_store_check(url: str) -> None:
    """The dashboard's start-up: say what is wrong with the store, if anything."""
    from context_trace._store.postgres import check

    try:
        check(url, create=False)
    except ValueError as exc:
        raise _CLIError(f"the dashboard cannot start: {exc}") from None


def _open_postgres(url: str) -> Any:
    from context_trace._store.postgres import PostgresReads

    try:
        return PostgresReads(url)
    except ValueError as exc:  # StoreUnavailable says which problem, no password
        raise _CLIError(str(exc)) from None


def _open(path: Path) -> Reads:
    """Open the store read-only, or raise :class:`_CLIError` saying why not."""
    if _POSTGRES:
        return _open_postgres(_POSTGRES[0])  # type: ignore[no-any-return]
    if not path.exists():
        raise _CLIError(f"no database at {path} ({_HINT})")
    if path.is_dir():
        raise _CLIError(f"{path} is a directory, not a database")
    if path.stat().st_size == 0:
        raise _CLIError(f"database at {path} is empty ({_HINT})")
    try:
        return SQLiteStore(path).reads()
    except FileNotFoundError:
        raise _CLIError(f"no database at {path} ({_HINT})") from None
    except (OSError, ValueError) as exc:
        raise _CLIError(_describe(exc, path)) from None


def _read(path: Path, query: Callable[[Reads], Any]) -> Any:
    """Run *query* on a reader of *path*; store errors become :class:`_CLIError`."""
    reader = _open(path)
    try:
        return query(reader)
    except (OSError, ValueError) as exc:
        raise _CLIError(_describe(exc, path)) from None
    finally:
        reader.close()


def _print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2, ensure_ascii=False)
    out.write("\n")


#: The time zone of ``retention`` and ``ui`` when ``--tz`` is not given.
ENV_TZ = "CONTEXT_TRACE_TZ"


def time_zone(args: argparse.Namespace) -> tzinfo | None:
    """
    ``--tz``, else ``$CONTEXT_TRACE_TZ`` (None: UTC).

    Raises:
        _CLIError: A usage error naming the variable, for an unknown zone in it.
    """
    given: tzinfo | None = getattr(args, "tz", None)
    if given is not None:
        return given
    text = os.environ.get(ENV_TZ, "").strip()
    if not text:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise _CLIError(
            f"{ENV_TZ}: unknown time zone {text!r} (expected an IANA name such as"
            " Europe/Paris, or UTC)",
            _EXIT_USAGE,
        ) from None
