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
from pathlib import Path
from typing import Any

import numpy as np

from context_trace._store.connection import read_uri
from context_trace._store.ui_index import default_index_path

from . import topics as _topics
from .topics import MISC, TopicModel

__all__ = ["TopicIndex", "TopicRow", "default_topics_path", "read_topics"]

_VERSION = 2
_SUFFIX = ".topics"
# Turns read from the store per statement while fitting or assigning.
_READ_CHUNK = 10_000

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "INSERT INTO meta (key, value) VALUES ('conversation_n', 0),"
    " ('store_first', NULL), ('fitted_n', 0), ('model', NULL), ('centroids', NULL)",
    """
    CREATE TABLE topic_turns (
        n INTEGER PRIMARY KEY,
        topic_id TEXT NOT NULL,
        user_key TEXT NOT NULL,
        session_n INTEGER
    )
    """,
    "CREATE INDEX topic_turns_topic ON topic_turns (topic_id, user_key)",
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
    " user_key TEXT, session_n INTEGER)",
    "CREATE TEMP TABLE delta (topic_id TEXT, user_key TEXT, turns INTEGER,"
    " PRIMARY KEY (topic_id, user_key))",
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
    "INSERT OR REPLACE INTO topic_turns (n, topic_id, user_key, session_n)"
    " SELECT n, topic_id, user_key, session_n FROM temp.chunk_assign",
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
        conversations: Turns in it.
        users: Distinct users among those turns (turns with no user not counted).
        share: ``conversations`` over all turns that have a topic or are misc.
    """

    id: str
    label: str
    terms: tuple[str, ...]
    question: str
    conversations: int
    users: int
    share: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "terms": list(self.terms),
                "question": self.question, "conversations": self.conversations,
                "users": self.users, "share": self.share}  # fmt: skip


class TopicIndex:
    """
    Keeps a store's topics and each turn's topic; thread-safe.

    Args:
        store: The context_trace store, only ever read.
        path: The topics file (default: :func:`default_topics_path`); created
            if missing, started over if it belongs to another store.
        n_topics: Fit this many topics instead of the number the data gives.

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
            if stale:
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%'"
                ).fetchall():
                    conn.execute(f'DROP TABLE IF EXISTS "{name}"')
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {_VERSION:d}")
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
            if not due and start >= last:
                return True
            conn.execute("BEGIN IMMEDIATE")
            try:
                if due:
                    model = self._fit(last, model)
                    self._save_model(model, last)
                    start = 0
                assert model is not None
                end = min(last, start + max_rows)
                ids = model.ids
                for statement in _APPLY:
                    conn.execute(statement)
                for chunk in self._questions(start, end):
                    topic = model.assign_vectors(_topics.embed([r[1] for r in chunk]))
                    conn.execute("DELETE FROM temp.chunk_assign")
                    conn.execute("DELETE FROM temp.delta")
                    conn.executemany(
                        "INSERT INTO temp.chunk_assign"
                        " (n, topic_id, user_key, session_n) VALUES (?, ?, ?, ?)",
                        [(r[0], MISC if t < 0 else ids[t], r[2], r[3])
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
                conn.execute("DROP TABLE IF EXISTS temp.chunk_assign")
                conn.execute("DROP TABLE IF EXISTS temp.delta")
            self._model = model
            return end >= last

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

    def summary(self, user: str | None = None) -> list[TopicRow]:
        """
        Each topic with its conversations, users and share, the largest first.

        Args:
            user: Only this user's turns.

        The miscellaneous bucket comes last, if it has turns.
        """
        model = self.model
        with self._lock:
            return _summary(self._conn, model, user)


def read_topics(
    path: str | os.PathLike[str], user: str | None = None
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
        if "meta" not in tables or "topic_turns" not in tables:
            return []
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("model") is None:
            return []
        data = json.loads(meta["model"])
        data["centroids"] = np.frombuffer(meta["centroids"], dtype=np.float32)
        return _summary(conn, TopicModel.from_json(data), user)
    finally:
        conn.close()


def _summary(
    conn: sqlite3.Connection, model: TopicModel | None, user: str | None
) -> list[TopicRow]:
    if user is None:
        rows = conn.execute(
            "SELECT topic_id, turns, users FROM topic_summary"
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT topic_id, turns, user_key != '' FROM topic_users"
            " WHERE user_key = ?",
            (user,),
        ).fetchall()
    total = sum(r[1] for r in rows) or 1
    known = {t.id: t for t in model.topics} if model is not None else {}
    out = [
        TopicRow(t.id, t.label, t.terms, t.question, int(turns), int(users),
                 turns / total)
        for topic_id, turns, users in rows
        if (t := known.get(topic_id)) is not None
    ]  # fmt: skip
    out.sort(key=lambda r: (-r.conversations, r.id))
    # The miscellaneous bucket, with the turns of topics a re-fit dropped
    # that are not re-assigned yet (their users then counted per topic).
    misc = [r for r in rows if r[0] not in known]
    turns = sum(r[1] for r in misc)
    if turns:
        users = sum(r[2] for r in misc) if user is None else int(user != "")
        out.append(TopicRow(MISC, "miscellaneous", (), "", turns, users, turns / total))
    return out
