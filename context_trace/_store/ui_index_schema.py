"""
The dashboard index's schema (see :mod:`.ui_index`): its version, its tables,
and the constants its readers share (latency buckets, the full-text tokenizer,
the ISO week of a day).
"""

from __future__ import annotations

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
