"""
Retention aggregates per segment value and per time zone, kept in the
dashboard's sidecar index (see :mod:`.ui_index`) as turns are indexed.

:func:`.retention.retention` reads the index's UTC tables for the whole store.
A segment (one ``key: value`` condition) or another time zone needs the same
figures over other days or other turns; these tables hold them, keyed by
``(zone, key, value)``:

- ``zone`` is an IANA zone name (``UTC`` always; another once a caller asks
  for it, see :func:`add_zone`); days, ISO weeks and months are that zone's.
- ``key``/``value`` is a segment value (``plan``/``pro``), or ``''``/``''``
  for every turn (kept for the zones other than UTC only: UTC's are the
  index's own tables).

Per scope: each user's first and last active day (``ui_ret_user``), the users
active each day, ISO week and month (``ui_ret_user_day``, ``ui_ret_user_week``,
``ui_ret_user_month``), the users active each day (``ui_ret_day``) and the
cohort counts (``ui_ret_cohort``). A report is then a handful of range reads
(:func:`retention_of_index`), never a pass over the turns.

Why per local day, one set per zone, and not per user and UTC hour: a local
day's active users from hourly rows would read every user-hour of the report's
weeks, about one row per turn at the benchmark's density, no better than the
turns. A zone's tables are filled from the store once, when a caller first asks
for that zone (``context-trace ui --tz``, ``retention --tz``), then kept up to
date chunk by chunk with the others.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from .retention import (
    CHURN_LIMIT,
    ChurnedUser,
    CohortRow,
    Retention,
    _days,
    _month_end,
    _point,
    _span,
    week_of,
)
from .ui_index_schema import WEEK_SQL

__all__ = [
    "RET_SCHEMA",
    "RET_TABLES",
    "RET_TEMP_TABLES",
    "add_zone",
    "apply_chunk",
    "has_zone",
    "retention_of_index",
    "zone_name",
]

# Turns are mapped to local days by their 15-minute slot: every zone's offset
# and every change of offset fall on a quarter hour.
_SLOT = 900
_SCOPE = "zone TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL"
RET_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ui_ret_zone (zone TEXT PRIMARY KEY) WITHOUT ROWID",
    "INSERT INTO ui_ret_zone (zone) VALUES ('UTC') ON CONFLICT DO NOTHING",
    f"""
    CREATE TABLE IF NOT EXISTS ui_ret_user (
        {_SCOPE}, user_key TEXT NOT NULL, first_day TEXT NOT NULL,
        last_day TEXT NOT NULL, last_at REAL NOT NULL,
        PRIMARY KEY (zone, key, value, user_key)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS ui_ret_user_first"
    " ON ui_ret_user (zone, key, value, first_day)",
    "CREATE INDEX IF NOT EXISTS ui_ret_user_last"
    " ON ui_ret_user (zone, key, value, last_day)",
    f"""
    CREATE TABLE IF NOT EXISTS ui_ret_user_day (
        {_SCOPE}, day TEXT NOT NULL, user_key TEXT NOT NULL,
        conversations INTEGER NOT NULL,
        PRIMARY KEY (zone, key, value, day, user_key)
    ) WITHOUT ROWID
    """,
    f"""
    CREATE TABLE IF NOT EXISTS ui_ret_user_week (
        {_SCOPE}, week TEXT NOT NULL, user_key TEXT NOT NULL,
        PRIMARY KEY (zone, key, value, user_key, week)
    ) WITHOUT ROWID
    """,
    f"""
    CREATE TABLE IF NOT EXISTS ui_ret_user_month (
        {_SCOPE}, month TEXT NOT NULL, user_key TEXT NOT NULL,
        PRIMARY KEY (zone, key, value, month, user_key)
    ) WITHOUT ROWID
    """,
    f"""
    CREATE TABLE IF NOT EXISTS ui_ret_day (
        {_SCOPE}, day TEXT NOT NULL, active_users INTEGER NOT NULL,
        PRIMARY KEY (zone, key, value, day)
    ) WITHOUT ROWID
    """,
    f"""
    CREATE TABLE IF NOT EXISTS ui_ret_cohort (
        {_SCOPE}, cohort TEXT NOT NULL, week TEXT NOT NULL, users INTEGER NOT NULL,
        PRIMARY KEY (zone, key, value, cohort, week)
    ) WITHOUT ROWID
    """,
)
RET_TABLES = (
    "ui_ret_zone", "ui_ret_user", "ui_ret_user_day", "ui_ret_user_week",
    "ui_ret_user_month", "ui_ret_day", "ui_ret_cohort",
)  # fmt: skip
RET_TEMP_TABLES = (
    "ret_slot", "ret_rows", "ret_users", "ret_moved", "ret_new_weeks",
)  # fmt: skip

