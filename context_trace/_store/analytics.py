"""
The dashboard's queries and the frozen read models they return.

:class:`Analytics` opens a store read-only (``mode=ro``) and answers every
question ``context-trace ui`` asks: an overview for a time range, the users
table, a user's sessions, a session's turns, and a filtered, searchable list of
conversations. Totals, per-user lists and full-text search come from the
dashboard's sidecar index (see :mod:`.ui_index`), attached read-only as ``ui``;
transcripts and sessions come from the store itself.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta, tzinfo
from pathlib import Path
from typing import Any

from context_trace._record import Message
from context_trace._store.codec import messages_from_json as _messages_from_json
from context_trace._store.codec import tool_error_sql as _tool_error_sql

from . import cost as _cost
from . import segments as _segments
from .connection import read_uri
from .retention import Retention, WeekCount
from .retention import retention as _retention
from .retention import retention_of_turns as _retention_of_turns
from .retention import user_activity as _user_activity
from .segments import Segment
from .ui_index import FTS_TOKENIZE, LATENCY_BUCKETS_PER_DECADE, default_index_path

__all__ = [
    "RANGES",
    "SEARCH_COUNT_LIMIT",
    "USER_SORTS",
    "Analytics",
    "ConversationRow",
    "DayPoint",
    "Overview",
    "Page",
    "SessionRow",
    "SessionView",
    "TurnView",
    "UserRow",
]

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
# A search with filters on the turns' columns counts among this many of its
# newest word matches at most (each costs a row read): a bounded cost per page.
SEARCH_COUNT_LIMIT = 5_000


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


class Analytics:
    """
    Read-only dashboard queries over one store; use one instance per thread.

    Args:
        path: The store.
        index: Its dashboard index, built by :class:`.ui_index.UIIndex`
            (default: :func:`.ui_index.default_index_path`).
        now: Epoch seconds to use as "now" for time ranges (default: the clock).
        prices: Price overrides for the cost figures (see
            :func:`context_trace.analytics.pricing.check_prices`), or a
            :class:`~context_trace.analytics.pricing.Pricer` to share (its
            prices are looked up once for every request of a dashboard).

    Raises:
        FileNotFoundError: If *path* does not exist.
        ValueError: If *index* has not been built.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        index: str | os.PathLike[str] | None = None,
        now: float | None = None,
        prices: Any = None,
    ) -> None:
        self._prices = prices
        self._pricer: Any = None
        if prices is not None and hasattr(prices, "price"):  # a Pricer
            self._prices, self._pricer = None, prices
        if not os.path.exists(path):
            raise FileNotFoundError(f"no context_trace database at {path}")
        index_path = Path(index) if index is not None else default_index_path(path)
        self._conn = sqlite3.connect(read_uri(path), uri=True, timeout=10.0)
        self._now = now
        try:
            if not index_path.exists():
                raise ValueError(
                    f"no dashboard index at {index_path}: build it with"
                    " context_trace._store.ui_index.UIIndex (context-trace ui does)"
                )
            self._conn.execute(
                "ATTACH DATABASE ? AS ui",
                (index_path.absolute().as_uri() + "?mode=ro",),
            )
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def attach_topics(self, path: str | os.PathLike[str]) -> None:
        """Read each turn's topic (``conversations(topic=...)``) from this file."""
        self._conn.execute(
            "ATTACH DATABASE ? AS topics",
            (Path(path).absolute().as_uri() + "?mode=ro",),
        )

    def __enter__(self) -> Analytics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def _clock(self) -> float:
        return time.time() if self._now is None else self._now

    def _since(self, range_: str) -> float | None:
        span = RANGES[range_]
        if span is None:
            return None
        return self._clock() - span

    # --- overview -------------------------------------------------------------

    def overview(self, range_: str = "7d", segment: Segment = ()) -> Overview:
        """
        Totals, percentiles, ratings, daily series and top users for a range.

        ``24h`` is computed from the turns themselves (exact percentiles); the
        longer ranges from the per-day summaries, whole UTC days, with
        percentiles from the latency histogram (within about 6%). With a
        *segment* (see :mod:`.segments`), only its turns and their ratings,
        the percentiles from the histogram for every range.
        """
        since = self._since(range_)
        if segment:
            return self._overview_segment(range_, since, segment)
        if range_ == "24h" and since is not None:
            return self._overview_raw(range_, since)
        today = _day(self._clock())
        span = RANGES[range_]
        # N whole days, today included: today minus N - 1 days.
        first_day = "" if span is None else _day(self._clock() - span + _DAY)
        day_rows = self._rows(
            "SELECT day, conversations, active_users, errors, prompt_tokens,"
            " completion_tokens, rating_up, rating_down, tool_errors FROM ui_day_stats"
            " WHERE day >= ? ORDER BY day",
            (first_day,),
        )
        hist = self._rows(
            "SELECT bucket, sum(n) FROM ui_latency_hist WHERE day >= ? GROUP BY bucket",
            (first_day,),
        )
        if since is None:
            top = self._rows(
                "SELECT user_key, conversations FROM ui_user_stats"
                " WHERE conversations > 0 ORDER BY conversations DESC, user_key LIMIT 10"
            )
        else:
            top = self._rows(
                "SELECT user_key, sum(conversations) AS c FROM ui_user_day"
                " WHERE day >= ?"
                " GROUP BY user_key ORDER BY c DESC, user_key LIMIT 10",
                (first_day,),
            )
        return _overview_of(range_, day_rows, hist, top, first_day, today)

    def _overview_segment(
        self, range_: str, since: float | None, segment: Segment
    ) -> Overview:
        first_day, whole = self._segment_days(range_, since)
        if whole is not None:  # whole days: from the first one's midnight, or all
            since = _day_start(whole) if whole else None
        day_rows, hist, top = _segments.overview_rows(self._conn, segment, since, whole)
        return _overview_of(range_, day_rows, hist, top, first_day, _day(self._clock()))

    def _segment_days(self, range_: str, since: float | None) -> tuple[str, str | None]:
        """
        (the first day shown, the first whole day read or None): ``24h`` reads
        the turns since then; longer ranges whole UTC days (``""``: all).
        """
        if range_ == "24h" and since is not None:
            return _day(since), None
        span = RANGES[range_]
        first_day = "" if span is None else _day(self._clock() - span + _DAY)
        return first_day, first_day

    def segments(self, top: int = 20) -> dict[str, list[Any]]:
        """Each metadata key the turns carry -> its *top* values ``[value, turns]``."""
        return _segments.segment_keys(self._conn, top)

    def compare(
        self, a: Segment, b: Segment, range_: str = "all"
    ) -> _segments.Comparison:
        """Segments *a* and *b* side by side (see :func:`.segments.compare`)."""
        if range_ not in RANGES:
            raise ValueError(f"range must be one of {list(RANGES)}, got {range_!r}")
        since = self._since(range_)
        _, whole = self._segment_days(range_, since)
        result = _segments.compare(
            self._conn, a, b, since if whole is None else None, whole,
            date.fromisoformat(_day(self._clock())),
        )  # fmt: skip
        return dataclasses.replace(
            result,
            a=self._with_cost(result.a, a, range_),
            b=self._with_cost(result.b, b, range_),
        )

    def _with_cost(
        self, figures: _segments.SegmentFigures | None, segment: Segment, range_: str
    ) -> _segments.SegmentFigures | None:
        """*figures* with their cost per conversation (priced when read)."""
        if figures is None:
            return None
        turns = figures.conversations.count
        cost = self.cost("model", range_, segment).total.cost
        return dataclasses.replace(
            figures,
            cost_per_conversation=_segments.Figure(
                cost / turns if turns else None, turns
            ),
        )

    def _overview_raw(self, range_: str, since: float) -> Overview:
        rows = self._rows(
            "SELECT date(started_at, 'unixepoch'), coalesce(user_id, ''), latency_ms,"
            " error IS NOT NULL, coalesce(prompt_tokens, 0),"
            " coalesce(completion_tokens, 0), "
            f"{_tool_error_sql()} FROM conversations WHERE started_at >= ?",
            (since,),
        )
        ratings = self._rows(
            "SELECT coalesce(sum(rating > 0), 0), coalesce(sum(rating < 0), 0)"
            " FROM feedback WHERE created_at >= ?",
            (since,),
        )[0]
        per_day: dict[str, tuple[int, set[str]]] = {}
        per_user: dict[str, int] = {}
        for day, key, *_ in rows:
            count, users = per_day.setdefault(day, (0, set()))
            users.add(key)
            per_day[day] = (count + 1, users)
            per_user[key] = per_user.get(key, 0) + 1
        errors = sum(r[3] for r in rows)
        latencies = [r[2] for r in rows]
        top = sorted(per_user.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        return Overview(
            range=range_,
            conversations=len(rows),
            errors=errors,
            tool_errors=sum(r[6] for r in rows),
            error_rate=errors / len(rows) if rows else 0.0,
            latency_p50_ms=_percentile(latencies, 0.50),
            latency_p95_ms=_percentile(latencies, 0.95),
            prompt_tokens=sum(r[4] for r in rows),
            completion_tokens=sum(r[5] for r in rows),
            rating_up=int(ratings[0]),
            rating_down=int(ratings[1]),
            days=_fill_days(
                {d: DayPoint(d, n, len(users)) for d, (n, users) in per_day.items()},
                _day(since),
                _day(self._clock()),
            ),
            top_users=tuple((_user(k), n) for k, n in top),
        )

    # --- cost -----------------------------------------------------------------

    @property
    def pricer(self) -> Any:
        """The :class:`~context_trace.analytics.pricing.Pricer` (made once)."""
        if self._pricer is None:
            from context_trace.analytics.pricing import Pricer

            self._pricer = Pricer(self._prices)
        return self._pricer

    def _has_topics(self) -> bool:
        return any(r[1] == "topics" for r in self._rows("PRAGMA database_list"))

    def use_prices(self, prices: Any) -> None:
        """Price with these overrides from now on (None: genai-prices alone)."""
        self._prices = prices
        self._pricer = None

    def cost(
        self,
        by: str = "model",
        range_: str = "all",
        segment: Segment = (),
        *,
        since_day: date | None = None,
        limit: int | None = None,
    ) -> _cost.CostReport:
        """
        Cost of the turns in a range (or whole UTC days from *since_day*) and
        a segment, grouped *by* model, user, day or session: see :mod:`.cost`.

        Raises:
            ValueError: For an unknown *by* or *range_*.
        """
        if range_ not in RANGES:
            raise ValueError(f"range must be one of {list(RANGES)}, got {range_!r}")
        if by == "topic" and not self._has_topics():
            raise ValueError(
                "by topic needs the store's topics (the analytics extra builds them:"
                " context-trace topics, or the dashboard)"
            )
        whole: str | None
        since: float | None
        if since_day is not None:
            since, whole = None, since_day.isoformat()
            range_ = f"since {whole}"
        else:
            since = self._since(range_)
            _, whole = self._segment_days(range_, since)
        return _cost.cost_report(
            self._conn, self.pricer, by=by, range_=range_, segment=segment,
            since=since if whole is None else None, first_day=whole, limit=limit,
            segment_source=lambda epoch: _segments._source(segment, epoch),
        )  # fmt: skip

    # --- retention ------------------------------------------------------------

    def retention(
        self,
        *,
        weeks: int = 8,
        since: date | None = None,
        segment: Segment = (),
        tz: tzinfo | None = None,
    ) -> Retention:
        """
        Active users, cohorts and churn: see :func:`.retention.retention`.

        With a *segment*, only its turns count (a user's first conversation is
        their first in it); with a time zone *tz* (default UTC), days and weeks
        are its own. Either reads the turns (:func:`.retention.retention_of_turns`).
        """
        if not segment and tz is None:
            return _retention(self._conn, now=self._clock(), weeks=weeks, since=since)
        if segment:
            source, params = _segments._source(segment, None)
            sql = f"SELECT user_key, started_at FROM ({source}) WHERE user_key != ''"
        else:
            sql, params = (
                "SELECT user_id, started_at FROM conversations"
                " WHERE user_id IS NOT NULL",
                [],
            )
        return _retention_of_turns(
            self._conn.execute(sql, params),
            now=self._clock(), weeks=weeks, since=since, tz=tz,
        )  # fmt: skip

    def user_activity(
        self, user_id: str | None, weeks: int = 26
    ) -> tuple[WeekCount, ...]:
        """A user's conversations per ISO week (None: the turns with no user)."""
        return _user_activity(self._conn, _key(user_id), now=self._clock(), weeks=weeks)

    # --- users ----------------------------------------------------------------

    def users(
        self,
        *,
        search: str = "",
        sort: str = "last_seen",
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
        range_: str = "all",
        segment: Segment = (),
    ) -> Page:
        """
        A page of the users table, the no-user row included (as ``user_id`` None).

        With *range_*, only the users with a turn in it; with *segment*, only
        the users with a turn in it (see :mod:`.segments`). Their figures are
        their totals all the same.

        Raises:
            ValueError: For an unknown *sort* or *range_*.
        """
        if sort not in USER_SORTS:
            raise ValueError(f"sort must be one of {sorted(USER_SORTS)}, got {sort!r}")
        if range_ not in RANGES:
            raise ValueError(f"range must be one of {list(RANGES)}, got {range_!r}")
        conds: list[str] = []
        params: list[Any] = []
        if search:
            escaped = (
                search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            )
            conds.append("user_key LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        since = self._since(range_)
        if since is not None:
            conds.append("last_at >= ?")
            params.append(since)
        if segment:
            cond, values = _segments.segment_users(segment, "ui_user_stats.user_key")
            conds.append(cond)
            params += values
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        order = "DESC" if descending else "ASC"
        total = self._rows(f"SELECT count(*) FROM ui_user_stats{where}", params)[0][0]
        scores, cutoff = self._satisfaction_scores()
        prices, price_params, _ = _cost.price_table(self._conn, self.pricer)
        if sort == "cost":  # every user priced, to sort them
            scores += f", {prices}, {_cost.user_costs_sql()}"
            cutoff = [*cutoff, *price_params]
            join = " LEFT JOIN user_cost USING (user_key)"
        else:
            join = ""
        rows = self._rows(
            f"{scores} SELECT user_key, conversations, sessions, first_at, last_at,"
            " prompt_tokens, completion_tokens, rating_up, rating_down, errors,"
            " tool_errors, sat.score FROM ui_user_stats"
            f" LEFT JOIN sat USING (user_key){join}{where}"
            f" ORDER BY {USER_SORTS[sort]} {order}, user_key LIMIT ? OFFSET ?",
            [*cutoff, *params, limit + 1, offset],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        keys = [r[0] for r in rows]
        now = time.time() if self._now is None else self._now
        days = [
            time.strftime("%Y-%m-%d", time.gmtime(now - i * _DAY))
            for i in range(_SPARK_DAYS - 1, -1, -1)
        ]
        activity: dict[str, dict[str, int]] = {k: {} for k in keys}
        costs = self._user_costs(keys, prices, price_params)
        if keys:
            # Point lookups (day, user) in the (day, user_key) primary key.
            marks = ",".join("?" * len(keys))
            day_marks = ",".join("?" * len(days))
            for key, day, count in self._rows(
                "SELECT user_key, day, conversations FROM ui_user_day"
                f" WHERE day IN ({day_marks}) AND user_key IN ({marks})",
                [*days, *keys],
            ):
                activity[key][day] = count
        items = tuple(
            UserRow(
                user_id=_user(r[0]),
                conversations=r[1],
                sessions=r[2],
                first_seen=r[3],
                last_seen=r[4],
                latency_p50_ms=self._user_p50(r[0]),
                prompt_tokens=r[5],
                completion_tokens=r[6],
                rating_up=r[7],
                rating_down=r[8],
                errors=r[9],
                tool_errors=r[10],
                activity=tuple(activity[r[0]].get(d, 0) for d in days),
                satisfaction=r[11],
                cost=costs.get(r[0], (None, 0))[0],
                unpriced_calls=costs.get(r[0], (None, 0))[1],
            )
            for r in rows
        )
        return Page(items, str(offset + limit) if more else None, total)

    def _user_costs(
        self, keys: Sequence[str], prices: str, params: Sequence[Any]
    ) -> dict[str, tuple[float | None, int]]:
        """(cost, unpriced calls) of these users, by key (see :mod:`.cost`)."""
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        return {
            key: (cost if priced else None, int(unpriced))
            for key, cost, priced, unpriced in self._rows(
                f"WITH {prices} SELECT x.user_key, total({_cost.COST_SQL}),"
                " count(p.model), sum(" + _cost.UNPRICED_SQL + ")"
                " FROM ui_cost_user x LEFT JOIN price p ON p.model = x.model"
                f" WHERE x.user_key IN ({marks}) GROUP BY x.user_key",
                [*params, *keys],
            )
        }

    def _user_p50(self, key: str) -> int | None:
        values = self._rows(
            "SELECT latency_ms FROM ui_turns WHERE user_key = ?", (key,)
        )
        return _percentile([v[0] for v in values], 0.5)

    def user(self, user_id: str | None) -> UserRow | None:
        """One user's row (None: the no-user row), or None if unknown."""
        key = _key(user_id)
        rows = self._rows(
            "SELECT user_key, conversations, sessions, first_at, last_at,"
            " prompt_tokens, completion_tokens, rating_up, rating_down, errors,"
            " tool_errors FROM ui_user_stats WHERE user_key = ?",
            (key,),
        )
        if not rows:
            return None
        r = rows[0]
        prices, price_params, _ = _cost.price_table(self._conn, self.pricer)
        cost, unpriced = self._user_costs([key], prices, price_params).get(
            key, (None, 0)
        )
        return UserRow(
            _user(r[0]), r[1], r[2], r[3], r[4], self._user_p50(key),
            r[5], r[6], r[7], r[8], r[9], r[10], (), None, cost, unpriced,
        )  # fmt: skip

    # --- sessions -------------------------------------------------------------

    def sessions(
        self, user_id: str | None, *, before: float | None = None, limit: int = 50
    ) -> Page:
        """A user's sessions, most recently active first; *before* is a ``last_at`` cursor."""
        cond = "u.user_key = ?"
        params: list[Any] = [_key(user_id)]
        if before is not None:
            cond += " AND u.last_at < ?"
            params.append(before)
        rows = self._rows(
            "SELECT s.n, s.id, s.user_id, s.started_at, s.last_at, s.rating_up,"
            " s.rating_down, u.last_at FROM ui_sessions u"
            f" JOIN sessions s ON s.n = u.n WHERE {cond}"
            " ORDER BY u.last_at DESC LIMIT ?",
            [*params, limit + 1],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        items = tuple(self._session_row(r) for r in rows)
        return Page(items, repr(rows[-1][7]) if more and rows else None)

    def _session_row(self, r: Sequence[Any]) -> SessionRow:
        turns, errors, tool_errors, last = self._rows(
            "SELECT count(*), coalesce(sum(error IS NOT NULL), 0),"
            f" coalesce(sum({_tool_error_sql()}), 0),"
            " (SELECT messages_json FROM conversations WHERE session_n = ?1"
            "  ORDER BY started_at DESC, n DESC LIMIT 1)"
            " FROM conversations WHERE session_n = ?1",
            (r[0],),
        )[0]
        messages = _messages_from_json(last) if last else []
        return SessionRow(
            session_id=r[1],
            user_id=r[2],
            started_at=r[3],
            last_at=r[4],
            turns=turns,
            errors=errors,
            tool_errors=tool_errors,
            rating_up=r[5],
            rating_down=r[6],
            last_message=messages[-1].content[:200] if messages else None,
        )

    def session(self, session_id: str) -> SessionView | None:
        """A session with its turns in order, or None if unknown."""
        rows = self._rows(
            "SELECT n, id, user_id, started_at, last_at, rating_up, rating_down,"
            " metadata FROM sessions WHERE id = ?",
            (session_id,),
        )
        if not rows:
            return None
        turns = self._rows(
            "SELECT id, started_at, latency_ms, model, prompt_tokens,"
            " completion_tokens, error, messages_json, metadata,"
            f" {_tool_error_sql()} FROM conversations"
            " WHERE session_n = ? ORDER BY started_at, n",
            (rows[0][0],),
        )
        # Each turn's ratings in the order given: the last one wins.
        ratings = dict(
            self._rows(
                "SELECT conversation_id, rating FROM feedback WHERE session_id = ?"
                " AND conversation_id IS NOT NULL ORDER BY created_at, id",
                (session_id,),
            )
        )
        pricer = self.pricer
        views = []
        for t in turns:
            metadata = _metadata(t[8])
            cost, calls, unpriced = _cost.turn_cost(pricer, t[3], t[4], t[5], metadata)
            views.append(
                TurnView(t[0], t[1], t[2], t[3], t[4], t[5], t[6], bool(t[9]),
                         tuple(_messages_from_json(t[7])), metadata,
                         ratings.get(t[0]), cost, calls, unpriced)
            )  # fmt: skip
        return SessionView(
            self._session_row(rows[0]), _metadata(rows[0][7]), tuple(views)
        )

    # --- conversations --------------------------------------------------------

    def models(self) -> list[str]:
        """Every model name seen, for the filter."""
        return [r[0] for r in self._rows("SELECT model FROM ui_models ORDER BY model")]

    def conversations(
        self,
        *,
        search: str = "",
        user_id: str | None = None,
        anonymous: bool = False,
        rating: str | None = None,
        errors_only: bool = False,
        tool_errors_only: bool = False,
        model: str | None = None,
        range_: str = "all",
        before: int | None = None,
        limit: int = 50,
        topic: str | None = None,
        segment: Segment = (),
    ) -> Page:
        """
        Conversations, newest first, filtered; *before* is the ``n`` cursor.

        Args:
            search: Words that must all appear in the turn's messages (FTS5).
                With words, the page counts the matches (``total``) and each
                row carries its marked ``snippet``. With *rating*,
                *errors_only*, *model* or a *range_* as well, only the newest
                :data:`SEARCH_COUNT_LIMIT` turns holding the words are
                counted; when there are more, ``total_exact`` is False.
            user_id: Only this user's turns; *anonymous* for the turns with none.
            rating: ``"up"`` or ``"down"``: only the turns rated so.
            errors_only: Only failed turns.
            tool_errors_only: Only turns that answered although a tool failed.
            model: Only this model's turns.
            range_: A key of :data:`RANGES`.
            topic: Only the turns of this topic (needs :meth:`attach_topics`).
            segment: Only the turns with these metadata values (see
                :mod:`.segments`); counted as *rating* is, with words.

        Raises:
            ValueError: For an unknown *rating* or *range_*.
        """
        if rating not in (None, "up", "down"):
            raise ValueError(f"rating must be 'up' or 'down', got {rating!r}")
        if range_ not in RANGES:
            raise ValueError(f"range must be one of {list(RANGES)}, got {range_!r}")
        conds: list[str] = []
        params: list[Any] = []
        source = "conversations c"
        order = "c.n"
        query = _fts_query(search)
        if query:
            # The FTS table drives the loop in descending rowid order, so the
            # first page of a common word stops after `limit` matches.
            source = "conversations_fts f JOIN conversations c ON c.n = f.rowid"
            order = "f.rowid"
            conds.append("conversations_fts MATCH ?")
            params.append(query)
            if user_id is not None or anonymous:
                conds.append(f"f.rowid IN ({_USER_TURNS})")
                params.append("" if anonymous else user_id)
        elif user_id is not None or anonymous:
            source = "ui_turns u JOIN conversations c ON c.n = u.n"
            order = "u.n"
            conds.append("u.user_key = ?")
            params.append("" if anonymous else user_id)
        elif topic is not None:
            # The topic's turns drive the loop, newest first (its index).
            source = "topics.topic_turns tt JOIN conversations c ON c.n = tt.n"
            order = "tt.n"
            conds.append("tt.topic_id = ?")
            params.append(topic)
            topic = None
        elif segment:
            # The segment's first value drives the loop, newest first.
            source = "ui_segment_turn m JOIN conversations c ON c.n = m.n"
            order = "m.n"
            conds.append("m.key = ? AND m.value = ?")
            params += segment[0]
            segment = segment[1:]
        # The conditions before this point read the index; the ones after, the
        # turn's own row (see _count_matches).
        index_conds, index_params = len(conds), len(params)
        if rating is not None:
            sign = ">" if rating == "up" else "<"
            conds.append(
                f"c.id IN (SELECT conversation_id FROM feedback WHERE rating {sign} 0)"
            )
        if errors_only:
            conds.append("c.error IS NOT NULL")
        if tool_errors_only:
            conds.append(_tool_error_sql("c"))
        if model:
            conds.append("c.model = ?")
            params.append(model)
        if topic is not None:
            # A point lookup per turn: never the topic's whole list of turns.
            conds.append("(SELECT topic_id FROM topics.topic_turns WHERE n = c.n) = ?")
            params.append(topic)
        if segment:
            cond, values = _segments.segment_turns(segment, "c.n")
            conds.append(cond)
            params += values
        since = self._since(range_)
        if since is not None:
            conds.append("c.started_at >= ?")
            params.append(since)
        total, exact = None, True
        if query:
            # The number of matches, every page: the conditions but the cursor.
            total, exact = self._count_matches(
                (conds[:index_conds], params[:index_params]),
                (conds[index_conds:], params[index_params:]),
            )
        if before is not None:
            conds.append(f"{order} < ?")
            params.append(before)
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        rows = self._rows(
            "SELECT c.n, c.id, c.user_id, c.session_id, c.started_at, c.latency_ms,"
            f" c.model, c.error, c.messages_json, {_tool_error_sql('c')}"
            f" FROM {source}{where}"
            f" ORDER BY {order} DESC LIMIT ?",
            [*params, limit + 1],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        messages = {r[0]: _messages_from_json(r[8]) for r in rows}
        snippets = self._snippets(query, messages) if query else {}
        items = tuple(
            ConversationRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7],
                            bool(r[9]), _preview(messages[r[0]]),
                            snippets.get(r[0]))
            for r in rows
        )  # fmt: skip
        return Page(items, str(items[-1].n) if more and items else None, total, exact)

    def _count_matches(
        self,
        index: tuple[list[str], list[Any]],
        turn: tuple[list[str], list[Any]],
    ) -> tuple[int, bool]:
        """
        (matches, exact) of a search: *index* conditions (the words, the user)
        are answered by the sidecar; *turn* conditions need each match's row.

        Without turn conditions the FTS index counts alone, exactly and fast.
        With them, only the newest :data:`SEARCH_COUNT_LIMIT` word matches are
        read, so the cost does not grow with the store; past that the count is
        a lower bound, and *exact* is False.
        """
        where = " AND ".join(index[0])
        hits = self._rows(
            f"SELECT count(*) FROM conversations_fts f WHERE {where}", index[1]
        )[0][0]
        if not turn[0]:
            return hits, True
        total = self._rows(
            "SELECT count(*) FROM (SELECT f.rowid AS n FROM conversations_fts f"
            f" WHERE {where} ORDER BY f.rowid DESC LIMIT ?) h"
            f" JOIN conversations c ON c.n = h.n WHERE {' AND '.join(turn[0])}",
            [*index[1], SEARCH_COUNT_LIMIT, *turn[1]],
        )[0][0]
        return total, hits <= SEARCH_COUNT_LIMIT

    def _snippets(
        self, query: str, messages: dict[int, list[Message]]
    ) -> dict[int, str]:
        """
        The passage of each turn that *query* matched, marked (see ConversationRow).

        The index keeps no text (it is contentless), so FTS5's ``snippet()`` runs
        on a temporary FTS5 table of this page's turns, tokenized as the index
        is: the marked words are exactly the ones the search matched. Temporary
        tables live outside the store, which stays read-only.
        """
        conn = self._conn
        conn.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.snippets USING fts5("
            f"body, tokenize='{FTS_TOKENIZE}')"
        )
        try:
            conn.execute("DELETE FROM temp.snippets")
            conn.executemany(
                "INSERT INTO temp.snippets (rowid, body) VALUES (?, ?)",
                [(n, _search_body(m)) for n, m in messages.items()],
            )
            found = conn.execute(
                "SELECT rowid, snippet(snippets, 0, ?, ?, '…', ?) FROM temp.snippets"
                " WHERE snippets MATCH ?",
                (_HIT_START, _HIT_END, _SNIPPET_WORDS, query),
            ).fetchall()
        finally:
            conn.commit()  # end the implicit transaction the temporary writes began
        return {n: _marked(text) for n, text in found}

    # --- satisfaction (the rules: context_trace._satisfaction) ----------------

    def _satisfaction_scores(self) -> tuple[str, list[float]]:
        """A ``WITH sat AS (...)`` of the users' scores, and its parameters."""
        from context_trace import _satisfaction

        has = self._rows("SELECT 1 FROM ui.sqlite_master WHERE name = 'sat_users'")
        if not has:
            return "WITH sat (user_key, score) AS (SELECT NULL, NULL)", []
        cutoff = self._clock() - _satisfaction.IDLE_GAP
        return f"WITH sat AS ({_satisfaction.USER_SCORES_SQL})", [cutoff]

    def satisfaction(
        self,
        range_: str = "all",
        user_id: str | None = None,
        session_id: str | None = None,
    ) -> Any:
        """The satisfaction report of the turns in *range_* (of one user or session)."""
        from context_trace import _satisfaction

        return _satisfaction.analyze_index(
            self._conn,
            since=self._since(range_),
            user=None if user_id is None else _key(user_id),
            session=session_id,
            now=self._clock(),
            index="ui",
            store="main",
        )

    def unhappy_users(
        self, limit: int = 10, min_turns: int | None = None, evidence: int = 5
    ) -> list[dict[str, Any]]:
        """
        All time, the users :meth:`.Report.unhappy` lists, from the per-user
        totals kept in the index (no turn is re-read): each as ``{key, score,
        turns, flagged_turns, evidence: [{session_id, turn, conversation_id,
        reasons}]}``, the evidence being their worst turns by their own signals.
        """
        from context_trace import _satisfaction

        least = _satisfaction.MIN_TURNS if min_turns is None else min_turns
        scores, cutoff = self._satisfaction_scores()
        rows = self._rows(
            f"{scores} SELECT sat.user_key, sat.score, u.turns FROM sat"
            " JOIN ui.sat_users u USING (user_key)"
            " WHERE sat.user_key != '' AND u.turns >= ? AND sat.score < 1.0"
            " ORDER BY sat.score, sat.user_key LIMIT ?",
            [*cutoff, least, limit],
        )
        out = []
        for key, score, turns in rows:
            flagged = self._rows(
                "SELECT count(*) FROM ui.sat_turns WHERE user_key = ? AND penalty > 0",
                (key,),
            )[0][0]
            out.append(
                {
                    "key": key,
                    "score": round(score, 3),
                    "turns": turns,
                    "flagged_turns": flagged,
                    "evidence": self.user_flagged(key, evidence),
                }
            )
        return out

    def user_flagged(self, user_id: str | None, limit: int = 5) -> list[dict[str, Any]]:
        """
        A user's worst turns by their own signals: ``{session_id, turn,
        conversation_id, reasons}``, ``turn`` being its place in its session.
        """
        rows = self._rows(
            "SELECT c.id, s.id, t.position, t.signals FROM ui.sat_turns t"
            " JOIN main.conversations c ON c.n = t.n"
            " LEFT JOIN main.sessions s ON s.n = t.session_n"
            " WHERE t.user_key = ? AND t.penalty > 0"
            " ORDER BY t.penalty DESC, t.n DESC LIMIT ?",
            (_key(user_id), limit),
        )
        return [
            {"session_id": sid, "turn": position, "conversation_id": cid,
             "reasons": [r for _, r in json.loads(signals)]}
            for cid, sid, position, signals in rows
        ]  # fmt: skip

    def unhappy_count(self, min_turns: int | None = None) -> int:
        """How many users :meth:`unhappy_users` would list with no limit."""
        from context_trace import _satisfaction

        least = _satisfaction.MIN_TURNS if min_turns is None else min_turns
        if not self._rows("SELECT 1 FROM ui.sqlite_master WHERE name = 'sat_users'"):
            return 0
        # A user's score is below 1 exactly when one of their turns has a
        # signal of its own (each weighs at least 0.3, more than a 👍 gives
        # back) or was last rated 👎 ("the session ended" only follows a turn
        # that failed or did not answer): no per-user score is computed.
        return int(
            self._rows(
                "WITH rated AS (SELECT c.n AS n, f.rating AS rating,"
                " max(f.created_at) FROM main.feedback f JOIN main.conversations c"
                " ON c.id = f.conversation_id WHERE f.rating != 0 GROUP BY c.n)"
                " SELECT count(*) FROM ui.sat_users u WHERE u.user_key != ''"
                " AND u.turns >= ? AND (u.score_sum < u.turns - 1e-9 OR u.user_key IN"
                " (SELECT t.user_key FROM rated r JOIN ui.sat_turns t ON t.n = r.n"
                " WHERE r.rating < 0))",
                (least,),
            )[0][0]
        )

    def topic_flagged(self, topic: str, limit: int = 20) -> list[dict[str, Any]]:
        """
        A topic's flagged turns, worst first (by their own signals; needs
        :meth:`attach_topics`): ``{conversation_id, user_id, session_id, turn,
        started_at, question, reasons}``.
        """
        rows = self._rows(
            "SELECT c.id, c.user_id, s.id, st.position, c.started_at, c.messages_json,"
            " st.signals FROM topics.topic_turns t"
            " JOIN main.conversations c ON c.n = t.n"
            " JOIN ui.sat_turns st ON st.n = t.n"
            " LEFT JOIN main.sessions s ON s.n = t.session_n"
            " WHERE t.topic_id = ? AND t.penalty > 0"
            " ORDER BY t.penalty DESC, t.n DESC LIMIT ?",
            (topic, limit),
        )
        return [
            {"conversation_id": cid, "user_id": uid, "session_id": sid, "turn": pos,
             "started_at": started, "question": _preview(_messages_from_json(text)),
             "reasons": [r for _, r in json.loads(signals)]}
            for cid, uid, sid, pos, started, text, signals in rows
        ]  # fmt: skip


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
