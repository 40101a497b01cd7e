"""
A store's topics, kept in a SQLite file of their own beside the store.

The file (``<store>.topics`` by default, see :func:`default_topics_path`)
holds the fitted model (labels and centroids) and one row per turn: its topic
id, user and session. The store itself is only read (``mode=ro``).

When topics are (re-)fitted:

- the first time the store has turns with words in them;
- again each time the store has twice as many turns as when the model was
  last fitted (so a growing store is re-fitted at 2x, 4x, 8x... its size,
  which costs about as much in total as fitting once more at the end);
- on demand: :meth:`TopicIndex.refit` (``context-trace topics --refit``).

Between fits, new turns are assigned to the existing topics (nearest
centroid) in bounded chunks by :meth:`TopicIndex.refresh`, which the
dashboard calls with its own index refresh. A re-fit keeps the ids of the
topics that stayed (see :data:`.topics.KEEP_ID_SIMILARITY`) and re-assigns
every turn, chunk by chunk; until a turn is re-assigned it keeps its topic.
"""

from __future__ import annotations

import heapq
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from context_trace._store.connection import read_uri
from context_trace._store.ui_index import (
    LATENCY_BUCKETS_PER_DECADE,
    default_index_path,
)

from . import topics as _topics
from .topics import MISC, TopicModel

__all__ = [
    "STRUGGLING_MIN_CONVERSATIONS",
    "STRUGGLING_MIN_SHARE",
    "TopicIndex",
    "TopicRow",
    "default_topics_path",
    "read_topics",
    "struggling",
]

_VERSION = 3
#: A struggling topic has at least this many conversations in the range...
STRUGGLING_MIN_CONVERSATIONS = 3  # as MIN_TURNS for unhappy users
#: ...and at least this share of the range's conversations.
STRUGGLING_MIN_SHARE = 0.001
_SUFFIX = ".topics"
# Turns read from the store per statement while fitting or assigning.
_READ_CHUNK = 10_000

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
    """
    CREATE TABLE topic_summary (
        topic_id TEXT PRIMARY KEY,
        turns INTEGER NOT NULL,
        users INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
)

# One chunk of assignments, applied: the turns' earlier topics (a re-fit
# re-assigns them) counted out, the new ones in, then the turns written.
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
)
_SCORE = "max(0.0, min(1.0, 1.0 - {0}.penalty))"
# The per-day totals and histograms of a chunk: the turns' earlier topics
# counted out (a re-fit moves them), the new ones in.
_APPLY_DAYS = (
    "INSERT INTO temp.day_delta SELECT t.topic_id, t.day, -count(*), -sum(t.failed),"
    f" -count(t.penalty), -total({_SCORE.format('t')})"
    " FROM topic_turns t JOIN temp.chunk_assign a ON a.n = t.n"
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
    " FROM topic_turns t JOIN temp.chunk_assign a ON a.n = t.n"
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
    " FROM topic_turns t JOIN temp.chunk_assign a ON a.n = t.n"
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
    "INSERT OR REPLACE INTO topic_turns"
    " (n, topic_id, user_key, session_n, day, failed, bucket, penalty)"
    " SELECT n, topic_id, user_key, session_n, day, failed, bucket, penalty"
    " FROM temp.chunk_assign",
)


def default_topics_path(store: str | os.PathLike[str]) -> Path:
    """``<store>.topics`` where the dashboard's index would go (same directory rules)."""
    index = default_index_path(store)
    return index.with_name(index.name.removesuffix(".ui-index") + _SUFFIX)


