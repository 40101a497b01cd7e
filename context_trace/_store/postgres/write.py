"""
The PostgreSQL store's writes: :func:`write_batch` inserts a batch of records
in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from context_trace._record import Conversation, Feedback, Record, exported_metadata
from context_trace._store.codec import encode, is_tool_error, messages_json


def _text(value: str | None) -> str | None:
    """PostgreSQL text holds no NUL character: replace it, never fail the batch."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


_TURN_COLUMNS = (
    "id, host, user_id, session_id, started_at, ended_at, latency_ms, model,"
    " prompt_tokens, completion_tokens, total_tokens, error, metadata, messages,"
    " answered, tool_error"
)
# One statement stores a batch of turns and moves the aggregates by the rows
# it inserted: the turns go in with ``ON CONFLICT DO NOTHING``, and only the
# ids that insert returns count towards their session and user (so a batch
# delivered again counts once). A session's user is the first one the batch
# names for it (``n``: the row's place in the batch). Each aggregate's rows are
# locked in id order, by the same plan on every host, so two hosts never
# deadlock on them. The statement answers how many turns were new.
_WRITE_TURNS = (
    "WITH batch AS (SELECT * FROM unnest(%b::text[], %b::text[], %b::text[],"
    " %b::text[], %b::float8[], %b::float8[], %b::float8[], %b::text[], %b::int8[],"
    " %b::int8[], %b::int8[], %b::text[], %b::text[], %b::text[], %b::bool[],"
    f" %b::bool[]) WITH ORDINALITY AS b ({_TURN_COLUMNS}, n)),"
    f" inserted AS (INSERT INTO turns ({_TURN_COLUMNS}) SELECT {_TURN_COLUMNS}"
    " FROM batch ON CONFLICT (id) DO NOTHING RETURNING id),"
    " fresh AS (SELECT batch.user_id, batch.session_id, batch.started_at,"
    " batch.ended_at, batch.n FROM batch JOIN inserted USING (id)),"
    " session_counts AS (INSERT INTO sessions (id, user_id, started_at, last_at,"
    " turns) SELECT session_id,"
    " (array_agg(user_id ORDER BY n) FILTER (WHERE user_id IS NOT NULL))[1],"
    " min(started_at), max(ended_at), count(*) FROM fresh"
    " WHERE session_id IS NOT NULL GROUP BY session_id ORDER BY session_id"
    " ON CONFLICT (id) DO UPDATE SET"
    " user_id = coalesce(sessions.user_id, excluded.user_id),"
    " started_at = least(sessions.started_at, excluded.started_at),"
    " last_at = greatest(sessions.last_at, excluded.last_at),"
    " turns = sessions.turns + excluded.turns),"
    " user_counts AS (INSERT INTO users (id, first_seen, last_seen, turns)"
    " SELECT user_id, min(started_at), max(ended_at), count(*) FROM fresh"
    " WHERE user_id IS NOT NULL GROUP BY user_id ORDER BY user_id"
    " ON CONFLICT (id) DO UPDATE SET"
    " first_seen = least(users.first_seen, excluded.first_seen),"
    " last_seen = greatest(users.last_seen, excluded.last_seen),"
    " turns = users.turns + excluded.turns)"
    " SELECT count(*) FROM fresh"
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
        encode(metadata),
        messages_json(record.messages),
        any(m.role == "assistant" for m in record.messages),
        is_tool_error(record.error, metadata),
    )


def write_batch(conn: Any, batch: Sequence[Record], host: str) -> int:
    """
    Store *batch* in one transaction; return how many turns were new.

    The turns and their aggregates go in one statement (``_WRITE_TURNS``),
    which counts only the turns it inserted, so a batch delivered again (its
    commit's answer lost in a restart) changes nothing.
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
    written = None
    # Pipelined: BEGIN, the statement and COMMIT travel together, so a batch of
    # turns costs one round trip; its answer is read once the pipeline is done.
    with conn.pipeline(), conn.transaction():
        if turns:
            rows = list(turns.values())
            written = conn.execute(_WRITE_TURNS, _columns(rows, 16))
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
    return 0 if written is None else int(written.fetchone()[0])
