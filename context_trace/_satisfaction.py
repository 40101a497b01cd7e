"""
Satisfaction: implicit signals per turn, scores, and the unhappy users.

Read-side only: everything here reads a store (or the dashboard's sidecar
index) after the fact; nothing runs on the recording path, and ``import
context_trace`` never imports this module. The rules are written out in
README's "Satisfaction" section; the constants below are those rules.

A turn's *signals* come from its own record and the turn before it in its
session (:func:`turn_signals`); two more come from outside the turn and are
added when a report is built (:func:`analyze`): its rating (explicit), and
"the session ended right after a failure or a non-answer", which depends on
how long ago the session's last activity was.

Negative sentiment uses VADER (``vaderSentiment``, the ``analytics`` extra),
whose lexicon ships inside its wheel: nothing is downloaded. Without it the
frustration phrases still apply, and :data:`SENTIMENT_AVAILABLE` says so.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._store.connection import read_uri

__all__ = [
    "IDLE_GAP",
    "MIN_TURNS",
    "NEUTRAL_WORDS",
    "REPHRASE_THRESHOLD",
    "SENTIMENT_THRESHOLD",
    "WEIGHTS",
    "Group",
    "Report",
    "Signal",
    "TurnScore",
    "analyze",
    "content_words",
    "similarity",
    "turn_signals",
]

# --------------------------------------------------------------------------- rules
#: Penalty of each signal in a turn's score (``rating_up`` is a bonus).
WEIGHTS: dict[str, float] = {
    "error": 0.5,
    "no_answer": 0.4,
    "not_helped": 0.5,
    "rephrase": 0.3,
    "negative": 0.3,
    "abandoned": 0.3,
    "ended_after_failure": 0.2,
    "rating_down": 0.6,
    "rating_up": -0.2,
}
#: Jaccard similarity of two questions' content words at or above which the
#: second one rephrases (or repeats) the first.
REPHRASE_THRESHOLD = 0.5
#: VADER's compound score at or below which the user's words are negative.
SENTIMENT_THRESHOLD = -0.5
#: Seconds without activity after which a session counts as ended.
IDLE_GAP = 30 * 60
#: Users with fewer turns are not listed as unhappy (too little evidence).
MIN_TURNS = 3

_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "i",
        "me",
        "my",
        "mine",
        "you",
        "your",
        "yours",
        "we",
        "us",
        "our",
        "it",
        "its",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "done",
        "to",
        "of",
        "in",
        "on",
        "for",
        "at",
        "by",
        "with",
        "from",
        "and",
        "or",
        "but",
        "so",
        "if",
        "then",
        "than",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "can",
        "could",
        "would",
        "will",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "please",
        "what",
        "why",
        "how",
        "when",
        "where",
        "who",
        "whom",
        "which",
        "whose",
        "have",
        "has",
        "had",
        "get",
        "got",
        "just",
        "also",
        "any",
        "some",
        "again",
        "still",
        "about",
        "into",
        "out",
        "up",
    ]
)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_SUFFIXES = ("ing", "ed", "es", "s")
# The user says the answer did not help (matched on normalised text, as words).
_NOT_HELPED = re.compile(
    r"\b(?:"
    r"(?:didn't|did not|doesn't|does not|don't|do not|wasn't|was not|isn't|is not)"
    r" (?:really )?help(?:ful)?"
    r"|not (?:very |really )?helpful|unhelpful|no help"
    r"|(?:that's|that is|this is|that was|you're|you are|your answer is) wrong"
    r"|wrong answer"
    r"|not what i (?:asked|meant|wanted|need|needed)"
    r"|(?:that's|that is) not (?:it|right|correct|what i)"
    r"|(?:didn't|did not|doesn't|does not|you didn't|you did not) answer"
    r"|still (?:doesn't|does not|isn't|is not|not) work(?:ing)?"
    r"|still (?:broken|not fixed)"
    r")\b"
)
# Frustration the sentiment lexicon can miss.
# A phrase right after "not", "n't" or "never" ("I'm not frustrated") does not count.
_FRUSTRATION = re.compile(
    r"(?<!not )(?<!n't )(?<!never )\b(?:useless|ridiculous|frustrat\w*|annoy(?:ing|ed)|waste of (?:my )?time"
    r"|wasting my time|are you even listening|fed up|sick of|forget it"
    r"|never ?mind|this is stupid|so stupid|pointless|hopeless)\b"
    r"|[!?]{3,}"
)
# The assistant did not answer: matched in the answer's first sentence.
_NO_ANSWER = re.compile(
    r"\b(?:"
    r"i (?:don't|do not) know"
    r"|i(?:'m| am) not sure"
    r"|i (?:can't|cannot|can not|am unable to|'m unable to|am not able to"
    r"|'m not able to) (?:help|answer|assist|provide|find|access|do that)"
    r"|i (?:don't|do not) have (?:access|information|that information|enough"
    r" information|any information)"
    r"|as an ai"
    r"|i (?:didn't|did not|don't|do not) understand"
    r"|could you (?:please )?rephrase"
    r")\b"
)
_SENTENCE_END = re.compile(r"[.!?\n]")
# The signals after which a session's end counts against it.
_FAILED = ("error", "no_answer")


@dataclass(frozen=True)
class Signal:
    """One implicit (or explicit) sign that a turn went badly, or well."""

    name: str
    reason: str

    @property
    def weight(self) -> float:
        return WEIGHTS[self.name]


def normalise(text: str) -> str:
    """NFKC, case-folded, typographic apostrophes made plain, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.split())


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def content_words(text: str) -> frozenset[str]:
    """The set of *text*'s stemmed words, stop words left out."""
    words = _WORD.findall(normalise(text))
    return frozenset(_stem(w) for w in words if w not in _STOPWORDS)


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of two texts' content words (0 when either has none)."""
    first, second = content_words(a), content_words(b)
    if not first or not second:
        return 0.0
    return len(first & second) / len(first | second)


