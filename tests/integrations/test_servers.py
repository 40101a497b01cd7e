"""
Real servers in subprocesses on 127.0.0.1: every turn reaches the SQLite store
after SIGTERM.

The apps run with a 60 s flush interval, so nothing is exported while they
serve: the rows can only come from the shutdown path (uvicorn: the lifespan
flush of the ASGI middleware; gunicorn: the pipeline's atexit hook in each
sync worker).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytest.importorskip("flask")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
gunicorn_config = pytest.importorskip("gunicorn.config")

_START_TIMEOUT = 30.0
_EXIT_TIMEOUT = 60.0

UVICORN_APP = """
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser

from context_trace import current_user
from context_trace.integrations.asgi import ContextTraceMiddleware

CHAIN = ParrotFakeChatModel() | StrOutputParser()


async def chat(request: Request) -> JSONResponse:
    answer = await CHAIN.ainvoke(request.query_params["message"])
    return JSONResponse({"answer": answer, "user": current_user()})


async def stream(request: Request) -> StreamingResponse:
    message = request.query_params["message"]

    async def generate():
        async for chunk in CHAIN.astream(message):
            yield chunk

    return StreamingResponse(generate(), media_type="text/plain")


app = Starlette(
    routes=[Route("/chat", chat), Route("/stream", stream)],
    middleware=[Middleware(ContextTraceMiddleware)],
)
"""

GUNICORN_APP = """
import os

from flask import Flask, request
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser

from context_trace import current_user, track_user
from context_trace.integrations.flask import ContextTrace

CHAIN = ParrotFakeChatModel() | StrOutputParser()

# A warm-up turn while --preload imports the app: the master has a pipeline with
# a queued record and a running worker thread when it forks the workers.
with track_user("warmup"):
    CHAIN.invoke("warm-up")

app = Flask(__name__)
ContextTrace(app, metadata=lambda: {"worker_pid": str(os.getpid())})


@app.get("/chat")
def chat():
    answer = CHAIN.invoke(request.args["message"])
    return {"answer": answer, "user": current_user(), "pid": os.getpid()}
