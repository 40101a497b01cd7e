"""Connections to a store file: opening, pragmas, transactions and bulk inserts."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from .schema import (
    APPLICATION_ID,
    REQUIRED_TABLES,
    SCHEMA_VERSION,
    is_current,
    migrate,
    pragma_int,
    table_names,
)

DEFAULT_BUSY_TIMEOUT = 10.0
_WAL_AUTOCHECKPOINT_PAGES = 10_000
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes

# The writer lives as long as the app, in every web worker, so its connection is
# sized for appending, not for reading. Its page cache holds a batch's dirty
# pages (the tail of conversations, the id indexes' touched leaves); a bigger
# cache only keeps pages it never reads again, and SQLite grows it until full
# (16 MiB cost ~16 MiB of RSS per worker, at no gain in measured throughput;
# 512 KiB against 1 MiB: -0.3 to -1 MiB of RSS over 20,000 turns, store
# throughput within run-to-run noise, benchmarks/export.py).
WRITER_CACHE_KIB = 512
# Memory-mapped I/O off: mapped pages of the file count in the worker's RSS.
WRITER_MMAP_BYTES = 0
# Prepared statements kept. The bulk inserts' SQL varies with the rows of the
# batch (see insert_rows), so the sqlite3 module's default of 128 fills with
# one-off statements of up to ~100 KiB each; preparing one again costs microseconds.
WRITER_CACHED_STATEMENTS = 16
# Readers (the CLI, a transcript for ratings) are short-lived and scan: they
# get a bigger cache of their own.
READER_CACHE_KIB = 16 * 1024

# SQLite's most portable limit of bound parameters per statement.
_MAX_BIND = 999


def insert_rows(
    conn: sqlite3.Connection,
    head: str,
    rows: Sequence[Sequence[Any]],
    tail: str = "",
) -> None:
    """
    ``head VALUES (...), (...), ... tail`` in as few statements as the bind limit allows.

    Why not ``executemany``: the sqlite3 module releases the GIL around every
    step, i.e. once per row. When an app thread is busy with Python code, each
    release costs the export thread a whole switch interval (5 ms) to get the
    GIL back, so a per-row loop crawls at a few hundred rows a second exactly
    when the app is loaded. One multi-row statement is one step.

    A column that is None in every row of a statement is written as a ``NULL``
    literal, not bound: the sqlite3 module looks for an adapter for every
    bound value that is not exactly an int, float or str, and for None that
    lookup formats and clears an ``AttributeError`` (~3,000 instructions; a
    parrot turn binds six Nones). The stored rows are the same.
    """
    if not rows:
        return
    width = len(rows[0])
    per = max(1, _MAX_BIND // width)
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        # Only the first row's Nones can be a column's in every row.
        nulls = [i for i, value in enumerate(chunk[0]) if value is None]
        if nulls:
            columns = list(zip(*chunk, strict=True))
            size = len(chunk)
            nulls = [i for i in nulls if columns[i].count(None) == size]
        if nulls:
            kept = [columns[i] for i in range(width) if i not in nulls]
            marks = ["NULL" if i in nulls else "?" for i in range(width)]
            params: list[Any] = list(chain.from_iterable(zip(*kept, strict=True)))
        else:
            marks = ["?"] * width
            params = list(chain.from_iterable(chunk))
        group = "(" + ",".join(marks) + ")"
        sql = f"{head} VALUES {','.join([group] * len(chunk))}{tail}"
        conn.execute(sql, params)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """
    One write transaction (the connection runs with ``isolation_level=None``).

    BEGIN IMMEDIATE takes the write lock up front, so a writer waits for the busy
    timeout at BEGIN instead of failing halfway with SQLITE_BUSY on upgrade, and
    nothing read inside the transaction can change before it commits.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


# --- opening -------------------------------------------------------------------


def store_error(path: str, exc: sqlite3.Error) -> OSError | ValueError:
    """Map a sqlite3 error met while opening *path* to OSError or ValueError."""
    message = f"cannot use SQLite store at {path}: {exc}"
    if isinstance(exc, sqlite3.OperationalError):
        return OSError(message)  # cannot open, read-only, locked, I/O error
    return ValueError(message)  # not a database, malformed


