"""
Retention and activity: active users, new and returning users, stickiness,
weekly cohorts and churned users, from the dashboard's sidecar index.

Definitions (the README's "Retention and segments" states them for users):

- A user is *active* in a period when at least one of their conversations
  (turns) started in it. Ratings alone do not count; turns with no user are
  never a user.
- Days are UTC days; weeks are ISO weeks (Monday to Sunday, UTC), named by
  their Monday; months are calendar months (UTC).
- A user is *new* in the period of their first conversation ever, *returning*
  in every later period they are active in.
- *Stickiness* of a month is its mean daily active users (over the month's days
  up to today) divided by its monthly active users.
- A user's *cohort* is the ISO week of their first conversation. Week *k* of a
  cohort is the share of its users active in the *k*-th ISO week after it.
- *Churned* users were active in the 7 UTC days before the last 7 (today and
  the 6 days before it) and not in the last 7, most active first: their last
  turn falls in those earlier 7 days.

Everything reads the sidecar's tables (``ui_cohort_week`` for weekly actives and
cohorts, ``ui_user_month``, ``ui_day_stats``, ``ui_user_day`` and
``ui_user_stats``); the store is not read. The reports' read models are in
:mod:`.retention_models`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone, tzinfo

from .retention_models import ActivePoint, ChurnedUser, CohortRow, Retention, WeekCount

__all__ = [
    "CHURN_LIMIT",
    "MAX_WEEKS",
    "ActivePoint",
    "ChurnedUser",
    "CohortRow",
    "Retention",
    "WeekCount",
    "retention",
    "retention_of_turns",
    "user_activity",
    "week_of",
]

# The most weeks a report covers, and the churned users it lists at most.
MAX_WEEKS = 104
CHURN_LIMIT = 100
_DAY = 86_400.0


def week_of(day: date) -> date:
    """The Monday of *day*'s ISO week."""
    return day - timedelta(days=day.weekday())


def _days(first: date, last: date) -> list[str]:
    return [
        (first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)
    ]


