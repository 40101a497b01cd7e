"""
The PostgreSQL store: one database that the app servers share.

Each host writes its turns to its own durable outbox (a local SQLite file)
first; the outbox's ``postgresql`` sender (``_exporters/postgres.py``) then
delivers them here in batches, through :class:`PostgresStore`. This module
holds everything that speaks PostgreSQL:

- **URLs and secrets.** :func:`check_url` accepts ``postgresql://`` (or
  ``postgres://``) URLs; :func:`safe_url` is the only form that reaches a
  message or a ``repr`` (the password never does).
- **Connections.** :func:`connect` opens one with a short connect timeout, the
  store's schema on the search path, and a statement timeout, so a server that
  hangs never holds the export worker for long. :func:`check` is the fast
  check ``configure()``, ``context-trace outbox`` and the dashboard run, and
  says which of the usual three things is wrong (:class:`StoreUnavailable`).
- **Schema.** :func:`migrate` applies the versioned migrations (one SQL file
  per version in ``migrations/``, recorded in ``schema_migrations``) under an
  advisory lock, so hosts starting at once apply each version exactly once.
- **Writes.** :meth:`PostgresStore.write` inserts a batch in one transaction:
  turns ``ON CONFLICT (id) DO NOTHING`` (a turn delivered twice is stored
  once), and the session and user aggregates moved only by the turns really
  inserted. Ratings are stored as given and resolved to their turn when read
  (the ``rated_turns`` view), so a rating may arrive before the turn it rates.
- **Reads.** A session's turns are ordered by start time (then end time, then
  id) whichever host served them; the history a prompt re-sent is dropped when
  the transcript is read, by the same rule the SQLite writer applies when it
  writes (``writer._strip_history``), so the result does not depend on the
  order in which the hosts' outboxes delivered.

psycopg 3 is imported here only: ``import context_trace`` never loads it.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from context_trace._record import (
    Conversation,
    Feedback,
    Message,
    Record,
    exported_metadata,
)
from context_trace._store.base import WriteResult
from context_trace._store.codec import (
    JSON,
    decode,
    is_tool_error,
    messages_from_json,
    messages_json,
)
from context_trace._store.models import (
    DayStats,
    SessionSummary,
    StoredConversation,
    Transcript,
    UserSummary,
)
from context_trace._store.writer import _Fingerprints, _strip_history
from context_trace._urls import safe_url as _safe_url

__all__ = [
    "SCHEMA",
    "PostgresReads",
    "PostgresStore",
    "StoreUnavailable",
    "check",
    "check_url",
    "connect",
    "is_postgres_url",
    "latest_version",
    "migrate",
    "safe_url",
]

#: The schema the store's tables live in (the writer's role owns it).
SCHEMA = "context_trace"
# pg_advisory_xact_lock's key for migrations: "ctrace" + 1 in hex.
_MIGRATION_LOCK = 0x637472616365_01
_SCHEMES = ("postgresql://", "postgres://")
_CONNECT_TIMEOUT = 3.0
_STATEMENT_TIMEOUT_MS = 30_000
# Why the outbox reads refuse a PostgreSQL store.
_NO_OUTBOX = (
    "a PostgreSQL store holds no outbox: each host keeps its own in its local "
    "SQLite file (context-trace outbox --db PATH)"
)
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


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


# -- migrations ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its number, its name and its SQL."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The package's migrations, in version order (one ``NNNN_name.sql`` each)."""
    found: list[Migration] = []
    folder = importlib.resources.files(__package__).joinpath("migrations")
    for item in folder.iterdir():
        match = _MIGRATION_FILE.match(item.name)
        if match:
            found.append(
                Migration(int(match.group(1)), match.group(2), item.read_text("utf-8"))
            )
    found.sort(key=lambda m: m.version)
    return found


def latest_version() -> int:
    """The schema version this package writes."""
    return migrations()[-1].version


