"""
The dashboard's Flask app: server-rendered pages and the JSON API they mirror.

Every request opens the store read-only through
:class:`context_trace._store.analytics.Analytics`, with the dashboard's sidecar
index (:class:`context_trace._store.ui_index.UIIndex`) attached. The index is
brought level with the store before each request, one bounded chunk at most,
and by a background thread every couple of seconds. Templates autoescape and
no stored text is ever marked safe unescaped: a search snippet is the stored
text escaped, with ``<mark>`` tags added around the matched words only. With a
token, every request must carry it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import hmac
import io
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import date, tzinfo
from typing import Any
from urllib.parse import urlencode

try:
    from flask import (
        Flask,
        Request,
        Response,
        g,
        jsonify,
        redirect,
        render_template,
        request,
    )
    from markupsafe import Markup
    from werkzeug.datastructures import ImmutableMultiDict
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "context_trace.ui requires Flask and waitress; install 'context-trace[ui]'"
    ) from exc

from context_trace._store.analytics import (
    RANGES,
    SEARCH_COUNT_LIMIT,
    USER_SORTS,
    Analytics,
    ConversationRow,
    DayPoint,
    SessionRow,
    UserRow,
)
from context_trace._store.cost import COST_BY, CostRow, ModelPriceRow
from context_trace._store.retention import ActivePoint, ChurnedUser
from context_trace._store.segments import MIN_SAMPLE, Segment, parse_segment
from context_trace._store.sqlite_store import SQLiteStore
from context_trace._store.ui_index import REQUEST_CHUNK, UIIndex
from context_trace.analytics.hook import dashboard_topics

__all__ = ["CSP", "GLOBAL_PARAMETERS", "PARAMETERS", "create_app"]

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'"
)
_COOKIE = "context_trace_ui"
_PAGE = 50
_MAX_PAGE = 500
# Offsets and cursors: the largest integer JSON readers (JavaScript) hold
# exactly, well inside SQLite's 64-bit integers even with a page added.
_MAX_INT = 2**53 - 1
# Search text, at most: far below SQLite's LIKE pattern limit (50,000 bytes).
_MAX_SEARCH = 1000
# The query (and form) parameters each endpoint reads, and the ones every
# endpoint reads. Reading a parameter not listed here raises LookupError: the
# hostile-input test walks this table with the app's url_map, so a new endpoint
# or parameter cannot be left out of it.
GLOBAL_PARAMETERS = frozenset({"token"})
_USER_PARAMS = frozenset({"id", "user", "anonymous"})
_USERS_PARAMS = frozenset({"q", "sort", "order", "offset", "limit", "range", "meta"})
_CONVERSATIONS_PARAMS = _USER_PARAMS | {
    "q", "rating", "range", "errors", "tool_errors", "model", "before", "limit",
    "topic", "meta",
}  # fmt: skip
PARAMETERS: dict[str, frozenset[str]] = {
    "overview_page": frozenset({"range", "meta"}),
    "api_segments": frozenset(),
    "api_retention": frozenset({"weeks", "since", "meta"}),
    "api_compare": frozenset({"a", "b", "range"}),
    "api_cost": frozenset({"by", "range", "meta", "limit"}),
    "users_page": _USERS_PARAMS,
    "user_page": _USER_PARAMS | {"before", "limit"},
    "retention_page": frozenset({"weeks", "since", "meta"}),
    "compare_page": frozenset({"a", "b", "range"}),
    "session_page": frozenset({"id"}),
    "conversations_page": _CONVERSATIONS_PARAMS,
    "login_page": frozenset(),
    "api_overview": frozenset({"range", "meta"}),
    "api_users": _USERS_PARAMS,
    "api_user": _USER_PARAMS | {"before", "limit"},
    "api_session": frozenset({"id"}),
    "api_conversations": _CONVERSATIONS_PARAMS,
    "api_models": frozenset(),
    "api_unhappy": frozenset({"range", "limit", "min_turns"}),
    "api_satisfaction": frozenset({"range"}),
    "topics_page": frozenset({"user", "range", "sort"}),
    "api_topics": frozenset({"user", "range", "sort"}),
    "topic_page": frozenset({"range"}),
    "api_topic": frozenset({"id", "range"}),
    "unhappy_page": frozenset({"limit"}),
    "static": frozenset(),
}
# CSV export: ?format=csv on the endpoints that answer a table (and ?table=
# where an answer holds several).
_CSV_ENDPOINTS = (
    "api_users", "api_conversations", "api_user", "api_retention", "api_compare",
    "api_segments", "api_topics", "api_unhappy", "api_overview", "api_cost",
)  # fmt: skip
for _name in _CSV_ENDPOINTS:
    PARAMETERS[_name] = PARAMETERS[_name] | {"format"}
for _name in ("api_retention", "api_overview", "api_cost"):
    PARAMETERS[_name] = PARAMETERS[_name] | {"table"}
# A cell starting with one of these is a formula to a spreadsheet: prefixed
# with a quote in CSV exports (stored text must never run as a formula).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# New turns indexed before a request, at most: about 50 ms on a loaded machine.
_REQUEST_CHUNK = REQUEST_CHUNK
_logger = logging.getLogger(__name__)


class _Refresher:
    """Keeps an index level with its store: before requests and on an interval."""

    def __init__(self, index: UIIndex, interval: float) -> None:
        self.index = index
        self._failed = False
        self._stop = threading.Event()
        self.topics = dashboard_topics(index.store, index.path)
        self._topics_inline = interval <= 0
        if interval > 0:
            thread = threading.Thread(
                target=self._run, args=(interval,), name="context-trace-ui-index",
                daemon=True,
            )  # fmt: skip
            thread.start()

    def refresh(self, max_rows: int, topics: bool = False) -> bool:
        """One bounded step; a failure is logged once and the index serves as is.

        Topics (if the analytics extra is installed) step along in the
        background thread, or here when there is none.
        """
        try:
            done = self.index.refresh(max_rows)
        except (sqlite3.Error, OSError) as exc:
            if not self._failed:
                self._failed = True
                _logger.warning("context-trace ui: cannot update the index: %s", exc)
            done = True
        if self.topics is not None and (topics or self._topics_inline):
            done = self.topics(max_rows) and done
        return done

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            while not self._stop.is_set() and not self.refresh(_REQUEST_CHUNK, True):
                pass

    def stop(self) -> None:
        self._stop.set()


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


def _cookie_value(token: str) -> str:
    # The cookie holds a digest, not the token itself.
    return hmac.new(
        token.encode(), b"context-trace-ui-cookie", hashlib.sha256
    ).hexdigest()


def _json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _json(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


class _DeclaredArgs(ImmutableMultiDict[str, str]):
    """Query or form values that refuse a name the endpoint has not declared."""

    def __getitem__(self, key: str) -> str:
        _check_declared(key)
        return super().__getitem__(key)

    def getlist(self, key: str, type: Any = None) -> list[Any]:
        _check_declared(key)
        return super().getlist(key, type)


def _check_declared(name: str) -> None:
    endpoint = request.endpoint
    if name in GLOBAL_PARAMETERS or (
        endpoint is not None and name in PARAMETERS.get(endpoint, ())
    ):
        return
    raise LookupError(
        f"endpoint {endpoint!r} reads the undeclared parameter {name!r}:"
        " add it to context_trace.ui.app.PARAMETERS"
    )


class _Request(Request):
    parameter_storage_class = _DeclaredArgs


class _BadRequest(Exception):
    pass


def _limit() -> int:
    raw = request.args.get("limit", "")
    if raw == "":
        return _PAGE
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= _MAX_PAGE:
        raise _BadRequest(f"limit must be a whole number from 1 to {_MAX_PAGE}")
    return value


def _range() -> str:
    value = request.args.get("range", "7d")
    if value not in RANGES:
        raise _BadRequest(f"range must be one of {', '.join(RANGES)}")
    return value


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= _MAX_INT:
        raise _BadRequest(f"{name} must be a whole number from 0 to {_MAX_INT}")
    return value


def _float_arg(name: str) -> float | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise _BadRequest(f"{name} must be a finite number, 0 or more")
    return value


def _search_arg() -> str:
    value = request.args.get("q", "")
    if len(value) > _MAX_SEARCH:
        raise _BadRequest(
            f"q must be at most {_MAX_SEARCH} characters, got {len(value)}"
        )
    return value


def _segment_arg(name: str = "meta") -> Segment:
    """``meta=KEY:VALUE`` (repeatable; empty values, as a form sends, ignored)."""
    values = [v for v in request.args.getlist(name) if v != ""]
    try:
        return parse_segment(values, ":", name)
    except ValueError as exc:
        raise _BadRequest(str(exc)) from None


def _fmt_time(value: float | None) -> str:
    if value is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(value))


def _fmt_money(value: float | None) -> str:
    """Dollars: four decimals under $1,000 (a turn costs fractions of a cent)."""
    if value is None:
        return "-"
    return f"${value:,.4f}" if value < 1000 else f"${value:,.0f}"


def _fmt_ms(value: float | None) -> str:
    """
    A latency as people read it: whole ms below a second, then seconds.

    ``412 ms``, ``1.4 s``, ``12.3 s``, ``135 s``: no more digits than the
    measure holds (percentiles over several days come from a histogram that is
    within about 6%).
    """
    if value is None:
        return "-"
    if value < 999.5:
        return f"{round(value)} ms"
    seconds = value / 1000
    return f"{seconds:.1f} s" if seconds < 99.95 else f"{round(seconds)} s"


def _snippet(marked: str) -> Markup:
    """A search snippet as markup: Analytics escaped its text and added <mark> tags."""
    return Markup(marked)


def _heat(share: float) -> str:
    """The cohort table's shade of a share: ``heat-0`` to ``heat-10`` (CSS classes)."""
    return f"heat-{max(0, min(10, round(share * 10)))}"


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
    ("week1_retention", "Week-1 retention", "pct"),
)


