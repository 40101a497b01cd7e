"""
The embedded SQLite store: the default exporter, the CLI's data source and the
durable outbox of the Context API exporter.

One file holds everything. :class:`SQLiteExporter` writes it: ``export`` stores
batches in the report tables (``users``, ``sessions``, ``conversations``,
``feedback``; a ``messages`` view lists messages as rows), and the
``outbox_*`` methods keep records that still have to reach a remote sink.
:class:`SQLiteReader` opens the same file read-only for the ``context-trace`` CLI
and for tests.

Several processes (gunicorn workers, a CLI) may use the file at once: it runs in
WAL mode with a busy timeout, every write is one ``BEGIN IMMEDIATE`` transaction,
and every write is idempotent by record id, so a record delivered twice is stored
once. Only the standard library's :mod:`sqlite3` is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, cast

from context_trace._record import (
    ROLES,
    Conversation,
    Feedback,
    Message,
    Record,
    Role,
    remember,
    strip_seen,
)

from .base import ExportResult

__all__ = [
    "DayStats",
    "SQLiteExporter",
    "SQLiteReader",
    "SessionSummary",
    "StoredConversation",
    "Transcript",
    "UserSummary",
    "record_from_json",
    "record_to_json",
]

_logger = logging.getLogger(__name__)
_T = TypeVar("_T")

_SCHEMA_VERSION = 1
# Written to the header's application_id field ("ctrc"): tells our files apart
# from other SQLite databases without reading any table.
_APPLICATION_ID = 0x63747263
_DEFAULT_OUTBOX_MAX = 100_000
_DEFAULT_BUSY_TIMEOUT = 10.0
_DEFAULT_LEASE_SECONDS = 60.0
# SQLite before 3.32 allows at most 999 bound parameters per statement.
_MAX_PARAMS = 500
_READ_PAGE = 500
_MAX_LOGGED_ERRORS = 64
_RECORD_FORMAT = 1
_WAL_AUTOCHECKPOINT_PAGES = 10_000
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes
_CACHE_SIZE = -16_384  # KiB (negative: a size, not a page count)
# One encoder: json.dumps() with options builds a new encoder per call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_decode = json.JSONDecoder().decode
# Fingerprinted messages kept for recently written sessions (~170 bytes each, so
# at most ~35 MB); a session evicted from it is read back from the file.
_SEEN_CACHE_KEYS = 200_000

_REQUIRED_TABLES = frozenset(
    {
        "users",
        "sessions",
        "conversations",
        "feedback",
        "outbox",
        "meta",
    }
)

# Schema version 1.
#
# Write speed shapes it. A b-tree keyed by a random value (a uuid id) gets about
# one dirty page per inserted row once it is large, and every dirty page is one
# WAL frame at commit (measured: the frames written per batch set the insert
# rate). Keys that grow with time dirty only the tail. So:
# - conversations and sessions get an INTEGER PRIMARY KEY ``n`` (insertion
#   order, stable under VACUUM) next to their UNIQUE text ``id``; the text ids
#   are the only random b-trees a turn touches, besides ``users``;
# - a turn's messages are one JSON column of its row, ``[[role, content, name,
#   tool_input], ...]``: one row per turn instead of one per message cut the
#   insert cost by a fifth. The ``messages`` view lists them as rows
#   (conversation_id, session_id, seq, role, content, name, tool_input) for ad
#   hoc SQL; it needs SQLite's JSON functions (built in since 3.38, compiled in
#   by most older builds). context_trace itself decodes the JSON in Python;
# - a session's turns are indexed by the session's number, not its text id:
#   active sessions are recent, so their entries sit near the index's tail;
# - there are no per-user indexes on conversations or sessions: users() and a
#   user's sessions() scan, which is fine for the CLI and saves a random page
#   per turn on every insert;
# - partial indexes skip rows that can never match (no session).
_SCHEMA_V1 = (
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE sessions (
        n INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        user_id TEXT,
        started_at REAL NOT NULL,
        last_at REAL NOT NULL,
        rating_up INTEGER NOT NULL DEFAULT 0,
        rating_down INTEGER NOT NULL DEFAULT 0,
        metadata TEXT NOT NULL DEFAULT '{}'
    )
    """,
    """
    CREATE TABLE conversations (
        n INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        user_id TEXT,
        session_id TEXT,
        session_n INTEGER,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        latency_ms INTEGER NOT NULL,
        model TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        total_tokens INTEGER,
        error TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        messages_json TEXT NOT NULL DEFAULT '[]'
    )
    """,
    """
    CREATE VIEW messages AS
    SELECT c.id AS conversation_id, c.session_id AS session_id,
        CAST(m.key AS INTEGER) AS seq,
        json_extract(m.value, '$[0]') AS role,
        json_extract(m.value, '$[1]') AS content,
        json_extract(m.value, '$[2]') AS name,
        json_extract(m.value, '$[3]') AS tool_input
    FROM conversations c, json_each(c.messages_json) m
    """,
    """
    CREATE TABLE feedback (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        user_id TEXT,
        conversation_id TEXT,
        rating INTEGER NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
    # AUTOINCREMENT: a row id is never reused, so a late outbox_done() from a
    # process whose lease expired cannot delete a newer row that got its id.
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        record_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_until REAL NOT NULL DEFAULT 0
    )
    """,
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO meta (key, value) VALUES ('dropped', 0), ('failed', 0)",
    # Per session: transcripts, turn counts, the seen-set loaded on insert. Its
    # entries are (session_n, n), so "turns of a session numbered above x" is a
    # range seek; transcripts sort a session's few turns by time in memory.
    "CREATE INDEX conversations_session ON conversations (session_n)"
    " WHERE session_n IS NOT NULL",
    "CREATE INDEX feedback_session ON feedback (session_id)",
    # The outbox bound counts and drops the oldest pending rows through the
    # first; claims find deliverable rows through the second, so rows waiting
    # out a backoff cost nothing to skip.
    "CREATE INDEX outbox_status ON outbox (status)",
    "CREATE INDEX outbox_due ON outbox (lease_until)",
    # By time: a day is a started_at range; export --since reads it in order.
    "CREATE INDEX conversations_started ON conversations (started_at)",
)


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1:
        conn.execute(statement)


# Migration hook: _MIGRATIONS[n] upgrades a store from version n - 1 to n. A
# future version adds its step here and bumps _SCHEMA_VERSION; stores are upgraded
# in one transaction when a writer opens them.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _create_v1}