@dataclass(frozen=True)
class TopicRow:
    """
    One topic in a store.

    Attributes:
        id: The topic's stable id, or ``"misc"`` for the questions near no topic.
        label: Its characteristic terms, joined by `` / ``.
        terms: The same, as a tuple.
        question: Its representative question.
        conversations: Turns in it (in the range read, if one was given).
        users: Distinct users among its turns, all time (turns with no user
            not counted).
        share: ``conversations`` over all turns that have a topic or are misc.
        satisfaction: The mean score of its scored turns, from their own
            signals (see README's "Satisfaction"; ratings and ended sessions
            not included), or None when none is scored; None for one user's
            topics.
        scored: How many of its turns have a satisfaction score.
        error_rate: Failed turns over its turns (None for one user's topics).
        latency_p50_ms: The median latency of its turns, from a histogram of
            logarithmic buckets (within about 6%), or None.
        trend: ``(day, turns)`` per UTC day of the range, oldest first.
    """

    id: str
    label: str
    terms: tuple[str, ...]
    question: str
    conversations: int
    users: int
    share: float
    satisfaction: float | None = None
    scored: int = 0
    error_rate: float | None = None
    latency_p50_ms: int | None = None
    trend: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "terms": list(self.terms),
                "question": self.question, "conversations": self.conversations,
                "users": self.users, "share": self.share,
                "satisfaction": None if self.satisfaction is None
                else round(self.satisfaction, 3),
                "scored": self.scored,
                "error_rate": None if self.error_rate is None
                else round(self.error_rate, 4),
                "latency_p50_ms": self.latency_p50_ms,
                "trend": [{"day": d, "conversations": n} for d, n in self.trend]}  # fmt: skip


