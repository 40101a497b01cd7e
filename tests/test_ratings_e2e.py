"""
Ratings end to end: a Flask app whose feedback endpoint rates in a request of its
own, the real pipeline and SQLite store, then what the CLI and the dashboard show.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")
pytest.importorskip("waitress")

from flask import Flask, request

import context_trace as ct
from context_trace.integrations.flask import ContextTrace
from tests.test_cli import run_cli
from tests.ui.conftest import Server

from .conftest import echo_chain


def make_app() -> Flask:
    """A chat endpoint and a separate feedback endpoint, as Session.rate suggests."""
    app = Flask(__name__)
    ContextTrace(app)  # user and session from X-User-Id / X-Session-Id
    chain = echo_chain()

    @app.post("/chat")
    def chat() -> dict[str, Any]:
        answer = chain.invoke({"q": request.json["message"]})
        session = ct.current_session()
        return {"answer": answer, "turn_id": session.last_turn_id if session else None}

    @app.post("/feedback")
    def feedback() -> tuple[dict[str, Any], int]:
        session = ct.current_session()
        if session is None:
            return {"error": "send X-Session-Id"}, 400
        body = request.json
        if "turn_id" in body:  # a rating for one answer, named by its id
            session.rate(body["rating"], turn_id=body["turn_id"])
        else:  # a rating for the latest answer
            session.rate(body["rating"])
        return {"session_id": session.id}, 200

    return app


def _as(user: str, session: str) -> dict[str, str]:
    return {"X-User-Id": user, "X-Session-Id": session}


def test_feedback_requests_rate_the_answer_they_mean(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each rating lands on one turn, the last wins, unknown targets are refused."""
    caplog.set_level(logging.WARNING, logger="context_trace")
    db = tmp_path / "traces.db"
    ct.configure(db_path=db)
    client = make_app().test_client()
    alice = _as("alice", "s1")

    first = client.post("/chat", json={"message": "first question"}, headers=alice)
    client.post("/chat", json={"message": "second question"}, headers=alice)
    # Separate feedback requests: a 👍 then a 👎 for the latest answer, the
    # first answer rated by its id, someone else rating alice's session, and a
    # session nobody recorded.
    statuses = []
    for rating, headers, turn_id in [
        (1, alice, None),
        (-1, alice, None),
        (1, alice, first.json["turn_id"]),
        (-1, _as("mallory", "s1"), None),
        (-1, _as("alice", "no-such-session"), None),
    ]:
        body = (
            {"rating": rating}
            if turn_id is None
            else {"rating": rating, "turn_id": turn_id}
        )
        response = client.post("/feedback", json=body, headers=headers)
        statuses.append(response.status_code)
    assert ct.flush(10.0)
    stats = ct.stats()
    ct.shutdown()

    exported = [
        json.loads(line)
        for line in run_cli("export", "--db", str(db)).stdout.splitlines()
    ]
    users = json.loads(run_cli("users", "--json", "--db", str(db)).stdout)
    sessions = json.loads(run_cli("sessions", "--json", "--db", str(db)).stdout)
    second_id = exported[1]["id"]
    shown = run_cli("show", second_id, "--db", str(db)).stdout
    server = Server(db)
    try:
        down = server.api("/api/conversations?rating=down")["items"]
        up = server.api("/api/conversations?rating=up")["items"]
        api_users = server.api("/api/users")["items"]
        phantom = server.get("/api/session?id=no-such-session")[0]
    finally:
        server.stop()

    assert [("first question", 1), ("second question", -1)] == [
        (c["messages"][-1]["content"], c.get("rating")) for c in exported
    ]
    assert first.json["turn_id"] == exported[0]["id"]
    assert "user alice · session s1 · rated -1" in shown
    assert [("alice", 1, 1)] == [
        (u["user_id"], u["ratings_up"], u["ratings_down"]) for u in users
    ]
    assert [("s1", 1, 1)] == [
        (s["session_id"], s["rating_up"], s["rating_down"]) for s in sessions
    ]
    assert [second_id] == [c["conversation_id"] for c in down]
    assert [exported[0]["id"]] == [c["conversation_id"] for c in up]
    assert [("alice", 1, 1)] == [
        (u["user_id"], u["rating_up"], u["rating_down"]) for u in api_users
    ]
    assert 404 == phantom
    assert [200] * 5 == statuses
    assert 1 == stats["rejected"]
    assert [
        "context_trace: a rating of session 'no-such-session' was not stored:"
        " the store holds no such session"
    ] == [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