#: Words that name a task, a thing or a fault in the user's domain rather
#: than a feeling ("kill a process", "cancel my order", "charged twice", "my
#: battery is dead", "report fraud"): they carry no sentiment here, although
#: VADER's lexicon scores them negative.
NEUTRAL_WORDS = frozenset(
    [
        "abort",
        "aborted",
        "block",
        "blocked",
        "broken",
        "cancel",
        "canceled",
        "cancelled",
        "charged",
        "crash",
        "damaged",
        "dead",
        "debt",
        "denied",
        "destroy",
        "die",
        "died",
        "dies",
        "dispute",
        "emergency",
        "error",
        "errors",
        "failed",
        "failing",
        "fails",
        "failure",
        "fake",
        "fatal",
        "fraud",
        "kill",
        "killed",
        "killing",
        "kills",
        "lost",
        "missing",
        "penalty",
        "problem",
        "problems",
        "rejected",
        "risk",
        "sick",
        "rob",
        "stolen",
        "stuck",
        "violation",
        "war",
        "warning",
    ]
)
# Food that "goes bad" spoils: a fact, not a feeling.
_SPOILS = re.compile(r"\b(?:go|goes|going|gone|went) bad\b", re.IGNORECASE)


@lru_cache(maxsize=1)
def _vader() -> Any:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        return None
    analyzer = SentimentIntensityAnalyzer()
    # Its own copy of the lexicon, without the domain words.
    analyzer.lexicon = {
        word: value
        for word, value in analyzer.lexicon.items()
        if word not in NEUTRAL_WORDS
    }
    return analyzer


def sentiment_available() -> bool:
    """Whether VADER (the ``analytics`` extra) is installed."""
    return _vader() is not None


def compound(text: str) -> float | None:
    """VADER's compound score of *text* (-1..1), or None without VADER."""
    analyzer = _vader()
    if analyzer is None:
        return None
    return float(analyzer.polarity_scores(_SPOILS.sub("spoils", text))["compound"])


def _first_sentence(text: str) -> str:
    match = _SENTENCE_END.search(text)
    return text[: match.start()] if match else text


def _quote(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "\u2026")