class TopicIndex:
    """
    Keeps a store's topics and each turn's topic; thread-safe.

    Args:
        store: The context_trace store, only ever read.
        path: The topics file (default: :func:`default_topics_path`); created
            if missing, started over if it belongs to another store.
        n_topics: Fit this many topics instead of the number the data gives.
        scores: The dashboard's index, whose satisfaction scores the topics
            read (default: :func:`.ui_index.default_index_path`).

    Raises:
        FileNotFoundError: If *store* does not exist.
        ValueError: If *store* is not a context_trace store, or *n_topics* < 1.
        OSError: If the topics file cannot be created.
    """

    def __init__(
        self,
        store: str | os.PathLike[str],
        path: str | os.PathLike[str] | None = None,
        *,
        n_topics: int | None = None,
        scores: str | os.PathLike[str] | None = None,
    ) -> None:
        if n_topics is not None and (isinstance(n_topics, bool) or n_topics < 1):
            raise ValueError(f"n_topics must be at least 1, got {n_topics!r}")
        if not os.path.exists(store):
            raise FileNotFoundError(f"no context_trace database at {store}")
        self.store = Path(store)
        self.path = Path(path) if path is not None else default_topics_path(store)
        self.n_topics = n_topics
        self._lock = threading.Lock()
        self._model: TopicModel | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                self.path.absolute().as_uri(), uri=True, timeout=30.0,
                isolation_level=None, check_same_thread=False,
            )  # fmt: skip
        except sqlite3.Error as exc:
            raise OSError(f"cannot create the topics file {self.path}: {exc}") from None
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("ATTACH DATABASE ? AS store", (read_uri(self.store),))
            tables = {
                r[0]
                for r in self._conn.execute(
                    "SELECT name FROM store.sqlite_master WHERE type = 'table'"
                )
            }
            if "conversations" not in tables:
                raise ValueError(f"{store} is not a context_trace store")
            self._scored = self._attach_scores(
                Path(scores) if scores is not None else default_index_path(store)
            )
            self._prepare()
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> TopicIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _attach_scores(self, ui: Path) -> bool:
        """Attach the dashboard's index (read-only) if it scores turns."""
        if not ui.exists():
            return False
        self._conn.execute(
            "ATTACH DATABASE ? AS ui", (ui.absolute().as_uri() + "?mode=ro",)
        )
        return bool(
            self._conn.execute(
                "SELECT 1 FROM ui.sqlite_master WHERE name = 'sat_meta'"
            ).fetchone()
        )

    # ------------------------------------------------------------------ state
    def _prepare(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            fresh = not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'meta'"
            ).fetchone()
            stale = (
                fresh or conn.execute("PRAGMA user_version").fetchone()[0] != _VERSION
            )
            if not stale:
                meta = self._meta()
                first = conn.execute(
                    "SELECT id FROM store.conversations ORDER BY n LIMIT 1"
                ).fetchone()
                last_n = conn.execute(
                    "SELECT coalesce(max(n), 0) FROM store.conversations"
                ).fetchone()[0]
                known = meta["store_first"]
                stale = int(meta["conversation_n"]) > last_n or (
                    known is not None and (first is None or first[0] != known)
                )
                if (
                    not stale
                    and self._scored
                    and not meta["scored"]
                    and int(meta["conversation_n"]) > 0
                ):
                    # Assigned before the dashboard's index scored turns:
                    # assign every turn again (each keeps its topic until
                    # then), so that every topic's satisfaction counts them.
                    conn.execute(
                        "UPDATE meta SET value = 0 WHERE key = 'conversation_n'"
                    )
            if stale:
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%'"
                ).fetchall():
                    conn.execute(f'DROP TABLE IF EXISTS "{name}"')
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {_VERSION:d}")
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'scored' AND (value = 0 OR ?)",
                (int(self._scored), int(self._scored)),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _meta(self) -> dict[str, Any]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def _load_model(self, meta: dict[str, Any]) -> TopicModel | None:
        if meta["model"] is None:
            return None
        data = json.loads(meta["model"])
        data["centroids"] = np.frombuffer(meta["centroids"], dtype=np.float32)
        return TopicModel.from_json(data)

    @property
    def model(self) -> TopicModel | None:
        """The fitted model, or None before the first fit."""
        with self._lock:
            if self._model is None:
                self._model = self._load_model(self._meta())
            return self._model

    def _store_n(self) -> int:
        return int(
            self._conn.execute(
                "SELECT coalesce(max(n), 0) FROM store.conversations"
            ).fetchone()[0]
        )

    def _turns(self, start: int, end: int) -> Iterator[list[tuple[Any, ...]]]:
        """
        (n, question, user_key, session_n, day, failed, latency bucket,
        penalty) of turns numbered (start, end], in chunks; the penalty (the
        turn's own satisfaction signals) from the dashboard's index, or None.
        """
        penalty = "s.penalty" if self._scored else "NULL"
        join = " LEFT JOIN ui.sat_turns s ON s.n = c.n" if self._scored else ""
        while start < end:
            rows = self._conn.execute(
                "SELECT c.n, c.messages_json, coalesce(c.user_id, ''), c.session_n,"
                " date(c.started_at, 'unixepoch'), c.error IS NOT NULL,"
                " CAST(round(log(max(c.latency_ms, 1))"
                f" * {LATENCY_BUCKETS_PER_DECADE}) AS INTEGER), {penalty}"
                f" FROM store.conversations c{join}"
                " WHERE c.n > ? AND c.n <= ? ORDER BY c.n LIMIT ?",
                (start, end, _READ_CHUNK),
            ).fetchall()
            if not rows:
                return
            yield [
                (n, _topics.turn_question(json.loads(text or "[]")), *rest)
                for n, text, *rest in rows
            ]
            start = rows[-1][0]

    def _scored_n(self) -> int | None:
        """The last turn the dashboard's index has scored, or None without it."""
        if not self._scored:
            return None
        row = self._conn.execute(
            "SELECT value FROM ui.sat_meta WHERE key = 'n'"
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def _questions(self, start: int, end: int) -> Iterator[list[tuple[Any, ...]]]:
        """(n, question, user_key, session_n) of turns numbered (start, end], in chunks."""
        while start < end:
            rows = self._conn.execute(
                "SELECT n, messages_json, coalesce(user_id, ''), session_n"
                " FROM store.conversations WHERE n > ? AND n <= ? ORDER BY n LIMIT ?",
                (start, end, _READ_CHUNK),
            ).fetchall()
            if not rows:
                return
            yield [
                (n, _topics.turn_question(json.loads(text or "[]")), user, session)
                for n, text, user, session in rows
            ]
            start = rows[-1][0]

    # ------------------------------------------------------------------ fitting
    def _fit(self, end: int, previous: TopicModel | None) -> TopicModel:
        """Fit on the turns up to *end*, sampling as :func:`.topics.fit` does."""
        sample_size = 6000
        # The distinct questions with the smallest hashes, as fit() samples
        # them, counted without holding every question in memory: a question
        # can only end in the sample if it entered it the first time it came.
        heap: list[tuple[int, str]] = []
        counts: dict[str, int] = {}
        total = 0
        for chunk in self._questions(0, end):
            for _, question, _, _ in chunk:
                if not question.strip():
                    continue
                total += 1
                if question in counts:
                    counts[question] += 1
                    continue
                key = -int.from_bytes(_topics._hash_key(question), "big")
                if len(heap) < sample_size:
                    heapq.heappush(heap, (key, question))
                    counts[question] = 1
                elif (key, question) > heap[0]:
                    _, gone = heapq.heapreplace(heap, (key, question))
                    del counts[gone]
                    counts[question] = 1
        sample = [q for q, c in counts.items() for _ in range(c)]
        model = _topics.fit(
            sample, n_topics=self.n_topics, sample_size=sample_size,
            previous=previous,
        )  # fmt: skip
        model.fitted_on = total
        return model

    def _save_model(self, model: TopicModel, fitted_n: int) -> None:
        data = model.to_json()
        del data["centroids"]
        self._conn.executemany(
            "UPDATE meta SET value = ? WHERE key = ?",
            [(json.dumps(data), "model"),
             (np.ascontiguousarray(model.centroids, np.float32).tobytes(), "centroids"),
             (fitted_n, "fitted_n"), (0, "conversation_n")],
        )  # fmt: skip
        self._model = model

    def refit(self) -> TopicModel:
        """Fit the topics again on the whole store now, and re-assign every turn."""
        with self._lock:
            end = self._store_n()
            previous = self._model or self._load_model(self._meta())
            model = self._fit(end, previous)
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._save_model(model, end)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        self.build()
        return model

    # ------------------------------------------------------------------ refresh
    def refresh(self, max_rows: int = 5000) -> bool:
        """
        Assign up to *max_rows* turns a topic, fitting first when it is due.

        Returns:
            True if every turn in the store now has its topic.
        """
        with self._lock:
            conn = self._conn
            meta = self._meta()
            last = self._store_n()
            start = int(meta["conversation_n"])
            fitted_n = int(meta["fitted_n"])
            model = self._model or self._load_model(meta)
            due = last > 0 and (model is None or last >= 2 * max(fitted_n, 1))
            scored = self._scored_n()
            if not due and start >= (last if scored is None else min(last, scored)):
                return True
            conn.execute("BEGIN IMMEDIATE")
            try:
                if due:
                    model = self._fit(last, model)
                    self._save_model(model, last)
                    start = 0
                assert model is not None
                # Not past the turns the dashboard's index has scored, so
                # that each turn's satisfaction is known when it is counted.
                level = last if scored is None else min(last, max(scored, start))
                end = min(level, start + max_rows)
                ids = model.ids
                for statement in _APPLY:
                    conn.execute(statement)
                for chunk in self._turns(start, end):
                    topic = model.assign_vectors(_topics.embed([r[1] for r in chunk]))
                    for table in ("chunk_assign", "delta", "day_delta", "hist_delta"):
                        conn.execute(f"DELETE FROM temp.{table}")
                    conn.executemany(
                        "INSERT INTO temp.chunk_assign VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [(r[0], MISC if t < 0 else ids[t], *r[2:])
                         for r, t in zip(chunk, topic.tolist(), strict=True)],
                    )  # fmt: skip
                    for statement in _APPLY_CHUNK:
                        conn.execute(statement)
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'conversation_n'", (end,)
                )
                if meta["store_first"] is None:
                    conn.execute(
                        "UPDATE meta SET value = (SELECT id FROM store.conversations"
                        " ORDER BY n LIMIT 1) WHERE key = 'store_first'"
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._model = None
                raise
            finally:
                for table in ("chunk_assign", "delta", "day_delta", "hist_delta"):
                    conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
            self._model = model
            return end >= level

    def build(self) -> None:
        """Bring the topics level with the store."""
        while not self.refresh(max_rows=100_000):
            pass

    # ------------------------------------------------------------------ reading
    def topic_of(self, n: int) -> str | None:
        """The topic id of turn *n* (``"misc"``), or None if not assigned yet."""
        with self._lock:
            row = self._conn.execute(
                "SELECT topic_id FROM topic_turns WHERE n = ?", (n,)
            ).fetchone()
        return None if row is None else str(row[0])

    def assignments(self) -> dict[int, str]:
        """Every assigned turn's topic id, by turn number."""
        with self._lock:
            return dict(self._conn.execute("SELECT n, topic_id FROM topic_turns"))

    def summary(
        self,
        user: str | None = None,
        *,
        since_day: str | None = None,
        today: str | None = None,
    ) -> list[TopicRow]:
        """
        Each topic with its conversations, users, share, satisfaction, error
        rate, p50 latency and daily trend, the largest first.

        Args:
            user: Only this user's turns (counts and share only).
            since_day: Only the UTC days from this one (``YYYY-MM-DD``).
            today: The last day of the trend (default: the last with turns).

        The miscellaneous bucket comes last, if it has turns.
        """
        model = self.model
        with self._lock:
            return _summary(self._conn, model, user, since_day, today)


def read_topics(
    path: str | os.PathLike[str],
    user: str | None = None,
    *,
    since_day: str | None = None,
    today: str | None = None,
) -> list[TopicRow]:
    """
    :meth:`TopicIndex.summary` from a topics file, opened read-only.

    Returns an empty list when the file does not exist or holds no model yet.
    """
    if not os.path.exists(path):
        return []
    conn = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "meta" not in tables or "topic_days" not in tables:
            return []
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("model") is None:
            return []
        data = json.loads(meta["model"])
        data["centroids"] = np.frombuffer(meta["centroids"], dtype=np.float32)
        return _summary(conn, TopicModel.from_json(data), user, since_day, today)
    finally:
        conn.close()


def _days(first: str, last: str) -> list[str]:
    one, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(one + timedelta(days=i)).isoformat() for i in range((end - one).days + 1)]


