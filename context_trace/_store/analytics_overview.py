"""
The dashboard's overview, segment, cost and retention queries (:mod:`.analytics`).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import date, tzinfo
from typing import Any

from context_trace._store.codec import tool_error_sql as _tool_error_sql

from . import compare_period as _compare_period
from . import cost as _cost
from . import overview_hours as _hours
from . import overview_window as _window
from . import retention_index as _retention_index
from . import segments as _segments
from .analytics_base import _AnalyticsBase
from .analytics_models import (
    _DAY,
    RANGES,
    DayPoint,
    Overview,
    _day,
    _day_start,
    _fill_days,
    _key,
    _overview_of,
    _user,
)
from .retention import Retention, WeekCount
from .retention import retention as _retention
from .retention import retention_of_turns as _retention_of_turns
from .retention import user_activity as _user_activity
from .segments import Segment


def _counted_percentile(counts: dict[int, int], q: float) -> int | None:
    """Nearest-rank percentile of values given with their counts (see _percentile)."""
    total = sum(counts.values())
    if not total:
        return None
    rank = max(0, math.ceil(q * total) - 1)
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen > rank:
            return int(value)
    return None  # pragma: no cover - the loop always reaches the total


class _OverviewQueries(_AnalyticsBase):
    """The overview, segments, comparisons, cost and retention of a store."""

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
            # Kept per range as turns are indexed (see .overview_window).
            top = _window.top_users(self._conn, first_day) or self._rows(
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

    def compare_periods(
        self,
        segment: Segment = (),
        *,
        period: str | None = None,
        a: _compare_period.DayRange | None = None,
        b: _compare_period.DayRange | None = None,
    ) -> _segments.Comparison:
        """
        Two periods of the turns of *segment* (empty: all) side by side: the
        named *period* (``week``: this ISO week so far against the last;
        ``month`` likewise), or the ranges of UTC days *a* and *b*. See
        :mod:`.compare_period`.

        Raises:
            ValueError: For an unknown *period*, neither a period nor both
                ranges, or a segment of more than one condition.
        """
        today = date.fromisoformat(_day(self._clock()))
        if period is not None:
            a, b = _compare_period.period_ranges(period, today)
        if a is None or b is None:
            raise ValueError("give a period, or both ranges a and b")
        result = _compare_period.compare_periods(self._conn, segment, a, b, today)

        def priced(
            figures: _segments.SegmentFigures | None, days: _compare_period.DayRange
        ) -> _segments.SegmentFigures | None:
            if figures is None:
                return None
            report = self.cost("day", "all", segment, since_day=days.first)
            last = days.last.isoformat()
            cost = sum(
                r.cost for r in report.rows if r.key is not None and r.key <= last
            )
            turns = figures.conversations.count
            return dataclasses.replace(
                figures,
                cost_per_conversation=_segments.Figure(
                    cost / turns if turns else None, turns
                ),
            )

        return dataclasses.replace(result, a=priced(result.a, a), b=priced(result.b, b))

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
        # The whole hours from the per-hour sums (see .overview_hours), the
        # turns of the first, partial hour from the store; or all from the
        # store when the sums do not reach back to *since*.
        hours = _hours.hour_rows(self._conn, since)
        until = "" if hours is None else " AND started_at < ?"
        rows = self._rows(
            "SELECT date(started_at, 'unixepoch'), coalesce(user_id, ''), latency_ms,"
            " error IS NOT NULL, coalesce(prompt_tokens, 0),"
            " coalesce(completion_tokens, 0), "
            f"{_tool_error_sql()} FROM conversations WHERE started_at >= ?{until}",
            (since,) if hours is None else (since, -(-since // 3600) * 3600),
        )
        ratings = self._rows(
            "SELECT coalesce(sum(rating > 0), 0), coalesce(sum(rating < 0), 0)"
            " FROM feedback WHERE created_at >= ?",
            (since,),
        )[0]
        # [turns, errors, tool errors, prompt tokens, completion tokens]
        sums = [len(rows), sum(r[3] for r in rows), sum(r[6] for r in rows),
                sum(r[4] for r in rows), sum(r[5] for r in rows)]  # fmt: skip
        per_day: dict[str, tuple[int, set[str]]] = {}
        per_user: dict[str, int] = {}
        counted: list[tuple[str, str, int]] = [(r[0], r[1], 1) for r in rows]
        latencies: dict[int, int] = {}
        for r in rows:
            latencies[r[2]] = latencies.get(r[2], 0) + 1
        if hours is not None:
            for row in hours[0]:
                sums = [a + b for a, b in zip(sums, row[1:], strict=True)]
            for latency, n in hours[1]:
                latencies[latency] = latencies.get(latency, 0) + n
            days = {h: _day(h * 3600) for h in {row[0] for row in hours[0]}}
            counted += [(days[h], key, n) for h, key, n in hours[2]]
        for day, key, n in counted:
            count, users = per_day.setdefault(day, (0, set()))
            users.add(key)
            per_day[day] = (count + n, users)
            per_user[key] = per_user.get(key, 0) + n
        top = sorted(per_user.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        turns, errors = sums[0], sums[1]
        return Overview(
            range=range_,
            conversations=turns,
            errors=errors,
            tool_errors=sums[2],
            error_rate=errors / turns if turns else 0.0,
            latency_p50_ms=_counted_percentile(latencies, 0.50),
            latency_p95_ms=_counted_percentile(latencies, 0.95),
            prompt_tokens=sums[3],
            completion_tokens=sums[4],
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
        are its own. A segment of one condition, in UTC or a zone the index
        keeps (see :mod:`.retention_index`), reads the index's aggregates;
        otherwise the turns (:func:`.retention.retention_of_turns`).
        """
        zone = _retention_index.zone_name(tz)
        if not segment and zone == "UTC":
            return _retention(self._conn, now=self._clock(), weeks=weeks, since=since)
        if (
            zone is not None
            and len(segment) <= 1
            and _retention_index.has_zone(self._conn, zone, "ui")
        ):
            key, value = segment[0] if segment else ("", "")
            return _retention_index.retention_of_index(
                self._conn, zone, key, value,
                now=self._clock(), weeks=weeks, since=since, tz=tz,
            )  # fmt: skip
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
