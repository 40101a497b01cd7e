"""
The dashboard's server-rendered pages.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, redirect, render_template, request

from context_trace._store.analytics import RANGES
from context_trace._store.compare_period import PERIODS
from context_trace._store.segments import MIN_SAMPLE

from ._data import _Data, _sentiment_available, _struggling
from ._params import _int_arg, _limit, _range, _search_arg, _segment_arg

# The compare page's rows: a figure's name, its label, and how it reads.
_COMPARE_MEASURES = (
    ("users", "Users", "count"),
    ("conversations", "Conversations", "count"),
    ("conversations_per_user", "Conversations per user", "num"),
    ("rating_up_share", "Rated helpful (share of ratings)", "pct"),
    ("error_rate", "Error rate", "pct"),
    ("latency_p50_ms", "p50 latency", "ms"),
    ("latency_p95_ms", "p95 latency", "ms"),
    ("tokens_per_conversation", "Tokens per conversation", "num"),
    ("cost_per_conversation", "Cost per conversation", "money"),
    ("week1_retention", "Week-1 retention", "pct"),
)


def register_pages(app: Flask, data: _Data) -> None:
    """Add the pages to *app*, reading through *data*."""

    @app.route("/")
    def overview_page() -> Any:
        return render_template(
            "overview.html",
            unhappy_count=data.store().unhappy_count(),
            struggling=_struggling(data.topics_data(None, _range()), 5),
            o=data.overview_data(),
            cost=data.store().cost("model", _range(), _segment_arg()).total,
            ranges=RANGES,
            meta=request.args.getlist("meta"),
            segments=data.store().segments(),
        )

    @app.route("/users")
    def users_page() -> Any:
        return render_template(
            "users.html",
            page=data.users_data(),
            q=_search_arg(),
            sort=request.args.get("sort", "last_seen"),
            order=request.args.get("order", "desc"),
            offset=_int_arg("offset") or 0,
            range=request.args.get("range", "all"),
            ranges=RANGES,
            meta=request.args.getlist("meta"),
            segments=data.store().segments(),
        )

    @app.route("/user")
    def user_page() -> Any:
        row, sessions = data.user_data()
        if row is None:
            return render_template("error.html", message="No such user."), 404
        topics = data.topics_data(row.user_id) if row.user_id is not None else []
        return render_template(
            "user.html",
            user=row,
            sessions=sessions,
            topics=topics,
            flagged=data.store().user_flagged(row.user_id),
        )

    @app.route("/retention")
    def retention_page() -> Any:
        return render_template(
            "retention.html",
            r=data.retention_data(),
            weeks=request.args.get("weeks", ""),
            since=request.args.get("since", ""),
            meta=request.args.getlist("meta"),
            segments=data.store().segments(),
            tz_name=str(data.tz_arg() or "UTC"),
        )

    @app.route("/compare")
    def compare_page() -> Any:
        return render_template(
            "compare.html",
            c=data.compare_data(),
            a=[v for v in request.args.getlist("a") if v],
            b=[v for v in request.args.getlist("b") if v],
            range=data.range_arg("all"),
            ranges=RANGES,
            segments=data.store().segments(),
            measures=_COMPARE_MEASURES,
            min_sample=MIN_SAMPLE,
            periods=PERIODS,
            period=request.args.get("period", ""),
            a_range=request.args.get("a_range", ""),
            b_range=request.args.get("b_range", ""),
            meta=[v for v in request.args.getlist("meta") if v],
        )

    @app.route("/session")
    def session_page() -> Any:
        view = data.session_data()
        if view is None:
            return render_template("error.html", message="No such session."), 404
        report = data.store().satisfaction(session_id=view.session.session_id)
        flags = {
            t.conversation_id: [sig.reason for sig in t.signals if sig.weight > 0]
            for t in report.turns
            if t.flagged
        }
        return render_template("session.html", view=view, flags=flags)

    @app.route("/conversations")
    def conversations_page() -> Any:
        return render_template(
            "conversations.html",
            page=data.conversations_data(),
            models=data.store().models(),
            args=request.args,
            ranges=RANGES,
            meta=request.args.getlist("meta"),
            segments=data.store().segments(),
        )

    @app.route("/topics")
    def topics_page() -> Any:
        rows, range_, sort, user = data.topics_list()
        return render_template(
            "topics.html", rows=rows, user=user, range=range_, sort=sort,
            ranges=RANGES, available=data.topics_path is not None,
            struggling=[] if user or sort == "struggling" else _struggling(rows),
        )  # fmt: skip

    @app.route("/topics/<topic_id>")
    def topic_page(topic_id: str) -> Any:
        range_ = data.range_arg("all")
        rows = data.topics_data(None, range_)
        found = [r for r in rows if r.id == topic_id]
        if not found:
            return render_template("error.html", message="No such topic."), 404
        flagged = (
            data.store().topic_flagged(topic_id) if data.topics_path is not None else []
        )
        return render_template(
            "topic.html", t=found[0], range=range_, ranges=RANGES, flagged=flagged,
        )  # fmt: skip

    @app.route("/unhappy")
    def unhappy_page() -> Any:
        limit = _limit() if request.args.get("limit") else 20
        return render_template(
            "unhappy.html", users=data.store().unhappy_users(limit=limit),
            sentiment=_sentiment_available(),
        )  # fmt: skip

    @app.route("/login", methods=["GET", "POST"])
    def login_page() -> Any:
        return redirect("/", code=303)
