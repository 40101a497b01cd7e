"""
What the topics file (``topic_index``) reads from the store: each turn's
question, in chunks, and the sample a fit clusters.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Iterable, Iterator

from . import topics as _topics
from .topic_schema import _READ_CHUNK


def read_questions(
    conn: sqlite3.Connection, start: int, end: int
) -> Iterator[tuple[list[int], list[str]]]:
    """
    The numbers and questions of the store's turns numbered (start, end], in
    chunks of every turn numbered in their span.
    """
    while start < end:
        rows = conn.execute(
            "SELECT n, messages_json FROM store.conversations"
            " WHERE n > ? AND n <= ? ORDER BY n LIMIT ?",
            (start, end, _READ_CHUNK),
        ).fetchall()
        if not rows:
            return
        yield (
            [n for n, _ in rows],
            [_topics.turn_question(json.loads(text or "[]")) for _, text in rows],
        )
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
