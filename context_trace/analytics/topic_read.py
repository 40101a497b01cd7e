"""
What the topics file (``topic_index``) reads from the store: each turn's
question and measures, in chunks, and the sample a fit clusters.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from context_trace._store.ui_index import LATENCY_BUCKETS_PER_DECADE

from . import topics as _topics
from .topic_schema import _READ_CHUNK


def read_turns(
    conn: sqlite3.Connection, start: int, end: int, scored: bool
) -> Iterator[list[tuple[Any, ...]]]:
    """
    (n, question, user_key, session_n, day, failed, latency bucket, penalty)
    of the store's turns numbered (start, end], in chunks; the penalty (the
    turn's own satisfaction signals) from the dashboard's index (attached as
    ``ui``) if *scored*, else None.
    """
    penalty = "s.penalty" if scored else "NULL"
    join = " LEFT JOIN ui.sat_turns s ON s.n = c.n" if scored else ""
    while start < end:
        rows = conn.execute(
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


def read_questions(
    conn: sqlite3.Connection, start: int, end: int
) -> Iterator[list[str]]:
    """The questions of the store's turns numbered (start, end], in chunks."""
    while start < end:
        rows = conn.execute(
            "SELECT n, messages_json FROM store.conversations"
            " WHERE n > ? AND n <= ? ORDER BY n LIMIT ?",
            (start, end, _READ_CHUNK),
        ).fetchall()
        if not rows:
            return
        yield [_topics.turn_question(json.loads(text or "[]")) for _, text in rows]
        start = rows[-1][0]


def sample_questions(
    chunks: Iterable[list[str]], sample_size: int
) -> tuple[list[str], int]:
    """
    The sample :func:`.topics.fit` would take of every question in *chunks*
    (the distinct questions with the smallest hashes, each as often as it
    came), and how many questions with words there were; counted without
    holding every question in memory: a question can only end in the sample
    if it entered it the first time it came.
    """
    heap: list[tuple[int, str]] = []
    counts: dict[str, int] = {}
    total = 0
    for chunk in chunks:
        for question in chunk:
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
    return [q for q, c in counts.items() for _ in range(c)], total
