"""
A real broker and real workers: Debian's ``redis-server`` and ``celery worker``
subprocesses on 127.0.0.1, recording into real SQLite stores.

Without ``redis-server`` the README's test command skips these tests, saying how
to install it; CI (``CI=true``, or ``CONTEXT_TRACE_REQUIRE_BROKER=1``, which
``.ci/run`` sets) fails them instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .tasks import BROKER_ENV, app

REPO = Path(__file__).resolve().parents[3]
REQUIRE_BROKER_ENV = "CONTEXT_TRACE_REQUIRE_BROKER"
INSTALL_HINT = "apt-get install redis-server"
_FALSE = ("", "0", "false", "no", "off")
_START_TIMEOUT = 60.0
_EXIT_TIMEOUT = 60.0
#: How long a test waits for a task's result or for its turns in the store.
WAIT = 30.0


def _required() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() not in _FALSE
        for name in ("CI", REQUIRE_BROKER_ENV)
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(proc: subprocess.Popen[bytes], log: Path, pattern: str) -> str:
    """Poll *log* until *pattern* appears; fail when the process exits first."""
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        text = log.read_text(errors="replace")
        found = re.search(pattern, text)
        if found:
            return found.group(0)
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited early:\n{text}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.args[0]} not ready in time:\n{text}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(_EXIT_TIMEOUT)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server on a free loopback port, with no persistence; its URL."""
    program = shutil.which("redis-server")
    if program is None:
        message = f"the Celery tests need Debian's redis-server ({INSTALL_HINT})"
        if _required():
            pytest.fail(message)
        pytest.skip(message)
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    log = workdir / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                program,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(proc, log, r"Ready to accept connections")
        url = f"redis://127.0.0.1:{port}/0"
        app.conf.update(broker_url=url, result_backend=url)
        yield url
    finally:
        _stop(proc)


@dataclass
class Worker:
    """A ``celery worker`` subprocess and the store it records into."""

    pool: str
    proc: subprocess.Popen[bytes]
    db: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> int:
        """Warm shutdown (SIGTERM); wait for the exit and return its status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(_EXIT_TIMEOUT)


def start_worker(
    broker: str,
    workdir: Path,
    pool: str,
    *,
    queue: str,
    flush_interval: str,
    options: tuple[str, ...] = (),
) -> Worker:
    """Start ``celery -A tasks worker --pool POOL --concurrency 2`` and wait until ready."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONTEXT_", "GETCONTEXT_", "CELERY_"))
    }
    db = workdir / "traces.db"
    env.update(
        {
            BROKER_ENV: broker,
            "CONTEXT_TRACE_DB": str(db),
            "CONTEXT_TRACE_FLUSH_INTERVAL": flush_interval,
            "HOME": str(workdir),
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = workdir / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.integrations.celery.tasks",
                "worker",
                "--pool",
                pool,
                "--concurrency",
                "2",
                "--queues",
                queue,
                "--hostname",
                f"{queue}@127.0.0.1",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                *options,
            ],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(pool, proc, db, log)
    try:
        _wait_for(proc, log, r"ready\.")
    except BaseException:
        _stop(proc)
        raise
    return worker


@pytest.fixture(scope="module", params=["threads", "prefork", "solo"])
def worker(
    request: pytest.FixtureRequest,
    broker: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    """One worker per pool for the module, consuming the default queue."""
    pool = str(request.param)
    started = start_worker(
        broker,
        tmp_path_factory.mktemp(f"worker-{pool}"),
        pool,
        queue="celery",
        flush_interval="0.1",
    )
    try:
        yield started
    finally:
        if started.proc.poll() is None:
            started.terminate()
        _stop(started.proc)


@dataclass(frozen=True)
class StoredTurn:
    """A turn as the store holds it."""

    user_id: str | None
    session_id: str | None
    metadata: dict[str, str]
    question: str


def stored(db: Path, marker: str) -> list[StoredTurn]:
    """The stored turns whose user's words contain *marker*, read with plain sqlite3."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT user_id, session_id, metadata, messages_json FROM conversations"
        ).fetchall()
    except sqlite3.OperationalError:  # the worker is creating the schema right now
        return []
    finally:
        conn.close()
    turns = []
    for user_id, session_id, metadata, messages in rows:
        words = [m[1] for m in json.loads(messages) if m[0] == "user"]
        if words and marker in words[0]:
            turns.append(
                StoredTurn(user_id, session_id, json.loads(metadata), words[0])
            )
    return sorted(turns, key=lambda t: t.question)


def wait_stored(db: Path, marker: str, count: int) -> list[StoredTurn]:
    """The turns with *marker*, once *count* of them are stored (fail after WAIT s)."""
    deadline = time.monotonic() + WAIT
    while True:
        turns = stored(db, marker)
        if len(turns) >= count or time.monotonic() > deadline:
            return turns
        time.sleep(0.05)
