"""
The sidecar's cost tables (see :mod:`.cost` and :mod:`.ui_index`): each turn's
token counts per model that answered in it, and their sums per UTC day, per user
(also per user and day) and per segment, filled a chunk of turns at a time.
"""

from __future__ import annotations

__all__ = [
    "COST_SCHEMA",
    "COST_TABLES",
    "FILL_HOUR",
    "FILL_USER_DAY",
    "TURN_COSTS",
    "apply_cost_chunk",
]

#: The sidecar tables this module keeps (see :mod:`.ui_index`).
COST_TABLES = ("ui_cost_turn", "ui_cost_day", "ui_cost_user", "ui_cost_segment_user",
               "ui_cost_segment_day", "ui_cost_user_day", "ui_cost_hour")  # fmt: skip
# The sums each table keeps, in this order everywhere.
_SUMS = ("turns", "calls", "reported", "input", "output", "cache_read",
         "cache_write", "reasoning")  # fmt: skip
_SUM_COLUMNS = ",\n".join(f"        {c} INTEGER NOT NULL DEFAULT 0" for c in _SUMS)

COST_SCHEMA = (
    f"""
    CREATE TABLE IF NOT EXISTS ui_cost_turn (
        n INTEGER NOT NULL,
        model TEXT NOT NULL,
        user_key TEXT NOT NULL,
        session_n INTEGER,
        started_at REAL NOT NULL,
{_SUM_COLUMNS},
        PRIMARY KEY (n, model)
    ) WITHOUT ROWID
    """,
    f"""
    CREATE TABLE IF NOT EXISTS ui_cost_day (
        day TEXT NOT NULL,
        model TEXT NOT NULL,
{_SUM_COLUMNS},
        PRIMARY KEY (day, model)
    ) WITHOUT ROWID
    """,
    f"""
    CREATE TABLE IF NOT EXISTS ui_cost_user (
        user_key TEXT NOT NULL,
        model TEXT NOT NULL,
{_SUM_COLUMNS},
        PRIMARY KEY (user_key, model)
    ) WITHOUT ROWID
    """,
    f"""
    CREATE TABLE IF NOT EXISTS ui_cost_segment_user (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        user_key TEXT NOT NULL,
        model TEXT NOT NULL,
{_SUM_COLUMNS},
        PRIMARY KEY (key, value, user_key, model)
    ) WITHOUT ROWID
    """,
    f"""
    CREATE TABLE IF NOT EXISTS ui_cost_segment_day (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        day TEXT NOT NULL,
        model TEXT NOT NULL,
{_SUM_COLUMNS},
        PRIMARY KEY (key, value, day, model)
    ) WITHOUT ROWID
    """,
    # Per UTC day, user and model (a range's users: its days' rows, summed).
    f"""
    CREATE TABLE IF NOT EXISTS ui_cost_user_day (
        day TEXT NOT NULL,
        user_key TEXT NOT NULL,
        model TEXT NOT NULL,
{_SUM_COLUMNS},
        PRIMARY KEY (day, user_key, model)
    ) WITHOUT ROWID
    """,
    # Per UTC hour (epoch seconds // 3600) and model: a 24-hour range's whole
    # hours, so that only its first, partial hour reads the turns.
    f"""
    CREATE TABLE IF NOT EXISTS ui_cost_hour (
        hour INTEGER NOT NULL,
        model TEXT NOT NULL,
{_SUM_COLUMNS},
        PRIMARY KEY (hour, model)
    ) WITHOUT ROWID
    """,
)

_ARRAY = (
    "coalesce(CASE WHEN json_valid(json_extract(t.metadata, '$.model_calls'))"
    " THEN json_type(json_extract(t.metadata, '$.model_calls')) END = 'array', 0)"
)


def _count(source: str, key: str) -> str:
    return f"coalesce(CAST(json_extract({source}, '$.{key}') AS INTEGER), 0)"


