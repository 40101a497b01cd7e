"""
The PostgreSQL store's reads: :class:`PostgresReads` (the CLI's) and a
session's transcript, history dropped as the SQLite writer drops it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from context_trace._record import Feedback, Message
from context_trace._store.codec import decode, messages_from_json
from context_trace._store.models import (
    DayStats,
    SessionSummary,
    StoredConversation,
    Transcript,
    UserSummary,
)
from context_trace._store.writer import _Fingerprints, _strip_history

from .connection import _CONNECT_TIMEOUT, StoreUnavailable, check_url, connect, safe_url
from .schema import _applied

# Why the outbox reads refuse a PostgreSQL store.
_NO_OUTBOX = (
    "a PostgreSQL store holds no outbox: each host keeps its own in its local "
    "SQLite file (context-trace outbox --db PATH)"
)


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
    dashboard refuse with a ValueError saying why (the dashboard and the
    analytics read the store's local cache, :mod:`.cache`).

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
        """Refused: the dashboard reads the store's local cache, not these reads."""
        raise ValueError(
            "the dashboard reads a PostgreSQL store through its local cache "
            "(context_trace._store.postgres.cache.PostgresCache, which "
            "'context-trace ui --store' keeps), not through these reads"
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