def _p50(buckets: list[tuple[int, int]]) -> int | None:
    """The median of a latency histogram (as the dashboard's overview reads it)."""
    total = sum(n for _, n in buckets)
    seen = 0
    for bucket, n in sorted(buckets):
        seen += n
        if 2 * seen >= total:
            return round(10 ** (bucket / LATENCY_BUCKETS_PER_DECADE))
    return None


def _summary(
    conn: sqlite3.Connection,
    model: TopicModel | None,
    user: str | None,
    since_day: str | None = None,
    today: str | None = None,
) -> list[TopicRow]:
    """
    The topics, the largest first (misc last): all time, or the UTC days
    from *since_day* to *today*; with *user*, that user's turns (all time).
    """
    known = {t.id: t for t in model.topics} if model is not None else {}
    if user is not None:
        rows = conn.execute(
            "SELECT topic_id, turns, user_key != '' FROM topic_users"
            " WHERE user_key = ?",
            (user,),
        ).fetchall()
        total = sum(r[1] for r in rows) or 1
        out = [
            TopicRow(t.id, t.label, t.terms, t.question, int(turns), int(users),
                     turns / total)
            for topic_id, turns, users in rows
            if (t := known.get(topic_id)) is not None
        ]  # fmt: skip
        return _with_misc(out, rows, total, user)
    day = since_day or ""
    days = conn.execute(
        "SELECT topic_id, day, turns, errors, scored, score_sum FROM topic_days"
        " WHERE day >= ?",
        (day,),
    ).fetchall()
    users = dict(conn.execute("SELECT topic_id, users FROM topic_summary").fetchall())
    if since_day is None:
        hist = conn.execute("SELECT topic_id, bucket, n FROM topic_hist_all").fetchall()
    else:
        hist = conn.execute(
            "SELECT topic_id, bucket, sum(n) FROM topic_hist WHERE day >= ?"
            " GROUP BY topic_id, bucket",
            (day,),
        ).fetchall()
    per: dict[str, list[Any]] = {}  # topic -> [turns, errors, scored, sum, {day: n}]
    for topic_id, d, turns, errors, scored, score_sum in days:
        acc = per.setdefault(topic_id, [0, 0, 0, 0.0, {}])
        acc[0] += turns
        acc[1] += errors
        acc[2] += scored
        acc[3] += score_sum
        acc[4][d] = acc[4].get(d, 0) + turns
    buckets: dict[str, list[tuple[int, int]]] = {}
    for topic_id, bucket, n in hist:
        buckets.setdefault(topic_id if topic_id in known else MISC, []).append(
            (bucket, n)
        )
    seen = [d for _, d, *_ in days]
    first = since_day or (min(seen) if seen else None)
    last = max([today or "", *seen]) if seen or today else None
    span = _days(first, last) if first and last else []
    # The turns of topics a re-fit dropped (not re-assigned yet) count as misc.
    merged: dict[str, list[Any]] = {}
    for topic_id, acc in per.items():
        key = topic_id if topic_id in known else MISC
        into = merged.setdefault(key, [0, 0, 0, 0.0, {}])
        for i in range(4):
            into[i] += acc[i]
        for d, n in acc[4].items():
            into[4][d] = into[4].get(d, 0) + n
    total = sum(acc[0] for acc in merged.values()) or 1
    found: list[TopicRow] = []
    misc_users = sum(n for t, n in users.items() if t not in known)
    for topic_id, (turns, errors, scored, score_sum, by_day) in merged.items():
        if turns <= 0:
            continue
        t = known.get(topic_id)
        label, terms, question = (
            (t.label, t.terms, t.question) if t else ("miscellaneous", (), "")
        )
        found.append(
            TopicRow(
                topic_id, label, terms, question, int(turns),
                int(users.get(topic_id, 0) if t else misc_users), turns / total,
                satisfaction=score_sum / scored if scored else None,
                scored=int(scored), error_rate=errors / turns,
                latency_p50_ms=_p50(buckets.get(topic_id, [])),
                trend=tuple((d, int(by_day.get(d, 0))) for d in span),
            )
        )  # fmt: skip
    found.sort(key=lambda r: (r.id == MISC, -r.conversations, r.id))
    return found


