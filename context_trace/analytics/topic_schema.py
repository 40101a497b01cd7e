"""
The topics file's tables (``<store>.topics``, see ``topic_index``), and the
statements that apply one chunk of assignments to them.
"""

from __future__ import annotations

from context_trace._store.cost_index import _SUMS, TURN_COSTS
from context_trace._store.ui_index import LATENCY_BUCKETS_PER_DECADE
from context_trace._store.ui_index_sql import _segment_rows

_SUFFIX = ".topics"
# Turns read from the store per statement while fitting or assigning.
_READ_CHUNK = 10_000

_SUM_COLUMNS = ", ".join(f"{c} INTEGER NOT NULL" for c in _SUMS)
TOPIC_COSTS_TABLE = (
    "CREATE TABLE topic_costs (topic_id TEXT NOT NULL, day TEXT NOT NULL,"
    f" model TEXT NOT NULL, {_SUM_COLUMNS}, PRIMARY KEY (topic_id, day, model))"
    " WITHOUT ROWID"
)
# The same per segment value (a metadata key and value of the turns, as the
# dashboard's index has them: its ui_segment_turn rows).
TOPIC_SEGMENT_COSTS_TABLE = (
    "CREATE TABLE topic_segment_costs (key TEXT NOT NULL, value TEXT NOT NULL,"
    " topic_id TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL,"
    f" {_SUM_COLUMNS}, PRIMARY KEY (key, value, topic_id, day, model)) WITHOUT ROWID"
)

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "INSERT INTO meta (key, value) VALUES ('conversation_n', 0),"
    " ('store_first', NULL), ('fitted_n', 0), ('model', NULL), ('centroids', NULL),"
    " ('scored', 0)",
    """
    CREATE TABLE topic_turns (
        n INTEGER PRIMARY KEY,
        topic_id TEXT NOT NULL,
        user_key TEXT NOT NULL,
        session_n INTEGER,
        day TEXT NOT NULL,
        failed INTEGER NOT NULL,
        bucket INTEGER,
        penalty REAL
    )
    """,
    "CREATE INDEX topic_turns_topic ON topic_turns (topic_id, user_key)",
    # A topic's turns in order (the dashboard's /conversations?topic=).
    "CREATE INDEX topic_turns_by_topic ON topic_turns (topic_id)",
    # A topic's flagged turns, worst first (its "struggling" evidence).
    "CREATE INDEX topic_turns_flagged ON topic_turns (topic_id, penalty)"
    " WHERE penalty > 0",
    # Per topic and UTC day: turns, failed turns, and the turns scored for
    # satisfaction with the sum of their scores (see _satisfaction); a latency
    # histogram per topic and day, and per topic for all time (the
    # dashboard's log buckets): ranges read these, never the turns.
    """
    CREATE TABLE topic_days (
        topic_id TEXT NOT NULL,
        day TEXT NOT NULL,
        turns INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        scored INTEGER NOT NULL,
        score_sum REAL NOT NULL,
        PRIMARY KEY (topic_id, day)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX topic_days_day ON topic_days (day)",
    """
    CREATE TABLE topic_hist (
        day TEXT NOT NULL,
        topic_id TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (day, topic_id, bucket)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE topic_hist_all (
        topic_id TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (topic_id, bucket)
    ) WITHOUT ROWID
    """,
    # Kept level with topic_turns chunk by chunk, so the pages read totals
    # without counting a million turns: turns per (topic, user), and per topic
    # its turns and distinct users (turns with no user not counted).
    """
    CREATE TABLE topic_users (
        topic_id TEXT NOT NULL,
        user_key TEXT NOT NULL,
        turns INTEGER NOT NULL,
        PRIMARY KEY (topic_id, user_key)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX topic_users_user ON topic_users (user_key)",
    # Per topic, UTC day and model that answered: the token sums of the
    # topic's turns (the rows of the dashboard's ui_cost_turn, summed), kept
    # level with topic_turns chunk by chunk, so that cost per topic over a
    # range reads these sums and prices them at read time.
    TOPIC_COSTS_TABLE,
    TOPIC_SEGMENT_COSTS_TABLE,
    """
    CREATE TABLE topic_summary (
        topic_id TEXT PRIMARY KEY,
        turns INTEGER NOT NULL,
        users INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
)

# One chunk of assignments, applied: the turns' earlier topics (a re-fit
# re-assigns them) counted out, the new ones in, then the turns written. The
# count-out statements loop over the chunk and look each turn up in topic_turns
# (CROSS JOIN fixes that order): left to itself, SQLite scans all of
# topic_turns in topic order to save a sort, once per chunk and statement.
_APPLY = (
    "CREATE TEMP TABLE chunk_assign (n INTEGER PRIMARY KEY, topic_id TEXT,"
    " user_key TEXT, session_n INTEGER, day TEXT, failed INTEGER, bucket INTEGER,"
    " penalty REAL)",
    "CREATE TEMP TABLE delta (topic_id TEXT, user_key TEXT, turns INTEGER,"
    " PRIMARY KEY (topic_id, user_key))",
    "CREATE TEMP TABLE day_delta (topic_id TEXT, day TEXT, turns INTEGER,"
    " errors INTEGER, scored INTEGER, score_sum REAL, PRIMARY KEY (topic_id, day))",
    "CREATE TEMP TABLE hist_delta (topic_id TEXT, day TEXT, bucket INTEGER,"
    " n INTEGER, PRIMARY KEY (topic_id, day, bucket))",
    "CREATE TEMP TABLE cost_delta (topic_id TEXT, day TEXT, model TEXT,"
    f" {', '.join(f'{c} INTEGER' for c in _SUMS)},"
    " PRIMARY KEY (topic_id, day, model))",
    "CREATE TEMP TABLE segment_cost_delta (key TEXT, value TEXT, topic_id TEXT,"
    f" day TEXT, model TEXT, {', '.join(f'{c} INTEGER' for c in _SUMS)},"
    " PRIMARY KEY (key, value, topic_id, day, model))",
)


def assign_chunk(scored: bool) -> str:
    """
    The INSERT of a chunk's assignments into chunk_assign, given as one JSON
    array of ``[n, topic_id]`` (one statement, not a row each): each turn's
    user, session, UTC day, failed flag and latency bucket read from the
    store, its penalty from the dashboard's index if *scored* (else NULL).
    """
    penalty = "s.penalty" if scored else "NULL"
    join = " LEFT JOIN ui.sat_turns s ON s.n = c.n" if scored else ""
    return (
        "INSERT INTO temp.chunk_assign SELECT c.n, j.value ->> 1,"
        " coalesce(c.user_id, ''), c.session_n, date(c.started_at, 'unixepoch'),"
        " c.error IS NOT NULL, CAST(round(log(max(c.latency_ms, 1))"
        f" * {LATENCY_BUCKETS_PER_DECADE}) AS INTEGER), {penalty}"
        f" FROM json_each(?) j CROSS JOIN store.conversations c ON c.n = j.value ->> 0{join}"
    )


_COST_COLS = ", ".join(_SUMS)
_COST_UPSERT = ", ".join(f"{c} = {c} + excluded.{c}" for c in _SUMS)
_NEGATED = ", ".join(f"-sum(k.{c})" for c in _SUMS)
_SUMMED = ", ".join(f"sum(k.{c})" for c in _SUMS)
# The token sums of a chunk: each turn's rows (chunk_cost, from the store:
# TURN_COSTS over the chunk's turn numbers) counted out of its earlier topic (a
# re-fit moves it) and into its new one. Run before topic_turns is written.
_APPLY_COSTS = (
    f"INSERT INTO temp.cost_delta SELECT t.topic_id, k.day, k.model, {_NEGATED}"
    " FROM topic_turns t JOIN temp.chunk_cost k ON k.n = t.n"
    " GROUP BY t.topic_id, k.day, k.model",
    f"INSERT INTO temp.cost_delta SELECT a.topic_id, k.day, k.model, {_SUMMED}"
    " FROM temp.chunk_assign a JOIN temp.chunk_cost k ON k.n = a.n WHERE true"
    " GROUP BY a.topic_id, k.day, k.model"
    f" ON CONFLICT (topic_id, day, model) DO UPDATE SET {_COST_UPSERT}",
    "INSERT INTO topic_costs SELECT * FROM temp.cost_delta WHERE true"
    f" ON CONFLICT (topic_id, day, model) DO UPDATE SET {_COST_UPSERT}",
    "DELETE FROM topic_costs WHERE calls <= 0 AND (topic_id, day, model) IN"
    " (SELECT topic_id, day, model FROM temp.cost_delta)",
    "INSERT INTO temp.segment_cost_delta SELECT s.key, s.value, t.topic_id, k.day,"
    f" k.model, {_NEGATED} FROM temp.chunk_segment s"
    " JOIN topic_turns t ON t.n = s.n JOIN temp.chunk_cost k ON k.n = s.n"
    " GROUP BY s.key, s.value, t.topic_id, k.day, k.model",
    "INSERT INTO temp.segment_cost_delta SELECT s.key, s.value, a.topic_id, k.day,"
    f" k.model, {_SUMMED} FROM temp.chunk_segment s"
    " JOIN temp.chunk_assign a ON a.n = s.n JOIN temp.chunk_cost k ON k.n = s.n"
    " WHERE true GROUP BY s.key, s.value, a.topic_id, k.day, k.model"
    f" ON CONFLICT (key, value, topic_id, day, model) DO UPDATE SET {_COST_UPSERT}",
    "INSERT INTO topic_segment_costs SELECT * FROM temp.segment_cost_delta"
    " WHERE true ON CONFLICT (key, value, topic_id, day, model)"
    f" DO UPDATE SET {_COST_UPSERT}",
    "DELETE FROM topic_segment_costs WHERE calls <= 0"
    " AND (key, value, topic_id, day, model) IN"
    " (SELECT key, value, topic_id, day, model FROM temp.segment_cost_delta)",
)
# A chunk's per-turn cost rows (the store's turns numbered (?1, ?2]), as the
# dashboard's index has them.
CHUNK_COSTS = (
    f"CREATE TEMP TABLE chunk_cost AS {TURN_COSTS}",
    "CREATE INDEX temp.chunk_cost_n ON chunk_cost (n)",
    "CREATE TEMP TABLE chunk_segment AS SELECT key, value, n"
    f" FROM ({_segment_rows('?1', '?2')})",
)
# The same rows read from the dashboard's index (attached as ``ui``) when it
# has indexed the chunk's turns: its ui_cost_turn rows are TURN_COSTS's, and its
# ui_segment_turn rows _segment_rows's (one range per segment value), so the
# store's metadata is not parsed a second time.
CHUNK_COSTS_FROM_INDEX = (
    "CREATE TEMP TABLE chunk_cost AS SELECT n, model, user_key, session_n,"
    f" started_at, date(started_at, 'unixepoch') AS day, {_COST_COLS}"
    " FROM ui.ui_cost_turn WHERE n > ?1 AND n <= ?2",
    "CREATE INDEX temp.chunk_cost_n ON chunk_cost (n)",
    "CREATE TEMP TABLE chunk_segment AS SELECT s.key, s.value, s.n"
    " FROM ui.ui_segments g CROSS JOIN ui.ui_segment_turn s"
    " ON s.key = g.key AND s.value = g.value AND s.n > ?1 AND s.n <= ?2",
)
# The cost rows of a chunk's turns (chunk_cost, chunk_segment: CHUNK_COSTS)
# that already have their topic, summed in (a topics file made before the cost
# sums existed).
FILL_COSTS = (
    f"INSERT INTO topic_costs (topic_id, day, model, {_COST_COLS})"
    f" SELECT t.topic_id, k.day, k.model, {_SUMMED} FROM temp.chunk_cost k"
    " JOIN topic_turns t ON t.n = k.n WHERE true GROUP BY t.topic_id, k.day, k.model"
    f" ON CONFLICT (topic_id, day, model) DO UPDATE SET {_COST_UPSERT}",
    f"INSERT INTO topic_segment_costs (key, value, topic_id, day, model, {_COST_COLS})"
    f" SELECT s.key, s.value, t.topic_id, k.day, k.model, {_SUMMED}"
    " FROM temp.chunk_segment s JOIN temp.chunk_cost k ON k.n = s.n"
    " JOIN topic_turns t ON t.n = k.n WHERE true"
    " GROUP BY s.key, s.value, t.topic_id, k.day, k.model"
    f" ON CONFLICT (key, value, topic_id, day, model) DO UPDATE SET {_COST_UPSERT}",
)
_SCORE = "max(0.0, min(1.0, 1.0 - {0}.penalty))"
# The per-day totals and histograms of a chunk: the turns' earlier topics
# counted out (a re-fit moves them), the new ones in.
_APPLY_DAYS = (
    "INSERT INTO temp.day_delta SELECT t.topic_id, t.day, -count(*), -sum(t.failed),"
    f" -count(t.penalty), -total({_SCORE.format('t')})"
    " FROM temp.chunk_assign a CROSS JOIN topic_turns t ON t.n = a.n"
    " GROUP BY t.topic_id, t.day",
    "INSERT INTO temp.day_delta SELECT topic_id, day, count(*), sum(failed),"
    f" count(penalty), total({_SCORE.format('a')}) FROM temp.chunk_assign a"
    " WHERE true GROUP BY topic_id, day ON CONFLICT (topic_id, day) DO UPDATE SET"
    " turns = turns + excluded.turns, errors = errors + excluded.errors,"
    " scored = scored + excluded.scored, score_sum = score_sum + excluded.score_sum",
    "INSERT INTO topic_days SELECT * FROM temp.day_delta WHERE true"
    " ON CONFLICT (topic_id, day) DO UPDATE SET"
    " turns = turns + excluded.turns, errors = errors + excluded.errors,"
    " scored = scored + excluded.scored, score_sum = score_sum + excluded.score_sum",
    "DELETE FROM topic_days WHERE turns <= 0 AND (topic_id, day) IN"
    " (SELECT topic_id, day FROM temp.day_delta)",
    "INSERT INTO temp.hist_delta SELECT t.topic_id, t.day, t.bucket, -count(*)"
    " FROM temp.chunk_assign a CROSS JOIN topic_turns t ON t.n = a.n"
    " WHERE t.bucket IS NOT NULL GROUP BY t.topic_id, t.day, t.bucket",
    "INSERT INTO temp.hist_delta SELECT topic_id, day, bucket, count(*)"
    " FROM temp.chunk_assign WHERE bucket IS NOT NULL GROUP BY topic_id, day, bucket"
    " ON CONFLICT (topic_id, day, bucket) DO UPDATE SET n = n + excluded.n",
    "INSERT INTO topic_hist (day, topic_id, bucket, n) SELECT day, topic_id, bucket,"
    " n FROM temp.hist_delta WHERE n != 0"
    " ON CONFLICT (day, topic_id, bucket) DO UPDATE SET n = n + excluded.n",
    "INSERT INTO topic_hist_all (topic_id, bucket, n) SELECT topic_id, bucket,"
    " sum(n) FROM temp.hist_delta WHERE true GROUP BY topic_id, bucket"
    " HAVING sum(n) != 0"
    " ON CONFLICT (topic_id, bucket) DO UPDATE SET n = n + excluded.n",
    "DELETE FROM topic_hist WHERE n <= 0 AND (day, topic_id, bucket) IN"
    " (SELECT day, topic_id, bucket FROM temp.hist_delta)",
    "DELETE FROM topic_hist_all WHERE n <= 0",
)
_APPLY_CHUNK = (
    "INSERT INTO temp.delta SELECT t.topic_id, t.user_key, -count(*)"
    " FROM temp.chunk_assign a CROSS JOIN topic_turns t ON t.n = a.n"
    " GROUP BY t.topic_id, t.user_key",
    "INSERT INTO temp.delta SELECT topic_id, user_key, count(*)"
    " FROM temp.chunk_assign WHERE true GROUP BY topic_id, user_key"
    " ON CONFLICT (topic_id, user_key) DO UPDATE SET turns = turns + excluded.turns",
    "INSERT INTO topic_summary (topic_id, turns, users)"
    " SELECT d.topic_id, sum(d.turns), sum(CASE WHEN d.user_key = '' THEN 0"
    " WHEN coalesce(u.turns, 0) = 0 AND d.turns > 0 THEN 1"
    " WHEN u.turns > 0 AND u.turns + d.turns <= 0 THEN -1 ELSE 0 END)"
    " FROM temp.delta d LEFT JOIN topic_users u"
    " ON u.topic_id = d.topic_id AND u.user_key = d.user_key"
    " WHERE true GROUP BY d.topic_id"
    " ON CONFLICT (topic_id) DO UPDATE SET turns = turns + excluded.turns,"
    " users = users + excluded.users",
    "INSERT INTO topic_users (topic_id, user_key, turns)"
    " SELECT topic_id, user_key, turns FROM temp.delta WHERE turns != 0"
    " ON CONFLICT (topic_id, user_key) DO UPDATE SET turns = turns + excluded.turns",
    "DELETE FROM topic_users WHERE turns <= 0 AND (topic_id, user_key) IN"
    " (SELECT topic_id, user_key FROM temp.delta)",
    "DELETE FROM topic_summary WHERE turns <= 0",
    *_APPLY_DAYS,
    *_APPLY_COSTS,
    "INSERT OR REPLACE INTO topic_turns"
    " (n, topic_id, user_key, session_n, day, failed, bucket, penalty)"
    " SELECT n, topic_id, user_key, session_n, day, failed, bucket, penalty"
    " FROM temp.chunk_assign",
)