def _applied(conn: Any) -> set[int] | None:
    """The versions applied, or None when the store has no schema yet."""
    exists = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.schema_migrations",)
    ).fetchone()[0]
    if not exists:
        return None
    return {
        int(row[0]) for row in conn.execute("SELECT version FROM schema_migrations")
    }


def migrate(conn: Any) -> list[int]:
    """
    Bring the schema up to the newest version; return the versions applied now.

    The role needs only to own (or have CREATE on) the store's schema; it
    creates the schema when it may, else a DBA creates it for the role
    (``CREATE SCHEMA context_trace AUTHORIZATION writer``). Several hosts may
    call this at once: each version is applied by one of them, under a
    transaction-scoped advisory lock, and the others find it applied.

    Raises:
        StoreUnavailable: the schema is newer than this package, or the role
            may not create it.
    """
    latest = latest_version()
    applied = _applied(conn)
    conn.rollback()
    if applied is not None and max(applied, default=0) >= latest:
        _refuse_newer(applied, latest)
        return []
    psycopg = _psycopg()
    done: list[int] = []
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            schema = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (SCHEMA,)
            ).fetchone()
            if schema is None:
                conn.execute(f"CREATE SCHEMA {SCHEMA}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = _applied(conn) or set()
            _refuse_newer(applied, latest)
            for migration in migrations():
                if migration.version in applied:
                    continue
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                done.append(migration.version)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StoreUnavailable(
            "permission denied",
            "the PostgreSQL role may not create the store's schema "
            f"({exc.diag.message_primary}); create it for the role: "
            f"CREATE SCHEMA {SCHEMA} AUTHORIZATION <role>",
        ) from None
    return done


def _refuse_newer(applied: set[int], latest: int) -> None:
    newest = max(applied, default=0)
    if newest > latest:
        raise StoreUnavailable(
            "newer schema",
            f"the PostgreSQL store has schema version {newest}, newer than this "
            f"context-trace writes ({latest}): upgrade context-trace",
        )


def check(url: str, *, timeout: float = _CONNECT_TIMEOUT, create: bool = True) -> None:
    """
    Connect to *url* now and, with *create*, bring its schema up to date.

    The fast check of ``configure()``, ``context-trace outbox`` and the
    dashboard's start-up.

    Raises:
        StoreUnavailable: which problem it is, with the server's safe URL.
    """
    conn = connect(url, timeout=timeout, read_only=not create)
    try:
        if create:
            migrate(conn)
        elif _applied(conn) is None:
            raise StoreUnavailable(
                "unknown database",
                f"the PostgreSQL database at {safe_url(url)} holds no context_trace "
                "store yet (a writer creates it on its first start)",
            )
    finally:
        conn.close()


# -- writing ---------------------------------------------------------------------------


def _text(value: str | None) -> str | None:
    """PostgreSQL text holds no NUL character: replace it, never fail the batch."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


_TURN_COLUMNS = (
    "id, host, user_id, session_id, started_at, ended_at, latency_ms, model,"
    " prompt_tokens, completion_tokens, total_tokens, error, metadata, messages,"
    " answered, tool_error"
)
_INSERT_TURNS = (
    f"INSERT INTO turns ({_TURN_COLUMNS})"
    " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::float8[], %b::float8[], %b::float8[], %b::text[], %b::int8[], %b::int8[],"
    " %b::int8[], %b::text[], %b::text[], %b::text[], %b::bool[], %b::bool[])"
    " ON CONFLICT (id) DO NOTHING"
    " RETURNING id, user_id, session_id, started_at, ended_at"
)
_UPSERT_SESSIONS = (
    "INSERT INTO sessions (id, user_id, started_at, last_at, turns)"
    " SELECT * FROM unnest(%b::text[], %b::text[], %b::float8[], %b::float8[],"
    " %b::int8[])"
    " ON CONFLICT (id) DO UPDATE SET"
    " user_id = coalesce(sessions.user_id, excluded.user_id),"
    " started_at = least(sessions.started_at, excluded.started_at),"
    " last_at = greatest(sessions.last_at, excluded.last_at),"
    " turns = sessions.turns + excluded.turns"
)
_UPSERT_USERS = (
    "INSERT INTO users (id, first_seen, last_seen, turns)"
    " SELECT * FROM unnest(%b::text[], %b::float8[], %b::float8[], %b::int8[])"
    " ON CONFLICT (id) DO UPDATE SET"
    " first_seen = least(users.first_seen, excluded.first_seen),"
    " last_seen = greatest(users.last_seen, excluded.last_seen),"
    " turns = users.turns + excluded.turns"
)
_INSERT_RATINGS = (
    "INSERT INTO ratings (id, host, session_id, conversation_id, rating, created_at)"
    " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::int2[], %b::float8[])"
    " ON CONFLICT (id) DO NOTHING RETURNING session_id, created_at"
)
# A rating moves its session's and its user's last activity (as on SQLite).
_TOUCH_SESSIONS = (
    "UPDATE sessions s SET last_at = greatest(s.last_at, t.at)"
    " FROM unnest(%b::text[], %b::float8[]) AS t (id, at) WHERE s.id = t.id"
    " RETURNING s.user_id, t.at"
)
_TOUCH_USERS = (
    "UPDATE users u SET last_seen = greatest(u.last_seen, t.at)"
    " FROM unnest(%b::text[], %b::float8[]) AS t (id, at) WHERE u.id = t.id"
)


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """
    Rows to one list per column (``unnest``'s arrays).

    The arrays go as binary parameters (``%b``): measured four times faster
    than text ones, which the server must parse (JSON text full of quotes).
    """
    return [[row[i] for row in rows] for i in range(width)] if rows else [[]] * width


def _turn_row(record: Conversation, host: str) -> tuple[Any, ...]:
    usage = record.usage
    metadata = exported_metadata(record, derived=False)
    return (
        record.id,
        host,
        _text(record.user_id),
        _text(record.session_id),
        record.started_at,
        record.ended_at,
        record.latency_ms,
        _text(record.model),
        None if usage is None else usage.input_tokens,
        None if usage is None else usage.output_tokens,
        None if usage is None else usage.total_tokens,
        _text(record.error),
        JSON.encode(metadata),
        messages_json(record.messages),
        any(m.role == "assistant" for m in record.messages),
        is_tool_error(record.error, metadata),
    )


def write_batch(conn: Any, batch: Sequence[Record], host: str) -> int:
    """
    Store *batch* in one transaction; return how many turns were new.

    Turns go in with ``ON CONFLICT DO NOTHING``; the aggregates count only the
    rows the insert returned, so a batch delivered again (its commit's answer
    lost in a restart) changes nothing. Aggregate rows are locked in id order,
    so two hosts writing the same sessions never deadlock on them.
    """
    turns: dict[str, tuple[Any, ...]] = {}
    ratings: dict[str, tuple[Any, ...]] = {}
    for record in batch:
        if isinstance(record, Conversation):
            turns.setdefault(record.id, _turn_row(record, host))
        elif isinstance(record, Feedback):
            ratings.setdefault(
                record.id,
                (
                    record.id,
                    host,
                    _text(record.session_id),
                    _text(record.conversation_id),
                    max(-1, min(1, int(record.rating))),
                    record.created_at,
                ),
            )
        else:
            raise TypeError(f"not a context_trace record: {type(record).__name__}")
    new = 0
    with conn.transaction():
        sessions: dict[str, list[Any]] = {}
        users: dict[str, list[Any]] = {}
        if turns:
            rows = list(turns.values())
            inserted = conn.execute(_INSERT_TURNS, _columns(rows, 16)).fetchall()
            new = len(inserted)
            for _, uid, sid, start, end in inserted:
                if sid is not None:
                    row = sessions.setdefault(sid, [sid, uid, start, end, 0])
                    row[1] = row[1] if row[1] is not None else uid
                    row[2] = min(row[2], start)
                    row[3] = max(row[3], end)
                    row[4] += 1
                if uid is not None:
                    urow = users.setdefault(uid, [uid, start, end, 0])
                    urow[1] = min(urow[1], start)
                    urow[2] = max(urow[2], end)
                    urow[3] += 1
        if sessions:
            ordered = [tuple(sessions[k]) for k in sorted(sessions)]
            conn.execute(_UPSERT_SESSIONS, _columns(ordered, 5))
        if users:
            ordered = [tuple(users[k]) for k in sorted(users)]
            conn.execute(_UPSERT_USERS, _columns(ordered, 4))
        if ratings:
            stored = conn.execute(
                _INSERT_RATINGS, _columns(list(ratings.values()), 6)
            ).fetchall()
            latest: dict[str, float] = {}
            for sid, at in stored:
                latest[sid] = max(at, latest.get(sid, at))
            if latest:
                keys = sorted(latest)
                owners = conn.execute(
                    _TOUCH_SESSIONS, (keys, [latest[k] for k in keys])
                ).fetchall()
                by_user: dict[str, float] = {}
                for uid, at in owners:
                    if uid is not None:
                        by_user[uid] = max(at, by_user.get(uid, at))
                if by_user:
                    ukeys = sorted(by_user)
                    conn.execute(_TOUCH_USERS, (ukeys, [by_user[k] for k in ukeys]))
    return new


# -- the store -------------------------------------------------------------------------


class PostgresStore:
    """
    The PostgreSQL store's write side, for the outbox's ``postgresql`` sender.

    A :class:`~context_trace._store.base.ReportStore`: the store interface
    without the outbox, which stays in each host's local SQLite file.

    Construction never touches the server; :meth:`open` (or the first write)
    connects and migrates. One connection, used from the export worker (a
    lock makes other threads wait); after a connection error it is dropped and
    the next call opens a new one.

    Args:
        url: ``postgresql://user:password@host:port/db``.
        host: This host's identity, stored with every turn and rating.
        timeout: Seconds a connection attempt may take.
    """

    def __init__(
        self, url: str, *, host: str, timeout: float = _CONNECT_TIMEOUT
    ) -> None:
        self._url = check_url(url)
        self._host = host
        self._timeout = timeout
        self._conn: Any = None
        self._lock = threading.RLock()
        self._closed = False
        self._owner: int | None = None  # the thread inside transaction()

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r}, host={self._host!r})"

    @property
    def location(self) -> str:
        """The server, for messages: the URL without its password."""
        return safe_url(self._url)

    @property
    def host(self) -> str:
        """This host's identity."""
        return self._host

    def _connection(self) -> Any:
        if self._closed:
            raise RuntimeError("the PostgreSQL store is closed")
        if self._conn is None or self._conn.closed:
            conn = connect(self._url, timeout=self._timeout)
            try:
                migrate(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def open(self) -> None:
        """Connect and bring the schema up to date now."""
        with self._lock:
            self._connection()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """
        One transaction that this thread's :meth:`write` and reads join.

        Commits when the block ends, rolls back if it raises; other threads
        wait for it (the store's lock). A write inside is a savepoint of it.
        """
        if self._owner == threading.get_ident():
            yield  # joined: the outer block commits
            return
        with self._lock:
            conn = self._connection()
            self._owner = threading.get_ident()
            try:
                with conn.transaction():
                    yield
            except BaseException:
                self._drop_if_broken()
                raise
            finally:
                self._owner = None

    def write(self, records: Sequence[Record]) -> WriteResult:
        """
        Store *records* idempotently by id, in one transaction.

        Ratings are stored as given and resolved to their turn when read (the
        ``rated_turns`` view: the turn may come later, from another host), so
        the result never lists ratings as resolved or refused: it is empty.
        """
        with self._lock:
            conn = self._connection()
            try:
                write_batch(conn, records, self._host)
            except BaseException:
                self._drop_if_broken()
                raise
        return WriteResult()

    def session_transcript(self, session_id: str) -> list[Message]:
        """A session's messages in order across its turns, from every host."""
        with self._lock:
            conn = self._connection()
            if self._owner == threading.get_ident():
                # Inside transaction(): read its uncommitted writes, end nothing.
                rows = _session_rows(conn, session_id)
                return [m for turn in _deduplicated(rows) for m in turn]
            return session_messages(conn, session_id)

    def _drop_if_broken(self) -> None:
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken):
            self._conn = None
            conn.close()

    def after_fork(self) -> None:
        """In a fork child: forget the parent's connection (never close it)."""
        self._conn = None
        self._lock = threading.RLock()
        self._owner = None

    def cancel(self) -> None:
        """Cut a statement in progress short (shutdown); never raises."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):  # best effort at shutdown
                conn.cancel_safe(timeout=1.0)

    def close(self, timeout: float | None = None) -> None:
        """Close the connection; later operations raise RuntimeError."""
        locked = self._lock.acquire(
            timeout=-1 if timeout is None else max(timeout, 0.1)
        )
        try:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
        finally:
            if locked:
                self._lock.release()

    def reads(self) -> PostgresReads:
        """The read models, on a read-only connection of their own."""
        return PostgresReads(self._url, timeout=self._timeout)


# -- reading ---------------------------------------------------------------------------

_TURN_SELECT = (
    "SELECT t.id, t.user_id, t.session_id, t.started_at, t.ended_at, t.latency_ms,"
    " t.model, t.prompt_tokens, t.completion_tokens, t.total_tokens, t.error,"
    " t.metadata, t.messages, r.rating FROM turns t"
    " LEFT JOIN rated_turns r ON r.conversation_id = t.id"
)
# Turns per page of ``conversations`` (export).
_PAGE = 1000
# A session's turns in one order on every host: start, end, then id.
_SESSION_ORDER = " ORDER BY t.started_at, t.ended_at, t.id"


def _session_rows(conn: Any, session_id: str) -> list[tuple[Any, ...]]:
    return list(
        conn.execute(
            _TURN_SELECT + " WHERE t.session_id = %s" + _SESSION_ORDER, (session_id,)
        )
    )


def _deduplicated(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Message, ...]]:
    """Each turn's messages without the history earlier turns hold (writer's rule)."""
    seen = _Fingerprints()
    out: list[tuple[Message, ...]] = []
    for row in rows:
        out.append(_strip_history(tuple(messages_from_json(row[12])), seen))
    return out


def _stored(row: tuple[Any, ...], messages: tuple[Message, ...]) -> StoredConversation:
    return StoredConversation(
        id=row[0],
        user_id=row[1],
        session_id=row[2],
        started_at=row[3],
        ended_at=row[4],
        latency_ms=int(row[5] or 0),
        model=row[6],
        prompt_tokens=row[7],
        completion_tokens=row[8],
        total_tokens=row[9],
        error=row[10],
        metadata=dict(decode(row[11]) or {}),
        messages=messages,
        rating=row[13],
    )


def session_messages(conn: Any, session_id: str) -> list[Message]:
    """A session's messages in order across its turns (history once)."""
    try:
        rows = _session_rows(conn, session_id)
    finally:
        conn.rollback()
    return [m for turn in _deduplicated(rows) for m in turn]


# The CLI's user sorts (as SQLite's ``reader.USER_SORTS``); ties go by user id.
_USER_SORTS = {
    "last_seen": "seen DESC",
    "conversations": "per.conversations DESC",
    "sessions": "per.sessions DESC",
    "latency": "per.latency IS NULL, per.latency DESC",
    "errors": "per.errors DESC",
    "tool_errors": "per.tools DESC",
    "ratings_up": "coalesce(rated.up, 0) DESC",
    "ratings_down": "coalesce(rated.down, 0) DESC",
    "user": "per.user_id",
}


class PostgresReads:
    """
    The CLI's reads over a PostgreSQL store (read-only connection and role).

    A :class:`~context_trace._store.base.Reads`: the outbox reads and the
    dashboard refuse with a ValueError saying why.

    Implemented: :meth:`users`, :meth:`sessions`, :meth:`transcript`,
    :meth:`session_messages`, :meth:`session_turns`, :meth:`conversation`,
    :meth:`ratings`, :meth:`daily_stats`.
    """

    def __init__(self, url: str, *, timeout: float = _CONNECT_TIMEOUT) -> None:
        self._url = check_url(url)
        self._conn = connect(self._url, timeout=timeout, read_only=True)
        if _applied(self._conn) is None:
            self._conn.close()
            raise StoreUnavailable(
                "unknown database",
                f"the PostgreSQL database at {safe_url(url)} holds no context_trace "
                "store yet (a writer creates it on its first start)",
            )
        self._conn.rollback()

    def __repr__(self) -> str:
        return f"PostgresReads({safe_url(self._url)!r})"

    def __enter__(self) -> PostgresReads:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection; safe to call twice."""
        self._conn.close()

    @contextmanager
    def _read(self) -> Iterator[Any]:
        try:
            yield self._conn
        finally:
            self._conn.rollback()

    def users(
        self, sort: str = "last_seen", limit: int | None = None
    ) -> list[UserSummary]:
        """Per-user totals (the no-user row last), most recently seen first."""
        order = _USER_SORTS.get(sort)
        if order is None:
            raise ValueError(
                f"sort must be one of {', '.join(_USER_SORTS)}, got {sort!r}"
            )
        query = (
            "WITH per AS (SELECT t.user_id, count(*) AS conversations,"
            " count(DISTINCT t.session_id) AS sessions, max(t.ended_at) AS last_seen,"
            " avg(t.latency_ms) AS latency, count(*) FILTER (WHERE t.error IS NOT NULL)"
            " AS errors, count(*) FILTER (WHERE t.tool_error) AS tools"
            " FROM turns t GROUP BY t.user_id),"
            " rated AS (SELECT t.user_id, count(*) FILTER (WHERE r.rating > 0) AS up,"
            " count(*) FILTER (WHERE r.rating < 0) AS down FROM rated_turns r"
            " JOIN turns t ON t.id = r.conversation_id GROUP BY t.user_id)"
            " SELECT per.user_id, per.conversations, per.sessions,"
            " greatest(per.last_seen, u.last_seen) AS seen, per.latency,"
            " coalesce(rated.up, 0), coalesce(rated.down, 0), per.errors, per.tools"
            " FROM per LEFT JOIN users u ON u.id = per.user_id"
            " LEFT JOIN rated ON rated.user_id IS NOT DISTINCT FROM per.user_id"
            f" ORDER BY per.user_id IS NULL, {order}, per.user_id"
        )
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        with self._read() as conn:
            return [
                UserSummary(
                    user_id=row[0],
                    conversations=int(row[1]),
                    sessions=int(row[2]),
                    last_seen=float(row[3]),
                    avg_latency_ms=None if row[4] is None else float(row[4]),
                    ratings_up=int(row[5]),
                    ratings_down=int(row[6]),
                    errors=int(row[7]),
                    tool_errors=int(row[8]),
                )
                for row in conn.execute(query)
            ]

    def sessions(
        self, user_id: str | None = None, limit: int = 50
    ) -> list[SessionSummary]:
        """Sessions, most recently active first."""
        query = (
            "SELECT s.id, s.user_id, s.started_at, s.last_at, s.turns,"
            " (SELECT count(*) FROM rated_turns r WHERE r.session_id = s.id"
            "  AND r.rating > 0),"
            " (SELECT count(*) FROM rated_turns r WHERE r.session_id = s.id"
            "  AND r.rating < 0),"
            " (SELECT count(*) FROM turns t WHERE t.session_id = s.id"
            "  AND t.error IS NOT NULL),"
            " (SELECT count(*) FROM turns t WHERE t.session_id = s.id AND t.tool_error)"
            " FROM sessions s"
        )
        params: list[Any] = []
        if user_id is not None:
            query += " WHERE s.user_id = %s"
            params.append(user_id)
        query += " ORDER BY s.last_at DESC, s.id LIMIT %s"
        params.append(int(limit))
        with self._read() as conn:
            return [
                SessionSummary(
                    session_id=row[0],
                    user_id=row[1],
                    started_at=float(row[2]),
                    last_at=float(row[3]),
                    turns=int(row[4]),
                    rating_up=int(row[5]),
                    rating_down=int(row[6]),
                    errors=int(row[7]),
                    tool_errors=int(row[8]),
                )
                for row in conn.execute(query, params)
            ]

    def session_turns(self, session_id: str) -> list[StoredConversation]:
        """A session's turns in order, each without the history earlier ones hold."""
        with self._read() as conn:
            rows = _session_rows(conn, session_id)
        return [_stored(r, m) for r, m in zip(rows, _deduplicated(rows), strict=True)]

    def session_messages(self, session_id: str) -> list[Message]:
        """A session's messages in order across its turns."""
        return session_messages(self._conn, session_id)

    def conversations(self, since: float | None = None) -> Iterator[StoredConversation]:
        """
        Every turn (started at or after *since*), oldest first, in pages.

        Turns come in the sessions' own order (start, end, id), so each
        session's history is dropped as :meth:`session_turns` drops it; with
        *since*, a session's earlier turns are read once to know its history.
        """
        seen: dict[str, _Fingerprints] = {}
        after: tuple[Any, ...] | None = None
        while True:
            with self._read() as conn:
                if after is None:
                    rows = conn.execute(
                        _TURN_SELECT + " WHERE t.started_at >= %s"
                        " ORDER BY t.started_at, t.ended_at, t.id LIMIT %s",
                        (float("-inf") if since is None else since, _PAGE),
                    ).fetchall()
                else:
                    rows = conn.execute(
                        _TURN_SELECT + " WHERE (t.started_at, t.ended_at, t.id)"
                        " > (%s, %s, %s) ORDER BY t.started_at, t.ended_at, t.id"
                        " LIMIT %s",
                        (*after, _PAGE),
                    ).fetchall()
                if not rows:
                    return
                for row in rows:
                    messages = tuple(messages_from_json(row[12]))
                    sid = row[2]
                    if sid is not None:
                        keys = seen.get(sid)
                        if keys is None:
                            keys = seen[sid] = (
                                self._history(conn, row) if since else _Fingerprints()
                            )
                        messages = _strip_history(messages, keys)
                    yield _stored(row, messages)
            after = (rows[-1][3], rows[-1][4], rows[-1][0])

    @staticmethod
    def _history(conn: Any, row: tuple[Any, ...]) -> _Fingerprints:
        """The seen-set of *row*'s session from its turns before *row*."""
        keys = _Fingerprints()
        earlier = conn.execute(
            "SELECT t.messages FROM turns t WHERE t.session_id = %s"
            " AND (t.started_at, t.ended_at, t.id) < (%s, %s, %s)" + _SESSION_ORDER,
            (row[2], row[3], row[4], row[0]),
        )
        for (text,) in earlier:
            _strip_history(tuple(messages_from_json(text)), keys)
        return keys

    def conversation(self, id: str) -> StoredConversation | None:
        """One stored turn by id (in a session: without the history before it)."""
        with self._read() as conn:
            row = conn.execute(_TURN_SELECT + " WHERE t.id = %s", (id,)).fetchone()
        if row is None:
            return None
        if row[2] is None:
            return _stored(row, tuple(messages_from_json(row[12])))
        for turn in self.session_turns(row[2]):
            if turn.id == id:
                return turn
        return None  # pragma: no cover - the turn was just read

    def transcript(self, id: str) -> Transcript | None:
        """The transcript of a session or of one turn, by id (as on SQLite)."""
        with self._read() as conn:
            session = conn.execute(
                "SELECT s.id, s.user_id, s.started_at, s.last_at, s.turns,"
                " (SELECT count(*) FROM rated_turns r WHERE r.session_id = s.id"
                "  AND r.rating > 0),"
                " (SELECT count(*) FROM rated_turns r WHERE r.session_id = s.id"
                "  AND r.rating < 0)"
                " FROM sessions s WHERE s.id = %s",
                (id,),
            ).fetchone()
        if session is not None:
            turns = self.session_turns(id)
            meta: dict[str, Any] = {
                "session_id": session[0],
                "user_id": session[1],
                "started_at": float(session[2]),
                "last_at": float(session[3]),
                "turns": int(session[4]),
                "rating_up": int(session[5]),
                "rating_down": int(session[6]),
                "metadata": {},
            }
            return Transcript("session", meta, [m for t in turns for m in t.messages])
        turn = self.conversation(id)
        if turn is None:
            return None
        meta = {
            "id": turn.id,
            "user_id": turn.user_id,
            "session_id": turn.session_id,
            "started_at": turn.started_at,
            "ended_at": turn.ended_at,
            "latency_ms": turn.latency_ms,
            "model": turn.model,
            "prompt_tokens": turn.prompt_tokens,
            "completion_tokens": turn.completion_tokens,
            "total_tokens": turn.total_tokens,
            "error": turn.error,
            "metadata": turn.metadata,
            "rating": turn.rating,
        }
        return Transcript("conversation", meta, list(turn.messages))

    def ratings(self, session_id: str) -> list[Feedback]:
        """A session's stored ratings (resolved to their turn), in the order given."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, session_id, user_id, rating, conversation_id, created_at"
                " FROM rated_turns WHERE session_id = %s ORDER BY created_at, id",
                (session_id,),
            ).fetchall()
        return [
            Feedback(
                id=r[0],
                session_id=r[1],
                user_id=r[2],
                rating=int(r[3]),
                conversation_id=r[4],
                created_at=float(r[5]),
            )
            for r in rows
        ]

    def daily_stats(self) -> list[DayStats]:
        """Per-UTC-day totals."""
        query = (
            "SELECT to_char(to_timestamp(started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            " AS day, count(*), count(DISTINCT user_id), count(DISTINCT session_id),"
            " count(*) FILTER (WHERE error IS NOT NULL), avg(latency_ms)"
            " FROM turns GROUP BY day ORDER BY day"
        )
        with self._read() as conn:
            return [
                DayStats(
                    day=row[0],
                    conversations=int(row[1]),
                    users=int(row[2]),
                    sessions=int(row[3]),
                    errors=int(row[4]),
                    avg_latency_ms=None if row[5] is None else float(row[5]),
                )
                for row in conn.execute(query)
            ]

    def outbox_counts(self) -> dict[str, int]:
        """Refused: the shared store holds no outbox (each host's is its own file)."""
        raise ValueError(_NO_OUTBOX)

    def outbox_destinations(self) -> dict[str, dict[str, int]]:
        """Refused: the shared store holds no outbox (each host's is its own file)."""
        raise ValueError(_NO_OUTBOX)

    def dashboard(self, *, now: float | None = None, prices: Any = None) -> Any:
        """Refused: the dashboard does not read a PostgreSQL store yet."""
        raise ValueError(
            "the dashboard does not read a PostgreSQL store yet; the CLI's users, "
            "sessions, show, stats and export do"
        )

    def counts(self) -> dict[str, int]:
        """Turns, sessions, users and ratings stored, and turns per host."""
        with self._read() as conn:
            turns, sessions, users, ratings = conn.execute(
                "SELECT (SELECT count(*) FROM turns), (SELECT count(*) FROM sessions),"
                " (SELECT count(*) FROM users), (SELECT count(*) FROM rated_turns)"
            ).fetchone()
        return {
            "turns": int(turns),
            "sessions": int(sessions),
            "users": int(users),
            "ratings": int(ratings),
        }


if TYPE_CHECKING:
    from context_trace._store.base import Reads, ReportStore

    def _is_a_report_store(store: PostgresStore) -> ReportStore:
        """mypy checks here that PostgresStore has the store interface but the outbox."""
        return store

    def _are_reads(reads: PostgresReads) -> Reads:
        """mypy checks here that PostgresReads has the whole read interface."""
        return reads