def _with_misc(
    out: list[TopicRow], rows: list[Any], total: int, user: str
) -> list[TopicRow]:
    out.sort(key=lambda r: (-r.conversations, r.id))
    # The miscellaneous bucket, with the turns of topics a re-fit dropped
    # that are not re-assigned yet.
    known = {r.id for r in out}
    turns = sum(r[1] for r in rows if r[0] not in known)
    if turns:
        out.append(
            TopicRow(MISC, "miscellaneous", (), "", turns, int(user != ""),
                     turns / total)
        )  # fmt: skip
    return out


def struggling(rows: list[TopicRow], limit: int | None = 10) -> list[TopicRow]:
    """
    The topics that go worst: *rows* (one range's topics) that are big enough
    (:data:`STRUGGLING_MIN_CONVERSATIONS` and :data:`STRUGGLING_MIN_SHARE`)
    and whose satisfaction is below the range's or whose error rate is above
    it; the lowest satisfaction first, then the highest error rate. The
    miscellaneous bucket is never listed.
    """
    turns = sum(r.conversations for r in rows)
    scored = sum(r.scored for r in rows)
    mean = (
        sum((r.satisfaction or 0.0) * r.scored for r in rows) / scored
        if scored
        else None
    )
    errors = sum((r.error_rate or 0.0) * r.conversations for r in rows) / (turns or 1)
    found = [
        r
        for r in rows
        if r.id != MISC
        and r.conversations >= STRUGGLING_MIN_CONVERSATIONS
        and r.share >= STRUGGLING_MIN_SHARE
        and (
            (mean is not None and r.satisfaction is not None and r.satisfaction < mean)
            or (r.error_rate or 0.0) > errors
        )
    ]
    found.sort(
        key=lambda r: (
            1.0 if r.satisfaction is None else r.satisfaction,
            -(r.error_rate or 0.0),
            r.id,
        )
    )
    return found if limit is None else found[:limit]