_INSERT_CONVERSATION_HEAD = (
    "INSERT INTO conversations (n, session_n, id, user_id, session_id, started_at,"
    " ended_at, latency_ms, model, prompt_tokens, completion_tokens, total_tokens,"
    " error, metadata, messages_json)"
)
_INSERT_FEEDBACK = (
    "INSERT OR IGNORE INTO feedback (id, session_id, user_id, conversation_id,"
    " rating, created_at) VALUES (?, ?, ?, ?, ?, ?)"
)
_UPSERT_USER_HEAD = "INSERT INTO users (id, first_seen, last_seen)"
_UPSERT_USER_TAIL = (
    " ON CONFLICT (id) DO UPDATE SET"
    " first_seen = min(first_seen, excluded.first_seen),"
    " last_seen = max(last_seen, excluded.last_seen)"
)
_UPSERT_SESSION_HEAD = "INSERT INTO sessions (id, user_id, started_at, last_at)"
_UPSERT_SESSION_TAIL = (
    " ON CONFLICT (id) DO UPDATE SET"
    " user_id = coalesce(sessions.user_id, excluded.user_id),"
    " started_at = min(started_at, excluded.started_at),"
    " last_at = max(last_at, excluded.last_at)"
)
# Counters are recounted from the feedback table rather than incremented, so a
# re-delivered Feedback is not counted twice.
_RECOUNT_RATINGS = (
    "UPDATE sessions SET"
    " rating_up = (SELECT count(*) FROM feedback f"
    "  WHERE f.session_id = sessions.id AND f.rating > 0),"
    " rating_down = (SELECT count(*) FROM feedback f"
    "  WHERE f.session_id = sessions.id AND f.rating < 0)"
    " WHERE id = ?"
)
# A session's turns numbered above n (see _SeenCache); the rowid test runs on
# the conversations_session index entries.
_SELECT_SEEN = (
    "SELECT n, messages_json FROM conversations WHERE session_n = ? AND n > ?"
)
_SELECT_SESSION_MESSAGES = (
    "SELECT c.messages_json FROM sessions s JOIN conversations c"
    " ON c.session_n = s.n WHERE s.id = ? ORDER BY c.started_at, c.n"
)
# The oldest deliverable outbox rows: due ids from the small index (a top-N sort
# over them), then their payloads by id.
_SELECT_DUE = (
    "SELECT o.id, o.payload FROM outbox o WHERE o.id IN (SELECT id FROM outbox"
    " INDEXED BY outbox_due WHERE lease_until <= ? ORDER BY id LIMIT ?)"
    " ORDER BY o.id"
)
_ADD_TO_COUNTER = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = value + excluded.value"
)

# Connections inherited across os.fork(). The child must neither use nor close
# them (closing would touch the parent's locks and WAL index), so they are kept
# referenced here until the process exits instead of being garbage collected.
_ABANDONED: list[sqlite3.Connection] = []
_WRITERS: weakref.WeakSet[SQLiteExporter] = weakref.WeakSet()


# --- record (de)serialisation --------------------------------------------------


def record_to_json(record: Record) -> str:
    """
    Serialise a record to compact JSON; :func:`record_from_json` reverses it.

    The outbox stores records this way. Every field round-trips exactly,
    including float timestamps and metadata.

    Args:
        record: A :class:`Conversation` or :class:`Feedback`.

    Returns:
        A JSON object as text, with ``"type"`` ``"conversation"`` or ``"feedback"``.

    Raises:
        TypeError: If *record* is neither.

    .. versionadded:: 0.1.0
    """
    data: dict[str, Any]
    if isinstance(record, Conversation):
        data = {
            "v": _RECORD_FORMAT,
            "type": "conversation",
            "id": record.id,
            "user_id": record.user_id,
            "session_id": record.session_id,
            "started_at": record.started_at,
            "ended_at": record.ended_at,
            "messages": [_message_row(m) for m in record.messages],
            "metadata": dict(record.metadata),
            "error": record.error,
        }
    elif isinstance(record, Feedback):
        data = {
            "v": _RECORD_FORMAT,
            "type": "feedback",
            "id": record.id,
            "session_id": record.session_id,
            "user_id": record.user_id,
            "rating": record.rating,
            "conversation_id": record.conversation_id,
            "created_at": record.created_at,
        }
    else:
        raise TypeError(f"not a context_trace record: {type(record).__name__}")
    return _JSON.encode(data)


def record_from_json(text: str) -> Record:
    """
    Rebuild a record serialised by :func:`record_to_json`.

    Args:
        text: The JSON text.

    Returns:
        The :class:`Conversation` or :class:`Feedback`, equal to the original.

    Raises:
        ValueError: If *text* is not a serialised record.

    .. versionadded:: 0.1.0
    """
    try:
        data = json.loads(text)
        kind = data["type"]
        if kind == "conversation":
            return Conversation(
                id=_str(data["id"]),
                user_id=_opt_str(data["user_id"]),
                session_id=_opt_str(data["session_id"]),
                started_at=float(data["started_at"]),
                ended_at=float(data["ended_at"]),
                messages=tuple(
                    Message(
                        _role(row[0]),
                        _str(row[1]),
                        _opt_str(row[2]),
                        _opt_str(row[3]),
                        row[4:] == [True],  # a failed tool (written only when so)
                    )
                    for row in data["messages"]
                ),
                metadata={_str(k): _str(v) for k, v in data["metadata"].items()},
                error=_opt_str(data["error"]),
            )
        if kind == "feedback":
            return Feedback(
                id=_str(data["id"]),
                session_id=_str(data["session_id"]),
                user_id=_opt_str(data["user_id"]),
                rating=int(data["rating"]),
                conversation_id=_opt_str(data["conversation_id"]),
                created_at=float(data["created_at"]),
            )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a serialised context_trace record: {exc!r}") from exc
    raise ValueError(f"not a serialised context_trace record: type {kind!r}")


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _role(value: object) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise ValueError(f"unknown message role {value!r}")


# --- read results ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserSummary:
    """
    One row of :meth:`SQLiteReader.users`.

    ``avg_latency_ms`` is None for a user with no recorded turn; ratings are the
    sums over the user's sessions.

    .. versionadded:: 0.1.0
    """

    user_id: str
    conversations: int
    sessions: int
    last_seen: float
    avg_latency_ms: float | None
    ratings_up: int
    ratings_down: int
    errors: int


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """
    One row of :meth:`SQLiteReader.sessions`; ``turns`` counts its conversations.

    .. versionadded:: 0.1.0
    """

    session_id: str
    user_id: str | None
    started_at: float
    last_at: float
    turns: int
    rating_up: int
    rating_down: int


@dataclass(frozen=True, slots=True)
class DayStats:
    """
    One row of :meth:`SQLiteReader.daily_stats`; ``day`` is a UTC ``YYYY-MM-DD``.

    .. versionadded:: 0.1.0
    """

    day: str
    conversations: int
    users: int
    sessions: int
    errors: int
    avg_latency_ms: float | None


@dataclass(frozen=True, slots=True)
class StoredConversation:
    """
    A stored turn as :meth:`SQLiteReader.conversations` yields it.

    ``model`` and the token counts are parsed from the metadata (None when the
    model did not report them); ``metadata`` is the full original mapping. Inside
    a session, ``messages`` leave out history already stored for that session.

    .. versionadded:: 0.1.0
    """

    id: str
    user_id: str | None
    session_id: str | None
    started_at: float
    ended_at: float
    latency_ms: int
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    error: str | None
    metadata: dict[str, str]
    messages: tuple[Message, ...]