def turn_signals(
    question: str,
    answer: str,
    *,
    error: str | None = None,
    abandoned: bool = False,
    previous: str | None = None,
) -> list[Signal]:
    """
    The implicit signals one turn carries, from its own record.

    Args:
        question: The user's words this turn.
        answer: The assistant's answer ('' when none).
        error: The turn's error, if it failed.
        abandoned: Whether the user abandoned the answer's stream.
        previous: The user's words in the session's previous turn, if any.
    """
    signals: list[Signal] = []
    said = normalise(question)
    if previous is not None and said:
        earlier = normalise(previous)
        score = similarity(earlier, said)
        if earlier == said:
            signals.append(Signal("rephrase", "repeats the previous question"))
        elif score >= REPHRASE_THRESHOLD:
            signals.append(
                Signal(
                    "rephrase",
                    f"rephrases the previous question {_quote(previous)}"
                    f" (similarity {score:.2f})",
                )
            )
    if said:
        value = compound(question)
        phrase = _FRUSTRATION.search(said)
        if value is not None and value <= SENTIMENT_THRESHOLD:
            signals.append(
                Signal("negative", f"negative sentiment (VADER {value:+.2f})")
            )
        elif phrase:
            signals.append(
                Signal("negative", f"frustration: {_quote(phrase.group(0), 30)}")
            )
        said_not_helped = _NOT_HELPED.search(said)
        if said_not_helped:
            signals.append(
                Signal(
                    "not_helped",
                    f"says it did not help: {_quote(said_not_helped.group(0), 40)}",
                )
            )
    if abandoned:
        signals.append(Signal("abandoned", "left the answer's stream before its end"))
    if error is not None:
        signals.append(Signal("error", f"the turn failed: {_quote(error)}"))
    elif not abandoned:
        reply = normalise(answer)
        if not reply:
            signals.append(Signal("no_answer", "empty answer"))
        else:
            found = _NO_ANSWER.search(_first_sentence(reply))
            if found:
                signals.append(
                    Signal("no_answer", f"did not answer: {_quote(found.group(0), 40)}")
                )
    return signals


# --------------------------------------------------------------------------- turns
def split_turn(messages: Sequence[Sequence[Any]]) -> tuple[str, str]:
    """
    (the user's words, the answer) of a turn's stored messages.

    The user's words are the last run of ``user`` messages; the answer is the
    last ``assistant`` message after them ('' when there is none).
    """
    start = end = -1
    for i, message in enumerate(messages):
        if message[0] == "user":
            if end != i - 1 or start < 0:
                start = i
            end = i
    if start < 0:
        return "", ""
    question = "\n".join(str(m[1] or "") for m in messages[start : end + 1])
    answer = ""
    for message in messages[end + 1 :]:
        if message[0] == "assistant" and str(message[1] or "").strip():
            answer = str(message[1])
    return question, answer


@dataclass
class TurnScore:
    """One turn's signals and score (1.0: nothing went wrong)."""

    conversation_id: str
    user_id: str | None
    session_id: str | None
    turn: int  # 1-based position in its session (transcript order)
    started_at: float
    model: str | None
    question: str
    signals: list[Signal] = field(default_factory=list)

    @property
    def score(self) -> float:
        penalty = sum(s.weight for s in self.signals)
        return max(0.0, min(1.0, 1.0 - penalty))

    @property
    def flagged(self) -> bool:
        return any(s.weight > 0 for s in self.signals)

    def as_dict(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "turn": self.turn,
            "started_at": self.started_at,
            "model": self.model,
            "score": round(self.score, 3),
            "signals": [{"signal": s.name, "reason": s.reason} for s in self.signals],
        }


@dataclass
class Group:
    """Turns grouped by a key (a user, a session, a model, a day)."""

    key: str | None
    turns: list[TurnScore] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The mean of its turns' scores."""
        return sum(t.score for t in self.turns) / len(self.turns) if self.turns else 1.0

    def counts(self) -> dict[str, int]:
        """How many of its turns carry each signal."""
        tally: Counter[str] = Counter()
        for t in self.turns:
            tally.update({s.name for s in t.signals})
        return dict(sorted(tally.items(), key=lambda kv: (-kv[1], kv[0])))

    def as_dict(self, evidence: int = 0) -> dict[str, Any]:
        flagged = [t for t in self.turns if t.flagged]
        flagged.sort(key=lambda t: (t.score, t.started_at))
        out: dict[str, Any] = {
            "key": self.key,
            "score": round(self.score, 3),
            "turns": len(self.turns),
            "flagged_turns": len(flagged),
            "ratings_up": sum(
                1 for t in self.turns for s in t.signals if s.name == "rating_up"
            ),
            "ratings_down": sum(
                1 for t in self.turns for s in t.signals if s.name == "rating_down"
            ),
            "signals": self.counts(),
        }
        if evidence:
            out["evidence"] = [
                {
                    "session_id": t.session_id,
                    "turn": t.turn,
                    "conversation_id": t.conversation_id,
                    "reasons": [s.reason for s in t.signals if s.weight > 0],
                }
                for t in flagged[:evidence]
            ]
        return out


