"""
Satisfaction's read models: a turn's score, groups of turns, the report.

Also the signals added when a report is built (:func:`_finish`): a turn's
rating and "the session ended right after a failure".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._satisfaction_signals import _FAILED, MIN_TURNS, Signal


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
        flagged turn, lowest score first (ties: more flagged turns first, then
        the key; scores compared to 9 places, so that the order does not hang
        on the order the turns' scores were added in).
        """
        rows = [
            g
            for g in self.users()
            if g.key is not None
            and len(g.turns) >= min_turns
            and any(t.flagged for t in g.turns)
        ]
        rows.sort(
            key=lambda g: (
                round(g.score, 9),
                -sum(t.flagged for t in g.turns),
                str(g.key),
            )
        )
        if limit is not None:
            rows = rows[:limit]
        return [g.as_dict(evidence=evidence) for g in rows]


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
