"""
Two real services on 127.0.0.1: service A calls service B inside a scope, and
B's chain is recorded for A's user and session through W3C ``baggage``.

A (uvicorn, FastAPI) opens ``track_user`` + ``context_session`` in its
endpoints and calls B with httpx (sync and async) and requests, with
``configure(propagate_baggage=True, baggage_secret=...)``. B (uvicorn, FastAPI)
accepts signed baggage only; B-flask (waitress, Flask) accepts unsigned baggage
from 127.0.0.0/8. Each server writes its own SQLite store, read after SIGTERM.
"""

from __future__ import annotations

import sqlite3
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from context_trace import _baggage

from .test_servers import _Server, servers  # noqa: F401 - the fixture

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("waitress")
pytest.importorskip("requests")
pytest.importorskip("opentelemetry.baggage")

SECRET = "s3cret-shared-by-a-and-b"

SERVICE_A = """
import os

import httpx
import requests
from fastapi import FastAPI
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel

from context_trace import configure, context_session, current_session, current_user, track_user

configure(propagate_baggage=True, baggage_secret=os.environ["A_SECRET"])

B = os.environ["B_URL"]
CHAIN = ParrotFakeChatModel()
SYNC = httpx.Client(base_url=B, timeout=30)
ASYNC = httpx.AsyncClient(base_url=B, timeout=30)
REQUESTS = requests.Session()
app = FastAPI()


def mine():
    session = current_session()
    return {"user": current_user(), "session": session.id if session else None}


@app.get("/sync")
def sync_call(user: str, session: str, message: str, via: str):
    with track_user(user), context_session(session):
        CHAIN.invoke(message)
        if via == "requests":
            answer = REQUESTS.get(B + "/chat", params={"message": message}, timeout=30)
        else:
            answer = SYNC.get("/chat", params={"message": message})
        answer.raise_for_status()
        return {"a": mine(), "b": answer.json()}


@app.get("/async")
async def async_call(user: str, session: str, message: str):
    with track_user(user), context_session(session):
        await CHAIN.ainvoke(message)
        answer = await ASYNC.get("/chat", params={"message": message})
        answer.raise_for_status()
        return {"a": mine(), "b": answer.json()}


@app.get("/outside")
def outside(message: str):
    answer = SYNC.get("/chat", params={"message": message})
    return {"a": mine(), "b": answer.json()}
"""

SERVICE_B = """
import os

from fastapi import FastAPI, Request
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from opentelemetry import baggage, propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator

from context_trace import current_session, current_user, stats
from context_trace.integrations import BaggageTrust
from context_trace.integrations.asgi import ContextTraceMiddleware

propagate.set_global_textmap(W3CBaggagePropagator())
CHAIN = ParrotFakeChatModel() | StrOutputParser()
app = FastAPI()
app.add_middleware(
    ContextTraceMiddleware,
    accept_baggage=BaggageTrust(secret=os.environ["B_SECRET"], max_age=60),
)


@app.get("/chat")
async def chat(request: Request, message: str):
    answer = await CHAIN.ainvoke(message)
    session = current_session()
    otel = propagate.extract(dict(request.headers))
    return {
        "answer": answer,
        "user": current_user(),
        "session": session.id if session else None,
        "baggage": request.headers.get("baggage"),
        "otel": dict(baggage.get_all(otel)),
    }


@app.get("/stats")
def counters():
    return stats()
"""

SERVICE_B_FLASK = """
from flask import Flask, request
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser

from context_trace import configure, current_session, current_user, stats
from context_trace.integrations import BaggageTrust
from context_trace.integrations.flask import ContextTrace

CHAIN = ParrotFakeChatModel() | StrOutputParser()
app = Flask(__name__)
configure()  # on the main thread: the SIGTERM flush is set up now
ContextTrace(app, accept_baggage=BaggageTrust(["127.0.0.0/8"]))


@app.get("/chat")
def chat():
    answer = CHAIN.invoke(request.args["message"])
    session = current_session()
    return {
        "answer": answer,
        "user": current_user(),
        "session": session.id if session else None,
        "baggage": request.headers.get("baggage"),
    }


@app.get("/stats")
def counters():
    return stats()
"""


