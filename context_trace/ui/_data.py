"""
What the dashboard's pages and API read: each endpoint's data from its
parameters, through one read-only :class:`~context_trace._store.analytics.Analytics`
per request, and the topics of the analytics extra.
"""

from __future__ import annotations

import time
from datetime import date, tzinfo
from typing import Any

from flask import g, request

from context_trace._store.analytics import RANGES, USER_SORTS, Analytics
from context_trace._store.cost import COST_BY
from context_trace._store.sqlite_store import SQLiteStore

from ._params import (
    _BadRequest,
    _float_arg,
    _int_arg,
    _limit,
    _range,
    _search_arg,
    _segment_arg,
)


def _topics_path(store: str) -> Any:
    """The store's topics file, or None without the analytics extra."""
    try:
        from context_trace.analytics.topic_index import default_topics_path
    except ImportError:
        return None
    return default_topics_path(store)


def read_topics(
    path: Any, user: str | None, since_day: str | None = None, today: str | None = None
) -> list[Any]:
    from context_trace.analytics.topic_index import read_topics as read

    return list(read(path, user, since_day=since_day, today=today))


def _struggling(rows: list[Any], limit: int | None = 10) -> list[Any]:
    from context_trace.analytics.topic_index import struggling

    return struggling(rows, limit)


def _range_days(range_: str) -> tuple[str | None, str]:
    """(the first UTC day of *range_* or None for all, today), as the overview counts."""
    now = time.time()
    span = RANGES[range_]
    first = (
        None
        if span is None
        else time.strftime("%Y-%m-%d", time.gmtime(now - span + 86_400))
    )
    return first, time.strftime("%Y-%m-%d", time.gmtime(now))


def _sentiment_available() -> bool:
    from context_trace._satisfaction import sentiment_available

    return sentiment_available()


