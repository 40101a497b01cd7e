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

import hashlib
import hmac
import logging
import os
import sqlite3
import threading
from datetime import tzinfo
from typing import Any
from urllib.parse import urlencode

try:
    from flask import (
        Flask,
        Response,
        g,
        jsonify,
        redirect,
        render_template,
        request,
    )
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "context_trace.ui requires Flask and waitress; install 'context-trace[ui]'"
    ) from exc

from context_trace._sigterm import block_process_signals
from context_trace._store.analytics import SEARCH_COUNT_LIMIT
from context_trace._store.ui_index import REQUEST_CHUNK, UIIndex
from context_trace.analytics.hook import dashboard_topics

from ._api import register_api
from ._data import _Data
from ._export import _fmt_money, _fmt_ms, _fmt_time, _heat, _snippet
from ._pages import register_pages
from ._params import GLOBAL_PARAMETERS, PARAMETERS, _BadRequest, _Request

__all__ = ["CSP", "GLOBAL_PARAMETERS", "PARAMETERS", "create_app"]

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'"
)
_COOKIE = "context_trace_ui"
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
        block_process_signals()  # Ctrl-C and SIGTERM wake the server's main thread
        while not self._stop.wait(interval):
            while not self._stop.is_set() and not self.refresh(_REQUEST_CHUNK, True):
                pass

    def stop(self) -> None:
        self._stop.set()


def _cookie_value(token: str) -> str:
    # The cookie holds a digest, not the token itself.
    return hmac.new(
        token.encode(), b"context-trace-ui-cookie", hashlib.sha256
    ).hexdigest()


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
    index.keep_zones([tz])
    index.set_pricer(pricer)  # each user's and session's cost, priced once
    index.build()
    refresher = _Refresher(index, refresh_interval)
    app.extensions["context_trace_ui"] = refresher
    index_path = index.path
    data = _Data(path, index_path, pricer, tz)

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

    register_api(app, data)
    register_pages(app, data)
    # Compile every template now: compiling a page's templates (~0.3 s of
    # CPU) would otherwise fall on the first request of each page.
    for name in app.jinja_env.list_templates(extensions=["html"]):
        app.jinja_env.get_template(name)

    return app
