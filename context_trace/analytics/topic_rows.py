"""
A topics file's read models: :class:`TopicRow` per topic (all time, a range
of days, or one user's), :func:`read_topics` and :func:`struggling`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from context_trace._store.ui_index import (
    LATENCY_BUCKETS_PER_DECADE,
)

from .topics import MISC, TopicModel

#: A struggling topic has at least this many conversations in the range...
STRUGGLING_MIN_CONVERSATIONS = 3  # as MIN_TURNS for unhappy users
#: ...and at least this share of the range's conversations.
STRUGGLING_MIN_SHARE = 0.001


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
