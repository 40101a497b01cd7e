"""
The connection and shared helpers of the dashboard's queries (:mod:`.analytics`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .analytics_models import (
    RANGES,
)
from .connection import read_uri
from .ui_index import default_index_path


class _AnalyticsBase:
    """One read-only connection to a store and its dashboard index (see
    :class:`.analytics.Analytics`, which documents the arguments)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        index: str | os.PathLike[str] | None = None,
        now: float | None = None,
        prices: Any = None,
    ) -> None:
        self._prices = prices
        self._pricer: Any = None
        if prices is not None and hasattr(prices, "price"):  # a Pricer
            self._prices, self._pricer = None, prices
        if not os.path.exists(path):
            raise FileNotFoundError(f"no context_trace database at {path}")
        index_path = Path(index) if index is not None else default_index_path(path)
        self._conn = sqlite3.connect(read_uri(path), uri=True, timeout=10.0)
        self._now = now
        try:
            if not index_path.exists():
                raise ValueError(
                    f"no dashboard index at {index_path}: build it with"
                    " context_trace._store.ui_index.UIIndex (context-trace ui does)"
                )
            self._conn.execute(
                "ATTACH DATABASE ? AS ui",
                (index_path.absolute().as_uri() + "?mode=ro",),
            )
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def attach_topics(self, path: str | os.PathLike[str]) -> None:
        """Read each turn's topic (``conversations(topic=...)``) from this file."""
        self._conn.execute(
            "ATTACH DATABASE ? AS topics",
            (Path(path).absolute().as_uri() + "?mode=ro",),
        )

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def _clock(self) -> float:
        return time.time() if self._now is None else self._now

    def _since(self, range_: str) -> float | None:
        span = RANGES[range_]
        if span is None:
            return None
        return self._clock() - span

    @property
    def pricer(self) -> Any:
        """The :class:`~context_trace.analytics.pricing.Pricer` (made once)."""
        if self._pricer is None:
            from context_trace.analytics.pricing import Pricer

            self._pricer = Pricer(self._prices)
        return self._pricer

    def _has_topics(self) -> bool:
        return any(r[1] == "topics" for r in self._rows("PRAGMA database_list"))

    def use_prices(self, prices: Any) -> None:
        """Price with these overrides from now on (None: genai-prices alone)."""
        self._prices = prices
        self._pricer = None

    def _satisfaction_scores(self) -> tuple[str, list[float]]:
        """A ``WITH sat AS (...)`` of the users' scores, and its parameters."""
        from context_trace import _satisfaction
        from context_trace import _satisfaction_users_read as _satisfaction_users

        cutoff = self._clock() - _satisfaction.IDLE_GAP
        if _satisfaction_users.available(self._conn):
            # Kept per user as turns are indexed (see _satisfaction_users).
            return f"WITH {_satisfaction_users.scores_sql()}", [cutoff]
        has = self._rows("SELECT 1 FROM ui.sqlite_master WHERE name = 'sat_users'")
        if not has:
            return "WITH sat (user_key, score) AS (SELECT NULL, NULL)", []
        return f"WITH sat AS ({_satisfaction.USER_SCORES_SQL})", [cutoff]
