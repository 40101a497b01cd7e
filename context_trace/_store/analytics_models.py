"""
The dashboard's read models (:mod:`.analytics`): its constants, the frozen rows
its queries return, and the pure functions that build them.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from context_trace._record import Message

from .ui_index import LATENCY_BUCKETS_PER_DECADE

RANGES: dict[str, float | None] = {
    "24h": 86_400.0,
    "7d": 7 * 86_400.0,
    "30d": 30 * 86_400.0,
    "all": None,
}
USER_SORTS: dict[str, str] = {
    "conversations": "conversations",
    "sessions": "sessions",
    "first_seen": "first_at",
    "last_seen": "last_at",
    "tokens": "prompt_tokens + completion_tokens",
    "rating_up": "rating_up",
    "rating_down": "rating_down",
    "errors": "errors",
    "tool_errors": "tool_errors",
    "user": "user_key",
    # The satisfaction score (context_trace._satisfaction); users with no
    # scored turn sort as fully satisfied.
    "satisfaction": "coalesce(sat.score, 1.0)",
    # Priced when read (see .cost); a user with nothing priced costs 0.
    "cost": "coalesce(user_cost.cost, 0)",
}
_SPARK_DAYS = 14
# The numbers of a user's turns ('' for the turns with no user), from the index:
# the store has no per-user index (see ui_index).
_USER_TURNS = "SELECT n AS un FROM ui_turns WHERE user_key = ?"
_DAY = 86_400.0
# Search snippets: FTS5 marks matches with these control characters (removed
# from the text first), which become <mark> tags once the text is escaped.
_HIT_START, _HIT_END = "\x02", "\x03"
_SNIPPET_WORDS = 24


@dataclass(frozen=True, slots=True)
class DayPoint:
    """One day of the overview charts; ``day`` is a UTC ``YYYY-MM-DD``."""

    day: str
    conversations: int
    active_users: int


@dataclass(frozen=True, slots=True)
class Overview:
    """
    Totals for a time range; latency percentiles are whole ms, None without data.

    ``days`` has one point per UTC day of the range, today last, days without
    turns included (as zeros): ``7d`` is today and the 6 days before it.
    ``errors`` counts failed turns; ``tool_errors`` the turns that answered
    although a tool failed (the agent handled the error), never a failed turn.
    """

    range: str
    conversations: int
    errors: int
    tool_errors: int
    error_rate: float
    latency_p50_ms: int | None
    latency_p95_ms: int | None
    prompt_tokens: int
    completion_tokens: int
    rating_up: int
    rating_down: int
    days: tuple[DayPoint, ...]
    top_users: tuple[tuple[str | None, int], ...]


@dataclass(frozen=True, slots=True)
class UserRow:
    """
    One row of the users table; ``user_id`` None is the turns with no user.

    ``errors`` and ``tool_errors`` as in :class:`Overview`.
    """

    user_id: str | None
    conversations: int
    sessions: int
    first_seen: float | None
    last_seen: float | None
    latency_p50_ms: int | None
    prompt_tokens: int
    completion_tokens: int
    rating_up: int
    rating_down: int
    errors: int
    tool_errors: int
    activity: tuple[int, ...]
    satisfaction: float | None = None
    #: US dollars over the user's priced calls (see :mod:`.cost`), and the
    #: calls left unpriced.
    cost: float | None = None
    unpriced_calls: int = 0


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One session in a user's list; ``errors`` and ``tool_errors`` as in :class:`Overview`."""

    session_id: str
    user_id: str | None
    started_at: float
    last_at: float
    turns: int
    errors: int
    tool_errors: int
    rating_up: int
    rating_down: int
    last_message: str | None


@dataclass(frozen=True, slots=True)
class TurnView:
    """
    One turn of a session: its messages, measurements and metadata.

    ``rating`` is the turn's rating (-1, 0 or 1; the last one given wins), None
    if it has none; ``metadata`` is the turn's ``str -> str`` metadata.
    ``tool_error`` is True when a tool failed and the turn still answered; the
    failed tool's message has ``error`` True.
    """

    conversation_id: str
    started_at: float
    latency_ms: int
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None
    tool_error: bool
    messages: tuple[Message, ...]
    metadata: dict[str, str]
    rating: int | None
    #: US dollars over the turn's priced model calls (None: none priced), its
    #: model calls and how many of them are unpriced (see :mod:`.cost`).
    cost: float | None = None
    calls: int = 0
    unpriced_calls: int = 0


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session with its metadata and every turn, in order."""

    session: SessionRow
    metadata: dict[str, str]
    turns: tuple[TurnView, ...]

    @property
    def cost(self) -> float | None:
        """US dollars over the turns' priced calls (None: none priced)."""
        costs = [t.cost for t in self.turns if t.cost is not None]
        return sum(costs) if costs else None

    @property
    def unpriced_calls(self) -> int:
        """The turns' model calls left unpriced."""
        return sum(t.unpriced_calls for t in self.turns)


