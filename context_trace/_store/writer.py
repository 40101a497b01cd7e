"""The batch writer: records to rows, with session-history de-duplication."""

from __future__ import annotations

import sqlite3
import sys
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from context_trace._record import (
    Conversation,
    Feedback,
    Message,
    Record,
    SeenSet,
    exported_metadata,
    remember,
    strip_seen,
)

from .codec import decode, encode, messages_json
from .connection import insert_rows
from .ratings import Refused, store_ratings

# SQLite before 3.32 allows at most 999 bound parameters per statement. Bigger
# statements were measured slower and heavier: with up to 8,192 parameters a
# 512-turn batch is fewer statements, but every batch's shape differs, so the
# prepared-statement cache holds (or, without a cache, re-prepares) ~100 KiB
# programs; 500-parameter chunks repeat one shape and stay cached.
_MAX_PARAMS = 500
# Sessions per history read (SeenCache.load): 8 for a typical batch, 64 for a
# big one; two statement shapes, both kept prepared.
_SEEN_PAIRS_FEW = 8
_SEEN_PAIRS = 64

# Bytes of seen-sets kept for recently written sessions (a 5-turn session costs
# ~400 bytes, so ~650 sessions); a session evicted from it is read back from
# the file. Every web worker pays this, so it is small.
_SEEN_CACHE_BYTES = 256 * 1024

