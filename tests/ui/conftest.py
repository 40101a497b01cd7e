"""
Fixtures for the dashboard: a store written by the real writer, a real server,
and a real headless Chromium (Debian's) for the browser tests.

Every browser test takes the ``browser`` fixture, which decides what a machine
without Chromium does (see :func:`tests.ui._browser.no_browser`): the README's
test command skips the browser tests there, saying how to install it; CI fails
instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from context_trace._record import Conversation, Feedback, Message
from tests.stores import in_batches, with_metadata, write_records

from ._browser import chromium

NOW = time.time()
XSS_SCRIPT = "<script>window.__pwned = 1; document.title = 'pwned';</script>"
XSS_IMG = "<img src=x onerror=\"window.__pwned = 2; document.title = 'pwned'\">"


def turn(
    cid: str,
    user: str | None,
    session: str | None,
    age: float,
    latency_ms: int,
    text: str = "hello",
    *,
    error: str | None = None,
    model: str = "fake-model",
    tool: bool = False,
) -> Conversation:
    started = NOW - age
    messages = [Message("user", text)]
    if tool:
        messages.append(
            Message("tool", "order 42: shipped", "lookup_order", '{"id": 42}')
        )
    messages.append(Message("assistant", f"answer to {text}"))
    return Conversation(
        id=cid,
        user_id=user,
        session_id=session,
        started_at=started,
        ended_at=started + latency_ms / 1000,
        messages=tuple(messages),
        metadata={"model": model, "prompt_tokens": "10", "completion_tokens": "5"},
        error=error,
    )


@dataclass
class Dataset:
    """What build_store() wrote, for expected values."""

    conversations: list[Conversation]
    feedback: list[Feedback]


def build_store(path: Path) -> Dataset:
    """alice: 3 turns in s-a1 (one with a tool call, one failed) and 1 in s-a2;
    bob: 2 turns in s-b1 (one stored XSS payload); 3 turns with no user; 60 turns
    from user 'many' for pagination; ratings up on s-a1 and down on s-b1."""
    convs = [
        turn("c-a1", "alice", "s-a1", 3600, 100, "where is my order", tool=True),
        turn(
            "c-a2", "alice", "s-a1", 3500, 200, "refund please", error="ValueError: x"
        ),
        turn("c-a3", "alice", "s-a1", 3400, 300, "thanks"),
        turn("c-a4", "alice", "s-a2", 10 * 86400, 400, "old question", model="other"),
        turn("c-b1", "bob", "s-b1", 7200, 1000, XSS_SCRIPT),
        turn("c-b2", "bob", "s-b1", 7100, 2000, XSS_IMG),
        turn("c-n1", None, None, 600, 50, "anonymous zebra"),
        turn("c-n2", None, None, 500, 60, "anonymous yak"),
        turn("c-n3", None, None, 400, 70, "anonymous gnu"),
    ]
    convs += [
        turn(f"c-m{i:02d}", "many", f"s-m{i % 3}", 20000 + i, 10 + i) for i in range(60)
    ]
    feedback = [
        Feedback("f1", "s-a1", "alice", 1, None, NOW - 3000),
        Feedback("f2", "s-b1", "bob", -1, None, NOW - 3000),
    ]
    # Several batches, as the pipeline would deliver them.
    write_records(path, *in_batches(convs, 7), feedback)
    return Dataset(convs, feedback)


def checksum(path: Path) -> str:
    """Digest of the store's main file and its WAL (if any)."""
    digest = hashlib.sha256()
    for suffix in ("", "-wal"):
        part = Path(str(path) + suffix)
        if part.exists():
            digest.update(part.read_bytes())
    return digest.hexdigest()


class Server:
    """``context-trace ui`` in a subprocess on a free loopback port."""

    def __init__(
        self,
        db: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ):
        self.db = db
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "context_trace", "ui", "--db", str(db),
             "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            preexec_fn=preexec_fn,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = ""
        while "http://" not in line:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"ui did not start: {self.proc.stderr.read()}")
        self.url = line[line.index("http://") :].split()[0].rstrip("/")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read().decode()
                status, kind = response.status, response.headers["Content-Type"]
                self.last_headers = response.headers
        except urllib.error.HTTPError as exc:
            body, status = exc.read().decode(), exc.code
            kind = exc.headers["Content-Type"]
            self.last_headers = exc.headers
        return status, json.loads(body) if "json" in kind else body

    def api(self, path: str) -> Any:
        status, body = self.get(path)
        assert 200 == status, body
        return body

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> tuple[int, str]:
        """Ctrl-C; returns the exit code and stderr."""
        self.proc.send_signal(signal.SIGINT)
        self.output, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui") / "traces.db"
    build_store(path)
    return path


@pytest.fixture(scope="module")
def server(store_path: Path) -> Iterator[Server]:
    with Server(store_path) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium driven by Selenium; skips or fails without one."""
    # Module scope: set up before the function-scoped fixture of tests/conftest.py
    # that clears CONTEXT_* variables, so the requiring variable is still there.
    yield from chromium()


# Turn i of the plans store has this plan (the last one a stored XSS payload).
PLANS = ["pro", "pro", "pro", "free", "free", XSS_IMG]


@pytest.fixture(scope="module")
def plans_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Six turns of users u0..u2 (u0 has a pro and a free turn): three pro, two
    free and one whose plan is a stored XSS payload."""
    path = tmp_path_factory.mktemp("plans-ui") / "traces.db"
    convs = [
        with_metadata(
            turn(f"c{i}", f"u{i % 3}", f"s{i % 3}", 3600 - i, 100 + i), plan=plan
        )
        for i, plan in enumerate(PLANS)
    ]
    with Server(write_records(path, convs)) as server:
        yield server


RATED_LATENCIES = {"r1": 1412, "r2": 87, "r3": 12345}


def build_rated_store(path: Path) -> None:
    """rita's session s-r: three turns (1412, 87 and 12345 ms) with metadata;
    r1 rated up then down (the last rating wins), r2 rated up, r3 unrated."""
    convs = []
    for i, (cid, latency) in enumerate(RATED_LATENCIES.items()):
        conv = turn(cid, "rita", "s-r", 300 - i * 10, latency, f"question {cid}")
        convs.append(with_metadata(conv, plan="pro", region="<b>eu</b>"))
    feedback = [
        Feedback("fr1", "s-r", "rita", 1, "r1", NOW - 200),
        Feedback("fr2", "s-r", "rita", -1, "r1", NOW - 100),
        Feedback("fr3", "s-r", "rita", 1, "r2", NOW - 150),
    ]
    write_records(path, [*convs, *feedback])


@pytest.fixture(scope="module")
def rated_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path = tmp_path_factory.mktemp("rated") / "traces.db"
    build_rated_store(path)
    with Server(path) as srv:
        yield srv


@pytest.fixture(scope="module")
def failures_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The dashboard over dana's store: a LangGraph turn whose tool failed
    (handled by the agent) and failed turns (see tests/failures.py)."""
    from tests.failures import record_failures

    path = tmp_path_factory.mktemp("ui-failures") / "traces.db"
    record_failures(path)
    with Server(path) as srv:
        yield srv