class Transcript(NamedTuple):
    """
    What :meth:`SQLiteReader.transcript` found: ``(kind, metadata, messages)``.

    .. versionadded:: 0.1.0
    """

    kind: Literal["session", "conversation"]
    metadata: dict[str, Any]
    messages: list[Message]


# --- writing -------------------------------------------------------------------


@dataclass(slots=True)
class _Rows:
    """A batch turned into rows in plain Python, before any lock is taken."""

    # (record, its conversations row without ``n`` and ``session_n``): the
    # numbers, and the messages of session turns, are settled inside the
    # transaction (see _insert_conversations).
    conversations: list[tuple[Conversation, tuple[Any, ...]]]
    feedback: list[tuple[Any, ...]]
    users: dict[str, list[float]]
    sessions: dict[str, list[Any]]
    rated_sessions: set[str]


def _message_row(m: Message) -> list[Any]:
    """
    A message as stored: ``[role, content, name, tool_input]``, then ``true``.

    The ``true`` marks a failed tool and is omitted otherwise, so rows written by
    0.1 read the same.
    """
    row: list[Any] = [m.role, m.content, m.name, m.tool_input]
    if m.error:
        row.append(True)
    return row


def _messages_json(messages: Iterable[Message]) -> str:
    """A turn's messages as stored (see :func:`_message_row`)."""
    return _JSON.encode([_message_row(m) for m in messages])


def _messages_from_json(text: str) -> list[Message]:
    return [Message(*item) for item in _decode(text)]


def _clean(text: str) -> str:
    """*text* with lone surrogates (not encodable as UTF-8) replaced by ``?``."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _clean_opt(text: str | None) -> str | None:
    return None if text is None else _clean(text)


def _scrubbed(batch: Sequence[Record]) -> list[Record]:
    """*batch* with every string made storable (see :func:`_clean`)."""
    out: list[Record] = []
    for record in batch:
        if isinstance(record, Conversation):
            out.append(
                dataclasses.replace(
                    record,
                    id=_clean(record.id),
                    user_id=_clean_opt(record.user_id),
                    session_id=_clean_opt(record.session_id),
                    messages=tuple(
                        Message(
                            m.role,
                            _clean(m.content),
                            _clean_opt(m.name),
                            _clean_opt(m.tool_input),
                            m.error,
                        )
                        for m in record.messages
                    ),
                    metadata={_clean(k): _clean(v) for k, v in record.metadata.items()},
                    error=_clean_opt(record.error),
                )
            )
        else:
            out.append(
                dataclasses.replace(
                    record,
                    id=_clean(record.id),
                    session_id=_clean(record.session_id),
                    user_id=_clean_opt(record.user_id),
                    conversation_id=_clean_opt(record.conversation_id),
                )
            )
    return out


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _touch_user(
    users: dict[str, list[float]], user_id: str, a: float, b: float
) -> None:
    span = users.get(user_id)
    if span is None:
        users[user_id] = [a, b]
    else:
        span[0] = min(span[0], a)
        span[1] = max(span[1], b)


def _touch_session(
    sessions: dict[str, list[Any]], sid: str, uid: str | None, a: float, b: float
) -> None:
    row = sessions.get(sid)
    if row is None:
        sessions[sid] = [sid, uid, a, b]
    else:
        row[1] = row[1] if row[1] is not None else uid
        row[2] = min(row[2], a)
        row[3] = max(row[3], b)


def _prepare(batch: Sequence[Record]) -> _Rows:
    """Turn *batch* into rows; raise TypeError for something that is not a record."""
    rows = _Rows([], [], {}, {}, set())
    encode = _JSON.encode
    for record in batch:
        if isinstance(record, Conversation):
            meta = record.metadata
            rows.conversations.append(
                (
                    record,
                    (
                        record.id,
                        record.user_id,
                        record.session_id,
                        record.started_at,
                        record.ended_at,
                        record.latency_ms,
                        meta.get("model"),
                        _int_or_none(meta.get("prompt_tokens")),
                        _int_or_none(meta.get("completion_tokens")),
                        _int_or_none(meta.get("total_tokens")),
                        record.error,
                        encode(meta if type(meta) is dict else dict(meta)),
                        _messages_json(record.messages),
                    ),
                )
            )
            if record.session_id is not None:
                _touch_session(
                    rows.sessions,
                    record.session_id,
                    record.user_id,
                    record.started_at,
                    record.ended_at,
                )
            if record.user_id is not None:
                _touch_user(
                    rows.users, record.user_id, record.started_at, record.ended_at
                )
        elif isinstance(record, Feedback):
            rows.feedback.append(
                (
                    record.id,
                    record.session_id,
                    record.user_id,
                    record.conversation_id,
                    record.rating,
                    record.created_at,
                )
            )
            at = record.created_at
            _touch_session(rows.sessions, record.session_id, record.user_id, at, at)
            rows.rated_sessions.add(record.session_id)
            if record.user_id is not None:
                _touch_user(rows.users, record.user_id, at, at)
        else:
            raise TypeError(f"not a context_trace record: {type(record).__name__}")
    return rows


def _fingerprint(content: str) -> str:
    """
    A short stand-in for a message's content in the seen-sets.

    Python's 64-bit string hash: seen-sets live in one process only, so the
    per-process hash seed does not matter, and two different messages of one
    session colliding is vanishingly unlikely (~n²/2⁶⁵).
    """
    return str(hash(content))


class _FingerprintSet(set[tuple[str, str]]):
    """
    A seen-set that stores ``(role, fingerprint(content))``.

    It takes and answers about plain ``message_key`` tuples, so strip_seen and
    remember work on it unchanged, while a cached session costs ~170 bytes per
    message whatever the messages' length.
    """

    __slots__ = ()

    def __contains__(self, key: object) -> bool:
        role, content = cast("tuple[str, str]", key)
        return set.__contains__(self, (role, _fingerprint(content)))

    def update(self, *others: Iterable[tuple[str, str]]) -> None:
        for keys in others:
            set.update(self, [(role, _fingerprint(content)) for role, content in keys])


def _strip_history(
    messages: tuple[Message, ...], seen: _FingerprintSet
) -> tuple[Message, ...]:
    """
    Drop the leading history of a turn that the session already stored.

    strip_seen runs on the messages up to the turn's last user message (the
    prompt part) and keeps that message, as the in-process dedup keeps the last
    input: asking the same question twice is stored twice. What follows (tool
    calls, the answer) is new by construction and always kept. The kept
    messages are added to *seen* with remember.
    """
    end = len(messages)
    for index in range(end - 1, -1, -1):
        if messages[index].role == "user":
            end = index + 1
            break
    start = end - len(strip_seen(messages[:end], seen))
    kept = messages[start:]
    remember(seen, kept)
    return kept


@dataclass(slots=True)
class _Seen:
    """A session's seen-set: keys of its messages in turns numbered up to ``upto``."""

    upto: int
    keys: _FingerprintSet
    counted: int = 0