@dataclass
class Report:
    """Scores of every turn read, and their aggregates."""

    turns: list[TurnScore]
    sentiment: bool

    def _group(self, key: Any) -> list[Group]:
        groups: dict[Any, Group] = {}
        for t in self.turns:
            k = key(t)
            groups.setdefault(k, Group(k)).turns.append(t)
        return list(groups.values())

    def users(self) -> list[Group]:
        """Per user (``None``: turns without a user), lowest score first."""
        return sorted(
            self._group(lambda t: t.user_id), key=lambda g: (g.score, str(g.key))
        )

    def sessions(self) -> list[Group]:
        """Per session (turns without a session left out), lowest score first."""
        return sorted(
            (g for g in self._group(lambda t: t.session_id) if g.key is not None),
            key=lambda g: (g.score, str(g.key)),
        )

    def models(self) -> list[Group]:
        """Per model, lowest score first."""
        return sorted(
            self._group(lambda t: t.model), key=lambda g: (g.score, str(g.key))
        )

    def days(self) -> list[Group]:
        """Per UTC day, oldest first."""
        return sorted(
            self._group(
                lambda t: datetime.fromtimestamp(t.started_at, timezone.utc).strftime(
                    "%Y-%m-%d"
                )
            ),
            key=lambda g: str(g.key),
        )

    def unhappy(
        self, limit: int | None = 10, min_turns: int = MIN_TURNS, evidence: int = 5
    ) -> list[dict[str, Any]]:
        """
        The users with the lowest scores: at least *min_turns* turns and one
        flagged turn, lowest score first (ties: more flagged turns first).
        """
        rows = [
            g
            for g in self.users()
            if g.key is not None
            and len(g.turns) >= min_turns
            and any(t.flagged for t in g.turns)
        ]
        rows.sort(key=lambda g: (g.score, -sum(t.flagged for t in g.turns), str(g.key)))
        if limit is not None:
            rows = rows[:limit]
        return [g.as_dict(evidence=evidence) for g in rows]


# --------------------------------------------------------------------------- the store
_TURNS_SQL = (
    "SELECT c.id, c.user_id, c.session_id, c.session_n, c.started_at, c.model,"
    " c.error, c.metadata, c.messages_json FROM conversations c"
)


def _rows(conn: sqlite3.Connection, since: float | None) -> Iterator[tuple[Any, ...]]:
    """Every turn in session, then commit, order (turns without a session last)."""
    where = " WHERE c.started_at >= ?" if since is not None else ""
    order = " ORDER BY c.session_n IS NULL, c.session_n, c.n"
    yield from conn.execute(
        _TURNS_SQL + where + order, () if since is None else (since,)
    )


def _decode(meta: str | None, messages: str | None) -> tuple[str, str, bool]:
    """(the user's words, the answer, abandoned) of a stored turn."""
    try:
        metadata = json.loads(meta) if meta else {}
        decoded = json.loads(messages) if messages else []
    except ValueError:
        metadata, decoded = {}, []
    question, answer = split_turn(decoded)
    abandoned = str(metadata.get("stream_abandoned", "")).lower() == "true"
    return question, answer, abandoned


def _score_rows(rows: Iterable[tuple[Any, ...]]) -> list[TurnScore]:
    """The turns' own signals; *rows* in session, then commit, order."""
    turns: list[TurnScore] = []
    previous: tuple[str | None, str | None] = (None, None)  # (session, its question)
    position = 0
    for cid, user, session, _sn, started, model, error, meta, messages in rows:
        question, answer, abandoned = _decode(meta, messages)
        if session is None or session != previous[0]:
            position, earlier = 0, None
        else:
            earlier = previous[1]
        position += 1
        signals = turn_signals(
            question, answer, error=error, abandoned=abandoned, previous=earlier
        )
        turns.append(
            TurnScore(cid, user, session, position, started, model, question, signals)
        )
        if session is not None:
            kept = previous[1] if session == previous[0] else None
            previous = (session, question if question.strip() else kept)
    return turns


