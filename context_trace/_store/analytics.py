"""
The dashboard's queries and the frozen read models they return.

:class:`Analytics` opens a store read-only (``mode=ro``) and answers every
question ``context-trace ui`` asks: an overview for a time range, the users
table, a user's sessions, a session's turns, and a filtered, searchable list of
conversations. Totals, per-user lists and full-text search come from the
dashboard's sidecar index (see :mod:`.ui_index`), attached read-only as ``ui``;
transcripts and sessions come from the store itself.

The read models are in :mod:`.analytics_models`, the connection in
:mod:`.analytics_base`, the overview, cost and retention queries in
:mod:`.analytics_overview` and the users and sessions queries in
:mod:`.analytics_users`; the conversations search and the satisfaction
queries are here.
"""

from __future__ import annotations

import json
from typing import Any

from context_trace._record import Message
from context_trace._store.codec import messages_from_json as _messages_from_json
from context_trace._store.codec import tool_error_sql as _tool_error_sql

from . import segments as _segments
from .analytics_models import (
    _HIT_END,
    _HIT_START,
    _SNIPPET_WORDS,
    _USER_TURNS,
    RANGES,
    USER_SORTS,
    ConversationRow,
    DayPoint,
    Overview,
    Page,
    SessionRow,
    SessionView,
    TurnView,
    UserRow,
    _fts_query,
    _key,
    _marked,
    _preview,
    _search_body,
)
from .analytics_overview import _OverviewQueries
from .analytics_users import _UserQueries
from .segments import Segment
from .ui_index import FTS_TOKENIZE

__all__ = [
    "RANGES",
    "SEARCH_COUNT_LIMIT",
    "USER_SORTS",
    "Analytics",
    "ConversationRow",
    "DayPoint",
    "Overview",
    "Page",
    "SessionRow",
    "SessionView",
    "TurnView",
    "UserRow",
]

# A search with filters on the turns' columns counts among this many of its
# newest word matches at most (each costs a row read): a bounded cost per page.
SEARCH_COUNT_LIMIT = 5_000


