"""The frozen read models the store's reader returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from context_trace._record import Message

from .codec import is_tool_error


@dataclass(frozen=True, slots=True)
class UserSummary:
    """
    One row of :meth:`SQLiteReader.users`.

    ``avg_latency_ms`` is None for a user with no recorded turn; ratings are the
    sums over the user's sessions. ``user_id`` is None on the one row that
    totals the turns recorded with no user. ``errors`` counts failed turns;
    ``tool_errors`` the turns that answered although a tool failed (the agent
    handled the tool's error), never a failed turn.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 ``tool_errors``.
    """

    user_id: str | None
    conversations: int
    sessions: int
    last_seen: float
    avg_latency_ms: float | None
    ratings_up: int
    ratings_down: int
    errors: int
    tool_errors: int = 0


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """
    One row of :meth:`SQLiteReader.sessions`; ``turns`` counts its conversations.

    ``errors`` counts its failed turns, ``tool_errors`` its turns that answered
    although a tool failed (as :class:`UserSummary`).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 ``errors`` and ``tool_errors``.
    """

    session_id: str
    user_id: str | None
    started_at: float
    last_at: float
    turns: int
    rating_up: int
    rating_down: int
    errors: int = 0
    tool_errors: int = 0


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
    a session, ``messages`` leave out history already stored for that session;
    a turn with no session keeps the history its input re-sent.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 ``rating``.
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
    #: The turn's rating (-1, 0 or 1; the last one given), None when unrated.
    rating: int | None = None

    @property
    def tool_error(self) -> bool:
        """
        True when a tool failed and the turn still answered (the agent handled it).

        A failed turn (``error`` set) is not a tool error, whatever its tools did.

        .. versionadded:: 0.2.0
        """
        return is_tool_error(self.error, self.metadata)


class Transcript(NamedTuple):
    """
    What :meth:`SQLiteReader.transcript` found: ``(kind, metadata, messages)``.

    .. versionadded:: 0.1.0
    """

    kind: Literal["session", "conversation"]
    metadata: dict[str, Any]
    messages: list[Message]