class _SeenCache:
    """
    Per-process seen-sets of recently written sessions, bounded by key count.

    Conversation numbers only grow (each is max + 1, assigned under the write
    lock), so a cached seen-set is brought up to date by reading just the
    session's turns numbered above its ``upto``: the ones other processes wrote
    since. Keys are fingerprints, so an entry costs ~170 bytes per message.
    Entries are updated in place during a transaction; if it fails the owner
    calls :meth:`clear`, so no uncommitted state survives.
    """

    def __init__(self, max_keys: int = _SEEN_CACHE_KEYS) -> None:
        self._entries: OrderedDict[str, _Seen] = OrderedDict()
        self._max_keys = max_keys
        self._keys = 0

    def load(self, conn: sqlite3.Connection, session_id: str, session_n: int) -> _Seen:
        """The seen-set of a session (id and number), brought up to date."""
        entry = self._entries.get(session_id)
        if entry is None:
            entry = self._entries[session_id] = _Seen(0, _FingerprintSet())
        else:
            self._entries.move_to_end(session_id)
        upto = entry.upto
        keys = entry.keys
        for n, text in conn.execute(_SELECT_SEEN, (session_n, upto)):
            keys.update(
                (role, content) for role, content, *_ in _decode(text) if role != "tool"
            )
            upto = max(upto, n)
        entry.upto = upto
        return entry

    def settle(self, touched: Iterable[_Seen]) -> None:
        """After a commit: recount *touched* entries and evict the oldest."""
        for entry in touched:
            size = len(entry.keys)
            self._keys += size - entry.counted
            entry.counted = size
        while self._keys > self._max_keys and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self._keys -= evicted.counted

    def clear(self) -> None:
        """Forget everything (after a failed transaction, a reconnect, a fork)."""
        self._entries.clear()
        self._keys = 0


def _numbers(
    conn: sqlite3.Connection,
    table: Literal["conversations", "sessions"],
    ids: Iterable[str],
) -> dict[str, int]:
    """The row numbers of those *ids* stored in *table* (one query per 500 ids)."""
    found: dict[str, int] = {}
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), _MAX_PARAMS):
        chunk = unique[start : start + _MAX_PARAMS]
        marks = ",".join("?" * len(chunk))  # placeholders only; values are bound
        query = f"SELECT id, n FROM {table} WHERE id IN ({marks})"
        found.update(conn.execute(query, chunk).fetchall())
    return found


# SQLite's most portable limit of bound parameters per statement.
_MAX_BIND = 999