class Analytics(_OverviewQueries, _UserQueries):
    """
    Read-only dashboard queries over one store; use one instance per thread.

    Args:
        path: The store.
        index: Its dashboard index, built by :class:`.ui_index.UIIndex`
            (default: :func:`.ui_index.default_index_path`).
        now: Epoch seconds to use as "now" for time ranges (default: the clock).
        prices: Price overrides for the cost figures (see
            :func:`context_trace.analytics.pricing.check_prices`), or a
            :class:`~context_trace.analytics.pricing.Pricer` to share (its
            prices are looked up once for every request of a dashboard).

    Raises:
        FileNotFoundError: If *path* does not exist.
        ValueError: If *index* has not been built.
    """

    def __enter__(self) -> Analytics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- conversations --------------------------------------------------------

    def models(self) -> list[str]:
        """Every model name seen, for the filter."""
        return [r[0] for r in self._rows("SELECT model FROM ui_models ORDER BY model")]

    def conversations(
        self,
        *,
        search: str = "",
        user_id: str | None = None,
        anonymous: bool = False,
        rating: str | None = None,
        errors_only: bool = False,
        tool_errors_only: bool = False,
        model: str | None = None,
        range_: str = "all",
        before: int | None = None,
        limit: int = 50,
        topic: str | None = None,
        segment: Segment = (),
    ) -> Page:
        """
        Conversations, newest first, filtered; *before* is the ``n`` cursor.

        Args:
            search: Words that must all appear in the turn's messages (FTS5).
                With words, the page counts the matches (``total``) and each
                row carries its marked ``snippet``. With *rating*,
                *errors_only*, *model* or a *range_* as well, only the newest
                :data:`SEARCH_COUNT_LIMIT` turns holding the words are
                counted; when there are more, ``total_exact`` is False.
            user_id: Only this user's turns; *anonymous* for the turns with none.
            rating: ``"up"`` or ``"down"``: only the turns rated so.
            errors_only: Only failed turns.
            tool_errors_only: Only turns that answered although a tool failed.
            model: Only this model's turns.
            range_: A key of :data:`RANGES`.
            topic: Only the turns of this topic (needs :meth:`attach_topics`).
            segment: Only the turns with these metadata values (see
                :mod:`.segments`); counted as *rating* is, with words.

        Raises:
            ValueError: For an unknown *rating* or *range_*.
        """
        if rating not in (None, "up", "down"):
            raise ValueError(f"rating must be 'up' or 'down', got {rating!r}")
        if range_ not in RANGES:
            raise ValueError(f"range must be one of {list(RANGES)}, got {range_!r}")
        conds: list[str] = []
        params: list[Any] = []
        source = "conversations c"
        order = "c.n"
        query = _fts_query(search)
        if query:
            # The FTS table drives the loop in descending rowid order, so the
            # first page of a common word stops after `limit` matches.
            source = "conversations_fts f JOIN conversations c ON c.n = f.rowid"
            order = "f.rowid"
            conds.append("conversations_fts MATCH ?")
            params.append(query)
            if user_id is not None or anonymous:
                conds.append(f"f.rowid IN ({_USER_TURNS})")
                params.append("" if anonymous else user_id)
        elif user_id is not None or anonymous:
            source = "ui_turns u JOIN conversations c ON c.n = u.n"
            order = "u.n"
            conds.append("u.user_key = ?")
            params.append("" if anonymous else user_id)
        elif topic is not None:
            # The topic's turns drive the loop, newest first (its index).
            source = "topics.topic_turns tt JOIN conversations c ON c.n = tt.n"
            order = "tt.n"
            conds.append("tt.topic_id = ?")
            params.append(topic)
            topic = None
        elif segment:
            # The segment's first value drives the loop, newest first.
            source = "ui_segment_turn m JOIN conversations c ON c.n = m.n"
            order = "m.n"
            conds.append("m.key = ? AND m.value = ?")
            params += segment[0]
            segment = segment[1:]
        # The conditions before this point read the index; the ones after, the
        # turn's own row (see _count_matches).
        index_conds, index_params = len(conds), len(params)
        if rating is not None:
            sign = ">" if rating == "up" else "<"
            conds.append(
                f"c.id IN (SELECT conversation_id FROM feedback WHERE rating {sign} 0)"
            )
        if errors_only:
            conds.append("c.error IS NOT NULL")
        if tool_errors_only:
            conds.append(_tool_error_sql("c"))
        if model:
            conds.append("c.model = ?")
            params.append(model)
        if topic is not None:
            # A point lookup per turn: never the topic's whole list of turns.
            conds.append("(SELECT topic_id FROM topics.topic_turns WHERE n = c.n) = ?")
            params.append(topic)
        if segment:
            cond, values = _segments.segment_turns(segment, "c.n")
            conds.append(cond)
            params += values
        since = self._since(range_)
        if since is not None:
            conds.append("c.started_at >= ?")
            params.append(since)
        total, exact = None, True
        if query:
            # The number of matches, every page: the conditions but the cursor.
            total, exact = self._count_matches(
                (conds[:index_conds], params[:index_params]),
                (conds[index_conds:], params[index_params:]),
            )
        if before is not None:
            conds.append(f"{order} < ?")
            params.append(before)
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        rows = self._rows(
            "SELECT c.n, c.id, c.user_id, c.session_id, c.started_at, c.latency_ms,"
            f" c.model, c.error, c.messages_json, {_tool_error_sql('c')}"
            f" FROM {source}{where}"
            f" ORDER BY {order} DESC LIMIT ?",
            [*params, limit + 1],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        messages = {r[0]: _messages_from_json(r[8]) for r in rows}
        snippets = self._snippets(query, messages) if query else {}
        items = tuple(
            ConversationRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7],
                            bool(r[9]), _preview(messages[r[0]]),
                            snippets.get(r[0]))
            for r in rows
        )  # fmt: skip
        return Page(items, str(items[-1].n) if more and items else None, total, exact)

    def _count_matches(
        self,
        index: tuple[list[str], list[Any]],
        turn: tuple[list[str], list[Any]],
    ) -> tuple[int, bool]:
        """
        (matches, exact) of a search: *index* conditions (the words, the user)
        are answered by the sidecar; *turn* conditions need each match's row.

        Without turn conditions the FTS index counts alone, exactly and fast.
        With them, only the newest :data:`SEARCH_COUNT_LIMIT` word matches are
        read, so the cost does not grow with the store; past that the count is
        a lower bound, and *exact* is False.
        """
        where = " AND ".join(index[0])
        hits = self._rows(
            f"SELECT count(*) FROM conversations_fts f WHERE {where}", index[1]
        )[0][0]
        if not turn[0]:
            return hits, True
        total = self._rows(
            "SELECT count(*) FROM (SELECT f.rowid AS n FROM conversations_fts f"
            f" WHERE {where} ORDER BY f.rowid DESC LIMIT ?) h"
            f" JOIN conversations c ON c.n = h.n WHERE {' AND '.join(turn[0])}",
            [*index[1], SEARCH_COUNT_LIMIT, *turn[1]],
        )[0][0]
        return total, hits <= SEARCH_COUNT_LIMIT

    def _snippets(
        self, query: str, messages: dict[int, list[Message]]
    ) -> dict[int, str]:
        """
        The passage of each turn that *query* matched, marked (see ConversationRow).

        The index keeps no text (it is contentless), so FTS5's ``snippet()`` runs
        on a temporary FTS5 table of this page's turns, tokenized as the index
        is: the marked words are exactly the ones the search matched. Temporary
        tables live outside the store, which stays read-only.
        """
        conn = self._conn
        conn.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.snippets USING fts5("
            f"body, tokenize='{FTS_TOKENIZE}')"
        )
        try:
            conn.execute("DELETE FROM temp.snippets")
            conn.executemany(
                "INSERT INTO temp.snippets (rowid, body) VALUES (?, ?)",
                [(n, _search_body(m)) for n, m in messages.items()],
            )
            found = conn.execute(
                "SELECT rowid, snippet(snippets, 0, ?, ?, '…', ?) FROM temp.snippets"
                " WHERE snippets MATCH ?",
                (_HIT_START, _HIT_END, _SNIPPET_WORDS, query),
            ).fetchall()
        finally:
            conn.commit()  # end the implicit transaction the temporary writes began
        return {n: _marked(text) for n, text in found}

    # --- satisfaction (the rules: context_trace._satisfaction) ----------------
    def satisfaction(
        self,
        range_: str = "all",
        user_id: str | None = None,
        session_id: str | None = None,
    ) -> Any:
        """The satisfaction report of the turns in *range_* (of one user or session)."""
        from context_trace import _satisfaction

        return _satisfaction.analyze_index(
            self._conn,
            since=self._since(range_),
            user=None if user_id is None else _key(user_id),
            session=session_id,
            now=self._clock(),
            index="ui",
            store="main",
        )

    def unhappy_users(
        self,
        limit: int = 10,
        min_turns: int | None = None,
        evidence: int = 5,
        range_: str = "all",
    ) -> list[dict[str, Any]]:
        """
        The users :meth:`.Report.unhappy` lists over *range_*, from the
        per-user sums kept in the index (see :mod:`context_trace._satisfaction_users`):
        each as :meth:`.Group.as_dict` gives it (``key``, ``score``, ``turns``,
        ``flagged_turns``, ``signals``..., and ``evidence``: their worst turns,
        ``{session_id, turn, conversation_id, reasons}``).

        Raises:
            ValueError: For an unknown *range_*.
        """
        from context_trace import _satisfaction
        from context_trace import _satisfaction_users_read as _satisfaction_users

        if range_ not in RANGES:
            raise ValueError(f"range must be one of {list(RANGES)}, got {range_!r}")
        least = _satisfaction.MIN_TURNS if min_turns is None else min_turns
        if not _satisfaction_users.available(self._conn):
            found: list[dict[str, Any]] = self.satisfaction(range_).unhappy(
                limit=limit, min_turns=least, evidence=evidence
            )
            return found
        return _satisfaction_users.unhappy(
            self._conn, now=self._clock(), since=self._since(range_), limit=limit,
            min_turns=least, evidence=evidence,
        )  # fmt: skip

    def user_flagged(self, user_id: str | None, limit: int = 5) -> list[dict[str, Any]]:
        """
        A user's worst turns by their own signals: ``{session_id, turn,
        conversation_id, reasons}``, ``turn`` being its place in its session.
        """
        rows = self._rows(
            "SELECT c.id, s.id, t.position, t.signals FROM ui.sat_turns t"
            " JOIN main.conversations c ON c.n = t.n"
            " LEFT JOIN main.sessions s ON s.n = t.session_n"
            " WHERE t.user_key = ? AND t.penalty > 0"
            " ORDER BY t.penalty DESC, t.n DESC LIMIT ?",
            (_key(user_id), limit),
        )
        return [
            {"session_id": sid, "turn": position, "conversation_id": cid,
             "reasons": [r for _, r in json.loads(signals)]}
            for cid, sid, position, signals in rows
        ]  # fmt: skip

    def unhappy_count(self, min_turns: int | None = None) -> int:
        """How many users :meth:`unhappy_users` would list with no limit."""
        from context_trace import _satisfaction
        from context_trace import _satisfaction_users_read as _satisfaction_users

        least = _satisfaction.MIN_TURNS if min_turns is None else min_turns
        if not _satisfaction_users.available(self._conn):
            return 0
        # A user is listed when one of their turns is flagged (a signal of
        # its own, or rated 👎; "the session ended" only follows a turn that
        # failed or did not answer, itself flagged): a range of the sums.
        return int(
            self._rows(
                "SELECT count(*) FROM ui.usat_user WHERE user_key != ''"
                " AND turns >= ? AND flagged > 0",
                (least,),
            )[0][0]
        )

    def topic_flagged(self, topic: str, limit: int = 20) -> list[dict[str, Any]]:
        """
        A topic's flagged turns, worst first (by their own signals; needs
        :meth:`attach_topics`): ``{conversation_id, user_id, session_id, turn,
        started_at, question, reasons}``.
        """
        rows = self._rows(
            "SELECT c.id, c.user_id, s.id, st.position, c.started_at, c.messages_json,"
            " st.signals FROM topics.topic_turns t"
            " JOIN main.conversations c ON c.n = t.n"
            " JOIN ui.sat_turns st ON st.n = t.n"
            " LEFT JOIN main.sessions s ON s.n = t.session_n"
            " WHERE t.topic_id = ? AND t.penalty > 0"
            " ORDER BY t.penalty DESC, t.n DESC LIMIT ?",
            (topic, limit),
        )
        return [
            {"conversation_id": cid, "user_id": uid, "session_id": sid, "turn": pos,
             "started_at": started, "question": _preview(_messages_from_json(text)),
             "reasons": [r for _, r in json.loads(signals)]}
            for cid, uid, sid, pos, started, text, signals in rows
        ]  # fmt: skip