_S = "zone, key, value"
# A lookup in ui_ret_user_day costs about as much as reading this many of its
# rows in a range (measured on the 1M-turn benchmark store).
_LOOKUP_ROWS = 4


def _same(a: str, b: str) -> str:
    return " AND ".join(f"{a}.{c} = {b}.{c}" for c in ("zone", "key", "value"))


_WEEK_OF_FIRST = WEEK_SQL.format("u.first_day")
_APPLY = (
    # Each user's turns per local day in this chunk, per zone and scope.
    f"CREATE TEMP TABLE ret_rows AS SELECT z.zone, r.key, r.value, r.user_key,"
    " z.day, count(*) AS n, max(r.started_at) AS last_at FROM ({source}) r"
    f" JOIN temp.ret_slot z ON z.slot = CAST(r.started_at / {_SLOT} AS INTEGER)"
    " WHERE r.user_key != '' AND NOT (z.zone = 'UTC' AND r.key = '')"
    " GROUP BY 1, 2, 3, 4, 5",
    f"CREATE TEMP TABLE ret_users AS SELECT {_S}, user_key, min(day) AS first_day,"
    f" max(day) AS last_day, max(last_at) AS last_at FROM ret_rows GROUP BY {_S},"
    " user_key",
    # Users whose first turn moved to an earlier week (a late turn): their
    # weeks leave their old cohort here and join the new one below.
    f"CREATE TEMP TABLE ret_moved AS SELECT c.zone, c.key, c.value, c.user_key,"
    f" {_WEEK_OF_FIRST} AS old FROM ret_users c JOIN ui_ret_user u"
    f" ON {_same('u', 'c')} AND u.user_key = c.user_key"
    f" WHERE {WEEK_SQL.format('c.first_day')} < {_WEEK_OF_FIRST}",
    f"INSERT INTO ui_ret_cohort ({_S}, cohort, week, users)"
    " SELECT m.zone, m.key, m.value, m.old, w.week, -count(*) FROM ret_moved m"
    f" JOIN ui_ret_user_week w ON {_same('w', 'm')} AND w.user_key = m.user_key"
    " WHERE true GROUP BY 1, 2, 3, 4, 5"
    " ON CONFLICT DO UPDATE SET users = users + excluded.users",
    f"CREATE TEMP TABLE ret_new_weeks AS SELECT DISTINCT {_S},"
    f" {WEEK_SQL.format('day')} AS week, user_key FROM ret_rows r"
    " WHERE NOT EXISTS (SELECT 1 FROM ui_ret_user_week w"
    f" WHERE {_same('w', 'r')} AND w.user_key = r.user_key"
    f" AND w.week = {WEEK_SQL.format('r.day')})",
    f"INSERT INTO ui_ret_user_week ({_S}, week, user_key)"
    f" SELECT {_S}, week, user_key FROM ret_new_weeks WHERE true"
    " ON CONFLICT DO NOTHING",
    # A known user's row: last_at moves with nearly every turn, their first and
    # last day seldom. Each day is set apart, and only where it moves: an
    # UPDATE that sets an indexed column rewrites that index's entry even to
    # the same value, and these two indexes were most of a chunk's cost here.
    f"INSERT INTO ui_ret_user ({_S}, user_key, first_day, last_day, last_at)"
    f" SELECT {_S}, user_key, first_day, last_day, last_at FROM ret_users"
    " WHERE true ON CONFLICT DO UPDATE SET last_at = max(last_at, excluded.last_at)",
    # (Upserts of the rows that move: a lookup per row of the chunk.)
    f"INSERT INTO ui_ret_user ({_S}, user_key, first_day, last_day, last_at)"
    " SELECT c.zone, c.key, c.value, c.user_key, c.first_day, c.last_day,"
    f" c.last_at FROM ret_users c JOIN ui_ret_user u ON {_same('u', 'c')}"
    " AND u.user_key = c.user_key WHERE c.first_day < u.first_day"
    " ON CONFLICT DO UPDATE SET first_day = excluded.first_day",
    f"INSERT INTO ui_ret_user ({_S}, user_key, first_day, last_day, last_at)"
    " SELECT c.zone, c.key, c.value, c.user_key, c.first_day, c.last_day,"
    f" c.last_at FROM ret_users c JOIN ui_ret_user u ON {_same('u', 'c')}"
    " AND u.user_key = c.user_key WHERE c.last_day > u.last_day"
    " ON CONFLICT DO UPDATE SET last_day = excluded.last_day",
    # The cohort counts of the new user-weeks, and of every week of the users
    # who moved, now that first_day is final for this chunk.
    f"INSERT INTO ui_ret_cohort ({_S}, cohort, week, users)"
    f" SELECT w.zone, w.key, w.value, {_WEEK_OF_FIRST}, w.week, count(*) FROM"
    f" (SELECT n.zone, n.key, n.value, n.week, n.user_key FROM ret_new_weeks n"
    f" WHERE NOT EXISTS (SELECT 1 FROM ret_moved m WHERE {_same('m', 'n')}"
    " AND m.user_key = n.user_key) UNION ALL"
    " SELECT x.zone, x.key, x.value, x.week, x.user_key FROM ret_moved m"
    f" JOIN ui_ret_user_week x ON {_same('x', 'm')} AND x.user_key = m.user_key) w"
    f" JOIN ui_ret_user u ON {_same('u', 'w')} AND u.user_key = w.user_key"
    " WHERE true GROUP BY 1, 2, 3, 4, 5"
    " ON CONFLICT DO UPDATE SET users = users + excluded.users",
    f"DELETE FROM ui_ret_cohort WHERE users = 0 AND ({_S}, cohort) IN"
    f" (SELECT {_S}, old FROM ret_moved)",
    f"INSERT INTO ui_ret_user_day ({_S}, day, user_key, conversations)"
    f" SELECT {_S}, day, user_key, n FROM ret_rows WHERE true"
    " ON CONFLICT DO UPDATE SET conversations = conversations + excluded.conversations",
    f"INSERT INTO ui_ret_user_month ({_S}, month, user_key)"
    f" SELECT DISTINCT {_S}, substr(day, 1, 7), user_key FROM ret_rows WHERE true"
    " ON CONFLICT DO NOTHING",
    # Active users per day: recounted for the days this chunk touched.
    f"INSERT INTO ui_ret_day ({_S}, day, active_users)"
    " SELECT t.zone, t.key, t.value, t.day, (SELECT count(*) FROM ui_ret_user_day u"
    f" WHERE {_same('u', 't')} AND u.day = t.day) FROM (SELECT DISTINCT {_S}, day"
    " FROM ret_rows) t WHERE true"
    " ON CONFLICT DO UPDATE SET active_users = excluded.active_users",
)


