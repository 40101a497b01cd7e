"""Hostile values on every parameter of every dashboard endpoint: a 400 or a result."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from flask import request

from context_trace.ui.app import GLOBAL_PARAMETERS, PARAMETERS, create_app

HOSTILE = [
    str(2**63), str(2**63 - 1), str(10**30), str(-(2**63) - 1), "-1", "0", "1.5",
    "1e400", "nan", "NaN", "inf", "-inf", "0x10", "abc", "", " ", "x" * 1001,
    "a\x00b", "\x00", '"foo', '"', "'", "*", "a*", "c++", "NEAR(", "NEAR(a b, 2)",
    "AND OR", "a OR", "NOT b", "^", "^a", "col:x", "body:x", "{body}: x", "(", ")",
    "-", "+", "%", "_", "\\", "日本語", "café", "\U0001f44d", "\u202e", "<script>",
    "../../etc/passwd", "1;drop table conversations",
]  # fmt: skip
# Percent-encoded bytes that are not UTF-8 (a lone surrogate, an overlong form).
RAW = ["%FF", "%ED%A0%80", "%C0%AF"]
# A valid value for each parameter, so that a hostile one reaches deep code.
VALID = {
    "q": "answer", "sort": "conversations", "order": "asc", "offset": "0",
    "limit": "5", "range": "all", "user": "many", "anonymous": "0",
    "rating": "up", "errors": "0", "model": "fake-model", "before": "1000000",
    "token": "", "meta": "model:fake-model", "a": "model:fake-model",
    "b": "model:other", "by": "user",
}  # fmt: skip
IDS = {"user_page": "many", "api_user": "many", "session_page": "s-m0",
       "api_session": "s-m0"}  # fmt: skip
ALLOWED = {200, 303, 400, 404}  # 303: /login sends you on


@pytest.fixture(scope="module")
def client(store_path: Path) -> Iterator[Any]:
    app = create_app(store_path, refresh_interval=0)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # an exception is a 500, as served
    yield app.test_client()
    app.extensions["context_trace_ui"].stop()


def rules(client: Any) -> list[Any]:
    return list(client.application.url_map.iter_rules())


def message(response: Any) -> str:
    """The error message of a 4xx answer: JSON ``error`` or the page's heading."""
    if response.is_json:
        return str(response.get_json()["error"])
    found = re.search(r"<h1>(.*?)</h1>", response.get_data(as_text=True), re.S)
    return found.group(1) if found else ""


def check(response: Any, where: str, name: str | None) -> None:
    status = response.status_code
    assert status in ALLOWED, f"{status} for {where}"
    if status == 400 and name is not None:
        assert re.match(rf"{re.escape(name)}\b", message(response)), where
    elif status != 200:
        assert message(response), f"{status} without a message for {where}"


def test_every_endpoint_declares_its_parameters(client):
    """Each route of the app has its parameters declared, and nothing else is."""
    endpoints = {rule.endpoint for rule in rules(client)}

    assert set(PARAMETERS) == endpoints


def test_an_undeclared_parameter_is_refused(store_path: Path):
    """A view reading a parameter that is not declared raises, naming it."""
    app = create_app(store_path, refresh_interval=0)
    app.testing = True
    app.add_url_rule("/extra", "extra", lambda: request.args.get("surprise", ""))
    PARAMETERS["extra"] = frozenset()
    try:
        with pytest.raises(LookupError, match="undeclared parameter 'surprise'"):
            app.test_client().get("/extra?surprise=1")
    finally:
        del PARAMETERS["extra"]
        app.extensions["context_trace_ui"].stop()


def requests(rule: Any) -> Iterator[tuple[str, str, str, str]]:
    """(method, path, query or form body, parameter) for every hostile value."""
    names = sorted(PARAMETERS[rule.endpoint] | GLOBAL_PARAMETERS)
    ids = {"id": IDS[rule.endpoint]} if rule.endpoint in IDS else {}
    full = {**{n: VALID.get(n, "") for n in names}, **ids}
    methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
    paths = [rule.rule]
    if rule.arguments:
        paths = [re.sub(r"<[^>]+>", quote(v, safe=""), rule.rule) for v in HOSTILE]
        paths += [re.sub(r"<[^>]+>", v, rule.rule) for v in RAW]
    for path in paths:
        for name in names:
            for base in (ids, full):
                rest = {k: v for k, v in base.items() if k != name}
                queries = [urlencode({**rest, name: v}) for v in HOSTILE]
                queries += [f"{urlencode(rest)}&{name}={v}" for v in RAW]
                for method in methods:
                    for query in queries:
                        yield method, path, query, name


def test_hostile_values_never_get_a_500(client):
    """Every parameter of every endpoint answers a hostile value with 200 or a
    400 naming the parameter (404 for an unknown id), never a 500."""
    tried = 0
    for rule in rules(client):
        for method, path, query, name in requests(rule):
            if method == "POST":
                response = client.post(
                    path,
                    data=query,
                    content_type="application/x-www-form-urlencoded",
                )
            else:
                response = client.get(f"{path}?{query}")
            check(response, f"{method} {path}?{query[:80]}", name)
            tried += 1

    assert tried > 1000


def test_search_syntax_is_text(client):
    """Search text that is FTS5 syntax finds the words, never an error."""
    found = client.get("/api/conversations?q=" + quote('answer "many NEAR( c++'))
    nul = client.get("/api/conversations?q=" + quote("zebra\x00"))

    assert 200 == found.status_code
    assert [] == found.get_json()["items"]
    assert ["c-n1"] == [c["conversation_id"] for c in nul.get_json()["items"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("offset=9223372036854775808", "offset must be a whole number from 0 to"),
        ("offset=-1", "offset must be a whole number from 0 to"),
        ("q=" + "x" * 1001, "q must be at most 1000 characters, got 1001"),
    ],
)
def test_bad_values_are_400_with_a_message(client, query, expected):
    """An offset out of SQLite's range, a negative one or an overlong search is a
    400 whose message names the parameter and what it takes."""
    response = client.get("/api/users?" + query)

    assert 400 == response.status_code
    assert response.get_json()["error"].startswith(expected)


@pytest.mark.parametrize(
    "url",
    [
        "/api/conversations?before=9223372036854775808",
        "/api/conversations?before=-5",
        "/api/conversations?before=nan",
        "/api/user?id=many&before=nan",
        "/api/user?id=many&before=-inf",
        "/api/user?id=many&before=-5",
    ],
)
def test_bad_cursors_are_400(client, url):
    """A cursor that no page hands out is a 400 naming 'before'."""
    response = client.get(url)

    assert 400 == response.status_code
    assert response.get_json()["error"].startswith("before must be")
