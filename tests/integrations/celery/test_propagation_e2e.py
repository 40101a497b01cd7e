"""
Both halves of propagation at once, under load: every request to service A
sends a Celery task and calls service B, and all three stores agree on who
asked.

- Service A: Flask under waitress. ``ContextTrace`` resolves the user and the
  session from the request; ``configure(propagate_baggage=True,
  baggage_secret=...)`` signs them into the ``baggage`` of its httpx calls;
  ``ContextTraceCelery`` puts them in the headers of the tasks it sends.
- A real ``celery worker`` (threads pool) on a real redis broker runs the task.
- Service B: FastAPI under uvicorn, accepting signed baggage only.

Each runs a LangChain chain on a fake chat model and records into its own
SQLite store; the request's index is in every message, so each turn can be
matched to the request that caused it.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integrations.test_baggage_servers import SECRET, service_b  # noqa: F401 - the fixture
from tests.integrations.test_servers import _Server, servers  # noqa: F401 - the fixture

from .conftest import StoredTurn, Worker, _stop, start_worker, stored, wait_stored

pytest.importorskip("flask")
pytest.importorskip("waitress")

REQUESTS = 50
QUEUE = "propagation-e2e"
TASK = "tests.integrations.celery.tasks.ask"

SERVICE_A = f"""
import os

import httpx
from celery import Celery
from flask import Flask, request
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel

from context_trace import configure, current_session, current_user
from context_trace.integrations.celery import ContextTraceCelery
from context_trace.integrations.flask import ContextTrace

configure(propagate_baggage=True, baggage_secret=os.environ["A_SECRET"])

CELERY = Celery("service_a", broker=os.environ["A_BROKER"])
CELERY.conf.update(broker_connection_retry_on_startup=True, task_serializer="json")
ContextTraceCelery(CELERY)

CHAIN = ParrotFakeChatModel()
B = httpx.Client(base_url=os.environ["B_URL"], timeout=60)
app = Flask(__name__)
ContextTrace(
    app,
    user_id=lambda: request.args["user"],
    session_id=lambda: request.args["session"],
)


@app.get("/work")
def work():
    i = request.args["i"]
    CHAIN.invoke(f"request {{i}} in A")
    task = CELERY.send_task({TASK!r}, args=[f"request {{i}} in the worker"], queue={QUEUE!r})
    answer = B.get("/chat", params={{"message": f"request {{i}} in B"}})
    answer.raise_for_status()
    session = current_session()
    return {{
        "user": current_user(),
        "session": session.id if session else None,
        "task": task.id,
        "b": answer.json(),
    }}
"""


def _user(i: int) -> str:
    return f"user {i}"


def _session(i: int) -> str:
    return f"session/{i}"


@pytest.fixture
def e2e_worker(
    broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A threads-pool worker consuming this module's queue."""
    started = start_worker(
        broker,
        tmp_path_factory.mktemp("worker-e2e"),
        "threads",
        queue=QUEUE,
        flush_interval="0.1",
    )
    try:
        yield started
    finally:
        if started.proc.poll() is None:
            started.terminate()
        _stop(started.proc)


@pytest.fixture
def service_a(
    tmp_path: Path,
    broker: str,
    servers: list[_Server],  # noqa: F811
    service_b: tuple[_Server, str],  # noqa: F811
) -> tuple[_Server, str]:
    """Service A: Flask under waitress, propagating to the worker and to B."""
    (tmp_path / "service_a.py").write_text(textwrap.dedent(SERVICE_A))
    server = _Server(
        [
            sys.executable,
            "-m",
            "waitress",
            "--listen=127.0.0.1:0",
            "--threads=8",
            "service_a:app",
        ],
        tmp_path,
        tmp_path / "service_a.db",
        {"A_SECRET": SECRET, "A_BROKER": broker, "B_URL": service_b[1]},
        log="service_a.log",
    )
    servers.append(server)
    [port] = server.wait_for(r"Serving on http://127\.0\.0\.1:(\d+)")
    return server, f"http://127.0.0.1:{port}"


def _mismatches(where: str, turns: list[StoredTurn]) -> list[str]:
    """What differs between *turns* and one turn per request, with that request's ids."""
    wrong = []
    seen = set()
    for turn in turns:
        found = re.search(r"request (\d+) in ", turn.question)
        assert found is not None, turn
        i = int(found.group(1))
        if i in seen:
            wrong.append(f"{where}: request {i} recorded twice")
        seen.add(i)
        if (turn.user_id, turn.session_id) != (_user(i), _session(i)):
            wrong.append(
                f"{where}: request {i} recorded for"
                f" {(turn.user_id, turn.session_id)}, sent as {(_user(i), _session(i))}"
            )
    wrong.extend(
        f"{where}: request {i} not recorded" for i in range(REQUESTS) if i not in seen
    )
    return wrong


def test_fifty_concurrent_requests_reach_worker_and_b_with_no_mismatch(
    e2e_worker: Worker,
    service_a: tuple[_Server, str],
    service_b: tuple[_Server, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    """50 concurrent requests to A: A, its tasks and B record each for the request's ids."""

    def call(i: int) -> None:
        response = httpx.get(
            service_a[1] + "/work",
            params={"i": str(i), "user": _user(i), "session": _session(i)},
            timeout=120,
        )
        response.raise_for_status()

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        list(pool.map(call, range(REQUESTS)))
    worker_turns = wait_stored(e2e_worker.db, " in the worker", REQUESTS)
    service_a[0].terminate()
    service_b[0].terminate()
    stores = {
        "A": stored(tmp_path / "service_a.db", " in A"),
        "worker": worker_turns,
        "B": stored(tmp_path / "service_b.db", " in B"),
    }
    assert {name: REQUESTS for name in stores} == {
        name: len(turns) for name, turns in stores.items()
    }
    assert [] == [
        wrong for name, turns in stores.items() for wrong in _mismatches(name, turns)
    ]