def zone_name(tz: tzinfo | None) -> str | None:
    """
    The name the index keeps *tz*'s tables under: ``UTC`` for None, UTC or a
    zero fixed offset, the IANA key of a :class:`~zoneinfo.ZoneInfo`, None
    for another kind of zone (its reports read the turns).
    """
    if tz is None or tz is timezone.utc:
        return "UTC"
    key = getattr(tz, "key", None)
    if isinstance(tz, ZoneInfo) and isinstance(key, str):
        return "UTC" if key in ("UTC", "Etc/UTC") else key
    if isinstance(tz, timezone) and tz.utcoffset(None) == timedelta(0):
        return "UTC"
    return None


def _zone(name: str) -> tzinfo:
    return timezone.utc if name == "UTC" else ZoneInfo(name)


def has_zone(conn: sqlite3.Connection, name: str, schema: str = "main") -> bool:
    """Whether the index attached as *schema* keeps the zone *name*'s tables."""
    try:
        row = conn.execute(
            f"SELECT 1 FROM {schema}.ui_ret_zone WHERE zone = ?", (name,)
        ).fetchone()
    except sqlite3.OperationalError:  # an index from before these tables
        return False
    return row is not None


def _fill_slots(
    conn: sqlite3.Connection,
    turns: str,
    params: tuple[object, ...],
    zones: Iterable[str] | None,
) -> None:
    """``temp.ret_slot``: each zone's local day of each slot of the *turns*."""
    if zones is None:
        zones = [name for (name,) in conn.execute("SELECT zone FROM ui_ret_zone")]
    found = [(name, _zone(name)) for name in zones]
    slots = [
        int(s)
        for (s,) in conn.execute(
            f"SELECT DISTINCT CAST(started_at / {_SLOT} AS INTEGER) FROM {turns}",
            params,
        )
    ]
    conn.execute(
        "CREATE TEMP TABLE ret_slot (zone TEXT NOT NULL, slot INTEGER NOT NULL,"
        " day TEXT NOT NULL, PRIMARY KEY (slot, zone)) WITHOUT ROWID"
    )
    conn.executemany(
        "INSERT INTO temp.ret_slot VALUES (?, ?, ?)",
        (
            (name, s, datetime.fromtimestamp(s * _SLOT, zone).date().isoformat())
            for name, zone in found
            for s in slots
        ),
    )