def _csv_cell(value: Any) -> str:
    """A CSV cell: None empty, lists and objects as JSON, formulas defused."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    return str(value)


def _csv_response(name: str, columns: list[str], rows: list[dict[str, Any]]) -> Any:
    """*rows* (dicts) as a CSV download named *name*.csv, *columns* in order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    response = Response(buffer.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response


def _want_csv() -> bool:
    value = request.args.get("format") or "json"
    if value not in ("json", "csv"):
        raise _BadRequest("format must be json or csv")
    return value == "csv"


def _table_arg(choices: tuple[str, ...], default: str) -> str:
    value = request.args.get("table") or default
    if value not in choices:
        raise _BadRequest(f"table must be one of {', '.join(sorted(choices))}")
    return value


def _fields(cls: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _dataclass_csv(name: str, cls: Any, items: Any) -> Any:
    return _csv_response(name, _fields(cls), [_json(i) for i in items])


def _retention_csv(report: Any) -> Any:
    """One table of a retention report (?table=, default cohorts) as CSV."""
    table = _table_arg(("cohorts", "weekly", "monthly", "daily", "churned"), "cohorts")
    if table == "churned":
        return _dataclass_csv("churned", ChurnedUser, report.churned)
    if table != "cohorts":
        return _dataclass_csv(table, ActivePoint, getattr(report, table))
    longest = max((len(c.retained) for c in report.cohorts), default=0)
    later = [f"week {k}" for k in range(1, longest + 1)]
    rows = []
    for c in report.cohorts:
        row: dict[str, Any] = {"week": c.week, "users": c.users}
        for k, (active, share) in enumerate(zip(c.active, c.retained, strict=True)):
            row[later[k]] = active
            row[later[k] + " share"] = round(share, 4)
        rows.append(row)
    columns = ["week", "users"] + [c for k in later for c in (k, k + " share")]
    return _csv_response("cohorts", columns, rows)


def _cost_csv(report: Any) -> Any:
    """A cost report's rows (grouped by its ``by``; ?table=models: the prices)."""
    if _table_arg(("rows", "models"), "rows") == "models":
        return _dataclass_csv("cost_models", ModelPriceRow, report.models)
    rows = [_json(r) for r in report.rows]
    for row in rows:
        row[report.by] = row.pop("key")
    columns = [report.by, *_fields(CostRow)[1:]]
    return _csv_response(f"cost_by_{report.by}", columns, rows)


def _compare_csv(comparison: Any) -> Any:
    """Two segments' figures, a row per measure: value and count on each side."""
    sides = [comparison.a, comparison.b]
    measures = [
        f.name for f in dataclasses.fields(type(next(x for x in sides if x)))
    ][1:] if any(sides) else []  # fmt: skip
    tests = {d.measure: d for d in comparison.differences}
    rows = []
    for measure in measures:
        row: dict[str, Any] = {"measure": measure}
        for label, side in zip(("a", "b"), sides, strict=True):
            figure = getattr(side, measure) if side else None
            row[label] = None if figure is None else figure.value
            row[label + "_count"] = None if figure is None else figure.count
        if measure in tests:
            row["z"] = tests[measure].z
            row["test"] = tests[measure].note
        rows.append(row)
    for label, side in zip(("a", "b"), sides, strict=True):
        if side is not None:
            segment = "; ".join(f"{k}={v}" for k, v in side.segment.items())
            rows.insert(0, {"measure": f"segment {label}", label: segment})
    columns = ["measure", "a", "a_count", "b", "b_count", "z", "test"]
    return _csv_response("compare", columns, rows)


def create_app(
    db_path: str | os.PathLike[str],
    *,
    token: str | None = None,
    index: UIIndex | None = None,
    refresh_interval: float = 2.0,
    tz: tzinfo | None = None,
    prices: Any = None,
) -> Flask:
    """
    Build the dashboard app over the store at *db_path*.

    Args:
        db_path: A context_trace store, opened read-only per request.
        token: If set, every request needs it (Bearer header, or the cookie
            that ``?token=`` or the login form sets).
        index: The store's dashboard index (default: one at the default path).
            It is built to the store's current state here if it is behind.
        refresh_interval: Seconds between background index updates (0: only
            before requests).
        tz: The time zone of retention's days and weeks (default: UTC).
        prices: Price overrides for the cost figures, ``{model: {"input": ...,
            "output": ...}}`` in dollars per million tokens (see
            :func:`context_trace.analytics.pricing.check_prices`); default:
            those given to ``configure(prices=...)`` in this process.

    Raises:
        TypeError, ValueError: For bad *prices*, naming them.

    Returns:
        A WSGI app; ``app.extensions["context_trace_ui"]`` holds its index.

    .. versionadded:: 0.2.0
    """
    from context_trace.analytics.pricing import Pricer, check_prices

    if prices is None:  # the app's configure(prices=...), when it serves this
        from context_trace import _runtime

        prices = _runtime.active_config().prices or None
    # One for the app: each model is looked up once, not once per request.
    pricer = Pricer(None if prices is None else check_prices(prices, "prices"))
    app = Flask(__name__)
    app.request_class = _Request
    path = os.fspath(db_path)
    expected = _cookie_value(token) if token else None
    if index is None:
        index = UIIndex(path)
    index.build()
    refresher = _Refresher(index, refresh_interval)
    app.extensions["context_trace_ui"] = refresher
    index_path = index.path
    topics_path = _topics_path(path)

    def store() -> Analytics:
        if "store" not in g:
            with SQLiteStore(path).reads() as reads:
                g.store = reads.dashboard(index=index_path, prices=pricer)
            if topics_path is not None and topics_path.exists():
                g.store.attach_topics(topics_path)
        result: Analytics = g.store
        return result

    @app.teardown_request
    def _close(_exc: BaseException | None) -> None:
        analytics = g.pop("store", None)
        if analytics is not None:
            analytics.close()

    @app.before_request
    def _authenticate() -> Any:
        if token is None or expected is None:
            return None
        if request.path.startswith("/static/"):
            return None
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and hmac.compare_digest(
            header[7:].encode(), token.encode()
        ):
            return None
        cookie = request.cookies.get(_COOKIE, "")
        if hmac.compare_digest(cookie.encode(), expected.encode()):
            return None
        given = request.args.get("token") if request.method == "GET" else None
        if request.path == "/login" and request.method == "POST":
            given = request.form.get("token", "")
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            args = {k: v for k, v in request.args.items() if k != "token"}
            target = "/" if request.path == "/login" else request.path
            if args:
                target += "?" + urlencode(args)
            response = redirect(target, code=303)
            response.set_cookie(
                _COOKIE, expected, httponly=True, samesite="Strict", path="/"
            )
            return response
        if request.path.startswith("/api/"):
            return jsonify(error="unauthorized: send the dashboard token"), 401
        return render_template("login.html", failed=given is not None), 401

    @app.before_request
    def _refresh() -> None:  # after _authenticate: registered later
        if not request.path.startswith("/static/"):
            refresher.refresh(_REQUEST_CHUNK)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(_BadRequest)
    def _bad(exc: _BadRequest) -> Any:
        if request.path.startswith("/api/"):
            return jsonify(error=str(exc)), 400
        return render_template("error.html", message=str(exc)), 400

    @app.errorhandler(404)
    def _missing(_exc: Exception) -> Any:
        if request.path.startswith("/api/"):
            return jsonify(error="not found"), 404
        return render_template("error.html", message="Not found."), 404

    app.jinja_env.globals.update(
        fmt_time=_fmt_time,
        fmt_ms=_fmt_ms,
        fmt_money=_fmt_money,
        search_count_limit=SEARCH_COUNT_LIMIT,
    )
    app.jinja_env.filters["snippet"] = _snippet
    app.jinja_env.filters["heat"] = _heat
    app.jinja_env.filters["dict_without"] = lambda d, *keys: {
        k: v for k, v in d.items() if k not in keys
    }

    def url(endpoint: str, **params: Any) -> str:
        clean = {k: v for k, v in params.items() if v not in (None, "", False, [], ())}
        return endpoint + ("?" + urlencode(clean, doseq=True) if clean else "")

    app.jinja_env.globals["url"] = url

    def csv_url(path: str, **extra: Any) -> str:
        """*path* with the current page's query (its filters), and format=csv."""
        params: dict[str, list[str]] = {
            k: v
            for k, v in request.args.to_dict(flat=False).items()
            if k not in GLOBAL_PARAMETERS
        }
        for key, value in extra.items():
            params[key] = [value]
        params["format"] = ["csv"]
        return url(path, **params)

    app.jinja_env.globals["csv_url"] = csv_url

    # --- data, shared by pages and API -----------------------------------------

    def overview_data() -> Any:
        return store().overview(_range(), segment=_segment_arg())

    def users_data() -> Any:
        sort = request.args.get("sort", "last_seen")
        if sort not in USER_SORTS:
            raise _BadRequest(f"sort must be one of {', '.join(sorted(USER_SORTS))}")
        order = request.args.get("order", "desc")
        if order not in ("asc", "desc"):
            raise _BadRequest("order must be asc or desc")
        return store().users(
            search=_search_arg(),
            sort=sort,
            descending=order == "desc",
            offset=_int_arg("offset") or 0,
            limit=_limit(),
            range_=_range_arg("all"),
            segment=_segment_arg(),
        )

    def _range_arg(default: str) -> str:
        value = request.args.get("range", default)
        if value not in RANGES:
            raise _BadRequest(f"range must be one of {', '.join(RANGES)}")
        return value

    def user_arg() -> tuple[str | None, bool]:
        if request.args.get("anonymous") == "1":
            return None, True
        user_id = request.args.get("id") or request.args.get("user")
        return (user_id or None), False

    def user_data() -> Any:
        user_id, anonymous = user_arg()
        if user_id is None and not anonymous:
            raise _BadRequest("id must name a user (or give anonymous=1)")
        row = store().user(user_id)
        if row is None:
            return None, None
        sessions = store().sessions(
            user_id, before=_float_arg("before"), limit=_limit()
        )
        return row, sessions

    def session_data() -> Any:
        session_id = request.args.get("id")
        if not session_id:
            raise _BadRequest("id must name a session")
        return store().session(session_id)

    def conversations_data() -> Any:
        user_id, anonymous = user_arg()
        rating = request.args.get("rating") or None
        if rating not in (None, "up", "down"):
            raise _BadRequest("rating must be up or down")
        range_ = request.args.get("range", "all")
        if range_ not in RANGES:
            raise _BadRequest(f"range must be one of {', '.join(RANGES)}")
        return store().conversations(
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
            topic=topic_arg(),
            segment=_segment_arg(),
        )

    def topic_arg() -> str | None:
        topic = request.args.get("topic") or None
        if topic is not None and (topics_path is None or not topics_path.exists()):
            raise _BadRequest(
                "topic: there are no topics (install the analytics extra)"
            )
        return topic

    def topics_data(user: str | None = None, range_: str = "all") -> list[Any]:
        if topics_path is None:
            return []
        return read_topics(topics_path, user, *_range_days(range_))

    def topics_sort() -> str:
        sort = request.args.get("sort", "conversations")
        if sort not in ("conversations", "struggling"):
            raise _BadRequest("sort must be conversations or struggling")
        return sort

    def topics_list() -> tuple[list[Any], str, str, str | None]:
        """(rows, range, sort, user) of /topics and /api/topics."""
        range_ = _range_arg("all")
        sort = topics_sort()
        user = request.args.get("user") or None
        rows = topics_data(user, range_)
        if sort == "struggling":
            rows = _struggling(rows, None)
        return rows, range_, sort, user

    def retention_data() -> Any:
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
            return store().retention(
                weeks=8 if weeks is None else weeks,
                since=since,
                segment=_segment_arg(),
                tz=tz,
            )
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None

    def segments_data() -> Any:
        return {"keys": store().segments()}

    def compare_data() -> Any:
        return store().compare(_segment_arg("a"), _segment_arg("b"), _range_arg("all"))

    def cost_data() -> Any:
        by = request.args.get("by", "model")
        if by not in COST_BY:
            raise _BadRequest(f"by must be one of {', '.join(COST_BY)}")
        try:
            return store().cost(by, _range_arg("all"), _segment_arg(), limit=_limit())
        except ValueError as exc:  # by=topic without topics
            raise _BadRequest(str(exc)) from None

    # --- JSON API -------------------------------------------------------------

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

    app.add_url_rule("/api/overview", "api_overview", api(overview_data, overview_csv))
    app.add_url_rule("/api/segments", "api_segments", api(segments_data, segments_csv))
    app.add_url_rule(
        "/api/retention", "api_retention", api(retention_data, _retention_csv)
    )
    app.add_url_rule("/api/compare", "api_compare", api(compare_data, _compare_csv))
    app.add_url_rule("/api/cost", "api_cost", api(cost_data, _cost_csv))

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

    app.add_url_rule("/api/users", "api_users", api_page(users_data, UserRow))
    app.add_url_rule(
        "/api/conversations",
        "api_conversations",
        api_page(conversations_data, ConversationRow),
    )

    @app.route("/api/user")
    def api_user() -> Any:
        row, sessions = user_data()
        if row is None:
            return jsonify(error="not found"), 404
        if _want_csv():
            return _dataclass_csv("sessions", SessionRow, sessions.items)
        return jsonify(
            user=_json(row),
            sessions={"items": _json(sessions.items), "next": sessions.next},
            activity=_json(store().user_activity(row.user_id)),
        )

    @app.route("/api/session")
    def api_session() -> Any:
        view = session_data()
        if view is None:
            return jsonify(error="not found"), 404
        return jsonify(_json(view))

    @app.route("/api/models")
    def api_models() -> Any:
        return jsonify(items=store().models())

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
        report = store().satisfaction(range_)
        users = report.unhappy(limit=limit, min_turns=min_turns or 3)
        if _want_csv():
            columns = list(users[0]) if users else ["user_id", "score"]
            return _csv_response("unhappy", columns, users)
        return jsonify(range=range_, sentiment=report.sentiment, users=users)

    @app.route("/api/satisfaction")
    def api_satisfaction() -> Any:
        report = store().satisfaction(_range())
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
        rows, range_, sort, _user = topics_list()
        if _want_csv():
            columns = ["id", "label", "terms", "question", "conversations", "users"]
            columns += ["share", "satisfaction", "error_rate", "latency_p50_ms"]
            return _csv_response("topics", columns, [r.to_json() for r in rows])
        return jsonify(
            items=[r.to_json() for r in rows], available=topics_path is not None,
            range=range_, sort=sort,
        )  # fmt: skip

    # --- pages ----------------------------------------------------------------

    @app.route("/")
    def overview_page() -> Any:
        return render_template(
            "overview.html",
            unhappy_count=store().unhappy_count(),
            struggling=_struggling(topics_data(None, _range()), 5),
            o=overview_data(),
            cost=store().cost("model", _range(), _segment_arg()).total,
            ranges=RANGES,
            meta=request.args.getlist("meta"),
            segments=store().segments(),
        )

    @app.route("/users")
    def users_page() -> Any:
        return render_template(
            "users.html",
            page=users_data(),
            q=_search_arg(),
            sort=request.args.get("sort", "last_seen"),
            order=request.args.get("order", "desc"),
            offset=_int_arg("offset") or 0,
            range=request.args.get("range", "all"),
            ranges=RANGES,
            meta=request.args.getlist("meta"),
            segments=store().segments(),
        )

    @app.route("/user")
    def user_page() -> Any:
        row, sessions = user_data()
        if row is None:
            return render_template("error.html", message="No such user."), 404
        topics = topics_data(row.user_id) if row.user_id is not None else []
        return render_template(
            "user.html",
            user=row,
            sessions=sessions,
            topics=topics,
            flagged=store().user_flagged(row.user_id),
        )

    @app.route("/retention")
    def retention_page() -> Any:
        return render_template(
            "retention.html",
            r=retention_data(),
            weeks=request.args.get("weeks", ""),
            since=request.args.get("since", ""),
            meta=request.args.getlist("meta"),
            segments=store().segments(),
            tz_name="UTC" if tz is None else str(tz),
        )

    @app.route("/compare")
    def compare_page() -> Any:
        return render_template(
            "compare.html",
            c=compare_data(),
            a=[v for v in request.args.getlist("a") if v],
            b=[v for v in request.args.getlist("b") if v],
            range=_range_arg("all"),
            ranges=RANGES,
            segments=store().segments(),
            measures=_COMPARE_MEASURES,
            min_sample=MIN_SAMPLE,
        )

    @app.route("/session")
    def session_page() -> Any:
        view = session_data()
        if view is None:
            return render_template("error.html", message="No such session."), 404
        report = store().satisfaction(session_id=view.session.session_id)
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
            page=conversations_data(),
            models=store().models(),
            args=request.args,
            ranges=RANGES,
            meta=request.args.getlist("meta"),
            segments=store().segments(),
        )

    @app.route("/topics")
    def topics_page() -> Any:
        rows, range_, sort, user = topics_list()
        return render_template(
            "topics.html", rows=rows, user=user, range=range_, sort=sort,
            ranges=RANGES, available=topics_path is not None,
            struggling=[] if user or sort == "struggling" else _struggling(rows),
        )  # fmt: skip

    @app.route("/api/topic")
    def api_topic() -> Any:
        topic_id = request.args.get("id", "")
        found = [r for r in topics_data(None, _range_arg("all")) if r.id == topic_id]
        if not found:
            return jsonify(error="not found: no such topic (see /api/topics)"), 404
        return jsonify(found[0].to_json())

    @app.route("/topics/<topic_id>")
    def topic_page(topic_id: str) -> Any:
        range_ = _range_arg("all")
        rows = topics_data(None, range_)
        found = [r for r in rows if r.id == topic_id]
        if not found:
            return render_template("error.html", message="No such topic."), 404
        flagged = store().topic_flagged(topic_id) if topics_path is not None else []
        return render_template(
            "topic.html", t=found[0], range=range_, ranges=RANGES, flagged=flagged,
        )  # fmt: skip

    @app.route("/unhappy")
    def unhappy_page() -> Any:
        limit = _limit() if request.args.get("limit") else 20
        return render_template(
            "unhappy.html", users=store().unhappy_users(limit=limit),
            sentiment=_sentiment_available(),
        )  # fmt: skip

    @app.route("/login", methods=["GET", "POST"])
    def login_page() -> Any:
        return redirect("/", code=303)

    return app
