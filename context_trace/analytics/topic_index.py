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

The file's tables are in ``topic_schema``, its read models (:class:`TopicRow`,
:func:`read_topics`, :func:`struggling`) in ``topic_rows``; both are
importable from here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from context_trace._store.connection import read_uri
from context_trace._store.ui_index import default_index_path

from . import topics as _topics
from .topic_read import read_questions, sample_questions
from .topic_rows import STRUGGLING_MIN_CONVERSATIONS as STRUGGLING_MIN_CONVERSATIONS
from .topic_rows import STRUGGLING_MIN_SHARE as STRUGGLING_MIN_SHARE
from .topic_rows import TopicRow as TopicRow
from .topic_rows import _summary
from .topic_rows import read_topics as read_topics
from .topic_rows import struggling as struggling
from .topic_schema import (
    _APPLY,
    _APPLY_CHUNK,
    _SUFFIX,
    CHUNK_COSTS,
    CHUNK_COSTS_FROM_INDEX,
    FILL_COSTS,
    TOPIC_COSTS_TABLE,
    TOPIC_SEGMENT_COSTS_TABLE,
    assign_chunk,
)
from .topic_schema import _SCHEMA as _SCHEMA
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

_VERSION = 4
# The temporary tables of a refresh (the last two made anew per chunk).
_TEMP = ("chunk_assign", "delta", "day_delta", "hist_delta", "cost_delta",
         "segment_cost_delta", "chunk_cost", "chunk_segment")  # fmt: skip
# The topics file's page cache (SQLite's default is 2 MiB): the indexes of
# topic_turns take a turn in every topic and user, so the pages of a big file's
# indexes are read and written again and again with less.
_CACHE_KIB = 65_536
# Version 3 lacked the cost sums: it gains them, filled from its assignments,
# this many turns at a time.
_COST_FILL_CHUNK = 100_000


def default_topics_path(store: str | os.PathLike[str]) -> Path:
    """``<store>.topics`` where the dashboard's index would go (same directory rules)."""
    index = default_index_path(store)
    return index.with_name(index.name.removesuffix(".ui-index") + _SUFFIX)


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
            self._conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB:d}")
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
        self._costs_indexed = False
        if not ui.exists():
            return False
        self._conn.execute(
            "ATTACH DATABASE ? AS ui", (ui.absolute().as_uri() + "?mode=ro",)
        )
        tables = {
            r[0]
            for r in self._conn.execute(
                "SELECT name FROM ui.sqlite_master WHERE type = 'table'"
            )
        }
        self._costs_indexed = {
            "meta", "ui_cost_turn", "ui_segments", "ui_segment_turn"
        } <= tables  # fmt: skip
        return "sat_meta" in tables

    # ------------------------------------------------------------------ state
    def _prepare(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            fresh = not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'meta'"
            ).fetchone()
            version = (
                None if fresh else conn.execute("PRAGMA user_version").fetchone()[0]
            )
            if version == 3:
                self._add_costs()
                version = _VERSION
            stale = fresh or version != _VERSION
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

    def _add_costs(self) -> None:
        """Give a version-3 file its cost sums (topic_costs, topic_segment_costs),
        summed from its assignments."""
        conn = self._conn
        conn.execute(TOPIC_COSTS_TABLE)
        conn.execute(TOPIC_SEGMENT_COSTS_TABLE)
        last = conn.execute("SELECT coalesce(max(n), 0) FROM topic_turns").fetchone()[0]
        try:
            for start in range(0, last, _COST_FILL_CHUNK):
                self._chunk_costs(start, min(last, start + _COST_FILL_CHUNK))
                for statement in FILL_COSTS:
                    conn.execute(statement)
        finally:
            for table in _TEMP[-2:]:
                conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
        conn.execute(f"PRAGMA user_version = {_VERSION:d}")

    def _chunk_costs(self, start: int, end: int, indexed: int = 0) -> None:
        """
        The temporary cost and segment rows of the turns numbered (start, end]:
        from the dashboard's index if it has indexed them (up to *indexed*),
        else from the store.
        """
        for table in _TEMP[-2:]:
            self._conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
        statements = CHUNK_COSTS_FROM_INDEX if end <= indexed else CHUNK_COSTS
        for statement in statements:
            self._conn.execute(statement, (start, end) if "?" in statement else ())

    def _indexed_n(self) -> int:
        """The last turn whose cost and segment rows the dashboard's index has (0: none)."""
        if not self._costs_indexed:
            return 0
        row = self._conn.execute(
            "SELECT value FROM ui.meta WHERE key = 'conversation_n'"
        ).fetchone()
        return int(row[0]) if row is not None else 0

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

    def _scored_n(self) -> int | None:
        """The last turn the dashboard's index has scored, or None without it."""
        if not self._scored:
            return None
        row = self._conn.execute(
            "SELECT value FROM ui.sat_meta WHERE key = 'n'"
        ).fetchone()
        return int(row[0]) if row is not None else 0

    # ------------------------------------------------------------------ fitting
    def _fit(self, end: int, previous: TopicModel | None) -> TopicModel:
        """Fit on the turns up to *end*, sampling as :func:`.topics.fit` does."""
        sample_size = 6000
        sample, total = sample_questions(
            (questions for _, questions in read_questions(self._conn, 0, end)),
            sample_size,
        )
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
                indexed = self._indexed_n()
                for statement in _APPLY:
                    conn.execute(statement)
                insert = assign_chunk(self._scored)
                for turns, questions in read_questions(conn, start, end):
                    topic = model.assign_vectors(_topics.embed(questions))
                    for table in _TEMP[:-2]:
                        conn.execute(f"DELETE FROM temp.{table}")
                    # The chunk's turns are all those numbered in its span.
                    self._chunk_costs(turns[0] - 1, turns[-1], indexed)
                    conn.execute(
                        insert,
                        (json.dumps([[n, MISC if t < 0 else ids[t]]
                                     for n, t in zip(turns, topic.tolist(), strict=True)]),),
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
                for table in _TEMP:
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
