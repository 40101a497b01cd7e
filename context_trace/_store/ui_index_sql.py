"""
The dashboard index's refresh statements (see :mod:`.ui_index`): a chunk of new
turns, their segments, the ratings that changed, the sessions they touched.
"""

from __future__ import annotations

from .codec import tool_error_sql
from .ui_index_schema import (
    _FIRST_WEEK,
    LATENCY_BUCKETS_PER_DECADE,
    SEGMENT_VALUE_MAX,
    WEEK_SQL,
)

_NOT_SEGMENTS = (
    "latency_ms", "model_calls", "failed_tools", "stream_abandoned", "error_type",
    "error", "model_input",
)  # fmt: skip


def _segment_values(j: str) -> str:
    """SQL: the ``json_each`` row *j* of a turn's metadata is a segment value."""
    skipped = ", ".join(f"'{k}'" for k in _NOT_SEGMENTS)
    return (
        f"{j}.type = 'text' AND {j}.key NOT IN ({skipped})"
        f" AND {j}.key NOT LIKE '%!_tokens' ESCAPE '!'"
        f" AND length({j}.value) BETWEEN 1 AND {SEGMENT_VALUE_MAX}"
    )


def _segment_rows(first: str, last: str) -> str:
    """The (key, value) rows of the store's turns numbered (*first*, *last*]."""
    return (
        "SELECT j.key AS key, j.value AS value, c.n AS n,"
        " coalesce(c.user_id, '') AS user_key, c.started_at, c.latency_ms,"
        f" c.error IS NOT NULL AS failed, {tool_error_sql('c')} AS tool_failed,"
        " coalesce(c.prompt_tokens, 0) AS prompt_tokens,"
        " coalesce(c.completion_tokens, 0) AS completion_tokens,"
        " date(c.started_at, 'unixepoch') AS day,"
        " CAST(round(log(max(c.latency_ms, 1))"
        f" * {LATENCY_BUCKETS_PER_DECADE}) AS INTEGER) AS bucket"
        " FROM store.conversations c, json_each(c.metadata) j"
        f" WHERE c.n > {first} AND c.n <= {last} AND {_segment_values('j')}"
    )


# Each rating of a turn, once per segment value of its turn (``ui_rated_segment``):
# a segment's ratings from a time are then a range of this table, not a pass
# over the store's ratings with two lookups each. Kept with ui_feedback: the
# ratings that left the store leave it too.
RATED_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS ui_rated_segment (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        created_at REAL NOT NULL,
        id TEXT NOT NULL,
        n INTEGER NOT NULL,
        rating INTEGER NOT NULL,
        PRIMARY KEY (key, value, created_at, id)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS ui_rated_segment_id ON ui_rated_segment (id)",
)


def rated_segment_rows(ids: str) -> str:
    """An INSERT of the segment rows of the store's ratings whose id is in *ids*."""
    return (
        "INSERT INTO ui_rated_segment (key, value, created_at, id, n, rating)"
        " SELECT j.key, j.value, f.created_at, f.id, c.n, f.rating"
        " FROM store.feedback f JOIN store.conversations c"
        " ON c.id = f.conversation_id, json_each(c.metadata) j"
        f" WHERE f.id IN ({ids}) AND {_segment_values('j')}"
        " ON CONFLICT DO NOTHING"
    )


# Each segment user's first turn ever and whether they were active in the ISO
# week after its week (week-1 retention, as the comparison counts it): kept on
# their ui_segment_user rows, so a segment's week-1 figures are a range of that
# table. Both change only with the user's own turns: a chunk refreshes its
# users' rows.
SEGMENT_WEEK1_SCHEMA = (
    "ALTER TABLE ui_segment_user ADD COLUMN first_at REAL",
    "ALTER TABLE ui_segment_user ADD COLUMN week1 INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS ui_segment_user_user ON ui_segment_user (user_key)",
)


