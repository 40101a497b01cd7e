"""
The dashboard's users and sessions queries (:mod:`.analytics`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from context_trace._store.codec import messages_from_json as _messages_from_json
from context_trace._store.codec import tool_error_sql as _tool_error_sql

from . import cost as _cost
from . import segments as _segments
from .analytics_base import _AnalyticsBase
from .analytics_models import (
    _DAY,
    _SPARK_DAYS,
    RANGES,
    USER_SORTS,
    Page,
    SessionRow,
    SessionView,
    TurnView,
    UserRow,
    _key,
    _metadata,
    _user,
)
from .cost_priced import priced_for
from .segments import Segment


class _UserQueries(_AnalyticsBase):
    """The users table, a user's row and sessions, and a session's turns."""

    # --- users ----------------------------------------------------------------

    def users(
        self,
        *,
        search: str = "",
        sort: str = "last_seen",
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
        range_: str = "all",
        segment: Segment = (),
    ) -> Page:
        """
        A page of the users table, the no-user row included (as ``user_id`` None).

        With *range_*, only the users with a turn in it; with *segment*, only
        the users with a turn in it (see :mod:`.segments`). Their figures are
        their totals all the same.

        Raises:
            ValueError: For an unknown *sort* or *range_*.
        """
        if sort not in USER_SORTS:
            raise ValueError(f"sort must be one of {sorted(USER_SORTS)}, got {sort!r}")
        if range_ not in RANGES:
            raise ValueError(f"range must be one of {list(RANGES)}, got {range_!r}")
        conds: list[str] = []
        params: list[Any] = []
        if search:
            escaped = (
                search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            )
            conds.append("user_key LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        since = self._since(range_)
        if since is not None:
            conds.append("last_at >= ?")
            params.append(since)
        if segment:
            cond, values = _segments.segment_users(segment, "ui_user_stats.user_key")
            conds.append(cond)
            params += values
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        order = "DESC" if descending else "ASC"
        total = self._rows(f"SELECT count(*) FROM ui_user_stats{where}", params)[0][0]
        scores, cutoff = self._satisfaction_scores()
        prices, price_params, models = _cost.price_table(self._conn, self.pricer)
        if sort == "cost" and priced_for(self._conn, models):  # the index's costs
            head, before = f"WITH {_cost.user_costs_sql(priced=True)}", []
            join = " LEFT JOIN user_cost USING (user_key)"
        elif sort == "cost":  # every user priced, to sort them
            head = f"WITH {prices}, {_cost.user_costs_sql()}"
            before = price_params
            join = " LEFT JOIN user_cost USING (user_key)"
        elif sort == "satisfaction":  # every user's score, to sort them
            head, before, join = scores, cutoff, " LEFT JOIN sat USING (user_key)"
        else:
            head, before, join = "", [], ""
        # The sort carries the keys alone (a deep page sorts every user: narrow
        # rows sort faster), then the page's rows are looked up.
        keys = [
            r[0]
            for r in self._rows(
                f"{head} SELECT user_key FROM ui_user_stats{join}{where}"
                f" ORDER BY {USER_SORTS[sort]} {order}, user_key LIMIT ? OFFSET ?",
                [*before, *params, limit + 1, offset],
            )
        ]
        more = len(keys) > limit
        keys = keys[:limit]
        found = {}
        if keys:
            found = {
                r[0]: r
                for r in self._rows(
                    "SELECT user_key, conversations, sessions, first_at, last_at,"
                    " prompt_tokens, completion_tokens, rating_up, rating_down,"
                    " errors, tool_errors FROM ui_user_stats"
                    f" WHERE user_key IN ({','.join('?' * len(keys))})",
                    keys,
                )
            }
        rows = [found[k] for k in keys]
        # The page's scores only (each a lookup in the per-user sums).
        satisfaction: dict[str, float] = {}
        if keys:
            marks = ",".join("?" * len(keys))
            satisfaction = dict(
                self._rows(
                    f"{scores} SELECT user_key, score FROM sat"
                    f" WHERE user_key IN ({marks})",
                    [*cutoff, *keys],
                )
            )
        now = time.time() if self._now is None else self._now
        days = [
            time.strftime("%Y-%m-%d", time.gmtime(now - i * _DAY))
            for i in range(_SPARK_DAYS - 1, -1, -1)
        ]
        activity: dict[str, dict[str, int]] = {k: {} for k in keys}
        costs = self._user_costs(keys, prices, price_params)
        if keys:
            # Point lookups (day, user) in the (day, user_key) primary key.
            marks = ",".join("?" * len(keys))
            day_marks = ",".join("?" * len(days))
            for key, day, count in self._rows(
                "SELECT user_key, day, conversations FROM ui_user_day"
                f" WHERE day IN ({day_marks}) AND user_key IN ({marks})",
                [*days, *keys],
            ):
                activity[key][day] = count
        items = tuple(
            UserRow(
                user_id=_user(r[0]),
                conversations=r[1],
                sessions=r[2],
                first_seen=r[3],
                last_seen=r[4],
                latency_p50_ms=self._user_p50(r[0]),
                prompt_tokens=r[5],
                completion_tokens=r[6],
                rating_up=r[7],
                rating_down=r[8],
                errors=r[9],
                tool_errors=r[10],
                activity=tuple(activity[r[0]].get(d, 0) for d in days),
                satisfaction=satisfaction.get(r[0]),
                cost=costs.get(r[0], (None, 0))[0],
                unpriced_calls=costs.get(r[0], (None, 0))[1],
            )
            for r in rows
        )
        return Page(items, str(offset + limit) if more else None, total)

    def _user_costs(
        self, keys: Sequence[str], prices: str, params: Sequence[Any]
    ) -> dict[str, tuple[float | None, int]]:
        """(cost, unpriced calls) of these users, by key (see :mod:`.cost`)."""
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        return {
            key: (cost if priced else None, int(unpriced))
            for key, cost, priced, unpriced in self._rows(
                f"WITH {prices} SELECT x.user_key, total({_cost.COST_SQL}),"
                " count(p.model), sum(" + _cost.UNPRICED_SQL + ")"
                " FROM ui_cost_user x LEFT JOIN price p ON p.model = x.model"
                f" WHERE x.user_key IN ({marks}) GROUP BY x.user_key",
                [*params, *keys],
            )
        }

    def _user_p50(self, key: str) -> int | None:
        """The user's nearest-rank median latency, picked in SQL (the no-user
        key can hold a twentieth of the store: no list of them in Python)."""
        count = self._rows("SELECT count(*) FROM ui_turns WHERE user_key = ?", (key,))
        if not count[0][0]:
            return None
        rank = max(0, math.ceil(0.5 * count[0][0]) - 1)
        return int(
            self._rows(
                "SELECT latency_ms FROM ui_turns WHERE user_key = ?"
                " ORDER BY latency_ms LIMIT 1 OFFSET ?",
                (key, rank),
            )[0][0]
        )

    def user(self, user_id: str | None) -> UserRow | None:
        """One user's row (None: the no-user row), or None if unknown."""
        key = _key(user_id)
        rows = self._rows(
            "SELECT user_key, conversations, sessions, first_at, last_at,"
            " prompt_tokens, completion_tokens, rating_up, rating_down, errors,"
            " tool_errors FROM ui_user_stats WHERE user_key = ?",
            (key,),
        )
        if not rows:
            return None
        r = rows[0]
        prices, price_params, _ = _cost.price_table(self._conn, self.pricer)
        cost, unpriced = self._user_costs([key], prices, price_params).get(
            key, (None, 0)
        )
        return UserRow(
            _user(r[0]), r[1], r[2], r[3], r[4], self._user_p50(key),
            r[5], r[6], r[7], r[8], r[9], r[10], (), None, cost, unpriced,
        )  # fmt: skip

    # --- sessions -------------------------------------------------------------

    def sessions(
        self, user_id: str | None, *, before: float | None = None, limit: int = 50
    ) -> Page:
        """A user's sessions, most recently active first; *before* is a ``last_at`` cursor."""
        cond = "u.user_key = ?"
        params: list[Any] = [_key(user_id)]
        if before is not None:
            cond += " AND u.last_at < ?"
            params.append(before)
        rows = self._rows(
            "SELECT s.n, s.id, s.user_id, s.started_at, s.last_at, s.rating_up,"
            " s.rating_down, u.last_at FROM ui_sessions u"
            f" JOIN sessions s ON s.n = u.n WHERE {cond}"
            " ORDER BY u.last_at DESC LIMIT ?",
            [*params, limit + 1],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        items = tuple(self._session_row(r) for r in rows)
        return Page(items, repr(rows[-1][7]) if more and rows else None)

    def _session_row(self, r: Sequence[Any]) -> SessionRow:
        turns, errors, tool_errors, last = self._rows(
            "SELECT count(*), coalesce(sum(error IS NOT NULL), 0),"
            f" coalesce(sum({_tool_error_sql()}), 0),"
            " (SELECT messages_json FROM conversations WHERE session_n = ?1"
            "  ORDER BY started_at DESC, n DESC LIMIT 1)"
            " FROM conversations WHERE session_n = ?1",
            (r[0],),
        )[0]
        messages = _messages_from_json(last) if last else []
        return SessionRow(
            session_id=r[1],
            user_id=r[2],
            started_at=r[3],
            last_at=r[4],
            turns=turns,
            errors=errors,
            tool_errors=tool_errors,
            rating_up=r[5],
            rating_down=r[6],
            last_message=messages[-1].content[:200] if messages else None,
        )

    def session(self, session_id: str) -> SessionView | None:
        """A session with its turns in order, or None if unknown."""
        rows = self._rows(
            "SELECT n, id, user_id, started_at, last_at, rating_up, rating_down,"
            " metadata FROM sessions WHERE id = ?",
            (session_id,),
        )
        if not rows:
            return None
        turns = self._rows(
            "SELECT id, started_at, latency_ms, model, prompt_tokens,"
            " completion_tokens, error, messages_json, metadata,"
            f" {_tool_error_sql()} FROM conversations"
            " WHERE session_n = ? ORDER BY started_at, n",
            (rows[0][0],),
        )
        # Each turn's ratings in the order given: the last one wins.
        ratings = dict(
            self._rows(
                "SELECT conversation_id, rating FROM feedback WHERE session_id = ?"
                " AND conversation_id IS NOT NULL ORDER BY created_at, id",
                (session_id,),
            )
        )
        pricer = self.pricer
        views = []
        for t in turns:
            metadata = _metadata(t[8])
            cost, calls, unpriced = _cost.turn_cost(pricer, t[3], t[4], t[5], metadata)
            views.append(
                TurnView(t[0], t[1], t[2], t[3], t[4], t[5], t[6], bool(t[9]),
                         tuple(_messages_from_json(t[7])), metadata,
                         ratings.get(t[0]), cost, calls, unpriced)
            )  # fmt: skip
        return SessionView(
            self._session_row(rows[0]), _metadata(rows[0][7]), tuple(views)
        )