_INSERT_CONVERSATION_HEAD = (
    "INSERT INTO conversations (n, session_n, id, user_id, session_id, started_at,"
    " ended_at, latency_ms, model, prompt_tokens, completion_tokens, total_tokens,"
    " error, metadata, messages_json)"
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
# Sessions' turns numbered above their cached upto (see SeenCache), for many
# sessions in one statement; each (session_n, upto) pair probes the
# conversations_session index. One query per batch, not one per session: each
# statement releases the GIL, and on a busy process getting it back costs the
# export thread a switch interval (5 ms), so per-session queries made a batch
# with 100 new sessions take half a second.
_SELECT_SEEN_MANY = (
    "WITH wanted (session_n, upto) AS (VALUES {pairs})"
    " SELECT c.session_n, c.n, c.messages_json FROM wanted"
    " JOIN conversations AS c ON c.session_n = wanted.session_n AND c.n > wanted.upto"
)


@dataclass(slots=True)
class Rows:
    """A batch turned into rows in plain Python, before any lock is taken."""

    # (record, its conversations row without ``n`` and ``session_n``): the
    # numbers, and the messages of session turns, are settled inside the
    # transaction (see _insert_conversations).
    conversations: list[tuple[Conversation, tuple[Any, ...]]]
    # Ratings are resolved inside the transaction, after the turns (ratings.py).
    feedback: list[Feedback]
    users: dict[str, list[float]]
    sessions: dict[str, list[Any]]


@dataclass(slots=True)
class Written:
    """What :func:`write` did beyond inserting rows."""

    #: The seen-sets used, for ``SeenCache.settle`` after the commit.
    touched: Touched
    #: The ratings as stored: their turn and their session's user resolved.
    ratings: list[Feedback]
    #: The ratings not stored because their session or turn is unknown.
    refused: list[Refused]


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


def prepare(batch: Sequence[Record]) -> Rows:
    """Turn *batch* into rows; raise TypeError for something that is not a record."""
    rows = Rows([], [], {}, {})
    for record in batch:
        if isinstance(record, Conversation):
            usage = record.usage
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
                        record.model,
                        None if usage is None else usage.input_tokens,
                        None if usage is None else usage.output_tokens,
                        None if usage is None else usage.total_tokens,
                        record.error,
                        encode(exported_metadata(record, derived=False)),
                        messages_json(record.messages),
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
            # No session or user row: a rating never creates one (ratings.py).
            rows.feedback.append(record)
        else:
            raise TypeError(f"not a context_trace record: {type(record).__name__}")
    return rows


def _fingerprint(role: str, content: str) -> int:
    """
    A 64-bit stand-in for a message's ``(role, content)`` in the seen-sets.

    Python's hash: seen-sets live in one process only, so the per-process hash
    seed does not matter, and two different messages of one session colliding
    is vanishingly unlikely (~n²/2⁶⁵).
    """
    return hash((role, content))


class _Fingerprints:
    """
    A session's seen-set: the sorted fingerprints of its messages in an array.

    Eight bytes per message, where a ``set`` of tuples cost ~170: a session's
    seen-set is small and read a few times per batch, so a binary search over
    a compact array beats a hash table on memory at no visible cost in time.
    """

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values = array("q")

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        role, content = cast("tuple[str, str]", key)
        return self._has(_fingerprint(role, content))

    def _has(self, value: int) -> bool:
        values = self._values
        index = bisect_left(values, value)
        return index < len(values) and values[index] == value

    def add(self, role: str, content: str) -> None:
        value = _fingerprint(role, content)
        values = self._values
        index = bisect_left(values, value)
        if index == len(values) or values[index] != value:
            values.insert(index, value)

    def update(self, keys: Iterable[tuple[str, str]], /) -> None:
        for role, content in keys:
            self.add(role, content)

    def nbytes(self) -> int:
        """The bytes the array holds (its allocated buffer included)."""
        return sys.getsizeof(self._values)


def _strip_history(messages: tuple[Message, ...], seen: SeenSet) -> tuple[Message, ...]:
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


# What a cached session costs besides its fingerprints and its id: the Seen
# object, the array header and the OrderedDict entry (measured with tracemalloc).
_ENTRY_BYTES = 200


@dataclass(slots=True)
class Seen:
    """A session's seen-set: keys of its messages in turns numbered up to ``upto``."""

    upto: int
    keys: _Fingerprints
    counted: int = 0


#: The seen-sets a write used, by session id, for ``SeenCache.settle``.
Touched = list[tuple[str, Seen]]


class SeenCache:
    """
    Per-process seen-sets of recently written sessions, bounded in bytes.

    Conversation numbers only grow (each is max + 1, assigned under the write
    lock), so a cached seen-set is brought up to date by reading just the
    session's turns numbered above its ``upto``: the ones other processes wrote
    since. A session evicted (least recently written first) is read back from
    the file when it is written again, so the bound costs a query, never a
    duplicate. Entries are updated in place during a transaction; if it fails
    the owner calls :meth:`clear`, so no uncommitted state survives.

    Args:
        max_bytes: The most memory the cached seen-sets may hold (an estimate
            kept per entry: its fingerprints, its session id and a fixed
            overhead).
    """

    def __init__(self, max_bytes: int = _SEEN_CACHE_BYTES) -> None:
        self._entries: OrderedDict[str, Seen] = OrderedDict()
        self._max_bytes = max_bytes
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        """The estimated bytes the cached entries hold now."""
        return self._bytes

    @property
    def max_bytes(self) -> int:
        """The bound on :attr:`nbytes`."""
        return self._max_bytes

    def load(
        self, conn: sqlite3.Connection, sessions: dict[str, int]
    ) -> dict[str, Seen]:
        """
        The seen-sets of *sessions* (id to session number), brought up to date.

        One query per 64 sessions reads the turns each has gained since its
        cached ``upto`` (all its turns for a session not cached).
        """
        entries = self._entries
        found: dict[str, Seen] = {}
        by_number: dict[int, Seen] = {}
        for session_id, session_n in sessions.items():
            entry = entries.get(session_id)
            if entry is None:
                entry = entries[session_id] = Seen(0, _Fingerprints())
            else:
                entries.move_to_end(session_id)
            found[session_id] = by_number[session_n] = entry
        pairs = [(n, entry.upto) for n, entry in by_number.items()]
        # A fixed number of pairs per statement (the last chunk padded with a
        # session number no row has), so the statement is prepared once and
        # stays in the connection's cache.
        step = _SEEN_PAIRS if len(pairs) > _SEEN_PAIRS_FEW else _SEEN_PAIRS_FEW
        query = _SELECT_SEEN_MANY.format(pairs=",".join(["(?, ?)"] * step))
        for start in range(0, len(pairs), step):
            chunk = pairs[start : start + step]
            chunk += [(-1, 0)] * (step - len(chunk))
            params = [value for pair in chunk for value in pair]
            for session_n, n, text in conn.execute(query, params):
                entry = by_number[session_n]
                keys = entry.keys
                for role, content, *_ in decode(text):
                    if role != "tool":
                        keys.add(role, content)
                if n > entry.upto:
                    entry.upto = n
        return found

    def settle(self, touched: Iterable[tuple[str, Seen]]) -> None:
        """After a commit: recount *touched* entries and evict the oldest."""
        for session_id, entry in touched:
            size = entry.keys.nbytes() + sys.getsizeof(session_id) + _ENTRY_BYTES
            self._bytes += size - entry.counted
            entry.counted = size
        while self._bytes > self._max_bytes and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.counted

    def clear(self) -> None:
        """Forget everything (after a failed transaction, a reconnect, a fork)."""
        self._entries.clear()
        self._bytes = 0


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


def _insert_conversations(
    conn: sqlite3.Connection,
    items: list[tuple[Conversation, tuple[Any, ...]]],
    cache: SeenCache,
) -> Touched:
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
    # Another process (or a request with a fresh in-memory Session) may have
    # stored these sessions' earlier turns: the history a prompt re-sent is
    # dropped. Read from the store once per batch.
    sessions = cache.load(
        conn,
        {
            sid: session_numbers[sid]
            for record, _ in items
            if (sid := record.session_id) is not None and record.id not in stored
        },
    )
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
        session_n = session_numbers[sid]
        seen = sessions[sid]
        kept = _strip_history(record.messages, seen.keys)
        seen.upto = n
        if len(kept) != len(record.messages):
            row = (*row[:-1], messages_json(kept))
        conversation_rows.append((n, session_n, *row))
    if conversation_rows:
        insert_rows(conn, _INSERT_CONVERSATION_HEAD, conversation_rows)
    return list(sessions.items())


def write(conn: sqlite3.Connection, rows: Rows, cache: SeenCache) -> Written:
    """
    Store prepared rows; the caller holds a write transaction.

    Ratings go last, so a rating finds the turns of its own batch.

    Returns:
        The seen-sets used, for ``cache.settle`` after the commit (if the
        transaction fails instead, the caller must ``cache.clear()``), and the
        ratings stored and refused.
    """
    touched: Touched = []
    if rows.sessions:
        insert_rows(
            conn,
            _UPSERT_SESSION_HEAD,
            list(rows.sessions.values()),
            _UPSERT_SESSION_TAIL,
        )
    if rows.conversations:
        touched = _insert_conversations(conn, rows.conversations, cache)
    if rows.users:
        insert_rows(
            conn,
            _UPSERT_USER_HEAD,
            [(uid, a, b) for uid, (a, b) in rows.users.items()],
            _UPSERT_USER_TAIL,
        )
    if not rows.feedback:
        return Written(touched, [], [])
    ratings, refused = store_ratings(conn, rows.feedback)
    return Written(touched, ratings, refused)