def segment_week1(users: str | None) -> str:
    """The UPDATE of the week-1 columns of the users in *users* (None: all)."""
    return (
        "UPDATE ui_segment_user SET first_at = (SELECT s.first_at"
        " FROM ui_user_stats s WHERE s.user_key = ui_segment_user.user_key),"
        " week1 = coalesce((SELECT EXISTS (SELECT 1 FROM ui_user_week w"
        " WHERE w.user_key = s.user_key AND w.week = date(s.first_at, 'unixepoch',"
        " '-6 days', 'weekday 1', '+7 days')) FROM ui_user_stats s"
        " WHERE s.user_key = ui_segment_user.user_key), 0)"
        + ("" if users is None else f" WHERE user_key IN ({users})")
    )


# Who was active on which days, by user: a range of days' distinct users is
# then one lookup per user (see .segments.users_between), not a sort of every
# (day, user) row of the range.
USER_DAY_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ui_user_day_user ON ui_user_day (user_key, day)",
    "CREATE INDEX IF NOT EXISTS ui_segment_user_day_user"
    " ON ui_segment_user_day (key, value, user_key, day)",
)


def _apply_segments(first: str, last: str) -> tuple[str, ...]:
    return (
        f"CREATE TEMP TABLE segment_chunk AS {_segment_rows(first, last)}",
        "INSERT INTO ui_segment_turn (key, value, n, user_key, started_at,"
        " latency_ms, failed, tool_failed, prompt_tokens, completion_tokens)"
        " SELECT key, value, n, user_key, started_at, latency_ms, failed,"
        " tool_failed, prompt_tokens, completion_tokens FROM segment_chunk"
        " WHERE true ON CONFLICT DO NOTHING",
        "INSERT INTO ui_segment_user (key, value, user_key, conversations)"
        " SELECT key, value, user_key, count(*) FROM segment_chunk"
        " GROUP BY key, value, user_key ON CONFLICT DO UPDATE SET"
        " conversations = conversations + excluded.conversations",
        "INSERT INTO ui_segment_user_day (key, value, day, user_key, conversations)"
        " SELECT key, value, day, user_key, count(*) FROM segment_chunk"
        " GROUP BY key, value, day, user_key ON CONFLICT DO UPDATE SET"
        " conversations = conversations + excluded.conversations",
        "INSERT INTO ui_segment_day (key, value, day, conversations, errors,"
        " tool_errors, prompt_tokens, completion_tokens)"
        " SELECT key, value, day, count(*), sum(failed), sum(tool_failed),"
        " sum(prompt_tokens), sum(completion_tokens) FROM segment_chunk"
        " GROUP BY key, value, day ON CONFLICT DO UPDATE SET"
        " conversations = conversations + excluded.conversations,"
        " errors = errors + excluded.errors,"
        " tool_errors = tool_errors + excluded.tool_errors,"
        " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
        " completion_tokens = completion_tokens + excluded.completion_tokens",
        "UPDATE ui_segment_day SET active_users = (SELECT count(*)"
        " FROM ui_segment_user_day u WHERE u.key = ui_segment_day.key"
        " AND u.value = ui_segment_day.value AND u.day = ui_segment_day.day)"
        " WHERE (key, value, day) IN (SELECT DISTINCT key, value, day"
        " FROM segment_chunk)",
        "INSERT INTO ui_segment_hist (key, value, day, bucket, n)"
        " SELECT key, value, day, bucket, count(*) FROM segment_chunk"
        " GROUP BY key, value, day, bucket ON CONFLICT DO UPDATE SET"
        " n = n + excluded.n",
        "INSERT INTO ui_segments (key, value, conversations) SELECT key, value,"
        " count(*) FROM segment_chunk GROUP BY key, value ON CONFLICT (key, value)"
        " DO UPDATE SET conversations = conversations + excluded.conversations",
        "DROP TABLE temp.segment_chunk",
    )


_FILL_ACTIVITY = (
    "INSERT INTO ui_user_week (week, user_key) SELECT DISTINCT"
    f" {WEEK_SQL.format('day')}, user_key FROM ui_user_day WHERE true"
    " ON CONFLICT DO NOTHING",
    "INSERT INTO ui_user_month (month, user_key) SELECT DISTINCT substr(day, 1, 7),"
    " user_key FROM ui_user_day WHERE true ON CONFLICT DO NOTHING",
    f"INSERT INTO ui_cohort_week (cohort, week, users) SELECT {_FIRST_WEEK},"
    " w.week, count(*) FROM ui_user_week w JOIN ui_user_stats s"
    " ON s.user_key = w.user_key WHERE w.user_key != '' AND s.first_at IS NOT NULL"
    " GROUP BY 1, 2",
)