def apply_chunk(
    conn: sqlite3.Connection,
    turns: str,
    segments: str,
    params: tuple[object, ...] = (),
    zones: Iterable[str] | None = None,
) -> None:
    """
    Count turns into the tables of the *zones* (default: every kept zone):
    *turns* is a table or a subquery of their ``user_key, started_at``,
    *segments* of their segment rows ``key, value, user_key, started_at``
    (both with *params*). Runs inside the caller's transaction.
    """
    source = (
        f"SELECT '' AS key, '' AS value, user_key, started_at FROM {turns}"
        f" UNION ALL SELECT key, value, user_key, started_at FROM {segments}"
        " WHERE key != ''"
    )
    try:
        _fill_slots(conn, turns, params, zones)
        for statement in _APPLY:
            if "{source}" in statement:
                conn.execute(statement.replace("{source}", source), params)
            else:
                conn.execute(statement)
    finally:
        for table in RET_TEMP_TABLES:
            conn.execute(f"DROP TABLE IF EXISTS temp.{table}")


def add_zone(
    conn: sqlite3.Connection, name: str, done: int, turns: str, segments: str
) -> None:
    """
    Keep the zone *name*'s tables from now on, filled with the turns indexed
    so far (numbered up to *done*): *turns* and *segments* are subqueries (see
    :func:`apply_chunk`) of the turns numbered ``(?1, ?2]``. Runs inside the
    caller's transaction.

    Raises:
        zoneinfo.ZoneInfoNotFoundError: If the zone database has no *name*.
    """
    if has_zone(conn, name):
        return
    _zone(name)
    step = 100_000
    for first in range(0, done, step):
        apply_chunk(conn, turns, segments, (first, min(done, first + step)), [name])
    conn.execute("INSERT INTO ui_ret_zone (zone) VALUES (?)", (name,))


