"""
Segments: the turns whose metadata has given values, and two segments compared.

A *segment* is one or more ``key: value`` conditions on a turn's metadata (the
scopes' metadata, e.g. ``track_user(..., metadata={"plan": "pro"})``, the
run's, and the answering ``model``); several conditions must all hold. The
dashboard's sidecar index keeps each turn's metadata values with the turn's
measures (``ui_segment_turn``, see :mod:`.ui_index`), so a segment's figures
are a range scan of the index; the store is read only for ratings (few) and
for the transcripts a page shows.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from .retention import week_of
from .segment_sql import (
    Segment,
    _rated,
    segment_turns,
    segment_users,
    users_between,
    week1_scan,
)
from .ui_index import LATENCY_BUCKETS_PER_DECADE, SEGMENT_VALUE_MAX

__all__ = [
    "MAX_CONDITIONS",
    "MIN_SAMPLE",
    "Comparison",
    "Figure",
    "Segment",
    "SegmentFigures",
    "compare",
    "parse_segment",
    "segment_figures",
    "segment_keys",
    "segment_turns",
    "segment_users",
    "users_between",
]

# Conditions in one segment, at most.
MAX_CONDITIONS = 5
# A difference between two shares is tested only when each side has at least
# this many trials, and this many successes and failures (see compare()).
MIN_SAMPLE = 10
# The two-sided z-test's threshold: |z| >= 1.96 is p < 0.05.
_Z_CRITICAL = 1.959964


def parse_segment(items: Sequence[str], sep: str, name: str) -> Segment:
    """
    ``key<sep>value`` strings as a segment.

    Raises:
        ValueError: Naming *name*, for an item without *sep*, an empty key or
            value, a value longer than ``SEGMENT_VALUE_MAX``, or more than
            :data:`MAX_CONDITIONS` items.
    """
    if len(items) > MAX_CONDITIONS:
        raise ValueError(f"{name} can be given at most {MAX_CONDITIONS} times")
    result = []
    for item in items:
        key, found, value = item.partition(sep)
        if not found or not key or not value:
            raise ValueError(f"{name} must be KEY{sep}VALUE, got {item!r}")
        if len(key) > SEGMENT_VALUE_MAX or len(value) > SEGMENT_VALUE_MAX:
            raise ValueError(
                f"{name}: key and value must be at most {SEGMENT_VALUE_MAX} characters"
            )
        result.append((key, value))
    return tuple(result)


def _source(segment: Segment, since: float | None) -> tuple[str, list[Any]]:
    """
    The segment's turn rows from *since*: its first condition drives, the
    others filter. Turns are numbered in commit order, not time order, so the
    first turn number with ``started_at >= since`` (the store's index on
    ``started_at``) bounds the scan, and the time itself filters.
    """
    (key, value), rest = segment[0], segment[1:]
    sql = "SELECT * FROM ui_segment_turn s WHERE s.key = ? AND s.value = ?"
    params: list[Any] = [key, value]
    if since is not None:
        sql += (
            # min(n + 0): through the started_at index, not a walk of n.
            " AND s.n >= (SELECT coalesce(min(n + 0), 1 << 62) FROM conversations"
            " WHERE started_at >= ?) AND s.started_at >= ?"
        )
        params += [since, since]
    if rest:
        conds, more = segment_turns(rest, "s.n")
        sql += f" AND {conds}"
        params += more
    return sql, params


def _hist_percentile(buckets: Sequence[tuple[int, int]], q: float) -> int | None:
    """A percentile in whole ms from latency buckets (as the overview's)."""
    total = sum(n for _, n in buckets)
    seen = 0
    for bucket, n in sorted(buckets):
        seen += n
        if total and seen >= q * total:
            return round(10 ** (bucket / LATENCY_BUCKETS_PER_DECADE))
    return None


def segment_keys(conn: sqlite3.Connection, top: int = 20) -> dict[str, list[Any]]:
    """Each metadata key the turns carry -> its *top* values ``[value, turns]``."""
    result: dict[str, list[Any]] = {}
    for key, value, count in conn.execute(
        "SELECT key, value, conversations FROM (SELECT key, value, conversations,"
        " row_number() OVER (PARTITION BY key ORDER BY conversations DESC, value)"
        " AS r FROM ui_segments) WHERE r <= ? ORDER BY key, r",
        (top,),
    ):
        result.setdefault(key, []).append([value, count])
    return result


def overview_rows(
    conn: sqlite3.Connection,
    segment: Segment,
    since: float | None,
    first_day: str | None,
    top_users: bool = True,
) -> tuple[list[tuple[Any, ...]], list[tuple[int, int]], list[tuple[str, int]]]:
    """
    A segment's overview: per UTC day ``(day, conversations, active_users,
    errors, prompt_tokens, completion_tokens, rating_up, rating_down,
    tool_errors)``, the latency histogram ``(bucket, n)`` and the top 10 users
    ``(user_key, n)``.

    With *first_day* (``""``: all time) whole UTC days from it: a segment of
    one condition reads the per-day summaries. Otherwise (or with several
    conditions) the turns from *since* (epoch; None: all), one row each.
    """
    floor = -math.inf if since is None else since
    if first_day is not None and len(segment) == 1:
        (key, value), day_from = segment[0], first_day
        head: list[Any] = [key, value, day_from]
        days = conn.execute(
            "SELECT day, conversations, active_users, errors, prompt_tokens,"
            " completion_tokens, 0, 0, tool_errors FROM ui_segment_day"
            " WHERE key = ? AND value = ? AND day >= ? ORDER BY day",
            head,
        ).fetchall()
        hist = conn.execute(
            "SELECT bucket, sum(n) FROM ui_segment_hist WHERE key = ? AND value = ?"
            " AND day >= ? GROUP BY bucket",
            head,
        ).fetchall()
        if not top_users:
            top = []
        elif first_day == "":
            top = conn.execute(
                "SELECT user_key, conversations FROM ui_segment_user WHERE key = ?"
                " AND value = ? ORDER BY conversations DESC, user_key LIMIT 10",
                head[:2],
            ).fetchall()
        else:
            top = conn.execute(
                "SELECT user_key, sum(conversations) AS c FROM ui_segment_user_day"
                " WHERE key = ? AND value = ? AND day >= ? GROUP BY user_key"
                " ORDER BY c DESC, user_key LIMIT 10",
                head,
            ).fetchall()
    else:
        source, params = _source(segment, since)
        days = conn.execute(
            "SELECT date(started_at, 'unixepoch') AS day, count(*),"
            " count(DISTINCT user_key), sum(failed), sum(prompt_tokens),"
            " sum(completion_tokens), 0, 0, sum(tool_failed)"
            f" FROM ({source}) GROUP BY day ORDER BY day",
            params,
        ).fetchall()
        hist = conn.execute(
            "SELECT CAST(round(log(max(latency_ms, 1))"
            f" * {LATENCY_BUCKETS_PER_DECADE}) AS INTEGER) AS b, count(*)"
            f" FROM ({source}) GROUP BY b",
            params,
        ).fetchall()
        top = (
            conn.execute(
                f"SELECT user_key, count(*) AS c FROM ({source})"
                " GROUP BY user_key ORDER BY c DESC, user_key LIMIT 10",
                params,
            ).fetchall()
            if top_users
            else []
        )
    rated, rparams = _rated(conn, segment, floor)
    ratings = {
        d: (up, down)
        for d, up, down in conn.execute(
            "SELECT date(created_at, 'unixepoch') AS d, sum(rating > 0),"
            f" sum(rating < 0) FROM ({rated}) WHERE created_at >= ? GROUP BY d",
            [*rparams, floor],
        )
    }
    merged = {r[0]: list(r) for r in days}
    for d, (up, down) in ratings.items():
        row = merged.setdefault(d, [d, 0, 0, 0, 0, 0, 0, 0, 0])
        row[6], row[7] = up, down
    return [tuple(merged[d]) for d in sorted(merged)], hist, top


# --- comparison -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figure:
    """
    One measure of one segment: ``value`` (None without data) and ``count``,
    the number it is computed over (users, conversations, ratings...).
    """

    value: float | None
    count: int


@dataclass(frozen=True, slots=True)
class SegmentFigures:
    """
    A segment's figures: ``users`` and ``conversations`` are counts (their
    ``count`` is the same number); the others as documented in the README.
    """

    segment: dict[str, str]
    users: Figure
    conversations: Figure
    conversations_per_user: Figure
    rating_up_share: Figure
    error_rate: Figure
    latency_p50_ms: Figure
    latency_p95_ms: Figure
    tokens_per_conversation: Figure
    week1_retention: Figure
    #: US dollars over the priced calls per conversation (see :mod:`.cost`);
    #: filled in by ``Analytics.compare``, which holds the prices.
    cost_per_conversation: Figure = Figure(None, 0)


@dataclass(frozen=True, slots=True)
class Difference:
    """A two-proportion z-test of one share between the segments."""

    measure: str
    z: float | None
    significant: bool
    note: str


@dataclass(frozen=True, slots=True)
class Comparison:
    """
    Two segments' figures side by side, and the tests of their shares (none
    unless both are given; a side not given is None).
    """

    a: SegmentFigures | None
    b: SegmentFigures | None
    differences: tuple[Difference, ...]


def segment_figures(
    conn: sqlite3.Connection,
    segment: Segment,
    since: float | None,
    first_day: str | None,
    today: date,
) -> SegmentFigures:
    """
    A segment's figures: whole UTC days from *first_day* (``""``: all time),
    or with *first_day* None the turns from *since* (epoch), as
    :func:`overview_rows` reads them. Latency percentiles come from the
    latency histogram (within about 6%).
    """
    if since is None and first_day:
        since = float((date.fromisoformat(first_day) - date(1970, 1, 1)).days * 86_400)
    floor = -math.inf if since is None else since
    days, hist, _ = overview_rows(conn, segment, since, first_day, top_users=False)
    turns = sum(r[1] for r in days)
    failed = sum(r[3] for r in days)
    tokens = sum(r[4] + r[5] for r in days)
    up = sum(r[6] for r in days)
    down = sum(r[7] for r in days)
    if first_day == "" and len(segment) == 1:
        users = conn.execute(
            "SELECT count(*) FROM ui_segment_user WHERE key = ? AND value = ?"
            " AND user_key != ''",
            segment[0],
        ).fetchone()[0]
    elif first_day is not None and len(segment) == 1:
        users = users_between(conn, segment, first_day, None)
    else:
        source, params = _source(segment, since)
        users = conn.execute(
            f"SELECT count(DISTINCT nullif(user_key, '')) FROM ({source})", params
        ).fetchone()[0]
    retained, cohort = _week1(conn, segment, floor, today)
    rated = up + down
    return SegmentFigures(
        segment=dict(segment),
        users=Figure(users, users),
        conversations=Figure(turns, turns),
        conversations_per_user=Figure(turns / users if users else None, users),
        rating_up_share=Figure(up / rated if rated else None, rated),
        error_rate=Figure(failed / turns if turns else None, turns),
        latency_p50_ms=Figure(_hist_percentile(hist, 0.5), turns),
        latency_p95_ms=Figure(_hist_percentile(hist, 0.95), turns),
        tokens_per_conversation=Figure(tokens / turns if turns else None, turns),
        week1_retention=Figure(retained / cohort if cohort else None, cohort),
    )


def _week1(
    conn: sqlite3.Connection, segment: Segment, floor: float, today: date
) -> tuple[int, int]:
    """
    (retained, users): the segment's users first seen (ever) from *floor* in
    an ISO week whose following week has ended too, and how many of them were
    active in that following week.
    """
    # Week 1 has ended for the cohorts up to two weeks before this one.
    last_week = week_of(today) - timedelta(weeks=1)
    end = float((last_week - date(1970, 1, 1)).days * 86_400)
    if floor >= end:  # no cohort has had its week 1 yet
        return 0, 0
    kept = kept_week1(conn, segment, floor, end)
    if kept is not None:
        return kept
    return week1_scan(conn, segment, floor, end)


def kept_week1(
    conn: sqlite3.Connection, segment: Segment, start: float, end: float
) -> tuple[int, int] | None:
    """
    (retained, users) of the segment's users first seen (ever) from *start* to
    *end* (epoch), from the week-1 columns the index keeps on the segment's
    user rows (see :mod:`.ui_index_sql`): a range of them. None for an index
    without those columns (not yet refreshed by this version).
    """
    try:
        conn.execute("SELECT week1 FROM ui_segment_user LIMIT 0")
    except sqlite3.OperationalError:
        return None
    (key, value), rest = segment[0], segment[1:]
    extra, more = segment_users(rest, "g.user_key") if rest else ("true", [])
    row = conn.execute(
        "SELECT count(*), coalesce(sum(week1), 0) FROM ui_segment_user g"
        " WHERE g.key = ? AND g.value = ? AND g.user_key != ''"
        f" AND g.first_at >= ? AND g.first_at < ? AND {extra}",
        [key, value, start, end, *more],
    ).fetchone()
    return int(row[1]), int(row[0])


def _z_test(measure: str, a: tuple[int, int], b: tuple[int, int]) -> Difference:
    """Two-proportion z-test of successes/trials *a* against *b* (pooled)."""
    (xa, na), (xb, nb) = a, b
    small = [
        n for x, n in (a, b) if n < MIN_SAMPLE or x < MIN_SAMPLE or n - x < MIN_SAMPLE
    ]
    if small:
        return Difference(
            measure,
            None,
            False,
            f"not tested: each side needs {MIN_SAMPLE} or more of each outcome",
        )
    pooled = (xa + xb) / (na + nb)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    z = (xa / na - xb / nb) / spread if spread else 0.0
    significant = abs(z) >= _Z_CRITICAL
    return Difference(
        measure,
        round(z, 3),
        significant,
        "differs (p < 0.05)" if significant else "no significant difference",
    )


def compare(
    conn: sqlite3.Connection,
    a: Segment,
    b: Segment,
    since: float | None,
    first_day: str | None,
    today: date,
) -> Comparison:
    """
    Segments *a* and *b* side by side (the range as :func:`segment_figures`
    takes it), their shares z-tested; a segment not given (empty) is None.
    """
    fa = segment_figures(conn, a, since, first_day, today) if a else None
    fb = segment_figures(conn, b, since, first_day, today) if b else None
    if fa is None or fb is None:
        return Comparison(fa, fb, ())

    def trials(figure: Figure) -> tuple[int, int]:
        value = figure.value or 0.0
        return round(value * figure.count), figure.count

    return Comparison(
        fa,
        fb,
        tuple(
            _z_test(name, trials(getattr(fa, name)), trials(getattr(fb, name)))
            for name in ("rating_up_share", "error_rate", "week1_retention")
        ),
    )