# One chunk: the new conversations numbered (?1, ?2], with what the summaries need.
_CHUNK = (
    "CREATE TEMP TABLE chunk AS SELECT n, coalesce(user_id, '') AS user_key,"
    " session_n, date(started_at, 'unixepoch') AS day, started_at, latency_ms,"
    " error IS NOT NULL AS failed, coalesce(prompt_tokens, 0) AS prompt_tokens,"
    f" {tool_error_sql()} AS tool_failed,"
    " coalesce(completion_tokens, 0) AS completion_tokens, model,"
    " CAST(round(log(max(latency_ms, 1))"
    f" * {LATENCY_BUCKETS_PER_DECADE}) AS INTEGER) AS bucket"
    " FROM store.conversations WHERE n > ?1 AND n <= ?2"
)
_APPLY_CHUNK = (
    "INSERT INTO conversations_fts (rowid, body) SELECT c.n,"
    " (SELECT group_concat(coalesce(json_extract(m.value, '$[1]'), '') || ' '"
    " || coalesce(json_extract(m.value, '$[3]'), ''), char(10))"
    " FROM json_each(c.messages_json) m)"
    " FROM store.conversations c WHERE c.n > ?1 AND c.n <= ?2",
    "INSERT INTO ui_turns (user_key, n, latency_ms)"
    " SELECT user_key, n, latency_ms FROM chunk ORDER BY user_key, n",
    "INSERT INTO ui_user_day (day, user_key, conversations)"
    " SELECT day, user_key, count(*) FROM chunk GROUP BY day, user_key"
    " ON CONFLICT (day, user_key) DO UPDATE SET"
    " conversations = conversations + excluded.conversations",
    # Active users per ISO week and calendar month (see _ACTIVITY_SCHEMA): the
    # user-weeks new to the index, and the users whose first turn moved to an
    # earlier week (a turn that started before their first one arrived late),
    # whose weeks are counted out of their old cohort here and into the new
    # one once ui_user_stats has their first turn (_COUNT_COHORTS).
    "CREATE TEMP TABLE new_weeks AS SELECT DISTINCT"
    f" {WEEK_SQL.format('c.day')} AS week, c.user_key FROM chunk c"
    " WHERE NOT EXISTS (SELECT 1 FROM ui_user_week w"
    f" WHERE w.week = {WEEK_SQL.format('c.day')} AND w.user_key = c.user_key)",
    f"CREATE TEMP TABLE moved AS SELECT s.user_key, {_FIRST_WEEK} AS old"
    " FROM (SELECT user_key, min(started_at) AS first FROM chunk"
    " WHERE user_key != '' GROUP BY user_key) f"
    " JOIN ui_user_stats s ON s.user_key = f.user_key WHERE s.first_at IS NOT NULL"
    f" AND {WEEK_SQL.format('date(f.first, ' + repr('unixepoch') + ')')}"
    f" < {_FIRST_WEEK}",
    "INSERT INTO ui_cohort_week (cohort, week, users) SELECT m.old, w.week,"
    " -count(*) FROM moved m CROSS JOIN ui_user_week w ON w.user_key = m.user_key"
    " WHERE true GROUP BY m.old, w.week"
    " ON CONFLICT DO UPDATE SET users = users + excluded.users",
    "INSERT INTO ui_user_week (week, user_key) SELECT week, user_key FROM new_weeks"
    " WHERE true ON CONFLICT DO NOTHING",
    "INSERT INTO ui_user_month (month, user_key) SELECT DISTINCT substr(day, 1, 7),"
    " user_key FROM chunk WHERE true ON CONFLICT DO NOTHING",
    "INSERT INTO ui_day_stats (day, conversations, errors, tool_errors, latency_sum,"
    " prompt_tokens, completion_tokens)"
    " SELECT day, count(*), sum(failed), sum(tool_failed), sum(latency_ms),"
    " sum(prompt_tokens), sum(completion_tokens) FROM chunk GROUP BY day"
    " ON CONFLICT (day) DO UPDATE SET"
    " conversations = conversations + excluded.conversations,"
    " errors = errors + excluded.errors,"
    " tool_errors = tool_errors + excluded.tool_errors,"
    " latency_sum = latency_sum + excluded.latency_sum,"
    " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
    " completion_tokens = completion_tokens + excluded.completion_tokens",
    # Active users per day: recounted for the days this chunk touched.
    "UPDATE ui_day_stats SET active_users = (SELECT count(*) FROM ui_user_day u"
    " WHERE u.day = ui_day_stats.day) WHERE day IN (SELECT DISTINCT day FROM chunk)",
    "INSERT INTO ui_user_stats (user_key, conversations, errors, tool_errors,"
    " latency_sum, prompt_tokens, completion_tokens, first_at, last_at)"
    " SELECT user_key, count(*), sum(failed), sum(tool_failed), sum(latency_ms),"
    " sum(prompt_tokens), sum(completion_tokens), min(started_at), max(started_at)"
    " FROM chunk GROUP BY user_key"
    " ON CONFLICT (user_key) DO UPDATE SET"
    " conversations = conversations + excluded.conversations,"
    " errors = errors + excluded.errors,"
    " tool_errors = tool_errors + excluded.tool_errors,"
    " latency_sum = latency_sum + excluded.latency_sum,"
    " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
    " completion_tokens = completion_tokens + excluded.completion_tokens,"
    " first_at = min(coalesce(first_at, excluded.first_at), excluded.first_at),"
    " last_at = max(coalesce(last_at, excluded.last_at), excluded.last_at)",
    # The cohort counts of the new user-weeks and of every week of the users
    # who moved (see above), now that first_at is final for this chunk.
    f"INSERT INTO ui_cohort_week (cohort, week, users) SELECT {_FIRST_WEEK},"
    " w.week, count(*) FROM (SELECT week, user_key FROM new_weeks"
    " WHERE user_key NOT IN (SELECT user_key FROM moved) UNION ALL"
    " SELECT u.week, u.user_key FROM moved m CROSS JOIN ui_user_week u"
    " ON u.user_key = m.user_key) w JOIN ui_user_stats s ON s.user_key = w.user_key"
    " WHERE w.user_key != '' GROUP BY 1, 2"
    " ON CONFLICT DO UPDATE SET users = users + excluded.users",
    "DELETE FROM ui_cohort_week WHERE users = 0 AND cohort IN (SELECT old FROM moved)",
    "INSERT INTO ui_latency_hist (day, bucket, n)"
    " SELECT day, bucket, count(*) FROM chunk GROUP BY day, bucket"
    " ON CONFLICT (day, bucket) DO UPDATE SET n = n + excluded.n",
    "INSERT INTO ui_models (model, conversations)"
    " SELECT model, count(*) FROM chunk WHERE model IS NOT NULL GROUP BY model"
    " ON CONFLICT (model) DO UPDATE SET conversations = conversations + excluded.conversations",
    "INSERT INTO touched_sessions (n) SELECT DISTINCT session_n FROM chunk"
    " WHERE session_n IS NOT NULL ON CONFLICT (n) DO NOTHING",
)
# The store's ratings changed (their count and times, ``_FEEDBACK_PRINT``): the
# rows that left the store (replaced by a newer rating of their turn) are
# counted out, the new ones in. Ratings are few next to turns: both are
# anti-joins on the ids, done whole.
_FEEDBACK_PRINT = "SELECT count(*), total(created_at) FROM store.feedback"
_DIFF_FEEDBACK = (
    "CREATE TEMP TABLE gone_feedback AS SELECT k.* FROM main.ui_feedback k"
    " WHERE NOT EXISTS (SELECT 1 FROM store.feedback f WHERE f.id = k.id)",
    "CREATE TEMP TABLE new_feedback AS SELECT f.id, coalesce(f.user_id, '') AS"
    " user_key, f.session_id, date(f.created_at, 'unixepoch') AS day, f.rating"
    " FROM store.feedback f WHERE NOT EXISTS"
    " (SELECT 1 FROM main.ui_feedback k WHERE k.id = f.id)",
)
_APPLY_FEEDBACK = (
    "UPDATE ui_user_stats SET"
    " rating_up = rating_up - (SELECT count(*) FROM gone_feedback g"
    "  WHERE g.user_key = ui_user_stats.user_key AND g.rating > 0),"
    " rating_down = rating_down - (SELECT count(*) FROM gone_feedback g"
    "  WHERE g.user_key = ui_user_stats.user_key AND g.rating < 0)"
    " WHERE user_key IN (SELECT user_key FROM gone_feedback)",
    "UPDATE ui_day_stats SET"
    " rating_up = rating_up - (SELECT count(*) FROM gone_feedback g"
    "  WHERE g.day = ui_day_stats.day AND g.rating > 0),"
    " rating_down = rating_down - (SELECT count(*) FROM gone_feedback g"
    "  WHERE g.day = ui_day_stats.day AND g.rating < 0)"
    " WHERE day IN (SELECT day FROM gone_feedback)",
    "DELETE FROM ui_feedback WHERE id IN (SELECT id FROM gone_feedback)",
    "DELETE FROM ui_rated_segment WHERE id IN (SELECT id FROM gone_feedback)",
    rated_segment_rows("SELECT id FROM new_feedback"),
    "INSERT INTO ui_feedback (id, user_key, session_id, day, rating)"
    " SELECT id, user_key, session_id, day, rating FROM new_feedback",
    "INSERT INTO ui_user_stats (user_key, rating_up, rating_down)"
    " SELECT user_key, sum(rating > 0), sum(rating < 0) FROM new_feedback"
    " GROUP BY user_key ON CONFLICT (user_key) DO UPDATE SET"
    " rating_up = rating_up + excluded.rating_up,"
    " rating_down = rating_down + excluded.rating_down",
    "INSERT INTO ui_day_stats (day, rating_up, rating_down)"
    " SELECT day, sum(rating > 0), sum(rating < 0) FROM new_feedback GROUP BY day"
    " ON CONFLICT (day) DO UPDATE SET rating_up = rating_up + excluded.rating_up,"
    " rating_down = rating_down + excluded.rating_down",
    # A rating moves its session's last activity.
    "INSERT INTO touched_sessions (n) SELECT s.n FROM store.sessions s"
    " WHERE s.id IN (SELECT session_id FROM new_feedback"
    "  UNION SELECT session_id FROM gone_feedback) ON CONFLICT (n) DO NOTHING",
)
# Sessions: mirror every touched one (new, or changed by a new turn or rating),
# then recount sessions for the users they moved from and to.
_APPLY_SESSIONS = (
    "INSERT INTO touched_keys (user_key) SELECT DISTINCT u.user_key FROM ui_sessions u"
    " WHERE u.n IN (SELECT n FROM touched_sessions) ON CONFLICT DO NOTHING",
    "INSERT INTO ui_sessions (n, user_key, last_at)"
    " SELECT s.n, coalesce(s.user_id, ''), s.last_at FROM store.sessions s"
    " WHERE s.n IN (SELECT n FROM touched_sessions) ON CONFLICT (n) DO UPDATE SET"
    " user_key = excluded.user_key, last_at = excluded.last_at",
    "INSERT INTO touched_keys (user_key) SELECT DISTINCT u.user_key FROM ui_sessions u"
    " WHERE u.n IN (SELECT n FROM touched_sessions) ON CONFLICT DO NOTHING",
    "INSERT INTO ui_user_stats (user_key) SELECT user_key FROM touched_keys"
    " WHERE true ON CONFLICT (user_key) DO NOTHING",
    "UPDATE ui_user_stats SET sessions = (SELECT count(*) FROM ui_sessions s"
    " WHERE s.user_key = ui_user_stats.user_key)"
    " WHERE user_key IN (SELECT user_key FROM touched_keys)",
)
