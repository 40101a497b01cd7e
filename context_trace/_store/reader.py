"""The read-only queries over a store, returning the read models."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from context_trace._record import Message

from .codec import messages_from_json, tool_error_sql
from .connection import DEFAULT_BUSY_TIMEOUT, open_reader
from .models import (
    DayStats,
    SessionSummary,
    StoredConversation,
    Transcript,
    UserSummary,
)
from .outbox import outbox_counts, outbox_destinations

_READ_PAGE = 500

#: The orders :meth:`SQLiteReader.users` takes, as SQL over its query.
USER_SORTS: dict[str, str] = {
    "last_seen": "u.last_seen DESC",
    "conversations": "coalesce(c.n, 0) DESC",
    "sessions": "coalesce(s.n, 0) DESC",
    "latency": "c.latency IS NULL, c.latency DESC",
    "errors": "coalesce(c.errors, 0) DESC",
    "tool_errors": "coalesce(c.tools, 0) DESC",
    "ratings_up": "coalesce(s.up, 0) DESC",
    "ratings_down": "coalesce(s.down, 0) DESC",
    "user": "u.id ASC",
}

_SELECT_SESSION_MESSAGES = (
    "SELECT c.messages_json FROM sessions s JOIN conversations c"
    " ON c.session_n = s.n WHERE s.id = ? ORDER BY c.started_at, c.n"
)


def read_session_messages(conn: sqlite3.Connection, session_id: str) -> list[Message]:
    """A session's messages in order across its turns, through *conn*."""
    messages: list[Message] = []
    for (text,) in conn.execute(_SELECT_SESSION_MESSAGES, (session_id,)):
        messages.extend(messages_from_json(text))
    return messages


# The turn's rating is found through the feedback table's session index.
_CONVERSATION_COLUMNS = (
    "id, user_id, session_id, started_at, ended_at, latency_ms, model,"
    " prompt_tokens, completion_tokens, total_tokens, error, metadata, n,"
    " messages_json, (SELECT f.rating FROM feedback f"
    "  WHERE f.session_id = conversations.session_id"
    "  AND f.conversation_id = conversations.id"
    "  ORDER BY f.created_at DESC LIMIT 1)"
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
        "rating": row[14],
    }