def retention(
    conn: sqlite3.Connection,
    *,
    now: float | None = None,
    weeks: int = 8,
    since: date | None = None,
) -> Retention:
    """
    The retention report over a connection with the sidecar's tables in scope.

    Args:
        conn: A connection that reads the dashboard index's tables unqualified
            (:class:`.analytics.Analytics` attaches it as ``ui``).
        now: Epoch seconds of "now" (default: the clock).
        weeks: How many ISO weeks to cover, the current one included.
        since: Cover from the ISO week of this UTC day instead.

    Raises:
        ValueError: If *weeks* is not 1 to :data:`MAX_WEEKS`, or *since* is
            after today or more than :data:`MAX_WEEKS` weeks back.
    """
    clock = time.time() if now is None else now
    today = _utc_day(clock)
    this_week = week_of(today)
    start, weeks = _span(today, weeks, since)
    first_day = start.isoformat()

    def counts(sql: str, params: tuple[object, ...] = ()) -> dict[str, int]:
        return {str(k): int(n) for k, n in conn.execute(sql, params)}

    # New users per day (their first turn), from the per-user totals: every
    # day at once (one pass over the users; a day per row of history at most),
    # which gives the users in all and the new users per month below too.
    first_days = counts(
        "SELECT date(first_at, 'unixepoch') AS d, count(*) FROM ui_user_stats"
        " WHERE user_key != '' AND first_at IS NOT NULL GROUP BY d"
    )
    new_by_day = {d: n for d, n in first_days.items() if d >= start.isoformat()}
    users = sum(first_days.values())
    # Daily active users: the day's count less the no-user key.
    dau = counts(
        "SELECT d.day, d.active_users - EXISTS (SELECT 1 FROM ui_user_day u"
        " WHERE u.day = d.day AND u.user_key = '') FROM ui_day_stats d"
        " WHERE d.day >= ?",
        (first_day,),
    )
    day_list = _days(start, today)
    daily = tuple(_point(d, dau.get(d, 0), new_by_day.get(d, 0)) for d in day_list)
    # Weekly active and new users: the cohort counts (a user is new in the
    # week of their cohort).
    wau: dict[str, int] = {}
    new_by_week: dict[str, int] = {}
    for cohort, week, n in conn.execute(
        "SELECT cohort, week, users FROM ui_cohort_week WHERE week >= ?",
        (first_day,),
    ):
        wau[week] = wau.get(week, 0) + n
        if cohort == week:
            new_by_week[week] = n
    week_list = [(start + timedelta(weeks=i)).isoformat() for i in range(weeks)]
    weekly = tuple(_point(w, wau.get(w, 0), new_by_week.get(w, 0)) for w in week_list)
    month_list = sorted({d[:7] for d in day_list})
    mau = counts(
        "SELECT month, count(*) FROM ui_user_month WHERE month >= ?"
        " AND user_key != '' GROUP BY month",
        (month_list[0],),
    )
    # Stickiness needs every day of the first month, which may start before
    # the report: read its days too.
    month_dau = dict(dau)
    if month_list[0] + "-01" < first_day:
        month_dau.update(
            counts(
                "SELECT d.day, d.active_users - EXISTS (SELECT 1 FROM ui_user_day u"
                " WHERE u.day = d.day AND u.user_key = '') FROM ui_day_stats d"
                " WHERE d.day >= ? AND d.day < ?",
                (month_list[0] + "-01", first_day),
            )
        )
    new_by_month: dict[str, int] = {}
    for d, n in first_days.items():
        if d[:7] >= month_list[0]:
            new_by_month[d[:7]] = new_by_month.get(d[:7], 0) + n
    monthly = []
    for m in month_list:
        month_start = date.fromisoformat(m + "-01")
        month_end = min(_month_end(month_start), today)
        span = _days(month_start, month_end)
        active = mau.get(m, 0)
        mean_dau = sum(month_dau.get(d, 0) for d in span) / len(span)
        monthly.append(
            _point(
                m, active, new_by_month.get(m, 0), mean_dau / active if active else None
            )
        )
    cohorts = _cohorts(conn, start, this_week)
    churned_total, churned = _churned(conn, today)
    return Retention(
        since=first_day,
        today=today.isoformat(),
        users=users,
        daily=daily,
        weekly=weekly,
        monthly=tuple(monthly),
        stickiness=monthly[-1].stickiness,
        cohorts=cohorts,
        churned_total=churned_total,
        churned=churned,
    )


def _span(today: date, weeks: int, since: date | None) -> tuple[date, int]:
    """The report's first Monday and its number of weeks (see :func:`retention`)."""
    this_week = week_of(today)
    if since is not None:
        if since > today:
            raise ValueError(f"since must not be after today ({today}), got {since}")
        start = week_of(since)
        weeks = (this_week - start).days // 7 + 1
        if weeks > MAX_WEEKS:
            raise ValueError(
                f"since must be at most {MAX_WEEKS} weeks back, got {since}"
            )
    else:
        if isinstance(weeks, bool) or not 1 <= weeks <= MAX_WEEKS:
            raise ValueError(f"weeks must be from 1 to {MAX_WEEKS}, got {weeks!r}")
        start = this_week - timedelta(weeks=weeks - 1)
    return start, weeks


def _utc_day(epoch: float) -> date:
    return date.fromisoformat(time.strftime("%Y-%m-%d", time.gmtime(epoch)))


def _epoch(day: date) -> float:
    return float((day - date(1970, 1, 1)).days * 86_400)