def open_writer(path: str, busy_timeout: float) -> sqlite3.Connection:
    """
    Open (creating if needed) the store at *path* for writing.

    Several processes may open a new file at the same moment (gunicorn workers
    flushing at exit). Switching it to WAL and creating the schema can then
    answer "database is locked" without waiting for the busy timeout, so the
    whole setup is retried with a short backoff until *busy_timeout* passes.
    """
    deadline = time.monotonic() + busy_timeout
    delay = 0.01
    while True:
        try:
            return _open_writer_once(path, busy_timeout)
        except OSError as exc:  # store_error maps "locked" to OSError
            cause = exc.__cause__
            locked = isinstance(cause, sqlite3.OperationalError) and (
                "locked" in str(cause) or "busy" in str(cause)
            )
            if not locked or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _open_writer_once(path: str, busy_timeout: float) -> sqlite3.Connection:
    """One attempt of :func:`open_writer`."""
    if path != ":memory:":
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OSError(
                f"cannot use SQLite store at {path}: cannot create directory"
                f" {parent}: {reason}"
            ) from exc
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. The pipeline's
        # worker and the outbox users call from different threads, always under
        # SQLiteExporter._lock, hence check_same_thread=False.
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=WRITER_CACHED_STATEMENTS,
        )
    except sqlite3.Error as exc:
        raise store_error(path, exc) from exc
    try:
        # WAL lets readers run beside one writer and makes commits cheap;
        # synchronous=NORMAL is durable across application crashes in WAL mode
        # (a power loss can drop the last commits, never corrupt the file).
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute("PRAGMA synchronous = NORMAL")
        # Checkpoint every ~40 MB of WAL instead of 4 MB: pages rewritten by
        # successive batches reach the database file once, with fewer fsyncs.
        # The WAL is truncated back to that size after a checkpoint.
        conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES:d}")
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT:d}")
        # Negative: a size in KiB, not a page count.
        conn.execute(f"PRAGMA cache_size = {-WRITER_CACHE_KIB:d}")
        conn.execute(f"PRAGMA mmap_size = {WRITER_MMAP_BYTES:d}")
        if not is_current(conn):  # the common case: no write lock needed
            with transaction(conn):
                migrate(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise store_error(path, exc) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def read_uri(path: str | os.PathLike[str], busy_timeout: float = 10.0) -> str:
    """
    The URI that reads the existing store at *path* without writing anything.

    ``mode=ro`` as a rule: it sees what writers commit while it reads. A WAL
    store in a directory this process cannot write (a copy handed to an
    analyst, a read-only mount) cannot be read that way when its ``-shm`` file
    is missing, because SQLite must create it to read the WAL index: see
    :func:`_fallback_uri`.

    Raises:
        OSError: The store's log cannot be read from its directory.
    """
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
    except sqlite3.Error:
        return uri  # the caller opens it again and reports the error
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        return _fallback_uri(path, exc) or uri
    except sqlite3.DatabaseError:
        pass  # corrupt or not SQLite: the caller reports it
    finally:
        conn.close()
    return uri


def _fallback_uri(
    path: str | os.PathLike[str], exc: sqlite3.OperationalError
) -> str | None:
    """
    How to read a store that ``mode=ro`` could not (*exc*), or None.

    Only a directory this process cannot write is worked around. With no
    ``-wal`` file (a store closed cleanly) nothing lives outside the database
    file and nobody can be writing it, so it is read as ``immutable=1``. A
    ``-wal`` without its ``-shm`` cannot be read there at all: an OSError says
    how to fix it.
    """
    if "locked" in str(exc) or "busy" in str(exc):
        return None
    directory = os.path.dirname(os.path.abspath(path))
    if _can_create_in(directory):
        return None  # not a read-only directory: the caller reports *exc*
    wal = os.fspath(path) + "-wal"
    if os.path.exists(wal) and os.path.getsize(wal) > 0:
        raise OSError(
            f"cannot read context_trace database {path}: its directory"
            f" {directory} is read-only and its write-ahead log ({wal}) has"
            " no -shm file; copy the store with its -wal file into a"
            f" writable directory ({exc})"
        ) from exc
    return Path(path).absolute().as_uri() + "?mode=ro&immutable=1"


def _can_create_in(directory: str) -> bool:
    """Whether this process can create a file in *directory* (tried, not guessed:
    ``os.access`` answers for the real user, and root's answer ignores capabilities)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".context-trace-probe-", dir=directory)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True


def open_reader(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Open an existing store read-only; raise a clear error if it is not one."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no context_trace database at {path}")
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    while True:
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
        except sqlite3.Error as exc:
            raise OSError(f"cannot open context_trace database {path}: {exc}") from exc
        try:
            app_id = pragma_int(conn, "application_id")
            version = pragma_int(conn, "user_version")
            tables = table_names(conn)
            break
        except sqlite3.OperationalError as exc:
            conn.close()
            fallback = None if "immutable" in uri else _fallback_uri(path, exc)
            if fallback is None:
                raise _not_a_store(path, exc) from exc
            uri = fallback
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise _not_a_store(path, exc) from exc
    if app_id != APPLICATION_ID or not tables >= REQUIRED_TABLES:
        conn.close()
        raise ValueError(f"{path} is a SQLite file but not a context_trace database")
    if version > SCHEMA_VERSION:
        conn.close()
        raise ValueError(
            f"{path} has schema version {version}, newer than this context_trace"
            f" supports ({SCHEMA_VERSION}); upgrade context_trace"
        )
    conn.execute(f"PRAGMA cache_size = {-READER_CACHE_KIB:d}")
    return conn


def _not_a_store(path: str, exc: sqlite3.DatabaseError) -> ValueError:
    return ValueError(
        f"{path} is not a context_trace database ({exc}; the file is corrupt"
        " or not SQLite)"
    )