@dataclass(frozen=True, slots=True)
class ConversationRow:
    """
    One conversation in the searchable list; ``preview`` is its first user text.

    ``snippet`` (a search's rows only) is the passage that matched, as HTML:
    the stored text escaped, each matched word in ``<mark>``. ``tool_error`` as
    in :class:`TurnView`.
    """

    n: int
    conversation_id: str
    user_id: str | None
    session_id: str | None
    started_at: float
    latency_ms: int
    model: str | None
    error: str | None
    tool_error: bool
    preview: str
    snippet: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """
    A page of rows; ``next`` is the cursor (or offset) of the next page, if any.

    ``total`` counts every row that matches (all pages), where the query counts;
    ``total_exact`` is False when it is a lower bound (a search with filters
    counts among its newest word matches only: see ``Analytics.conversations``).
    """

    items: tuple[Any, ...]
    next: str | None
    total: int | None = None
    total_exact: bool = True


def _percentile_from_hist(buckets: Sequence[tuple[int, int]], q: float) -> int | None:
    """A percentile in whole ms from the latency histogram (within about 6%)."""
    total = sum(n for _, n in buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for bucket, n in sorted(buckets):
        seen += n
        if seen >= rank:
            return round(10 ** (bucket / LATENCY_BUCKETS_PER_DECADE))
    return None  # pragma: no cover - the loop always reaches the total


def _percentile(values: Sequence[int], q: float) -> int | None:
    """Nearest-rank percentile of *values* (whole ms, sorted here)."""
    if not values:
        return None
    ordered = sorted(values)
    return int(ordered[max(0, math.ceil(q * len(ordered)) - 1)])


def _day(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def _day_start(day: str) -> float:
    """Epoch seconds of a UTC day's midnight."""
    return float((date.fromisoformat(day) - date(1970, 1, 1)).days * 86_400)


def _days_between(first: str, last: str) -> list[str]:
    """Every UTC day from *first* to *last* (``YYYY-MM-DD``), both included."""
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [
        (start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)
    ]


def _fts_query(text: str) -> str:
    """
    Each word as a quoted FTS5 string: user text never reaches FTS5's syntax.

    FTS5 reads a query only up to a NUL character (an unterminated string
    otherwise); the tokenizer splits words there anyway, so NUL is a space.
    """
    words = text.replace("\x00", " ").split()
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def _search_body(messages: Sequence[Message]) -> str:
    """
    A turn's searchable text: the words the index holds (contents and tool
    inputs), with " · " between messages (a separator, as the index's newline).
    """
    text = " · ".join(f"{m.content} {m.tool_input or ''}" for m in messages)
    return text.replace(_HIT_START, " ").replace(_HIT_END, " ")


def _marked(snippet: str) -> str:
    """Escape a snippet's text, then turn FTS5's match markers into <mark> tags."""
    escaped = html.escape(" ".join(snippet.split()))
    return escaped.replace(_HIT_START, "<mark>").replace(_HIT_END, "</mark>")


def _fill_days(
    points: dict[str, DayPoint], first: str, last: str
) -> tuple[DayPoint, ...]:
    """One point per day from *first* (or the first with data) to *last*."""
    if not first:
        if not points:
            return ()
        first = min(points)
    return tuple(
        points.get(day) or DayPoint(day, 0, 0) for day in _days_between(first, last)
    )


def _metadata(text: str | None) -> dict[str, str]:
    """A stored metadata column as ``str -> str`` ({} when empty or unreadable)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _key(user_id: str | None) -> str:
    return "" if user_id is None else user_id


def _user(key: str) -> str | None:
    return None if key == "" else key


def _preview(messages: Sequence[Message]) -> str:
    """
    The turn's own question: the first of its last run of user messages.

    A turn with no session keeps the history its prompt re-sent before it,
    so the first user message can be an earlier question.
    """
    start = None
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            start = index
        elif start is not None:
            break
    if start is not None:
        return messages[start].content[:160]
    return messages[0].content[:160] if messages else ""


def _overview_of(
    range_: str,
    day_rows: Sequence[Sequence[Any]],
    hist: Sequence[tuple[int, int]],
    top: Sequence[Sequence[Any]],
    first_day: str,
    today: str,
) -> Overview:
    """The overview of daily rows (day, conversations, active users, errors,
    prompt and completion tokens, ratings up and down, tool errors), a latency
    histogram and the top users, for the whole store or a segment."""
    conversations = sum(r[1] for r in day_rows)
    errors = sum(r[3] for r in day_rows)
    return Overview(
        range=range_,
        conversations=conversations,
        errors=errors,
        tool_errors=sum(r[8] for r in day_rows),
        error_rate=errors / conversations if conversations else 0.0,
        latency_p50_ms=_percentile_from_hist(hist, 0.50),
        latency_p95_ms=_percentile_from_hist(hist, 0.95),
        prompt_tokens=sum(r[4] for r in day_rows),
        completion_tokens=sum(r[5] for r in day_rows),
        rating_up=sum(r[6] for r in day_rows),
        rating_down=sum(r[7] for r in day_rows),
        days=_fill_days(
            {r[0]: DayPoint(r[0], r[1], r[2]) for r in day_rows if r[1]},
            first_day,
            today,
        ),
        top_users=tuple((_user(k), n) for k, n in top),
    )