# The store's turns numbered (?1, ?2], as ``t``.
_TURNS = (
    "WITH t AS (SELECT n, coalesce(user_id, '') AS user_key, session_n, started_at,"
    " model, prompt_tokens, completion_tokens, metadata FROM store.conversations"
    " WHERE n > ?1 AND n <= ?2)"
)
# The turns answered by one call (no model_calls array): one row each, their
# own model and counts, already per turn and model.
_OWN = (
    "SELECT n, coalesce(model, '') AS model, user_key, session_n, started_at,"
    " date(started_at, 'unixepoch') AS day, 1 AS calls,"
    " (prompt_tokens IS NOT NULL OR completion_tokens IS NOT NULL) AS reported,"
    " coalesce(prompt_tokens, 0) AS input, coalesce(completion_tokens, 0) AS output,"
    f" {_count('metadata', 'cache_read_tokens')} AS cache_read,"
    f" {_count('metadata', 'cache_write_tokens')} AS cache_write,"
    f" {_count('metadata', 'reasoning_tokens')} AS reasoning, 1 AS turns"
    f" FROM t WHERE NOT ({_ARRAY}) AND (model IS NOT NULL"
    " OR prompt_tokens IS NOT NULL OR completion_tokens IS NOT NULL)"
)
# One row per entry of the model_calls of the other turns.
_ARRAY_CALLS = (
    "SELECT t.n, coalesce(json_extract(j.value, '$.model'), '') AS model,"
    " t.user_key, t.session_n, t.started_at,"
    " (json_extract(j.value, '$.prompt_tokens') IS NOT NULL"
    " OR json_extract(j.value, '$.completion_tokens') IS NOT NULL) AS reported,"
    f" {_count('j.value', 'prompt_tokens')} AS input,"
    f" {_count('j.value', 'completion_tokens')} AS output,"
    f" {_count('j.value', 'cache_read_tokens')} AS cache_read,"
    f" {_count('j.value', 'cache_write_tokens')} AS cache_write,"
    f" {_count('j.value', 'reasoning_tokens')} AS reasoning"
    f" FROM t, json_each(json_extract(t.metadata, '$.model_calls')) j WHERE {_ARRAY}"
)
#: Per turn numbered (?1, ?2] of the store (attached as ``store``) and model
#: that answered in it: ``(n, model, user_key, session_n, started_at, day,
#: calls, reported, input, output, cache_read, cache_write, reasoning, turns)``,
#: the rows of ``ui_cost_turn``. A turn counts once (``turns``), under the first
#: of its models by name. The topics file sums the same rows per topic (see
#: ``context_trace.analytics.topic_schema``). Only the turns with model_calls
#: are grouped and ranked: the others are one row each already.
TURN_COSTS = (
    f"{_TURNS} {_OWN} UNION ALL"
    " SELECT *, (model = min(model) OVER (PARTITION BY n)) AS turns FROM (SELECT n,"
    " model, user_key, session_n, started_at, date(started_at, 'unixepoch') AS day,"
    " count(*) AS calls, sum(reported) AS reported, sum(input) AS input,"
    " sum(output) AS output, sum(cache_read) AS cache_read,"
    " sum(cache_write) AS cache_write, sum(reasoning) AS reasoning"
    f" FROM ({_ARRAY_CALLS}) GROUP BY n, model)"
)
_SUMMED = ", ".join(f"sum({c}) AS {c}" for c in _SUMS)
_UPSERT = ", ".join(f"{c} = {c} + excluded.{c}" for c in _SUMS)
_COLS = ", ".join(_SUMS)


#: Fill ``ui_cost_user_day`` from the turns' rows already indexed (an index
#: made before it gains it without reading the store again).
FILL_USER_DAY = (
    f"INSERT INTO ui_cost_user_day (day, user_key, model, {_COLS})"
    " SELECT date(started_at, 'unixepoch') AS day, user_key, model,"
    f" {_SUMMED} FROM ui_cost_turn GROUP BY day, user_key, model"
)
#: Fill ``ui_cost_hour`` the same way.
FILL_HOUR = (
    f"INSERT INTO ui_cost_hour (hour, model, {_COLS})"
    " SELECT CAST(started_at / 3600 AS INTEGER) AS hour, model,"
    f" {_SUMMED} FROM ui_cost_turn GROUP BY hour, model"
)


def apply_cost_chunk(segment_rows: str) -> tuple[str, ...]:
    """
    The statements that index the cost of the store's turns numbered (?1, ?2];
    *segment_rows* is the SQL of their (key, value, n, ..., day) segment rows.
    """
    return (
        f"CREATE TEMP TABLE cost_chunk AS {TURN_COSTS}",
        "CREATE INDEX temp.cost_chunk_n ON cost_chunk (n)",
        f"INSERT INTO ui_cost_turn (n, model, user_key, session_n, started_at, {_COLS})"
        f" SELECT n, model, user_key, session_n, started_at, {_COLS} FROM cost_chunk"
        " WHERE true ON CONFLICT DO NOTHING",
        f"INSERT INTO ui_cost_day (day, model, {_COLS}) SELECT day, model, {_SUMMED}"
        f" FROM cost_chunk GROUP BY day, model ON CONFLICT DO UPDATE SET {_UPSERT}",
        f"INSERT INTO ui_cost_user (user_key, model, {_COLS}) SELECT user_key, model,"
        f" {_SUMMED} FROM cost_chunk GROUP BY user_key, model"
        f" ON CONFLICT DO UPDATE SET {_UPSERT}",
        f"INSERT INTO ui_cost_user_day (day, user_key, model, {_COLS}) SELECT day,"
        f" user_key, model, {_SUMMED} FROM cost_chunk GROUP BY day, user_key, model"
        f" ON CONFLICT DO UPDATE SET {_UPSERT}",
        f"INSERT INTO ui_cost_hour (hour, model, {_COLS}) SELECT"
        f" CAST(started_at / 3600 AS INTEGER) AS hour, model, {_SUMMED}"
        f" FROM cost_chunk GROUP BY hour, model ON CONFLICT DO UPDATE SET {_UPSERT}",
        f"INSERT INTO ui_cost_segment_day (key, value, day, model, {_COLS})"
        f" SELECT s.key, s.value, k.day, k.model,"
        f" {', '.join(f'sum(k.{c})' for c in _SUMS)} FROM ({segment_rows}) s"
        " JOIN cost_chunk k ON k.n = s.n GROUP BY s.key, s.value, k.day, k.model"
        f" ON CONFLICT DO UPDATE SET {_UPSERT}",
        f"INSERT INTO ui_cost_segment_user (key, value, user_key, model, {_COLS})"
        f" SELECT s.key, s.value, k.user_key, k.model,"
        f" {', '.join(f'sum(k.{c})' for c in _SUMS)} FROM ({segment_rows}) s"
        " JOIN cost_chunk k ON k.n = s.n GROUP BY s.key, s.value, k.user_key,"
        f" k.model ON CONFLICT DO UPDATE SET {_UPSERT}",
        "DROP TABLE temp.cost_chunk",
    )