def _finish(
    turns: list[TurnScore],
    ratings: dict[str, int],
    session_last: dict[str, float],
    now: float,
    idle_gap: float,
) -> list[TurnScore]:
    """Add the ratings and "the session ended right after a failure"."""
    last: dict[str, TurnScore] = {}
    for t in turns:
        rating = ratings.get(t.conversation_id)
        if rating is not None and rating < 0:
            t.signals.append(Signal("rating_down", "rated \U0001f44e"))
        elif rating is not None and rating > 0:
            t.signals.append(Signal("rating_up", "rated \U0001f44d"))
        if t.session_id is not None:
            seen = last.get(t.session_id)
            if seen is None or t.turn > seen.turn:
                last[t.session_id] = t
    for session, t in last.items():
        failed = [s for s in t.signals if s.name in _FAILED]
        ended = session_last.get(session, t.started_at) <= now - idle_gap
        if failed and ended:
            what = "a failed turn" if failed[0].name == "error" else "a non-answer"
            t.signals.append(
                Signal("ended_after_failure", f"the session ended right after {what}")
            )
    return turns


def _check_gap(idle_gap: float) -> None:
    if idle_gap < 0:
        raise ValueError(f"idle_gap must be a number of seconds >= 0, got {idle_gap!r}")


def analyze(
    store: str | Path,
    *,
    since: float | None = None,
    now: float | None = None,
    idle_gap: float = IDLE_GAP,
) -> Report:
    """
    Score every turn of *store* (read-only), and group them.

    Args:
        store: The SQLite store.
        since: Only turns started at or after this time (epoch seconds).
        now: The present, for "the session ended" (default: the clock).
        idle_gap: Seconds of inactivity after which a session has ended.

    Raises:
        FileNotFoundError: If *store* does not exist.
        ValueError: If *idle_gap* is negative, or *store* is not a store.
    """
    _check_gap(idle_gap)
    path = Path(store)
    if not path.is_file():
        raise FileNotFoundError(f"no context_trace database at {path}")
    conn = sqlite3.connect(read_uri(path), uri=True, timeout=10.0)
    try:
        try:
            ratings = {
                cid: rating
                for cid, rating in conn.execute(
                    "SELECT conversation_id, rating FROM feedback"
                    " WHERE conversation_id IS NOT NULL ORDER BY created_at"
                )
            }
            session_last = dict(conn.execute("SELECT id, last_at FROM sessions"))
            turns = _finish(
                _score_rows(_rows(conn, since)),
                ratings,
                session_last,
                time.time() if now is None else now,
                idle_gap,
            )
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{path} is not a context_trace store: {exc}") from None
    finally:
        conn.close()
    return Report(turns, sentiment_available())


