"""
Two periods side by side: "this week against last week", or any two ranges of
whole UTC days, of every turn or of one segment value.

The figures are :class:`.segments.SegmentFigures`, read from the index's
per-day tables (``ui_day_stats``, ``ui_user_day``, ``ui_latency_hist`` for the
whole store; ``ui_segment_day``, ``ui_segment_user_day``, ``ui_segment_hist``
for a segment value) between the two days, never from the turns. A side's
``segment`` names its days (``days: FIRST..LAST``) and its segment condition.
Shares are compared as :func:`.segments.compare` does (a two-sided
two-proportion z-test, p < 0.05, only with enough of each outcome).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date, timedelta

from .retention import week_of
from .segment_sql import _rated, week1_scan
from .segments import (
    Comparison,
    Figure,
    Segment,
    SegmentFigures,
    _hist_percentile,
    _z_test,
    kept_week1,
    users_between,
)

__all__ = ["PERIODS", "DayRange", "compare_periods", "parse_day_range", "period_ranges"]

#: The named periods: this one (up to today) against the one before.
PERIODS = ("week", "month")
# The longest range of days compared.
_MAX_DAYS = 731


@dataclass(frozen=True, slots=True)
class DayRange:
    """Whole UTC days from ``first`` to ``last``, both included."""

    first: date
    last: date

    def __str__(self) -> str:
        return f"{self.first.isoformat()}..{self.last.isoformat()}"


def parse_day_range(text: str, name: str) -> DayRange:
    """
    ``FIRST..LAST`` (``YYYY-MM-DD``, both included) as a range.

    Raises:
        ValueError: Naming *name*, for another form, a bad day, LAST before
            FIRST, or more than two years.
    """
    first, sep, last = text.partition("..")
    try:
        if not sep:
            raise ValueError
        result = DayRange(date.fromisoformat(first), date.fromisoformat(last))
    except ValueError:
        raise ValueError(
            f"{name} must be FIRST..LAST, days as YYYY-MM-DD, got {text!r}"
        ) from None
    if result.last < result.first:
        raise ValueError(f"{name}: {result.last} is before {result.first}")
    if (result.last - result.first).days >= _MAX_DAYS:
        raise ValueError(f"{name} must cover at most {_MAX_DAYS} days")
    return result


def period_ranges(period: str, today: date) -> tuple[DayRange, DayRange]:
    """
    (this period up to *today*, the whole one before): ``week`` is ISO weeks
    (Monday to Sunday), ``month`` calendar months.

    Raises:
        ValueError: For another *period*.
    """
    if period == "week":
        this = week_of(today)
        return DayRange(this, today), DayRange(
            this - timedelta(days=7), this - timedelta(days=1)
        )
    if period == "month":
        this = today.replace(day=1)
        before = (this - timedelta(days=1)).replace(day=1)
        return DayRange(this, today), DayRange(before, this - timedelta(days=1))
    raise ValueError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")


def _epoch(day: date) -> float:
    return float((day - date(1970, 1, 1)).days * 86_400)


def period_figures(
    conn: sqlite3.Connection, segment: Segment, days: DayRange, today: date
) -> SegmentFigures:
    """
    The figures of the turns on *days* (of one segment value, or all): as
    :func:`.segments.segment_figures`, whose definitions they share; week-1
    retention counts the users first seen on *days* whose following ISO week
    has ended.

    Raises:
        ValueError: If *segment* has more than one condition.
    """
    if len(segment) > 1:
        raise ValueError("comparing periods takes at most one meta condition")
    first, last = days.first.isoformat(), days.last.isoformat()
    start, end = _epoch(days.first), _epoch(days.last + timedelta(days=1))
    if segment:
        scope, head = "key = ? AND value = ? AND ", list(segment[0])
        tables = ("ui_segment_day", "ui_segment_user_day", "ui_segment_hist")
        ratings = "0, 0"
    else:
        scope, head = "", []
        tables = ("ui_day_stats", "ui_user_day", "ui_latency_hist")
        ratings = "coalesce(sum(rating_up), 0), coalesce(sum(rating_down), 0)"
    between = [*head, first, last]
    turns, failed, tokens, up, down = conn.execute(
        "SELECT coalesce(sum(conversations), 0), coalesce(sum(errors), 0),"
        f" coalesce(sum(prompt_tokens + completion_tokens), 0), {ratings}"
        f" FROM {tables[0]} WHERE {scope}day BETWEEN ? AND ?",
        between,
    ).fetchone()
    if segment:
        rated, params = _rated(conn, segment, start)
        up, down = conn.execute(
            "SELECT coalesce(sum(rating > 0), 0), coalesce(sum(rating < 0), 0)"
            f" FROM ({rated}) WHERE created_at < ?",
            [*params, end],
        ).fetchone()
    users = users_between(conn, segment, first, last)
    hist = conn.execute(
        f"SELECT bucket, sum(n) FROM {tables[2]} WHERE {scope}day BETWEEN ? AND ?"
        " GROUP BY bucket",
        between,
    ).fetchall()
    retained, cohort = _week1(conn, segment, start, min(end, _ended(today)))
    rated_n = int(up) + int(down)
    turns = int(turns)
    return SegmentFigures(
        segment={"days": str(days), **dict(segment)},
        users=Figure(users, users),
        conversations=Figure(turns, turns),
        conversations_per_user=Figure(turns / users if users else None, users),
        rating_up_share=Figure(int(up) / rated_n if rated_n else None, rated_n),
        error_rate=Figure(int(failed) / turns if turns else None, turns),
        latency_p50_ms=Figure(_hist_percentile(hist, 0.5), turns),
        latency_p95_ms=Figure(_hist_percentile(hist, 0.95), turns),
        tokens_per_conversation=Figure(int(tokens) / turns if turns else None, turns),
        week1_retention=Figure(retained / cohort if cohort else None, cohort),
    )


def _ended(today: date) -> float:
    """Users first seen before this (epoch) have had their week 1 end."""
    return _epoch(week_of(today) - timedelta(weeks=1))


def _week1(
    conn: sqlite3.Connection, segment: Segment, start: float, end: float
) -> tuple[int, int]:
    """
    (retained, users): the users first seen (ever; with a segment, who had a
    turn in it) from *start* to *end* (epoch), and how many of them were active
    in the ISO week after their first.
    """
    if end <= start:
        return 0, 0
    kept = kept_week1(conn, segment, start, end) if segment else None
    if kept is not None:
        return kept
    return week1_scan(conn, segment, start, end)


def compare_periods(
    conn: sqlite3.Connection,
    segment: Segment,
    a: DayRange,
    b: DayRange,
    today: date,
) -> Comparison:
    """The turns of *segment* (empty: all) on days *a* against days *b*."""
    fa = period_figures(conn, segment, a, today)
    fb = period_figures(conn, segment, b, today)

    def trials(figure: Figure) -> tuple[int, int]:
        return round((figure.value or 0.0) * figure.count), figure.count

    return Comparison(
        fa,
        fb,
        tuple(
            _z_test(name, trials(getattr(fa, name)), trials(getattr(fb, name)))
            for name in ("rating_up_share", "error_rate", "week1_retention")
        ),
    )