def _month_end(month_start: date) -> date:
    following = (month_start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - timedelta(days=1)


def _point(
    period: str, active: int, new: int, stickiness: float | None = None
) -> ActivePoint:
    # A user first seen in a period is active in it: new never exceeds active.
    new = min(new, active)
    return ActivePoint(period, active, new, active - new, stickiness)


def _cohorts(
    conn: sqlite3.Connection, start: date, this_week: date
) -> tuple[CohortRow, ...]:
    """Each cohort from *start* to *this_week*: its size and later active weeks."""
    counts = {
        (cohort, week): int(n)
        for cohort, week, n in conn.execute(
            "SELECT cohort, week, users FROM ui_cohort_week WHERE cohort >= ?",
            (start.isoformat(),),
        )
    }
    weeks = (this_week - start).days // 7 + 1
    result = []
    for i in range(weeks):
        cohort = start + timedelta(weeks=i)
        key = cohort.isoformat()
        size = counts.get((key, key), 0)  # everyone is active in their first week
        later = [
            (cohort + timedelta(weeks=k)).isoformat()
            for k in range(1, (this_week - cohort).days // 7 + 1)
        ]
        active = tuple(counts.get((key, w), 0) for w in later)
        result.append(
            CohortRow(
                key, size, active, tuple(a / size if size else 0.0 for a in active)
            )
        )
    return tuple(result)


def _churned(
    conn: sqlite3.Connection, today: date
) -> tuple[int, tuple[ChurnedUser, ...]]:
    """Active in the 7 days before the last 7, not in the last 7 (UTC days)."""
    current = (today - timedelta(days=6)).isoformat()
    previous = (today - timedelta(days=13)).isoformat()
    # Active then and silent since: their last turn (ui_user_stats.last_at)
    # is in the earlier 7 days; their turns then, 7 lookups each.
    days = ",".join(
        f"'{(today - timedelta(days=d)).isoformat()}'" for d in range(7, 14)
    )
    rows = conn.execute(
        "SELECT s.user_key, (SELECT coalesce(sum(d.conversations), 0)"
        f" FROM ui_user_day d WHERE d.day IN ({days}) AND d.user_key = s.user_key)"
        " AS c, s.last_at, count(*) OVER () FROM ui_user_stats s"
        " WHERE s.user_key != '' AND s.last_at >= ? AND s.last_at < ?"
        " ORDER BY c DESC, s.user_key LIMIT ?",
        (
            _epoch(date.fromisoformat(previous)),
            _epoch(date.fromisoformat(current)),
            CHURN_LIMIT,
        ),
    ).fetchall()
    total = rows[0][3] if rows else 0
    return int(total), tuple(ChurnedUser(k, int(c), last) for k, c, last, _ in rows)


def user_activity(
    conn: sqlite3.Connection,
    user_key: str,
    *,
    now: float | None = None,
    weeks: int = 26,
) -> tuple[WeekCount, ...]:
    """
    A user's conversations per ISO week, the last *weeks* of them (this one
    last, weeks without turns as zeros): point lookups in ``ui_user_day``'s
    ``(day, user_key)`` key, one per day.
    """
    today = _utc_day(time.time() if now is None else now)
    start = week_of(today) - timedelta(weeks=weeks - 1)
    days = _days(start, today)
    marks = ",".join("?" * len(days))
    counts: dict[str, int] = {}
    for day, n in conn.execute(
        f"SELECT day, conversations FROM ui_user_day WHERE day IN ({marks})"
        " AND user_key = ?",
        [*days, user_key],
    ):
        week = week_of(date.fromisoformat(day)).isoformat()
        counts[week] = counts.get(week, 0) + int(n)
    return tuple(
        WeekCount(w, counts.get(w, 0))
        for w in ((start + timedelta(weeks=i)).isoformat() for i in range(weeks))
    )


def retention_of_turns(
    turns: Iterable[tuple[str, float]],
    *,
    now: float | None = None,
    weeks: int = 8,
    since: date | None = None,
    tz: tzinfo | None = None,
) -> Retention:
    """
    The retention report from ``(user_key, started_at)`` rows (users only, no
    ``""`` key), with days in the time zone *tz* (default UTC).

    The definitions are :func:`retention`'s, the days and weeks being *tz*'s;
    a user's first conversation is their first among *turns* (with a segment:
    their first turn in it). It reads every row once (about a second per
    million on a laptop): the dashboard and the CLI use it for a segment or a
    time zone other than UTC, and :func:`retention` otherwise.

    Raises:
        ValueError: As :func:`retention`.
    """
    zone = tz or timezone.utc
    clock = time.time() if now is None else now
    today = datetime.fromtimestamp(clock, zone).date()
    start, weeks = _span(today, weeks, since)
    # Each user's turns per day. A turn's day comes from its 15-minute slot
    # (every zone's offset is a whole number of quarter hours), one conversion
    # per slot: the loop is the cost of this path.
    per_user: dict[str, dict[date, int]] = {}
    last_at: dict[str, float] = {}
    slot_day: dict[int, date] = {}
    for key, started in turns:
        slot = int(started // 900)
        day = slot_day.get(slot)
        if day is None:
            day = slot_day[slot] = datetime.fromtimestamp(slot * 900, zone).date()
        counts = per_user.get(key)
        if counts is None:
            counts = per_user[key] = {}
            last_at[key] = started
        elif started > last_at[key]:
            last_at[key] = started
        counts[day] = counts.get(day, 0) + 1
    days_of = per_user
    first_of = {k: min(days) for k, days in days_of.items()}
    cohort_of: dict[date, set[str]] = {}
    for k, first in first_of.items():
        cohort_of.setdefault(week_of(first), set()).add(k)
    day_list = [date.fromisoformat(d) for d in _days(start, today)]
    by_day: dict[date, set[str]] = {}
    for key, days in days_of.items():
        for day in days:
            by_day.setdefault(day, set()).add(key)

    def new_in(keys: set[str], first: date, last: date) -> int:
        return sum(1 for k in keys if first <= first_of[k] <= last)

    daily = tuple(
        _point(
            d.isoformat(), len(by_day.get(d, ())), new_in(by_day.get(d, set()), d, d)
        )
        for d in day_list
    )
    week_starts = [start + timedelta(weeks=i) for i in range(weeks)]

    def active_in(first: date, last: date) -> set[str]:
        keys: set[str] = set()
        for i in range((last - first).days + 1):
            keys |= by_day.get(first + timedelta(days=i), set())
        return keys

    weekly = []
    week_users: dict[date, set[str]] = {}
    for w in week_starts:
        keys = week_users[w] = active_in(w, w + timedelta(days=6))
        weekly.append(
            _point(w.isoformat(), len(keys), new_in(keys, w, w + timedelta(days=6)))
        )
    monthly = []
    for m in sorted({d.isoformat()[:7] for d in day_list}):
        month_start = date.fromisoformat(m + "-01")
        month_end = min(_month_end(month_start), today)
        keys = active_in(month_start, _month_end(month_start))
        span = [date.fromisoformat(d) for d in _days(month_start, month_end)]
        mean_dau = sum(len(by_day.get(d, ())) for d in span) / len(span)
        monthly.append(
            _point(
                m,
                len(keys),
                new_in(keys, month_start, _month_end(month_start)),
                mean_dau / len(keys) if keys else None,
            )
        )
    cohorts = []
    this_week = week_of(today)
    for w in week_starts:
        members = cohort_of.get(w, set())
        later = [
            w + timedelta(weeks=k) for k in range(1, (this_week - w).days // 7 + 1)
        ]
        active = tuple(len(members & week_users[x]) for x in later)
        size = len(members)
        cohorts.append(
            CohortRow(
                w.isoformat(), size, active,
                tuple(a / size if size else 0.0 for a in active),
            )
        )  # fmt: skip
    earlier = [today - timedelta(days=d) for d in range(7, 14)]
    churned = sorted(
        (
            ChurnedUser(k, sum(days.get(d, 0) for d in earlier), last_at[k])
            for k, days in days_of.items()
            if max(days) in earlier
        ),
        key=lambda u: (-u.previous_conversations, u.user_id),
    )
    return Retention(
        since=start.isoformat(),
        today=today.isoformat(),
        users=len(days_of),
        daily=daily,
        weekly=tuple(weekly),
        monthly=tuple(monthly),
        stickiness=monthly[-1].stickiness,
        cohorts=tuple(cohorts),
        churned_total=len(churned),
        churned=tuple(churned[:CHURN_LIMIT]),
    )