def retention_of_index(
    conn: sqlite3.Connection,
    zone: str,
    key: str,
    value: str,
    *,
    now: float,
    weeks: int,
    since: date | None,
    tz: tzinfo | None,
) -> Retention:
    """
    The retention report of the scope ``(key, value)`` (``''``/``''``: every
    turn) in the zone *zone*, from the tables above (the index attached so
    that they read unqualified). Definitions as :func:`.retention.retention`,
    days and weeks being the zone's, and a user's first conversation their
    first in the segment.
    """
    today = datetime.fromtimestamp(now, tz or timezone.utc).date()
    this_week = week_of(today)
    start, weeks = _span(today, weeks, since)
    first_day = start.isoformat()
    scope = "zone = ? AND key = ? AND value = ?"
    p = (zone, key, value)

    def counts(sql: str, params: tuple[object, ...] = ()) -> dict[str, int]:
        return {str(k): int(n) for k, n in conn.execute(sql, (*p, *params))}

    users = int(
        conn.execute(f"SELECT count(*) FROM ui_ret_user WHERE {scope}", p).fetchone()[0]
    )
    day_list = _days(start, today)
    month_list = sorted({d[:7] for d in day_list})
    month_first = month_list[0] + "-01"
    new_by_day = counts(
        f"SELECT first_day, count(*) FROM ui_ret_user WHERE {scope}"
        " AND first_day >= ? GROUP BY first_day",
        (month_first,),
    )
    dau = counts(
        f"SELECT day, active_users FROM ui_ret_day WHERE {scope} AND day >= ?",
        (month_first,),
    )
    daily = tuple(_point(d, dau.get(d, 0), new_by_day.get(d, 0)) for d in day_list)
    wau: dict[str, int] = {}
    new_by_week: dict[str, int] = {}
    cohort_counts: dict[tuple[str, str], int] = {}
    for cohort, week, n in conn.execute(
        f"SELECT cohort, week, users FROM ui_ret_cohort WHERE {scope}"
        " AND cohort <= ? AND week >= ?",
        (*p, today.isoformat(), first_day),
    ):
        wau[week] = wau.get(week, 0) + n
        if cohort == week:
            new_by_week[week] = n
        cohort_counts[(cohort, week)] = int(n)
    week_list = [(start + timedelta(weeks=i)).isoformat() for i in range(weeks)]
    weekly = tuple(_point(w, wau.get(w, 0), new_by_week.get(w, 0)) for w in week_list)
    mau = counts(
        f"SELECT month, count(*) FROM ui_ret_user_month WHERE {scope}"
        " AND month >= ? GROUP BY month",
        (month_list[0],),
    )
    new_by_month: dict[str, int] = {}
    for d, n in new_by_day.items():
        new_by_month[d[:7]] = new_by_month.get(d[:7], 0) + n
    monthly = []
    for m in month_list:
        month_start = date.fromisoformat(m + "-01")
        span = _days(month_start, min(_month_end(month_start), today))
        active = mau.get(m, 0)
        mean_dau = sum(dau.get(d, 0) for d in span) / len(span)
        monthly.append(
            _point(
                m, active, new_by_month.get(m, 0), mean_dau / active if active else None
            )
        )
    cohorts = []
    for i in range(weeks):
        cohort = start + timedelta(weeks=i)
        c = cohort.isoformat()
        size = cohort_counts.get((c, c), 0)
        later = tuple(
            cohort_counts.get((c, (cohort + timedelta(weeks=k)).isoformat()), 0)
            for k in range(1, (this_week - cohort).days // 7 + 1)
        )
        cohorts.append(
            CohortRow(c, size, later, tuple(a / size if size else 0.0 for a in later))
        )
    earlier = _days(today - timedelta(days=13), today - timedelta(days=7))
    # The churned users (last active in the earlier 7 days), from the (scope,
    # last_day) index alone, and their turns then: 7 lookups per churned user
    # when they are few, else one range of those days' rows summed here (with
    # a segment at 1M turns thousands of users churn: 7 lookups each is most
    # of a report). ui_ret_day's active users are the number of those rows.
    keys = [
        key
        for (key,) in conn.execute(
            f"SELECT user_key FROM ui_ret_user WHERE {scope}"
            " AND last_day BETWEEN ? AND ?",
            (*p, earlier[0], earlier[-1]),
        )
    ]
    rows = sum(dau.get(d, 0) for d in earlier)
    then: dict[str, int] = {}
    if len(keys) * len(earlier) * _LOOKUP_ROWS < rows:
        marks = ",".join("?" * len(earlier))
        for key in keys:
            then[key] = conn.execute(
                "SELECT coalesce(sum(conversations), 0) FROM ui_ret_user_day"
                f" WHERE {scope} AND day IN ({marks}) AND user_key = ?",
                (*p, *earlier, key),
            ).fetchone()[0]
    else:
        for key, n in conn.execute(
            f"SELECT user_key, conversations FROM ui_ret_user_day WHERE {scope}"
            " AND day BETWEEN ? AND ?",
            (*p, earlier[0], earlier[-1]),
        ):
            then[key] = then.get(key, 0) + n
    gone = sorted((-then.get(key, 0), key) for key in keys)
    # The last turn's time is read for the users listed only.
    listed = []
    for minus, user_key in gone[:CHURN_LIMIT]:
        (last_at,) = conn.execute(
            f"SELECT last_at FROM ui_ret_user WHERE {scope} AND user_key = ?",
            (*p, user_key),
        ).fetchone()
        listed.append(ChurnedUser(user_key, -minus, last_at))
    return Retention(
        since=first_day,
        today=today.isoformat(),
        users=users,
        daily=daily,
        weekly=weekly,
        monthly=tuple(monthly),
        stickiness=monthly[-1].stickiness,
        cohorts=tuple(cohorts),
        churned_total=len(gone),
        churned=tuple(listed),
    )
