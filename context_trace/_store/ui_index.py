"""
The dashboard's index: a sidecar SQLite file that ``context-trace ui`` owns.

The store stays exactly as the writer makes it (schema version 1: no triggers,
no extra indexes), so recording pays nothing for the dashboard. Everything the
dashboard needs to answer fast lives in a separate file, by default
``<store>.ui-index`` next to the store (see :func:`default_index_path`):

- summary tables (``ui_*``): totals per user, per day, per user and day, the
  users active each ISO week and calendar month, a latency histogram per day,
  and the models seen;
- segments (``ui_segment_*``): each turn's metadata values (plan, tenant,
  variant, model...) with the turn's measures, and the users who had them;
- token sums per model for the cost figures (``ui_cost_*``, see :mod:`.cost`);
- per-user lists of turn and session numbers (``ui_turns``, ``ui_sessions``),
  which stand in for the per-user indexes the store does without;
- ``conversations_fts``, an FTS5 index over the messages' text.

:class:`UIIndex` fills it incrementally from the store, opened read-only
(``mode=ro``). Conversations are append-only and numbered in commit order
(``n``, the INTEGER PRIMARY KEY), so a watermark on ``n`` finds the new ones;
sessions likewise by their ``n``, plus the sessions that new turns or ratings
touched (their ``last_at`` and user change). Ratings are one row per turn, a
newer rating replacing the older row, with no row number: when their count or
times change, the rows that left are counted out and the new ones in, by id. Each :meth:`UIIndex.refresh` handles a
bounded chunk in one transaction on the sidecar, so readers never see half a
chunk and a caller never waits long.

Turns with no user are counted under the user key ``''`` (user ids are never
empty: :func:`context_trace._scopes.normalize_id` rejects blank ids).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .codec import tool_error_sql
from .connection import read_uri
from .cost import COST_SCHEMA, COST_TABLES, apply_cost_chunk

__all__ = [
    "FTS_TOKENIZE",
    "INDEX_VERSION",
    "LATENCY_BUCKETS_PER_DECADE",
    "REQUEST_CHUNK",
    "SEGMENT_VALUE_MAX",
    "WEEK_SQL",
    "UIIndex",
    "default_index_path",
]

# Latency histograms use logarithmic buckets: bucket b holds latencies around
# 10 ** (b / LATENCY_BUCKETS_PER_DECADE) ms, so a percentile read from them is
# within about 6% of the exact value.
LATENCY_BUCKETS_PER_DECADE = 20
# The sidecar's own schema (its user_version). A sidecar of another version is
# rebuilt from the store: it holds nothing the store does not. Version 3 (0.2.0)
# counts tool errors (turns that answered although a tool failed) per user and
# day, and keeps a copy of the ratings it counted.
INDEX_VERSION = 3
_APPLICATION_ID = 0x63747569  # "ctui"
# The turns the dashboard indexes before answering a request, at most.
REQUEST_CHUNK = 1000
_SUFFIX = ".ui-index"
# How the full-text index splits text into words; search snippets use the same.
FTS_TOKENIZE = "unicode61 remove_diacritics 2"

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    """
    CREATE TABLE ui_user_stats (
        user_key TEXT PRIMARY KEY,
        conversations INTEGER NOT NULL DEFAULT 0,
        sessions INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0,
        latency_sum INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        rating_up INTEGER NOT NULL DEFAULT 0,
        rating_down INTEGER NOT NULL DEFAULT 0,
        first_at REAL,
        last_at REAL,
        tool_errors INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE ui_day_stats (
        day TEXT PRIMARY KEY,
        conversations INTEGER NOT NULL DEFAULT 0,
        active_users INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0,
        latency_sum INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        rating_up INTEGER NOT NULL DEFAULT 0,
        rating_down INTEGER NOT NULL DEFAULT 0,
        tool_errors INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE ui_user_day (
        day TEXT NOT NULL,
        user_key TEXT NOT NULL,
        conversations INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, user_key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE ui_latency_hist (
        day TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        n INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, bucket)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE ui_models (
        model TEXT PRIMARY KEY,
        conversations INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID
    """,
    # A user's turns (by the turn's own user id), newest last: the user page's
    # list, the conversations filter and the per-user latency median.
    """
    CREATE TABLE ui_turns (
        user_key TEXT NOT NULL,
        n INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        PRIMARY KEY (user_key, n)
    ) WITHOUT ROWID
    """,
    # The store's sessions by user, most recently active first.
    """
    CREATE TABLE ui_sessions (
        n INTEGER PRIMARY KEY,
        user_key TEXT NOT NULL,
        last_at REAL NOT NULL
    )
    """,
    "CREATE INDEX ui_sessions_user ON ui_sessions (user_key, last_at)",
    # The store's ratings as counted so far: a turn's newer rating replaces
    # the older row in the store, so a row that left is counted out again.
    """
    CREATE TABLE ui_feedback (
        id TEXT PRIMARY KEY,
        user_key TEXT NOT NULL,
        session_id TEXT NOT NULL,
        day TEXT NOT NULL,
        rating INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    # Contentless: the text lives in the store's conversations.messages_json;
    # the index maps words to conversations.n.
    "CREATE VIRTUAL TABLE conversations_fts USING fts5("
    f"body, content='', tokenize='{FTS_TOKENIZE}')",
    "INSERT INTO meta (key, value) VALUES ('conversation_n', 0), ('session_n', 0),"
    " ('feedback', ''), ('store_first', NULL)",
)

# The Monday (a UTC ``YYYY-MM-DD``) of the ISO week of a ``YYYY-MM-DD`` day.
WEEK_SQL = "date({}, '-6 days', 'weekday 1')"
# Who was active each ISO week and each calendar month (UTC): what retention
# counts (see :mod:`.retention`). Added to the version 3 schema without a new
# version: a sidecar without them gets them here, filled from ui_user_day.
_ACTIVITY_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS ui_user_week (
        week TEXT NOT NULL,
        user_key TEXT NOT NULL,
        PRIMARY KEY (week, user_key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS ui_user_month (
        month TEXT NOT NULL,
        user_key TEXT NOT NULL,
        PRIMARY KEY (month, user_key)
    ) WITHOUT ROWID
    """,
    # Users (never the no-user key) by the ISO week of their first turn
    # (cohort) active in each week: the cohort table, and weekly active and
    # new users, without a pass over the users.
    """
    CREATE TABLE IF NOT EXISTS ui_cohort_week (
        cohort TEXT NOT NULL,
        week TEXT NOT NULL,
        users INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (cohort, week)
    ) WITHOUT ROWID
    """,
)
_FIRST_WEEK = WEEK_SQL.format("date(s.first_at, 'unixepoch')")
# Segments: each turn's metadata (the scopes' and the run's, e.g. plan, tenant,
# variant, and its model) as (key, value) rows with the turn's measures, so a
# segment's figures are a range scan here, never a read of the store. The keys
# the converter computes per turn (latency, token counts, errors, the prompt)
# are measures, not segments, and long values are not segments either.
SEGMENT_VALUE_MAX = 200
_SEGMENT_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS ui_segment_turn (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        n INTEGER NOT NULL,
        user_key TEXT NOT NULL,
        started_at REAL NOT NULL,
        latency_ms INTEGER NOT NULL,
        failed INTEGER NOT NULL,
        tool_failed INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        PRIMARY KEY (key, value, n)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS ui_segment_user (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        user_key TEXT NOT NULL,
        conversations INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key, value, user_key)
    ) WITHOUT ROWID
    """,
    # Per segment and UTC day: what the overview and the comparison read for
    # ranges of whole days, as ui_day_stats, ui_user_day and ui_latency_hist.
    """
    CREATE TABLE IF NOT EXISTS ui_segment_day (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        day TEXT NOT NULL,
        conversations INTEGER NOT NULL DEFAULT 0,
        active_users INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0,
        tool_errors INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key, value, day)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS ui_segment_user_day (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        day TEXT NOT NULL,
        user_key TEXT NOT NULL,
        conversations INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key, value, day, user_key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS ui_segment_hist (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        day TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        n INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key, value, day, bucket)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS ui_segments (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        conversations INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key, value)
    ) WITHOUT ROWID
    """,
)
_NOT_SEGMENTS = (
    "latency_ms", "model_calls", "failed_tools", "stream_abandoned", "error_type",
    "error", "model_input",
)  # fmt: skip


def _segment_rows(first: str, last: str) -> str:
    """The (key, value) rows of the store's turns numbered (*first*, *last*]."""
    skipped = ", ".join(f"'{k}'" for k in _NOT_SEGMENTS)
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
        f" WHERE c.n > {first} AND c.n <= {last} AND j.type = 'text'"
        f" AND j.key NOT IN ({skipped}) AND j.key NOT LIKE '%!_tokens' ESCAPE '!'"
        f" AND length(j.value) BETWEEN 1 AND {SEGMENT_VALUE_MAX}"
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


def default_index_path(store: str | os.PathLike[str]) -> Path:
    """
    Where the dashboard keeps its index for *store*.

    ``<store>.ui-index`` next to the store when that directory is writable,
    else a file named after the store's absolute path in the user's cache
    directory (``$XDG_CACHE_HOME/context-trace``, default ``~/.cache``).

    .. versionadded:: 0.2.0
    """
    path = Path(store).absolute()
    beside = path.with_name(path.name + _SUFFIX)
    if os.access(beside if beside.exists() else path.parent, os.W_OK):
        return beside
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return cache / "context-trace" / f"{path.name}-{digest}{_SUFFIX}"


class UIIndex:
    """
    Keeps the dashboard's sidecar index in step with a store; thread-safe.

    Args:
        store: The context_trace store, only ever read (``mode=ro``).
        path: The sidecar file (default: :func:`default_index_path`); created
            if missing, rebuilt if it belongs to another store or version.

    Raises:
        FileNotFoundError: If *store* does not exist.
        ValueError: If *store* is not a context_trace store.
        OSError: If the sidecar cannot be created.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        store: str | os.PathLike[str],
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not os.path.exists(store):
            raise FileNotFoundError(f"no context_trace database at {store}")
        self.store = Path(store)
        self.path = Path(path) if path is not None else default_index_path(store)
        self._lock = threading.Lock()
        self._seen_version: int | None = None
        self._caught_up = False
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                self.path.absolute().as_uri(),
                uri=True,
                timeout=30.0,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise OSError(
                f"cannot create the dashboard index {self.path}: {exc}"
            ) from None
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA temp_store = MEMORY")
            self._conn.execute("ATTACH DATABASE ? AS store", (read_uri(self.store),))
            tables = {
                r[0]
                for r in self._conn.execute(
                    "SELECT name FROM store.sqlite_master WHERE type = 'table'"
                )
            }
            if not {"conversations", "sessions", "feedback"} <= tables:
                raise ValueError(f"{store} is not a context_trace store")
            self._prepare()
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        """Close the sidecar connection (waits for a refresh in progress)."""
        with self._lock:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> UIIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _prepare(self) -> None:
        """Create the sidecar's schema, or start over if it is not this store's."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            fresh = not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'meta'"
            ).fetchone()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            first = conn.execute(
                "SELECT id FROM store.conversations ORDER BY n LIMIT 1"
            ).fetchone()
            last_n = conn.execute(
                "SELECT coalesce(max(n), 0) FROM store.conversations"
            ).fetchone()[0]
            stale = fresh or version != INDEX_VERSION
            if not stale:
                meta = self._meta()
                known = meta["store_first"]
                # Another store under this name (a new file, or one emptied):
                # its first turn or its numbering differs from what we indexed.
                stale = meta["conversation_n"] > last_n or (
                    known is not None and (first is None or first[0] != known)
                )
            if stale:
                for kind, name in conn.execute(
                    "SELECT type, name FROM sqlite_master WHERE type IN"
                    " ('table', 'view') AND name NOT LIKE 'sqlite_%'"
                    " AND name NOT LIKE 'conversations_fts_%'"
                ).fetchall():
                    conn.execute(f'DROP {kind.upper()} IF EXISTS "{name}"')
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {_APPLICATION_ID:d}")
                conn.execute(f"PRAGMA user_version = {INDEX_VERSION:d}")
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'ui_cohort_week'"
            ).fetchone():
                for statement in (*_ACTIVITY_SCHEMA, *_FILL_ACTIVITY):
                    conn.execute(statement)
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'ui_segment_turn'"
            ).fetchone():
                # Up to the turns indexed so far; later chunks add theirs.
                done = conn.execute(
                    "SELECT value FROM meta WHERE key = 'conversation_n'"
                ).fetchone()[0]
                for statement in _SEGMENT_SCHEMA:
                    conn.execute(statement)
                for statement in _apply_segments("0", str(int(done))):
                    conn.execute(statement)
            if conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                " AND name IN (" + ", ".join(f"'{t}'" for t in COST_TABLES) + ")"
            ).fetchone()[0] < len(COST_TABLES):
                # The turns' tokens per model (see .cost): up to the turns
                # indexed so far, as for the segments; all of them anew if
                # one is missing.
                done = conn.execute(
                    "SELECT value FROM meta WHERE key = 'conversation_n'"
                ).fetchone()[0]
                for table in COST_TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in COST_SCHEMA:
                    conn.execute(statement)
                for statement in apply_cost_chunk(_segment_rows("?1", "?2")):
                    conn.execute(statement, (0, int(done)) if "?1" in statement else ())
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _meta(self) -> dict[str, Any]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def refresh(self, max_rows: int = 5000) -> bool:
        """
        Index up to *max_rows* new conversations, and the ratings that changed.

        One transaction on the sidecar; returns at once when the store has not
        changed since the last call that caught up.

        Returns:
            True if the index is now level with the store (as of this call),
            or if the index has been closed.
        """
        with self._lock:
            if self._closed:
                return True
            conn = self._conn
            changed = conn.execute("PRAGMA store.data_version").fetchone()[0]
            if self._caught_up and changed == self._seen_version:
                return True
            conn.execute("BEGIN IMMEDIATE")
            try:
                caught_up = self._step(max_rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                for table in (
                    "chunk",
                    "new_feedback",
                    "gone_feedback",
                    "touched_sessions",
                    "touched_keys",
                    "segment_chunk",
                    "new_weeks",
                    "moved",
                    "cost_chunk",
                ):
                    conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
            self._seen_version = changed
            self._caught_up = caught_up
            return caught_up

    def _step(self, max_rows: int) -> bool:
        conn = self._conn
        meta = self._meta()
        start = int(meta["conversation_n"])
        session_start = int(meta["session_n"])
        counted = meta["feedback"]
        last_n, last_session = conn.execute(
            "SELECT (SELECT coalesce(max(n), 0) FROM store.conversations),"
            " (SELECT coalesce(max(n), 0) FROM store.sessions)"
        ).fetchone()
        end = min(last_n, start + max_rows)
        session_end = min(last_session, session_start + max_rows)
        conn.execute("CREATE TEMP TABLE touched_sessions (n INTEGER PRIMARY KEY)")
        conn.execute("CREATE TEMP TABLE touched_keys (user_key TEXT PRIMARY KEY)")
        if end > start:
            conn.execute(_CHUNK, (start, end))
            for statement in _APPLY_CHUNK:
                conn.execute(statement, (start, end) if "?1" in statement else ())
            for statement in _apply_segments("?1", "?2"):
                conn.execute(statement, (start, end) if "?1" in statement else ())
            for statement in apply_cost_chunk(_segment_rows("?1", "?2")):
                conn.execute(statement, (start, end) if "?1" in statement else ())
            if meta["store_first"] is None:
                conn.execute(
                    "UPDATE meta SET value = (SELECT id FROM store.conversations"
                    " ORDER BY n LIMIT 1) WHERE key = 'store_first'"
                )
        conn.execute(
            "INSERT INTO touched_sessions (n) SELECT n FROM store.sessions"
            " WHERE n > ? AND n <= ? ON CONFLICT (n) DO NOTHING",
            (session_start, session_end),
        )
        from context_trace import _satisfaction  # its own tables, sat_*

        _satisfaction.index_chunk(conn, end)
        ratings = "{}:{!r}".format(*conn.execute(_FEEDBACK_PRINT).fetchone())
        if ratings != counted:
            for statement in (*_DIFF_FEEDBACK, *_APPLY_FEEDBACK):
                conn.execute(statement)
        for statement in _APPLY_SESSIONS:
            conn.execute(statement)
        conn.executemany(
            "UPDATE meta SET value = ? WHERE key = ?",
            [(end, "conversation_n"), (session_end, "session_n"),
             (ratings, "feedback")],
        )  # fmt: skip
        return bool(end == last_n and session_end == last_session)

    def build(self, progress: Callable[[int, int], None] | None = None) -> None:
        """
        Bring the index level with the store, in chunks.

        Args:
            progress: Called after each chunk with (turns indexed, turns in the store).
        """
        while not self.refresh(max_rows=50_000):
            if progress is not None:
                done, total = self.counts()
                progress(done, total)

    def counts(self) -> tuple[int, int]:
        """(turns indexed, turns in the store)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT (SELECT value FROM meta WHERE key = 'conversation_n'),"
                " (SELECT coalesce(max(n), 0) FROM store.conversations)"
            ).fetchone()
        return int(row[0]), int(row[1])
