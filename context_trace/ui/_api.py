"""
The dashboard's JSON API (``/api/...``), with CSV downloads of its tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, request

from context_trace._store.analytics import (
    RANGES,
    ConversationRow,
    DayPoint,
    SessionRow,
    UserRow,
)

from ._data import _Data, _sentiment_available
from ._export import (
    _compare_csv,
    _cost_csv,
    _csv_response,
    _dataclass_csv,
    _json,
    _retention_csv,
)
from ._params import _BadRequest, _int_arg, _limit, _range, _table_arg, _want_csv


def register_api(app: Flask, data: _Data) -> None:
    """Add the ``/api/`` endpoints to *app*, reading through *data*."""

    def api(
        fn: Callable[[], Any], as_csv: Callable[[Any], Any] | None = None
    ) -> Callable[[], Any]:
        def view() -> Any:
            if as_csv is not None and _want_csv():
                return as_csv(fn())
            return jsonify(_json(fn()))

        view.__name__ = "api_" + fn.__name__
        return view

    def overview_csv(o: Any) -> Any:
        if _table_arg(("top_users", "days"), "days") == "days":
            return _dataclass_csv("days", DayPoint, o.days)
        rows = [{"user_id": u, "conversations": n} for u, n in o.top_users]
        return _csv_response("top_users", ["user_id", "conversations"], rows)

    def segments_csv(body: Any) -> Any:
        rows = [
            {"key": key, "value": value, "turns": n}
            for key, values in body["keys"].items()
            for value, n in values
        ]
        return _csv_response("segments", ["key", "value", "turns"], rows)

    app.add_url_rule(
        "/api/overview", "api_overview", api(data.overview_data, overview_csv)
    )
    app.add_url_rule(
        "/api/segments", "api_segments", api(data.segments_data, segments_csv)
    )
    app.add_url_rule(
        "/api/retention", "api_retention", api(data.retention_data, _retention_csv)
    )
    app.add_url_rule(
        "/api/compare", "api_compare", api(data.compare_data, _compare_csv)
    )
    app.add_url_rule("/api/cost", "api_cost", api(data.cost_data, _cost_csv))

    def api_page(fn: Callable[[], Any], row_class: Any = None) -> Callable[[], Any]:
        def view() -> Any:
            if row_class is not None and _want_csv():
                name = fn.__name__.removesuffix("_data")
                return _dataclass_csv(name, row_class, fn().items)
            page = fn()
            return jsonify(
                items=_json(page.items),
                next=page.next,
                total=page.total,
                total_exact=page.total_exact,
            )

        view.__name__ = "api_page_" + fn.__name__
        return view

    app.add_url_rule("/api/users", "api_users", api_page(data.users_data, UserRow))
    app.add_url_rule(
        "/api/conversations",
        "api_conversations",
        api_page(data.conversations_data, ConversationRow),
    )

    @app.route("/api/user")
    def api_user() -> Any:
        row, sessions = data.user_data()
        if row is None:
            return jsonify(error="not found"), 404
        if _want_csv():
            return _dataclass_csv("sessions", SessionRow, sessions.items)
        return jsonify(
            user=_json(row),
            sessions={"items": _json(sessions.items), "next": sessions.next},
            activity=_json(data.store().user_activity(row.user_id)),
        )

    @app.route("/api/session")
    def api_session() -> Any:
        view = data.session_data()
        if view is None:
            return jsonify(error="not found"), 404
        return jsonify(_json(view))

    @app.route("/api/models")
    def api_models() -> Any:
        return jsonify(items=data.store().models())

    # --- satisfaction (rules and scores: context_trace._satisfaction) ----------

    @app.route("/api/unhappy")
    def api_unhappy() -> Any:
        range_ = request.args.get("range", "all")
        if range_ not in RANGES:
            raise _BadRequest(f"range must be one of {', '.join(RANGES)}")
        min_turns = _int_arg("min_turns")
        if min_turns == 0:
            raise _BadRequest("min_turns must be a whole number from 1")
        limit = _limit() if request.args.get("limit") else 10
        users = data.store().unhappy_users(
            limit=limit, min_turns=min_turns or 3, range_=range_
        )
        if _want_csv():
            columns = list(users[0]) if users else ["user_id", "score"]
            return _csv_response("unhappy", columns, users)
        return jsonify(range=range_, sentiment=_sentiment_available(), users=users)

    @app.route("/api/satisfaction")
    def api_satisfaction() -> Any:
        report = data.store().satisfaction(_range())
        everyone = [g for g in report.users() if g.key is not None]
        turns = report.turns
        return jsonify(
            sentiment=report.sentiment,
            score=round(sum(t.score for t in turns) / len(turns), 3) if turns else None,
            turns=len(turns),
            flagged_turns=sum(t.flagged for t in turns),
            users=[g.as_dict() for g in everyone],
            models=[g.as_dict() for g in report.models()],
            days=[g.as_dict() for g in report.days()],
        )

    @app.route("/api/topics")
    def api_topics() -> Any:
        rows, range_, sort, _user = data.topics_list()
        if _want_csv():
            columns = ["id", "label", "terms", "question", "conversations", "users"]
            columns += ["share", "satisfaction", "error_rate", "latency_p50_ms"]
            return _csv_response("topics", columns, [r.to_json() for r in rows])
        return jsonify(
            items=[r.to_json() for r in rows], available=data.topics_path is not None,
            range=range_, sort=sort,
        )  # fmt: skip

    @app.route("/api/topic")
    def api_topic() -> Any:
        topic_id = request.args.get("id", "")
        found = [
            r for r in data.topics_data(None, data.range_arg("all")) if r.id == topic_id
        ]
        if not found:
            return jsonify(error="not found: no such topic (see /api/topics)"), 404
        return jsonify(found[0].to_json())