def _uvicorn(
    started: list[_Server], cwd: Path, module: str, env: dict[str, str]
) -> tuple[_Server, str]:
    db = cwd / f"{module}.db"
    server = _Server(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-access-log",
            f"{module}:app",
        ],
        cwd,
        db,
        env,
        log=f"{module}.log",
    )
    started.append(server)
    [port] = server.wait_for(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture
def service_b(tmp_path: Path, servers: list[_Server]) -> tuple[_Server, str]:  # noqa: F811
    """Service B: FastAPI under uvicorn, accepting signed baggage only."""
    (tmp_path / "service_b.py").write_text(textwrap.dedent(SERVICE_B))
    return _uvicorn(servers, tmp_path, "service_b", {"B_SECRET": SECRET})


@pytest.fixture
def service_a(
    tmp_path: Path,
    servers: list[_Server],  # noqa: F811
    service_b: tuple[_Server, str],
) -> str:
    """Service A: FastAPI under uvicorn, sending signed baggage to B."""
    (tmp_path / "service_a.py").write_text(textwrap.dedent(SERVICE_A))
    _, url = _uvicorn(
        servers, tmp_path, "service_a", {"A_SECRET": SECRET, "B_URL": service_b[1]}
    )
    return url


def stored_turns(db: Path) -> list[tuple[str | None, str | None, str]]:
    """(user_id, session_id, messages_json) of every stored conversation."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT user_id, session_id, messages_json FROM conversations"
        ).fetchall()
    finally:
        conn.close()


def signed(user: str, session: str, *, secret: str = SECRET, age: float = 0) -> str:
    """A baggage header signed the way a sender does, *age* seconds ago."""
    stamp = int(time.time() - age)
    user_v, session_v = _baggage._encode(user), _baggage._encode(session)
    sig = _baggage._sign(secret, stamp, user_v, session_v)
    return f"user.id={user_v},session.id={session_v},context_trace.sig={sig}"


class TestAtoB:
    def test_each_client_carries_the_scope_and_b_records_it(
        self, service_a: str, service_b: tuple[_Server, str], tmp_path: Path
    ) -> None:
        """httpx sync, httpx async and requests each carry A's user and session to B."""
        with httpx.Client(base_url=service_a, timeout=60) as client:
            seen = []
            for via in ("httpx", "requests", "async"):
                path = "/async" if via == "async" else "/sync"
                response = client.get(
                    path,
                    params={
                        "user": f"alice {via}",
                        "session": f"s/{via}",
                        "message": f"hello via {via}",
                        "via": via,
                    },
                )
                response.raise_for_status()
                seen.append(response.json())
            counters = httpx.get(service_b[1] + "/stats").json()
        for via, body in zip(("httpx", "requests", "async"), seen, strict=True):
            assert {"user": f"alice {via}", "session": f"s/{via}"} == body["a"]
            assert f"alice {via}" == body["b"]["user"]
            assert f"s/{via}" == body["b"]["session"]
            # The ids are percent-encoded on the wire; OTel reads the same values.
            assert body["b"]["baggage"].startswith(f"user.id=alice%20{via}")
            assert f"alice {via}" == body["b"]["otel"]["user.id"]
            assert f"s/{via}" == body["b"]["otel"]["session.id"]
        assert 3 == counters["baggage_accepted"]
        assert 0 == counters["baggage_rejected"]
        server_b = service_b[0]
        server_b.terminate()
        turns = stored_turns(tmp_path / "service_b.db")
        assert sorted(
            (f"alice {v}", f"s/{v}") for v in ("httpx", "requests", "async")
        ) == sorted((user, session) for user, session, _ in turns)

    def test_nothing_is_sent_outside_a_scope(
        self, service_a: str, service_b: tuple[_Server, str]
    ) -> None:
        """A call A makes outside any scope carries no baggage; B records it unattributed."""
        response = httpx.get(
            service_a + "/outside", params={"message": "hi"}, timeout=60
        )
        response.raise_for_status()
        body = response.json()["b"]
        assert (None, None, None) == (body["baggage"], body["user"], body["session"])

    def test_fifty_concurrent_requests_have_no_mismatch(
        self, service_a: str, service_b: tuple[_Server, str], tmp_path: Path
    ) -> None:
        """50 concurrent requests to A, each calling B: every B turn has its A request's ids."""

        def call(i: int) -> dict[str, Any]:
            via = ("httpx", "requests", "async")[i % 3]
            response = httpx.get(
                service_a + ("/async" if via == "async" else "/sync"),
                params={
                    "user": f"user-{i}",
                    "session": f"session-{i}",
                    "message": f"message-{i}",
                    "via": via,
                },
                timeout=120,
            )
            response.raise_for_status()
            return dict(response.json())

        with ThreadPoolExecutor(max_workers=50) as pool:
            bodies = list(pool.map(call, range(50)))
        for i, body in enumerate(bodies):
            assert {"user": f"user-{i}", "session": f"session-{i}"} == body["a"]
            assert (f"user-{i}", f"session-{i}", f"message-{i}") == (
                body["b"]["user"],
                body["b"]["session"],
                body["b"]["answer"],
            )
        service_b[0].terminate()
        turns = stored_turns(tmp_path / "service_b.db")
        assert 50 == len(turns)
        for user, session, messages in turns:
            i = user.removeprefix("user-")  # type: ignore[union-attr]
            assert f"session-{i}" == session
            assert f"message-{i}" in messages


class TestBTrust:
    def test_spoofed_unsigned_baggage_is_ignored_and_counted(
        self, service_b: tuple[_Server, str]
    ) -> None:
        """An unsigned user.id from an untrusted client is ignored and counted."""
        url = service_b[1]
        response = httpx.get(
            url + "/chat",
            params={"message": "hi"},
            headers={"baggage": "user.id=admin,session.id=theirs"},
        )
        response.raise_for_status()
        assert (None, None) == (response.json()["user"], response.json()["session"])
        assert 1 == httpx.get(url + "/stats").json()["baggage_rejected"]

    def test_signed_baggage_is_accepted(self, service_b: tuple[_Server, str]) -> None:
        """Entries signed with the shared secret open the scope on B."""
        response = httpx.get(
            service_b[1] + "/chat",
            params={"message": "hi"},
            headers={"baggage": signed("bob", "s-9")},
        )
        assert ("bob", "s-9") == (response.json()["user"], response.json()["session"])

    def test_tampered_signature_is_rejected(
        self, service_b: tuple[_Server, str]
    ) -> None:
        """Changing the user of a signed header (or signing with another secret) is rejected."""
        url = service_b[1]
        tampered = signed("bob", "s-9").replace("user.id=bob", "user.id=admin")
        other_secret = signed("bob", "s-9", secret="not-the-secret")
        for header in (tampered, other_secret):
            response = httpx.get(
                url + "/chat", params={"message": "hi"}, headers={"baggage": header}
            )
            response.raise_for_status()
            assert (None, None) == (response.json()["user"], response.json()["session"])
        assert 2 == httpx.get(url + "/stats").json()["baggage_rejected"]

    def test_expired_signature_is_rejected(
        self, service_b: tuple[_Server, str]
    ) -> None:
        """A valid signature older than max_age (60 s on B) is rejected: no replay."""
        url = service_b[1]
        response = httpx.get(
            url + "/chat",
            params={"message": "hi"},
            headers={"baggage": signed("bob", "s-9", age=3600)},
        )
        assert (None, None) == (response.json()["user"], response.json()["session"])
        assert 1 == httpx.get(url + "/stats").json()["baggage_rejected"]


class TestFlaskNetworkAllowlist:
    def test_unsigned_baggage_from_an_allowlisted_network_is_accepted(
        self,
        tmp_path: Path,
        servers: list[_Server],  # noqa: F811
    ) -> None:
        """B under waitress trusts 127.0.0.0/8: unsigned entries from it open the scope."""
        (tmp_path / "service_bf.py").write_text(textwrap.dedent(SERVICE_B_FLASK))
        server = _Server(
            [
                sys.executable,
                "-m",
                "waitress",
                "--listen=127.0.0.1:0",
                "service_bf:app",
            ],
            tmp_path,
            tmp_path / "service_bf.db",
            {},
            log="service_bf.log",
        )
        servers.append(server)
        [port] = server.wait_for(r"Serving on http://127\.0\.0\.1:(\d+)")
        url = f"http://127.0.0.1:{port}"
        response = httpx.get(
            url + "/chat",
            params={"message": "hi"},
            headers={"baggage": "tenant=acme,user.id=carol,session.id=s%2C1"},
        )
        response.raise_for_status()
        body = response.json()
        assert ("carol", "s,1") == (body["user"], body["session"])
        assert 1 == httpx.get(url + "/stats").json()["baggage_accepted"]
        server.terminate()
        assert [("carol", "s,1")] == [
            (user, session)
            for user, session, _ in stored_turns(tmp_path / "service_bf.db")
        ]