def _insert_rows(
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
    """
    if not rows:
        return
    width = len(rows[0])
    per = max(1, _MAX_BIND // width)
    group = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        sql = f"{head} VALUES {','.join([group] * len(chunk))}{tail}"
        conn.execute(sql, [value for row in chunk for value in row])


def _insert_conversations(
    conn: sqlite3.Connection,
    items: list[tuple[Conversation, tuple[Any, ...]]],
    cache: _SeenCache,
) -> list[_Seen]:
    """
    Insert the conversations not stored yet, with their messages.

    Runs inside the write transaction, after the sessions upsert (a turn stores
    its session's number), so no other process can insert between the existence
    check, the seen-set reads and the inserts. Conversations already stored
    (re-delivered) are skipped whole.

    Returns:
        The seen-sets it used, for ``cache.settle`` once committed.
    """
    stored = set(_numbers(conn, "conversations", (record.id for record, _ in items)))
    session_numbers = _numbers(
        conn,
        "sessions",
        (record.session_id for record, _ in items if record.session_id is not None),
    )
    n = conn.execute("SELECT coalesce(max(n), 0) FROM conversations").fetchone()[0]
    sessions: dict[str, _Seen] = {}
    conversation_rows: list[tuple[Any, ...]] = []
    for record, row in items:
        if record.id in stored:
            continue
        stored.add(record.id)
        n += 1
        sid = record.session_id
        if sid is None:
            conversation_rows.append((n, None, *row))
            continue
        # Another process (or a request with a fresh in-memory Session) may
        # have stored this session's earlier turns: drop the history the
        # prompt re-sent. Read from the store once per session and batch.
        session_n = session_numbers[sid]
        seen = sessions.get(sid)
        if seen is None:
            seen = sessions[sid] = cache.load(conn, sid, session_n)
        kept = _strip_history(record.messages, seen.keys)
        seen.upto = n
        if len(kept) != len(record.messages):
            row = (*row[:-1], _messages_json(kept))
        conversation_rows.append((n, session_n, *row))
    if conversation_rows:
        _insert_rows(conn, _INSERT_CONVERSATION_HEAD, conversation_rows)
    return list(sessions.values())


def _write(conn: sqlite3.Connection, rows: _Rows, cache: _SeenCache) -> list[_Seen]:
    """
    Store prepared rows; the caller holds a write transaction.

    Returns:
        The seen-sets used, for ``cache.settle`` after the commit. If the
        transaction fails instead, the caller must ``cache.clear()``.
    """
    touched: list[_Seen] = []
    if rows.sessions:
        _insert_rows(
            conn,
            _UPSERT_SESSION_HEAD,
            list(rows.sessions.values()),
            _UPSERT_SESSION_TAIL,
        )
    if rows.conversations:
        touched = _insert_conversations(conn, rows.conversations, cache)
    if rows.users:
        _insert_rows(
            conn,
            _UPSERT_USER_HEAD,
            [(uid, a, b) for uid, (a, b) in rows.users.items()],
            _UPSERT_USER_TAIL,
        )
    if rows.feedback:
        conn.executemany(_INSERT_FEEDBACK, rows.feedback)
        conn.executemany(_RECOUNT_RATINGS, [(sid,) for sid in rows.rated_sessions])
    return touched


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
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


def _store_error(path: str, exc: sqlite3.Error) -> OSError | ValueError:
    """Map a sqlite3 error met while opening *path* to OSError or ValueError."""
    message = f"cannot use SQLite store at {path}: {exc}"
    if isinstance(exc, sqlite3.OperationalError):
        return OSError(message)  # cannot open, read-only, locked, I/O error
    return ValueError(message)  # not a database, malformed


def _pragma_int(
    conn: sqlite3.Connection, name: Literal["application_id", "user_version"]
) -> int:
    row = conn.execute(f"PRAGMA {name}").fetchone()
    return int(row[0])


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Create or upgrade the schema; raise ValueError for a foreign or newer file."""
    if (
        _pragma_int(conn, "application_id") == _APPLICATION_ID
        and _pragma_int(conn, "user_version") == _SCHEMA_VERSION
    ):
        return  # the common case: no write lock needed
    with _transaction(conn):
        app_id = _pragma_int(conn, "application_id")
        version = _pragma_int(conn, "user_version")
        if app_id != _APPLICATION_ID and (app_id != 0 or _table_names(conn)):
            raise ValueError(
                f"cannot use SQLite store at {path}: it is a SQLite database but"
                " not a context_trace store"
            )
        if version > _SCHEMA_VERSION:
            raise ValueError(
                f"cannot use SQLite store at {path}: schema version {version} is"
                f" newer than this context_trace supports ({_SCHEMA_VERSION});"
                " upgrade context_trace"
            )
        for target in range(version + 1, _SCHEMA_VERSION + 1):
            _MIGRATIONS[target](conn)
        # PRAGMA takes no bound parameters; both values are int constants.
        conn.execute(f"PRAGMA application_id = {_APPLICATION_ID:d}")
        conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION:d}")


def _open_writer(path: str, busy_timeout: float) -> sqlite3.Connection:
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
        except OSError as exc:  # _store_error maps "locked" to OSError
            cause = exc.__cause__
            locked = isinstance(cause, sqlite3.OperationalError) and (
                "locked" in str(cause) or "busy" in str(cause)
            )
            if not locked or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _open_writer_once(path: str, busy_timeout: float) -> sqlite3.Connection:
    """One attempt of :func:`_open_writer`."""
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
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise _store_error(path, exc) from exc
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
        conn.execute(f"PRAGMA cache_size = {_CACHE_SIZE:d}")
        _migrate(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise _store_error(path, exc) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _open_reader(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Open an existing store read-only; raise a clear error if it is not one."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no context_trace database at {path}")
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
    except sqlite3.Error as exc:
        raise OSError(f"cannot open context_trace database {path}: {exc}") from exc
    try:
        app_id = _pragma_int(conn, "application_id")
        version = _pragma_int(conn, "user_version")
        tables = _table_names(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ValueError(
            f"{path} is not a context_trace database ({exc}; the file is corrupt"
            " or not SQLite)"
        ) from exc
    if app_id != _APPLICATION_ID or not tables >= _REQUIRED_TABLES:
        conn.close()
        raise ValueError(f"{path} is a SQLite file but not a context_trace database")
    if version > _SCHEMA_VERSION:
        conn.close()
        raise ValueError(
            f"{path} has schema version {version}, newer than this context_trace"
            f" supports ({_SCHEMA_VERSION}); upgrade context_trace"
        )
    return conn


def _after_fork_in_child() -> None:
    for writer in list(_WRITERS):
        writer._forget_parent_state()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- the exporter ----------------------------------------------------------------


class SQLiteExporter:
    """
    Store records in a local SQLite file; also the Context API exporter's outbox.

    Use it as the default exporter (``context-trace`` reads the file), or give it
    to the Context API exporter as a durable outbox. Nothing touches the file
    until the first ``export`` or ``outbox_*`` call, so construction never fails
    on a bad path: ``export`` then logs one ERROR line naming the path and counts
    the batches as failed. Call :meth:`check` to surface the problem as an
    exception instead.

    One writer connection is opened lazily and shared under a lock, so the
    methods may be called from any thread. After ``os.fork()`` the child opens
    its own connection. Several processes may write the same file.

    Read the file with :class:`SQLiteReader`.

    Args:
        path: The database file; missing parent directories are created.
        keep_local: Also store records passed to :meth:`outbox_put` in the report
            tables, so the CLI sees them.
        outbox_max: Most pending outbox rows kept; beyond it the oldest are
            dropped and counted.
        busy_timeout: Seconds to wait for another process's write lock.

    Raises:
        ValueError: If *outbox_max* < 1 or *busy_timeout* < 0.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        keep_local: bool = True,
        outbox_max: int = _DEFAULT_OUTBOX_MAX,
        busy_timeout: float = _DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        if outbox_max < 1:
            raise ValueError(f"outbox_max must be at least 1, got {outbox_max!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0, got {busy_timeout!r}")
        self._path = os.fspath(path)
        self._keep_local = keep_local
        self._outbox_max = outbox_max
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        self._logged: set[str] = set()
        self._warned_full = False
        # row id -> lease_until of the rows this instance claimed; release/fail
        # only touch a row while it still carries that lease (see outbox_release).
        self._leases: dict[int, float] = {}
        self._seen = _SeenCache()
        _WRITERS.add(self)

    @property
    def path(self) -> str:
        """The database file this exporter writes."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteExporter({self._path!r})"

    # -- connection management -------------------------------------------------

    def _forget_parent_state(self) -> None:
        """In a fork child: fresh lock, and never touch the parent's connection."""
        self._lock = threading.Lock()
        if self._conn is not None:
            _ABANDONED.append(self._conn)
            self._conn = None
        self._pid = os.getpid()
        self._leases.clear()
        self._seen.clear()

    def _connection(self) -> sqlite3.Connection:
        """The writer connection, opened on first use; call with the lock held."""
        if self._closed:
            raise RuntimeError(f"SQLite store at {self._path} is shut down")
        if self._pid != os.getpid():
            # Fallback for forks the at-fork hook did not see (e.g. os.fork
            # called through a C extension): a connection must not cross fork.
            if self._conn is not None:
                _ABANDONED.append(self._conn)
                self._conn = None
            self._pid = os.getpid()
            self._leases.clear()
        if self._conn is None:
            # A new connection may see a different file (replaced, restored):
            # start with no cached seen-sets.
            self._seen.clear()
            self._conn = _open_writer(self._path, self._busy_timeout)
        return self._conn

    def _discard_connection(self) -> None:
        """Close the connection after an error; the next call reopens and rechecks."""
        conn, self._conn = self._conn, None
        self._seen.clear()
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _log_once(self, level: int, message: str) -> None:
        """Log *message* at *level* the first time, at DEBUG when it repeats."""
        if message in self._logged:
            _logger.debug("%s (repeated)", message)
            return
        if len(self._logged) >= _MAX_LOGGED_ERRORS:
            self._logged.clear()
        self._logged.add(message)
        _logger.log(level, "%s", message)

    def _commit(
        self,
        conn: sqlite3.Connection,
        rows: _Rows,
        also: Callable[[sqlite3.Connection], _T],
    ) -> tuple[list[_Seen], _T]:
        """
        Store *rows* and run *also* in one transaction; call with the lock held.

        Returns:
            The seen-sets to settle, and what *also* returned. On failure the
            seen cache is cleared: it may hold keys of the rolled-back batch.
        """
        try:
            with _transaction(conn):
                touched = _write(conn, rows, self._seen)
                return touched, also(conn)
        except BaseException:
            self._seen.clear()
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; closed after use once shut down."""
        with self._lock:
            try:
                yield self._connection()
            finally:
                if self._closed:  # shutdown() timed out waiting for this call
                    self._discard_connection()

    def check(self) -> None:
        """
        Open (creating if needed) the store now and raise if it cannot be used.

        The CLI calls it to report a bad path in one line; ``export`` never raises.

        Raises:
            OSError: If the file or its directory cannot be created or opened.
            ValueError: If the file is corrupt, not a context_trace store, or
                written by a newer context_trace.
            RuntimeError: If the exporter was shut down.

        .. versionadded:: 0.1.0
        """
        with self._locked():
            pass

    # -- Exporter protocol -----------------------------------------------------

    def export(self, batch: Sequence[Record]) -> ExportResult:
        """
        Store *batch* in one transaction; never raises.

        Re-delivered records are stored once. Session turns lose leading history
        that another writer already stored for the session.

        Args:
            batch: The records to store.

        Returns:
            ``ExportResult.success(n)``, or ``ExportResult.failure(n)`` when the
            store cannot be opened or written (logged once per distinct error).

        .. versionadded:: 0.1.0
        """
        n = len(batch)
        if n == 0:
            return ExportResult.success(0)
        try:
            rows = _prepare(batch)
        except Exception as exc:  # noqa: BLE001 - export must never raise
            self._log_once(
                logging.ERROR,
                f"context_trace: cannot store batch in {self._path}: {exc!r}",
            )
            return ExportResult.failure(n)
        with self._lock:
            try:
                conn = self._connection()
            except RuntimeError as exc:
                self._log_once(
                    logging.WARNING, f"context_trace: {exc}; records dropped"
                )
                return ExportResult.failure(n)
            except (OSError, ValueError) as exc:
                self._log_once(logging.ERROR, f"context_trace: {exc}")
                return ExportResult.failure(n)
            try:
                try:
                    touched = self._commit(conn, rows, lambda conn: None)[0]
                except UnicodeEncodeError:
                    # A lone surrogate somewhere (SQLite stores UTF-8 only): store
                    # the batch with such characters replaced rather than lose it.
                    rows = _prepare(_scrubbed(batch))
                    touched = self._commit(conn, rows, lambda conn: None)[0]
                self._seen.settle(touched)
            except Exception as exc:  # noqa: BLE001 - export must never raise
                self._discard_connection()
                self._log_once(
                    logging.ERROR,
                    f"context_trace: writing to SQLite store at {self._path}"
                    f" failed: {type(exc).__name__}: {exc}",
                )
                return ExportResult.failure(n)
            finally:
                if self._closed:  # shutdown() timed out waiting for this export
                    self._discard_connection()
        return ExportResult.success(n)

    def shutdown(self, timeout: float | None = None) -> None:
        """
        Close the writer connection; later exports fail without raising.

        Safe to call more than once.

        Args:
            timeout: Seconds to wait for a running export to finish; None waits.
                If it passes, the export closes the connection when it ends.

        .. versionadded:: 0.1.0
        """
        self._closed = True
        acquired = self._lock.acquire(
            timeout=-1 if timeout is None else max(timeout, 0)
        )
        if not acquired:
            return
        try:
            self._discard_connection()
        finally:
            self._lock.release()

    # -- reads through the writer ------------------------------------------------

    def session_messages(self, session_id: str) -> list[Message]:
        """
        The stored transcript of a session so far, through the writer connection.

        The Context API exporter uses it to send a thread's transcript.

        Args:
            session_id: The session.

        Returns:
            Its messages in order across its turns; empty for an unknown session.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the read fails.

        .. versionadded:: 0.1.0
        """
        with self._locked() as conn:
            return _session_messages(conn, session_id)

    # -- durable outbox ----------------------------------------------------------

    def _write_op(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run *op* in one write transaction; drop the connection on error."""
        with self._locked() as conn:
            try:
                with _transaction(conn):
                    return op(conn)
            except sqlite3.Error:
                self._discard_connection()
                raise

    def outbox_put(self, batch: Sequence[Record]) -> None:
        """
        Durably queue *batch* for delivery, in one transaction.

        Each record becomes a pending row. With ``keep_local`` the records are
        also stored in the report tables. When more than ``outbox_max`` rows are
        pending, the oldest pending rows are deleted and counted as ``dropped``.

        Args:
            batch: The records to queue.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            TypeError: If *batch* holds something that is not a record.
            sqlite3.Error: If the write fails; nothing was queued.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.1.0
        """
        if not batch:
            return
        now = time.time()

        def queue(records: Sequence[Record]) -> Callable[[sqlite3.Connection], int]:
            payloads = [(r.id, record_to_json(r), now) for r in records]

            def work(conn: sqlite3.Connection) -> int:
                _insert_rows(
                    conn,
                    "INSERT INTO outbox (record_id, payload, created_at)",
                    payloads,
                )
                return self._enforce_bound(conn)

            return work

        rows = _prepare(batch if self._keep_local else ())
        with self._locked() as conn:
            try:
                try:
                    touched, dropped = self._commit(conn, rows, queue(batch))
                except UnicodeEncodeError:
                    clean = _scrubbed(batch)  # see export()
                    rows = _prepare(clean if self._keep_local else ())
                    touched, dropped = self._commit(conn, rows, queue(clean))
                self._seen.settle(touched)
            except sqlite3.Error:
                self._discard_connection()
                raise
        if dropped:
            message = (
                f"context_trace: outbox at {self._path} holds more than"
                f" {self._outbox_max} pending records; dropped the oldest"
            )
            if self._warned_full:
                _logger.debug("%s (%d records)", message, dropped)
            else:
                self._warned_full = True
                _logger.warning("%s (%d records)", message, dropped)

    def _enforce_bound(self, conn: sqlite3.Connection) -> int:
        """Delete the oldest pending rows beyond outbox_max; return how many."""
        # Row ids only grow, so max - min + 1 bounds the row count from above in
        # two index lookups; only past the bound are pending rows counted (on
        # the small outbox_status index, not the payload pages).
        low = conn.execute("SELECT min(id) FROM outbox").fetchone()[0]
        high = conn.execute("SELECT max(id) FROM outbox").fetchone()[0]
        if low is None or high - low + 1 <= self._outbox_max:
            return 0
        pending = conn.execute(
            "SELECT count(*) FROM outbox WHERE status = 'pending'"
        ).fetchone()[0]
        excess = int(pending) - self._outbox_max
        if excess <= 0:
            return 0
        conn.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
            " WHERE status = 'pending' ORDER BY id LIMIT ?)",
            (excess,),
        )
        conn.execute(_ADD_TO_COUNTER, ("dropped", excess))
        return excess

    def outbox_claim(
        self, limit: int, lease_seconds: float = _DEFAULT_LEASE_SECONDS
    ) -> list[tuple[int, Record]]:
        """
        Lease up to *limit* deliverable rows, oldest first, to this process.

        A row is deliverable when it is pending and its backoff has passed, or
        when an earlier lease expired (its holder crashed or hung). The lease is
        taken under ``BEGIN IMMEDIATE``, so two processes never claim the same
        row while the lease runs. Each claim counts one attempt. A row whose
        payload cannot be decoded is deleted and counted as ``failed``.

        Args:
            limit: Most rows to claim.
            lease_seconds: How long the rows stay reserved for this process.

        Returns:
            ``(row_id, record)`` pairs; pass the row ids to :meth:`outbox_done`,
            :meth:`outbox_release` or :meth:`outbox_fail`.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the claim fails; nothing was leased.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.1.0
        """
        if limit <= 0:
            return []

        def op(conn: sqlite3.Connection) -> tuple[float, list[tuple[int, Record]]]:
            now = time.time()
            until = now + lease_seconds
            rows = conn.execute(_SELECT_DUE, (now, limit)).fetchall()
            claimed: list[tuple[int, Record]] = []
            broken: list[tuple[int]] = []
            for row_id, payload in rows:
                try:
                    claimed.append((row_id, record_from_json(payload)))
                except ValueError:
                    broken.append((row_id,))
            conn.executemany(
                "UPDATE outbox SET status = 'leased', lease_until = ?,"
                " attempts = attempts + 1 WHERE id = ?",
                [(until, row_id) for row_id, _ in claimed],
            )
            if broken:
                conn.executemany("DELETE FROM outbox WHERE id = ?", broken)
                conn.execute(_ADD_TO_COUNTER, ("failed", len(broken)))
                _logger.warning(
                    "context_trace: dropped %d undecodable outbox rows in %s",
                    len(broken),
                    self._path,
                )
            return until, claimed

        until, claimed = self._write_op(op)
        for row_id, _ in claimed:
            self._leases[row_id] = until
        return claimed

    def _lease_params(self, row_ids: Iterable[int]) -> list[tuple[int, float | None]]:
        return [(row_id, self._leases.pop(row_id, None)) for row_id in row_ids]

    def outbox_done(self, row_ids: Iterable[int]) -> None:
        """
        Delete delivered rows (the report tables keep their copy with keep_local).

        Args:
            row_ids: Row ids from :meth:`outbox_claim`.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the delete fails.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.1.0
        """
        params = [(row_id,) for row_id, _ in self._lease_params(row_ids)]
        if params:
            self._write_op(
                lambda conn: conn.executemany("DELETE FROM outbox WHERE id = ?", params)
            )

    def outbox_release(self, row_ids: Iterable[int], retry_after: float) -> None:
        """
        Return claimed rows to pending, deliverable again after *retry_after*.

        Use it after a transient failure (backoff). A row whose lease this
        instance no longer holds (it expired and another process claimed it) is
        left alone.

        Args:
            row_ids: Row ids from :meth:`outbox_claim`.
            retry_after: Seconds before the rows may be claimed again.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the update fails.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.1.0
        """
        leases = self._lease_params(row_ids)
        if not leases:
            return
        until = time.time() + retry_after
        params = [(until, row_id, token, token) for row_id, token in leases]
        self._write_op(
            lambda conn: conn.executemany(
                "UPDATE outbox SET status = 'pending', lease_until = ?"
                " WHERE id = ? AND (? IS NULL OR lease_until = ?)",
                params,
            )
        )

    def outbox_fail(self, row_ids: Iterable[int]) -> None:
        """
        Give up on rows for good: delete them and count them as ``failed``.

        Like :meth:`outbox_release`, a row leased meanwhile by someone else is
        left alone.

        Args:
            row_ids: Row ids from :meth:`outbox_claim`.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the delete fails.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.1.0
        """
        leases = self._lease_params(row_ids)
        if not leases:
            return
        params = [(row_id, token, token) for row_id, token in leases]

        def op(conn: sqlite3.Connection) -> None:
            before = conn.total_changes
            conn.executemany(
                "DELETE FROM outbox WHERE id = ? AND (? IS NULL OR lease_until = ?)",
                params,
            )
            deleted = conn.total_changes - before
            if deleted:
                conn.execute(_ADD_TO_COUNTER, ("failed", deleted))

        self._write_op(op)

    def outbox_counts(self) -> dict[str, int]:
        """
        Outbox state: ``pending``, ``leased``, ``dropped`` and ``failed``.

        ``pending`` rows wait for delivery (including rows in backoff and rows
        whose lease expired); ``leased`` rows are being delivered right now;
        ``dropped`` and ``failed`` are totals since the file was created.

        Raises:
            OSError, ValueError: If the store cannot be opened.
            sqlite3.Error: If the read fails.
            RuntimeError: After :meth:`shutdown`.

        .. versionadded:: 0.1.0
        """
        with self._locked() as conn:
            return _outbox_counts(conn)


# --- reading -------------------------------------------------------------------


def _session_messages(conn: sqlite3.Connection, session_id: str) -> list[Message]:
    messages: list[Message] = []
    for (text,) in conn.execute(_SELECT_SESSION_MESSAGES, (session_id,)):
        messages.extend(_messages_from_json(text))
    return messages


def _outbox_counts(conn: sqlite3.Connection) -> dict[str, int]:
    # One statement, so one snapshot. count(*) runs on the smallest index, and
    # live leases are few: neither reads the payloads.
    total, leased, dropped, failed = conn.execute(
        "SELECT (SELECT count(*) FROM outbox),"
        " (SELECT count(*) FROM outbox WHERE status = 'leased' AND lease_until > ?),"
        " (SELECT value FROM meta WHERE key = 'dropped'),"
        " (SELECT value FROM meta WHERE key = 'failed')",
        (time.time(),),
    ).fetchone()
    return {
        "pending": int(total) - int(leased),
        "leased": int(leased),
        "dropped": int(dropped or 0),
        "failed": int(failed or 0),
    }


_CONVERSATION_COLUMNS = (
    "id, user_id, session_id, started_at, ended_at, latency_ms, model,"
    " prompt_tokens, completion_tokens, total_tokens, error, metadata, n,"
    " messages_json"
)


def _conversation_metadata(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "user_id": row[1],
        "session_id": row[2],
        "started_at": row[3],
        "ended_at": row[4],
        "latency_ms": row[5],
        "model": row[6],
        "prompt_tokens": row[7],
        "completion_tokens": row[8],
        "total_tokens": row[9],
        "error": row[10],
        "metadata": json.loads(row[11]),
    }


class SQLiteReader:
    """
    Read-only queries over a context_trace SQLite store.

    The ``context-trace`` CLI and tests use it. It opens the file with
    ``mode=ro``, so it never creates or changes a store, and it can run while
    writers are active (it sees their committed transactions). Use it as a
    context manager, or call :meth:`close`. Use it from one thread.

    Args:
        path: The database file.

    Raises:
        FileNotFoundError: If *path* does not exist.
        OSError: If the file cannot be opened.
        ValueError: If the file is corrupt, not SQLite, not a context_trace
            store, or written by a newer context_trace.

    .. versionadded:: 0.1.0
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._conn = _open_reader(self._path, _DEFAULT_BUSY_TIMEOUT)

    @property
    def path(self) -> str:
        """The database file this reader reads."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteReader({self._path!r})"

    def __enter__(self) -> SQLiteReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """
        Close the connection; safe to call twice.

        .. versionadded:: 0.1.0
        """
        self._conn.close()

    def _rows(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise ValueError(
                f"cannot read context_trace database {self._path}: {exc}"
            ) from exc

    def users(self) -> list[UserSummary]:
        """
        Per-user totals, most recently seen first.

        Turns without a user are not listed (see :meth:`daily_stats`).

        Returns:
            One :class:`UserSummary` per known user.

        Raises:
            ValueError: If the database cannot be read.

        .. versionadded:: 0.1.0
        """
        rows = self._rows(
            "WITH c AS (SELECT user_id, count(*) AS n, avg(latency_ms) AS latency,"
            "  sum(error IS NOT NULL) AS errors FROM conversations"
            "  WHERE user_id IS NOT NULL GROUP BY user_id),"
            " s AS (SELECT user_id, count(*) AS n, sum(rating_up) AS up,"
            "  sum(rating_down) AS down FROM sessions"
            "  WHERE user_id IS NOT NULL GROUP BY user_id)"
            " SELECT u.id, coalesce(c.n, 0), coalesce(s.n, 0), u.last_seen, c.latency,"
            "  coalesce(s.up, 0), coalesce(s.down, 0), coalesce(c.errors, 0)"
            " FROM users u LEFT JOIN c ON c.user_id = u.id"
            " LEFT JOIN s ON s.user_id = u.id ORDER BY u.last_seen DESC, u.id"
        )
        return [UserSummary(*row) for row in rows]

    def sessions(
        self, user_id: str | None = None, limit: int = 50
    ) -> list[SessionSummary]:
        """
        Sessions, most recently active first.

        Args:
            user_id: Only this user's sessions; None for all.
            limit: Most sessions returned.

        Returns:
            One :class:`SessionSummary` per session.

        Raises:
            ValueError: If the database cannot be read.

        .. versionadded:: 0.1.0
        """
        select = (
            "SELECT s.id, s.user_id, s.started_at, s.last_at,"
            " (SELECT count(*) FROM conversations c WHERE c.session_n = s.n),"
            " s.rating_up, s.rating_down FROM sessions s"
        )
        if user_id is None:
            rows = self._rows(
                f"{select} ORDER BY s.last_at DESC, s.id LIMIT ?", (limit,)
            )
        else:
            rows = self._rows(
                f"{select} WHERE s.user_id = ? ORDER BY s.last_at DESC, s.id LIMIT ?",
                (user_id, limit),
            )
        return [SessionSummary(*row) for row in rows]

    def transcript(self, id: str) -> Transcript | None:
        """
        The transcript of a session or of one conversation, by id.

        Args:
            id: A session id (its turns' messages in order, by turn start time
                then position) or a conversation id (that turn's messages).

        Returns:
            A :class:`Transcript` ``(kind, metadata, messages)``, or None when no
            session or conversation has that id. For a session the metadata holds
            its summary columns; for a conversation, its stored columns.

        Raises:
            ValueError: If the database cannot be read.

        .. versionadded:: 0.1.0
        """
        sessions = self._rows(
            "SELECT s.id, s.user_id, s.started_at, s.last_at,"
            " (SELECT count(*) FROM conversations c WHERE c.session_n = s.n),"
            " s.rating_up, s.rating_down, s.metadata FROM sessions s WHERE s.id = ?",
            (id,),
        )
        if sessions:
            row = sessions[0]
            metadata = {
                "session_id": row[0],
                "user_id": row[1],
                "started_at": row[2],
                "last_at": row[3],
                "turns": row[4],
                "rating_up": row[5],
                "rating_down": row[6],
                "metadata": json.loads(row[7]),
            }
            return Transcript("session", metadata, self.session_messages(id))
        conversations = self._rows(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (id,)
        )
        if not conversations:
            return None
        row = conversations[0]
        return Transcript(
            "conversation", _conversation_metadata(row), _messages_from_json(row[13])
        )

    def session_messages(self, session_id: str) -> list[Message]:
        """
        A session's messages in order across its turns.

        Args:
            session_id: The session.

        Returns:
            The messages; empty for an unknown session.

        Raises:
            ValueError: If the database cannot be read.

        .. versionadded:: 0.1.0
        """
        try:
            return _session_messages(self._conn, session_id)
        except sqlite3.DatabaseError as exc:
            raise ValueError(
                f"cannot read context_trace database {self._path}: {exc}"
            ) from exc

    def conversations(self, since: float | None = None) -> Iterator[StoredConversation]:
        """
        Every stored conversation with its messages, oldest first.

        Used by ``context-trace export``. Rows are read in pages, so memory stays
        flat for large stores.

        Args:
            since: Only conversations started at or after this epoch time.

        Yields:
            :class:`StoredConversation` objects.

        Raises:
            ValueError: If the database cannot be read.

        .. versionadded:: 0.1.0
        """
        after: tuple[float, int] | None = None
        while True:
            if after is None:
                page = self._rows(
                    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations"
                    " WHERE started_at >= ? ORDER BY started_at, n LIMIT ?",
                    (float("-inf") if since is None else since, _READ_PAGE),
                )
            else:
                page = self._rows(
                    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations"
                    " WHERE (started_at, n) > (?, ?) ORDER BY started_at, n LIMIT ?",
                    (after[0], after[1], _READ_PAGE),
                )
            if not page:
                return
            for row in page:
                yield StoredConversation(
                    id=row[0],
                    user_id=row[1],
                    session_id=row[2],
                    started_at=row[3],
                    ended_at=row[4],
                    latency_ms=row[5],
                    model=row[6],
                    prompt_tokens=row[7],
                    completion_tokens=row[8],
                    total_tokens=row[9],
                    error=row[10],
                    metadata=json.loads(row[11]),
                    messages=tuple(_messages_from_json(row[13])),
                )
            last = page[-1]
            after = (last[3], last[12])

    def daily_stats(self) -> list[DayStats]:
        """
        Per UTC day totals, oldest day first.

        Returns:
            One :class:`DayStats` per day with at least one conversation.

        Raises:
            ValueError: If the database cannot be read.

        .. versionadded:: 0.1.0
        """
        rows = self._rows(
            "SELECT date(started_at, 'unixepoch') AS day, count(*),"
            " count(DISTINCT user_id), count(DISTINCT session_id),"
            " sum(error IS NOT NULL), avg(latency_ms)"
            " FROM conversations GROUP BY day ORDER BY day"
        )
        return [DayStats(*row) for row in rows]

    def outbox_counts(self) -> dict[str, int]:
        """
        Outbox state, as :meth:`SQLiteExporter.outbox_counts` reports it.

        Raises:
            ValueError: If the database cannot be read.

        .. versionadded:: 0.1.0
        """
        try:
            return _outbox_counts(self._conn)
        except sqlite3.DatabaseError as exc:
            raise ValueError(
                f"cannot read context_trace database {self._path}: {exc}"
            ) from exc