class _Data:
    """The data of the endpoints, shared by the pages and the JSON API."""

    def __init__(
        self, path: str, index_path: Any, pricer: Any, tz: tzinfo | None
    ) -> None:
        self.path = path
        self.index_path = index_path
        self.pricer = pricer
        self.tz = tz
        self.topics_path = _topics_path(path)

    def store(self) -> Analytics:
        if "store" not in g:
            with SQLiteStore(self.path).reads() as reads:
                g.store = reads.dashboard(index=self.index_path, prices=self.pricer)
            if self.topics_path is not None and self.topics_path.exists():
                g.store.attach_topics(self.topics_path)
        result: Analytics = g.store
        return result

    def overview_data(self) -> Any:
        return self.store().overview(_range(), segment=_segment_arg())

    def users_data(self) -> Any:
        sort = request.args.get("sort", "last_seen")
        if sort not in USER_SORTS:
            raise _BadRequest(f"sort must be one of {', '.join(sorted(USER_SORTS))}")
        order = request.args.get("order", "desc")
        if order not in ("asc", "desc"):
            raise _BadRequest("order must be asc or desc")
        return self.store().users(
            search=_search_arg(),
            sort=sort,
            descending=order == "desc",
            offset=_int_arg("offset") or 0,
            limit=_limit(),
            range_=self.range_arg("all"),
            segment=_segment_arg(),
        )

    def range_arg(self, default: str) -> str:
        value = request.args.get("range", default)
        if value not in RANGES:
            raise _BadRequest(f"range must be one of {', '.join(RANGES)}")
        return value

    def user_arg(self) -> tuple[str | None, bool]:
        if request.args.get("anonymous") == "1":
            return None, True
        user_id = request.args.get("id") or request.args.get("user")
        return (user_id or None), False

    def user_data(self) -> Any:
        user_id, anonymous = self.user_arg()
        if user_id is None and not anonymous:
            raise _BadRequest("id must name a user (or give anonymous=1)")
        row = self.store().user(user_id)
        if row is None:
            return None, None
        sessions = self.store().sessions(
            user_id, before=_float_arg("before"), limit=_limit()
        )
        return row, sessions

    def session_data(self) -> Any:
        session_id = request.args.get("id")
        if not session_id:
            raise _BadRequest("id must name a session")
        return self.store().session(session_id)

    def conversations_data(self) -> Any:
        user_id, anonymous = self.user_arg()
        rating = request.args.get("rating") or None
        if rating not in (None, "up", "down"):
            raise _BadRequest("rating must be up or down")
        range_ = request.args.get("range", "all")
        if range_ not in RANGES:
            raise _BadRequest(f"range must be one of {', '.join(RANGES)}")
        return self.store().conversations(
            search=_search_arg(),
            user_id=user_id,
            anonymous=anonymous,
            rating=rating,
            errors_only=request.args.get("errors") == "1",
            tool_errors_only=request.args.get("tool_errors") == "1",
            model=request.args.get("model") or None,
            range_=range_,
            before=_int_arg("before"),
            limit=_limit(),
            topic=self.topic_arg(),
            segment=_segment_arg(),
        )

    def topic_arg(self) -> str | None:
        topic = request.args.get("topic") or None
        if topic is not None and (
            self.topics_path is None or not self.topics_path.exists()
        ):
            raise _BadRequest(
                "topic: there are no topics (install the analytics extra)"
            )
        return topic

    def topics_data(self, user: str | None = None, range_: str = "all") -> list[Any]:
        if self.topics_path is None:
            return []
        return read_topics(self.topics_path, user, *_range_days(range_))

    def topics_sort(self) -> str:
        sort = request.args.get("sort", "conversations")
        if sort not in ("conversations", "struggling"):
            raise _BadRequest("sort must be conversations or struggling")
        return sort

    def topics_list(self) -> tuple[list[Any], str, str, str | None]:
        """(rows, range, sort, user) of /topics and /api/topics."""
        range_ = self.range_arg("all")
        sort = self.topics_sort()
        user = request.args.get("user") or None
        rows = self.topics_data(user, range_)
        if sort == "struggling":
            rows = _struggling(rows, None)
        return rows, range_, sort, user

    def retention_data(self) -> Any:
        weeks = _int_arg("weeks")
        raw = request.args.get("since", "")
        since = None
        if raw:
            try:
                since = date.fromisoformat(raw)
            except ValueError:
                raise _BadRequest(
                    f"since must be a day as YYYY-MM-DD, got {raw!r}"
                ) from None
        try:
            return self.store().retention(
                weeks=8 if weeks is None else weeks,
                since=since,
                segment=_segment_arg(),
                tz=self.tz_arg(),
            )
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None

    def tz_arg(self) -> tzinfo | None:
        """
        ``?tz=``: UTC, or a zone whose figures the index keeps (the one the
        dashboard was started with); default: the dashboard's zone. Another
        zone is refused rather than read from the turns (seconds at scale).
        """
        text = request.args.get("tz", "").strip()
        if not text:
            return self.tz
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from context_trace._store.retention_index import zone_name

        try:
            zone = ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            raise _BadRequest(
                f"tz: unknown time zone {text!r} (expected an IANA name such as"
                " Europe/Paris, or UTC)"
            ) from None
        name = zone_name(zone)
        if name == "UTC":
            return None
        if name != zone_name(self.tz):
            kept = "UTC" if self.tz is None else f"UTC and {zone_name(self.tz)}"
            raise _BadRequest(
                f"tz: this dashboard keeps its figures in {kept}; start it with"
                f" --tz {text} (or CONTEXT_TRACE_TZ) to use {text}"
            )
        return self.tz

    def segments_data(self) -> Any:
        return {"keys": self.store().segments()}

    def compare_data(self) -> Any:
        period = request.args.get("period") or None
        a_range = request.args.get("a_range") or None
        b_range = request.args.get("b_range") or None
        if period or a_range or b_range:
            return self._compare_periods(period, a_range, b_range)
        return self.store().compare(
            _segment_arg("a"), _segment_arg("b"), self.range_arg("all")
        )

    def _compare_periods(
        self, period: str | None, a_range: str | None, b_range: str | None
    ) -> Any:
        """Period mode of the comparison: ``period=week`` or two day ranges."""
        from context_trace._store.compare_period import PERIODS, parse_day_range

        if period is not None and (a_range or b_range):
            raise _BadRequest("give period or a_range and b_range, not both")
        if period is not None and period not in PERIODS:
            raise _BadRequest(f"period must be one of {', '.join(PERIODS)}")
        if period is None and not (a_range and b_range):
            given, missing = (
                ("a_range", "b_range") if a_range else ("b_range", "a_range")
            )
            raise _BadRequest(f"{given} needs {missing} too (both as FIRST..LAST)")
        segment = _segment_arg()
        try:
            ranges = (
                (None, None)
                if period is not None
                else (
                    parse_day_range(a_range or "", "a_range"),
                    parse_day_range(b_range or "", "b_range"),
                )
            )
            return self.store().compare_periods(
                segment, period=period, a=ranges[0], b=ranges[1]
            )
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None

    def cost_data(self) -> Any:
        by = request.args.get("by", "model")
        if by not in COST_BY:
            raise _BadRequest(f"by must be one of {', '.join(COST_BY)}")
        try:
            return self.store().cost(
                by, self.range_arg("all"), _segment_arg(), limit=_limit()
            )
        except ValueError as exc:  # by=topic without topics
            raise _BadRequest(str(exc)) from None