# --------------------------------------------------------------------------- the sidecar
# The dashboard's index (``_store/ui_index.py``) calls :func:`index_chunk` in
# each refresh, inside its transaction, with the store attached as ``store``.
# A turn's own signals are computed once, when it is indexed, against the
# turns of its session indexed before it; ratings and "the session ended" are
# added when read (:func:`analyze_index`), since they change with time.
_SIDECAR = (
    "CREATE TABLE IF NOT EXISTS sat_meta (key TEXT PRIMARY KEY, value)",
    "INSERT INTO sat_meta (key, value) VALUES ('n', 0) ON CONFLICT DO NOTHING",
    # One row per turn: its position in its session and its own signals
    # (JSON [[name, reason], ...]); the per-user index serves the user pages.
    """
    CREATE TABLE IF NOT EXISTS sat_turns (
        n INTEGER PRIMARY KEY,
        user_key TEXT NOT NULL,
        session_n INTEGER,
        started_at REAL NOT NULL,
        model TEXT,
        position INTEGER NOT NULL,
        penalty REAL NOT NULL,
        signals TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS sat_turns_user ON sat_turns (user_key, n)",
    "CREATE INDEX IF NOT EXISTS sat_turns_session ON sat_turns (session_n, n)",
    # Per user: turns and the sum of their scores from their own signals (the
    # users table's column adds the ratings and ended sessions when read).
    """
    CREATE TABLE IF NOT EXISTS sat_users (
        user_key TEXT PRIMARY KEY,
        turns INTEGER NOT NULL,
        score_sum REAL NOT NULL
    ) WITHOUT ROWID
    """,
    # Per session: its last turn, and whether that turn failed or did not answer.
    """
    CREATE TABLE IF NOT EXISTS sat_sessions (
        session_n INTEGER PRIMARY KEY,
        last_n INTEGER NOT NULL,
        failed INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS sat_sessions_failed ON sat_sessions (last_n)"
    " WHERE failed",
)
# The users table's satisfaction, per user key, as :meth:`Group.score` of
# :func:`analyze_index` computes it for all time: the stored per-turn base
# scores, corrected for the turns a rating or an ended session changes.
# Parameters: the time before which a session has ended. The sidecar is
# attached as ``ui``, the store as ``main`` (the dashboard's connection).
USER_SCORES_SQL = f"""
WITH ended AS (
    SELECT s.last_n AS n FROM ui.sat_sessions s JOIN main.sessions m
    ON m.n = s.session_n WHERE s.failed AND m.last_at <= ?
), rated AS (
    SELECT c.n AS n, f.rating AS rating, max(f.created_at) FROM main.feedback f
    JOIN main.conversations c ON c.id = f.conversation_id WHERE f.rating != 0
    GROUP BY c.n
), delta AS (
    SELECT t.user_key, sum(
        max(0.0, min(1.0, 1.0 - t.penalty
            - (CASE WHEN e.n IS NOT NULL
               THEN {WEIGHTS["ended_after_failure"]!r} ELSE 0.0 END)
            - coalesce(CASE WHEN r.rating < 0 THEN {WEIGHTS["rating_down"]!r}
               WHEN r.rating > 0 THEN {WEIGHTS["rating_up"]!r} END, 0.0)))
        - max(0.0, min(1.0, 1.0 - t.penalty))) AS d
    FROM (SELECT n FROM ended UNION SELECT n FROM rated) k
    JOIN ui.sat_turns t ON t.n = k.n
    LEFT JOIN ended e ON e.n = k.n
    LEFT JOIN rated r ON r.n = k.n
    GROUP BY t.user_key
)
SELECT u.user_key AS user_key,
    (u.score_sum + coalesce(d.d, 0.0)) / u.turns AS score
FROM ui.sat_users u LEFT JOIN delta d ON d.user_key = u.user_key
"""


def index_chunk(conn: sqlite3.Connection, end: int) -> None:
    """
    Score the store's turns numbered up to *end* that the sidecar has not yet.

    *conn* is the sidecar, inside a transaction, with the store attached as
    ``store``; the tables it creates are its own (``sat_*``).
    """
    for statement in _SIDECAR:
        conn.execute(statement)
    start = int(
        conn.execute("SELECT value FROM sat_meta WHERE key = 'n'").fetchone()[0]
    )
    if end <= start:
        return
    rows = conn.execute(
        "SELECT n, coalesce(user_id, ''), session_n, started_at, model, error,"
        " metadata, messages_json FROM store.conversations"
        " WHERE n > ? AND n <= ? ORDER BY n",
        (start, end),
    ).fetchall()
    last: dict[int, tuple[int, str | None]] = {}  # session_n -> (position, question)
    out = []
    for n, user, session_n, started, model, error, meta, messages in rows:
        question, answer, abandoned = _decode(meta, messages)
        earlier: str | None = None
        position = 1
        if session_n is not None:
            known = last.get(session_n)
            if known is None:
                position = (
                    1
                    + conn.execute(
                        "SELECT count(*) FROM store.conversations"
                        " WHERE session_n = ? AND n < ?",
                        (session_n, n),
                    ).fetchone()[0]
                )
                for (text,) in conn.execute(
                    "SELECT messages_json FROM store.conversations"
                    " WHERE session_n = ? AND n < ? ORDER BY n DESC LIMIT 20",
                    (session_n, n),
                ):
                    said = _decode(None, text)[0]
                    if said.strip():
                        earlier = said
                        break
            else:
                position, earlier = known[0] + 1, known[1]
            kept = question if question.strip() else earlier
            last[session_n] = (position, kept)
        signals = turn_signals(
            question, answer, error=error, abandoned=abandoned, previous=earlier
        )
        out.append(
            (
                n,
                user,
                session_n,
                started,
                model,
                position,
                sum(s.weight for s in signals),
                json.dumps([[s.name, s.reason] for s in signals], ensure_ascii=False),
            )
        )
    conn.executemany(
        "INSERT OR REPLACE INTO sat_turns VALUES (?, ?, ?, ?, ?, ?, ?, ?)", out
    )
    conn.executemany(
        "INSERT INTO sat_users (user_key, turns, score_sum) VALUES (?, 1, ?)"
        " ON CONFLICT (user_key) DO UPDATE SET turns = turns + 1,"
        " score_sum = score_sum + excluded.score_sum",
        [(row[1], max(0.0, min(1.0, 1.0 - row[6]))) for row in out],
    )
    conn.executemany(
        "INSERT INTO sat_sessions (session_n, last_n, failed) VALUES (?, ?, ?)"
        " ON CONFLICT (session_n) DO UPDATE SET last_n = excluded.last_n,"
        " failed = excluded.failed",
        [
            (row[2], row[0], any(x[0] in _FAILED for x in json.loads(row[7])))
            for row in out
            if row[2] is not None
        ],
    )
    conn.execute("UPDATE sat_meta SET value = ? WHERE key = 'n'", (end,))


def analyze_index(
    conn: sqlite3.Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    user: str | None = None,
    session: str | None = None,
    now: float | None = None,
    idle_gap: float = IDLE_GAP,
    index: str = "main",
    store: str = "store",
) -> Report:
    """
    A :class:`Report` from the dashboard's sidecar (see :func:`index_chunk`).

    *conn* holds the sidecar as schema *index* and the store as schema
    *store* (the sidecar's own connection: ``main`` and ``store``; the
    dashboard's queries: ``ui`` and ``main``). *since* and *until* bound the
    turns' start times, *user* keeps one user's turns ('' for turns without a
    user), *session* one session's turns.
    """
    _check_gap(idle_gap)
    for schema in (index, store):
        if schema not in ("main", "store", "ui"):
            raise ValueError(f"unknown schema {schema!r}")
    has = conn.execute(
        f"SELECT 1 FROM {index}.sqlite_master WHERE name = 'sat_turns'"
    ).fetchone()
    if not has:
        return Report([], sentiment_available())
    where: list[str] = []
    params: list[Any] = []
    if since is not None:
        where.append("t.started_at >= ?")
        params.append(since)
    if until is not None:
        where.append("t.started_at < ?")
        params.append(until)
    if user is not None:
        where.append("t.user_key = ?")
        params.append(user)
    if session is not None:
        where.append(f"t.session_n = (SELECT n FROM {store}.sessions WHERE id = ?)")
        params.append(session)
    sql = (
        "SELECT c.id, nullif(t.user_key, ''), s.id, t.position, t.started_at,"
        f" t.model, t.signals, s.last_at FROM {index}.sat_turns t"
        f" JOIN {store}.conversations c ON c.n = t.n"
        f" LEFT JOIN {store}.sessions s ON s.n = t.session_n"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY t.n"
    )
    turns: list[TurnScore] = []
    session_last: dict[str, float] = {}
    for cid, uid, sid, position, started, model, signals, last_at in conn.execute(
        sql, params
    ):
        parsed = [Signal(name, reason) for name, reason in json.loads(signals)]
        turns.append(TurnScore(cid, uid, sid, position, started, model, "", parsed))
        if sid is not None:
            session_last[sid] = last_at
    ratings = {
        cid: rating
        for cid, rating in conn.execute(
            f"SELECT conversation_id, rating FROM {store}.feedback"
            " WHERE conversation_id IS NOT NULL ORDER BY created_at"
        )
    }
    return Report(
        _finish(
            turns, ratings, session_last, time.time() if now is None else now, idle_gap
        ),
        sentiment_available(),
    )