def _stored(row: Sequence[Any]) -> StoredConversation:
    """A row of ``SELECT {_CONVERSATION_COLUMNS}`` as a read model."""
    return StoredConversation(
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
        messages=tuple(messages_from_json(row[13])),
        rating=row[14],
    )


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
        self._conn = open_reader(self._path, DEFAULT_BUSY_TIMEOUT)

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

    def users(
        self, sort: str = "last_seen", limit: int | None = None
    ) -> list[UserSummary]:
        """
        Per-user totals, most recently seen first (or by *sort*).

        Turns recorded without a user are totalled in one last row whose
        ``user_id`` is None (left out when there are none). It is not a user:
        it comes after the users whatever the order, and *limit* does not
        count it.

        Args:
            sort: A key of :data:`USER_SORTS`: most recently seen first
                (``last_seen``, the default), the most ``conversations``,
                ``sessions``, ``errors``, ``tool_errors``, ``ratings_up`` or
                ``ratings_down`` first, the slowest first (``latency``), or by
                user id (``user``). Ties go by user id.
            limit: At most this many users; None for all.

        Returns:
            One :class:`UserSummary` per known user, then the no-user row.

        Raises:
            ValueError: If the database cannot be read, or for an unknown
                *sort* or a *limit* under 1.

        .. versionadded:: 0.1.0
        .. versionchanged:: 0.2.0 *sort*, *limit* and ``tool_errors``.
        """
        order = USER_SORTS.get(sort)
        if order is None:
            raise ValueError(
                f"sort must be one of {', '.join(USER_SORTS)}, got {sort!r}"
            )
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        rows = self._rows(
            "WITH c AS (SELECT user_id, count(*) AS n, avg(latency_ms) AS latency,"
            f"  sum(error IS NOT NULL) AS errors, sum({tool_error_sql()}) AS tools"
            "  FROM conversations WHERE user_id IS NOT NULL GROUP BY user_id),"
            " s AS (SELECT user_id, count(*) AS n, sum(rating_up) AS up,"
            "  sum(rating_down) AS down FROM sessions"
            "  WHERE user_id IS NOT NULL GROUP BY user_id)"
            " SELECT u.id, coalesce(c.n, 0), coalesce(s.n, 0), u.last_seen, c.latency,"
            "  coalesce(s.up, 0), coalesce(s.down, 0), coalesce(c.errors, 0),"
            "  coalesce(c.tools, 0)"
            " FROM users u LEFT JOIN c ON c.user_id = u.id"
            f" LEFT JOIN s ON s.user_id = u.id ORDER BY {order}, u.id LIMIT ?",
            (-1 if limit is None else limit,),
        )
        summaries = [UserSummary(*row) for row in rows]
        anonymous = self._rows(
            "WITH c AS (SELECT count(*) AS n, avg(latency_ms) AS latency,"
            "  sum(error IS NOT NULL) AS errors, max(ended_at) AS last,"
            f"  sum({tool_error_sql()}) AS tools"
            "  FROM conversations WHERE user_id IS NULL),"
            " s AS (SELECT count(*) AS n, sum(rating_up) AS up,"
            "  sum(rating_down) AS down FROM sessions WHERE user_id IS NULL)"
            " SELECT NULL, c.n, s.n, c.last, c.latency, coalesce(s.up, 0),"
            "  coalesce(s.down, 0), coalesce(c.errors, 0), coalesce(c.tools, 0)"
            " FROM c, s WHERE c.n > 0"
        )
        summaries.extend(UserSummary(*row) for row in anonymous)
        return summaries

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
        .. versionchanged:: 0.2.0 ``errors`` and ``tool_errors``.
        """
        # The page of sessions first, then its counts: each a range of the
        # session index (conversations_session), for the sessions shown only.
        where, params = ("", [limit]) if user_id is None else (
            " WHERE user_id = ?", [user_id, limit]
        )  # fmt: skip
        turns = "FROM conversations c WHERE c.session_n = s.n"
        rows = self._rows(
            f"SELECT s.id, s.user_id, s.started_at, s.last_at, (SELECT count(*) {turns}),"
            " s.rating_up, s.rating_down,"
            f" (SELECT coalesce(sum(c.error IS NOT NULL), 0) {turns}),"
            f" (SELECT coalesce(sum({tool_error_sql('c')}), 0) {turns})"
            f" FROM (SELECT * FROM sessions{where} ORDER BY last_at DESC, id LIMIT ?) s"
            " ORDER BY s.last_at DESC, s.id",
            params,
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
            "conversation", _conversation_metadata(row), messages_from_json(row[13])
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
            return read_session_messages(self._conn, session_id)
        except sqlite3.DatabaseError as exc:
            raise ValueError(
                f"cannot read context_trace database {self._path}: {exc}"
            ) from exc

    def conversation(self, id: str) -> StoredConversation | None:
        """
        One stored turn by its id, or None.

        Raises:
            ValueError: If the database cannot be read.

        .. versionadded:: 0.2.0
        """
        rows = self._rows(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (id,)
        )
        return _stored(rows[0]) if rows else None

    def session_turns(self, session_id: str) -> list[StoredConversation]:
        """
        A session's turns in order (by start time, then position), each whole.

        What :meth:`session_messages` concatenates, turn by turn, with each
        turn's error, model, tokens and metadata: a transcript that shows where
        a turn failed.

        Args:
            session_id: The session.

        Returns:
            The turns; empty for an unknown session.

        Raises:
            ValueError: If the database cannot be read.

        .. versionadded:: 0.2.0
        """
        rows = self._rows(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE session_n ="
            " (SELECT n FROM sessions WHERE id = ?) ORDER BY started_at, n",
            (session_id,),
        )
        return [_stored(row) for row in rows]

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
                yield _stored(row)
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

    def outbox_destinations(self) -> dict[str, dict[str, int]]:
        """
        The outbox per destination: ``waiting`` and ``failed`` rows of each.

        Raises:
            ValueError: If the database cannot be read.

        .. versionadded:: 0.2.0
        """
        try:
            return outbox_destinations(self._conn)
        except sqlite3.DatabaseError as exc:
            raise ValueError(
                f"cannot read context_trace database {self._path}: {exc}"
            ) from exc

    def outbox_counts(self) -> dict[str, int]:
        """
        Outbox state, as :meth:`SQLiteExporter.outbox_counts` reports it.

        Raises:
            ValueError: If the database cannot be read.

        .. versionadded:: 0.1.0
        """
        try:
            return outbox_counts(self._conn)
        except sqlite3.DatabaseError as exc:
            raise ValueError(
                f"cannot read context_trace database {self._path}: {exc}"
            ) from exc