"""


class _Server:
    """A server subprocess whose log goes to a file that is polled for readiness."""

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        db: Path,
        extra_env: dict[str, str] | None = None,
        log: str = "server.log",
    ) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CONTEXT_", "GETCONTEXT_"))
        }
        env.update(
            CONTEXT_TRACE_DB=str(db),
            CONTEXT_TRACE_FLUSH_INTERVAL="60",
            HOME=str(cwd),  # anything a server writes to ~ stays in tmp_path
            PYTHONUNBUFFERED="1",
        )
        env.update(extra_env or {})
        self.log_path = cwd / log
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, count: int = 1) -> list[str]:
        """Poll the log until *pattern* matched *count* times; return the matches."""
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            found = re.findall(pattern, self.log())
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready in time:\n{self.log()}")
            time.sleep(0.05)

    def terminate(self) -> int:
        """SIGTERM the process and wait for it to exit; return its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(_EXIT_TIMEOUT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(_EXIT_TIMEOUT)
        self._log.close()


@pytest.fixture
def servers() -> Iterator[list[_Server]]:
    started: list[_Server] = []
    yield started
    for server in started:
        server.close()


def stored(db: Path) -> list[tuple[str | None, dict[str, str]]]:
    """(user_id, metadata) of every stored conversation, read with plain sqlite3."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT user_id, metadata FROM conversations").fetchall()
    finally:
        conn.close()
    return [(user_id, json.loads(metadata)) for user_id, metadata in rows]


class TestUvicorn:
    def test_sigterm_after_a_burst_keeps_every_turn(
        self, tmp_path: Path, servers: list[_Server]
    ) -> None:
        """uvicorn re-raises SIGTERM (no atexit); the lifespan flush stores all 40 turns."""
        (tmp_path / "uvicorn_app.py").write_text(textwrap.dedent(UVICORN_APP))
        db = tmp_path / "traces.db"
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
                "uvicorn_app:app",
            ],
            tmp_path,
            db,
        )
        servers.append(server)
        [port] = server.wait_for(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")

        def call(client: httpx.Client, i: int) -> str:
            path = "/stream" if i % 2 else "/chat"
            response = client.get(
                path, params={"message": f"m{i}"}, headers={"X-User-Id": f"user-{i}"}
            )
            response.raise_for_status()
            return response.text if i % 2 else response.json()["answer"]

        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client,
            ThreadPoolExecutor(8) as pool,
        ):
            answers = list(pool.map(lambda i: call(client, i), range(40)))
        stored_before_sigterm = db.exists()
        status = server.terminate()

        assert [f"m{i}" for i in range(40)] == answers
        assert not stored_before_sigterm
        assert -signal.SIGTERM == status
        rows = stored(db)
        assert 40 == len(rows)
        assert {f"user-{i}" for i in range(40)} == {user for user, _ in rows}


class TestGunicorn:
    def test_sigterm_to_the_master_keeps_every_turn_of_both_workers(
        self, tmp_path: Path, servers: list[_Server]
    ) -> None:
        """gunicorn --preload -w 2 (sync): every worker's turns stored, the master's warm-up once."""
        (tmp_path / "gunicorn_app.py").write_text(textwrap.dedent(GUNICORN_APP))
        db = tmp_path / "traces.db"
        args = [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "--workers",
            "2",
            "--worker-class",
            "sync",
            "--bind",
            "127.0.0.1:0",
        ]
        if any(
            s.name == "control_socket_disable" for s in gunicorn_config.KNOWN_SETTINGS
        ):
            args.append("--no-control-socket")  # gunicorn 25+ opens one in ~
        server = _Server([*args, "gunicorn_app:app"], tmp_path, db)
        servers.append(server)
        [port] = server.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)")
        server.wait_for(r"Booting worker with pid", count=2)

        served: list[tuple[str, str, int]] = []
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client,
            ThreadPoolExecutor(8) as pool,
        ):

            def call(i: int) -> tuple[str, str, int]:
                response = client.get(
                    "/chat",
                    params={"message": f"m{i}"},
                    headers={"X-User-Id": f"user-{i}"},
                )
                response.raise_for_status()
                body = response.json()
                return body["user"], body["answer"], body["pid"]

            # Bursts of 16, at least 48 requests and until both workers have
            # answered (sync workers take one request at a time, so a burst
            # spreads over both quickly).
            while (len({pid for _, _, pid in served}) < 2 or len(served) < 48) and len(
                served
            ) < 480:
                start = len(served)
                served.extend(pool.map(call, range(start, start + 16)))
        stored_before_sigterm = db.exists()
        status = server.terminate()

        n = len(served)
        assert [(f"user-{i}", f"m{i}") for i in range(n)] == [
            (user, answer) for user, answer, _ in served
        ]
        pids = {str(pid) for _, _, pid in served}
        assert 2 == len(pids)
        assert not stored_before_sigterm
        assert 0 == status
        rows = stored(db)
        assert n + 1 == len(rows)
        assert {"warmup", *(f"user-{i}" for i in range(n))} == {
            user for user, _ in rows
        }
        assert pids == {
            metadata["worker_pid"] for user, metadata in rows if user != "warmup"
        }


SESSION_APP = """
from fastapi import FastAPI
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser

from context_trace import context_session, track_user
from context_trace.integrations.asgi import ContextTraceMiddleware

CHAIN = ParrotFakeChatModel() | StrOutputParser()

app = FastAPI()
app.add_middleware(ContextTraceMiddleware)


@app.get("/async-own")
async def async_own(message: str):
    async with context_session("route-async"):
        return {"answer": await CHAIN.ainvoke(message)}


@app.get("/sync-own")
def sync_own(message: str):  # run in the thread pool
    with context_session("route-sync"):
        return {"answer": CHAIN.invoke(message)}


@app.get("/tracked/{user_id}")
@track_user(user_id=lambda user_id: user_id, session_id=lambda user_id: f"s-{user_id}")
def tracked(user_id: str, message: str):
    return {"answer": CHAIN.invoke(message)}
"""


class TestSessionHeaderUvicorn:
    def test_header_names_the_session_the_endpoint_used(
        self, tmp_path: Path, servers: list[_Server]
    ) -> None:
        """Under uvicorn, X-Session-Id names the session an endpoint opened itself
        (async, sync in the thread pool, track_user), whatever the request sent."""
        pytest.importorskip("fastapi")
        (tmp_path / "session_app.py").write_text(textwrap.dedent(SESSION_APP))
        db = tmp_path / "traces.db"
        server = _Server(
            [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "0",
             "--no-access-log", "session_app:app"],
            tmp_path,
            db,
        )  # fmt: skip
        servers.append(server)
        [port] = server.wait_for(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
        paths = {"/async-own": "route-async", "/sync-own": "route-sync",
                 "/tracked/ann": "s-ann"}  # fmt: skip
        headers: dict[tuple[str, str], str | None] = {}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
            for path in paths:
                for sent in ("", "from-the-client"):
                    response = client.get(
                        path,
                        params={"message": f"{path}|{sent}"},
                        headers={"X-Session-Id": sent} if sent else {},
                    )
                    response.raise_for_status()
                    headers[(path, sent)] = response.headers.get("X-Session-Id")
        server.terminate()
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute(
                "SELECT json_extract(messages_json, '$[0][1]'), session_id"
                " FROM conversations"
            ).fetchall()
        finally:
            conn.close()
        recorded = {tuple(message.split("|")): session for message, session in rows}

        assert {(p, s): paths[p] for p in paths for s in ("", "from-the-client")} == (
            headers
        )
        assert headers == recorded
