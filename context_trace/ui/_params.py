"""
The dashboard's request parameters: each endpoint's declared names, the request
class that refuses the others, and the parsers that refuse bad values.
"""

from __future__ import annotations

import math
from typing import Any

from flask import Request, request
from werkzeug.datastructures import ImmutableMultiDict

from context_trace._store.analytics import RANGES
from context_trace._store.segments import Segment, parse_segment

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
    "api_retention": frozenset({"weeks", "since", "meta", "tz"}),
    "api_compare": frozenset(
        {"a", "b", "range", "period", "a_range", "b_range", "meta"}
    ),
    "api_cost": frozenset({"by", "range", "meta", "limit"}),
    "users_page": _USERS_PARAMS,
    "user_page": _USER_PARAMS | {"before", "limit"},
    "retention_page": frozenset({"weeks", "since", "meta", "tz"}),
    "compare_page": frozenset(
        {"a", "b", "range", "period", "a_range", "b_range", "meta"}
    ),
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
