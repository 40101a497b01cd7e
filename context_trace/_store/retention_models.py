"""
The read models of the retention reports (see :mod:`.retention`, which states
the definitions).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ActivePoint", "ChurnedUser", "CohortRow", "Retention", "WeekCount"]


@dataclass(frozen=True, slots=True)
class ActivePoint:
    """
    Active users in one period: ``period`` is a UTC day, an ISO week's Monday
    (both ``YYYY-MM-DD``) or a month (``YYYY-MM``); ``active`` = ``new`` +
    ``returning``. ``stickiness`` (months only) is mean DAU / MAU, None
    without active users.
    """

    period: str
    active: int
    new: int
    returning: int
    stickiness: float | None = None


@dataclass(frozen=True, slots=True)
class CohortRow:
    """
    The users first seen in the ISO week ``week`` (its Monday): ``users`` of
    them; ``active[k - 1]`` of them were active in week *k* after it and
    ``retained[k - 1]`` is that share, for each week up to the current one.
    """

    week: str
    users: int
    active: tuple[int, ...]
    retained: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ChurnedUser:
    """A user active in the previous 7 days and not since: their turns then."""

    user_id: str
    previous_conversations: int
    last_seen: float | None


@dataclass(frozen=True, slots=True)
class Retention:
    """
    A retention report from ``since`` (a Monday) to ``today`` (UTC days).

    ``stickiness`` is the current month's (see :class:`ActivePoint`);
    ``churned_total`` counts every churned user, ``churned`` lists the first
    :data:`.retention.CHURN_LIMIT`.
    """

    since: str
    today: str
    users: int
    daily: tuple[ActivePoint, ...]
    weekly: tuple[ActivePoint, ...]
    monthly: tuple[ActivePoint, ...]
    stickiness: float | None
    cohorts: tuple[CohortRow, ...]
    churned_total: int
    churned: tuple[ChurnedUser, ...]


@dataclass(frozen=True, slots=True)
class WeekCount:
    """A user's conversations in the ISO week of Monday ``day`` (UTC)."""

    day: str
    conversations: int
