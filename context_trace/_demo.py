"""
The ``context-trace demo``: a small support chatbot, recorded for real.

:func:`run_demo` starts a Flask app with the :class:`ContextTrace` extension on a
loopback port, drives it over real HTTP with one client thread per simulated
user, and records every turn in a SQLite store of its own, the way a deployed
app would. The demo's store is never the app's: :func:`run_demo` replaces a
store it recorded before (re-running does not add up) and refuses one that
holds anything else. Nothing is faked on the recording side: the users, sessions, ratings and
the one failing turn all travel through headers, the per-request scopes, the
LangChain callbacks, the background pipeline and the SQLite exporter.

The run takes seconds, but the store holds several weeks: the exporter moves
each session's times to its day on the calendar of :mod:`._demo_script` (two
signup cohorts that retain differently) just before storing it. Each user has
an account, ``variant`` A or B and a ``plan``, which the app attaches to the
turns with :func:`track_user`; variant A answers with ``gpt-4o-mini``, variant
B with ``gpt-4o`` (prompt-cache reads in its usage), enterprise accounts with a
self-hosted model that has no public price.

The models are :class:`DemoChatModel`, a deterministic LangChain chat model with
canned support answers, so the demo needs no API key and no network beyond
127.0.0.1. Questions about an order first call the ``lookup_order`` tool; one
scripted turn asks about an order the (simulated) order service times out on,
to show how failed turns are tracked.

This module never prints: the ``context-trace demo`` command in
:mod:`context_trace.cli` renders the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _demo_script as _script
from . import _runtime
from ._demo_app import (
    _ERROR_TURN_TEXT,
    DEMO_METADATA,
    DemoChatModel,
    build_app,
    build_chain,
)
from ._exporters.base import ExportResult
from ._exporters.sqlite import SQLiteExporter
from ._record import Feedback, Record
from ._store.sqlite_store import SQLiteStore

if TYPE_CHECKING:
    import flask

__all__ = [
    "DEFAULT_SESSIONS_PER_USER",
    "DEFAULT_TURNS",
    "DEFAULT_USERS",
    "DEMO_METADATA",
    "DemoChatModel",
    "DemoResult",
    "build_app",
    "build_chain",
    "planned_rating",
    "run_demo",
    "user_names",
]

DEFAULT_USERS = 6
DEFAULT_SESSIONS_PER_USER = 4
DEFAULT_TURNS = 3
_MAX_USERS = 200
_MAX_SESSIONS = 50
_MAX_TURNS = 50
# Seconds: one HTTP request of the simulated clients; the flush at the end.
_REQUEST_TIMEOUT = 30.0
_FLUSH_TIMEOUT = 30.0
# A planned rating per session, cycled by the session's index in the run.
_RATING_CYCLE: tuple[int | None, ...] = (1, None, 1, None, 1, None)


def user_names(count: int) -> list[str]:
    """
    The simulated users' ids: ``ava``, ``ben``, ... then ``ava2``, ``ben2``, ...

    .. versionadded:: 0.1.0
    """
    return [
        _script.NAMES[i % len(_script.NAMES)]
        + (str(i // len(_script.NAMES) + 1) if i >= len(_script.NAMES) else "")
        for i in range(count)
    ]


def _question(user: int, session: int, turn: int) -> str:
    topic = _script.UNHAPPY_SESSIONS.get(
        (user, session), _script.TOPICS[(user * 2 + session * 3) % len(_script.TOPICS)]
    )
    if turn < len(topic):
        return topic[turn].format(order=4000 + (user * 37 + session * 11) % 1000)
    return _script.EXTRA_TURNS[(turn - len(topic)) % len(_script.EXTRA_TURNS)]


def _error_slot(users: int, turns: int) -> tuple[int, int, int]:
    """(user, session, turn) of the one failing turn: the second user's first session."""
    return (min(1, users - 1), 0, turns - 1)


def planned_rating(
    user: int, session: int, *, users: int, sessions_per_user: int, turns: int
) -> int | None:
    """
    The rating the demo gives a session (None: not rated).

    Every other session is rated, mostly +1; the session with the failing turn
    gets -1, and so does a scripted unhappy session that is rated.

    .. versionadded:: 0.1.0
    """
    error_user, error_session, _ = _error_slot(users, turns)
    if (user, session) == (error_user, error_session):
        return -1
    rating = _RATING_CYCLE[(user * sessions_per_user + session) % len(_RATING_CYCLE)]
    if rating is not None and (user, session) in _script.UNHAPPY_SESSIONS:
        return -1
    return rating


@dataclass
class DemoResult:
    """
    What :func:`run_demo` did.

    Attributes:
        db_path: The SQLite store written.
        url: The base URL the app was served on (gone when the demo returns).
        users: The simulated users' ids.
        sessions: ``(user_id, session_id)`` of every session, in order.
        conversations: Turns sent (each is one recorded conversation).
        errors: Turns that failed on purpose (answered with HTTP 502).
        error_user: The user whose turn failed.
        ratings: Ratings sent.
        showcase_session: A session worth showing (one with a tool call).
        model: The chat model's name.
        seconds: Wall-clock duration.

    .. versionadded:: 0.1.0
    """

    db_path: Path
    url: str
    users: list[str]
    sessions: list[tuple[str, str]] = field(default_factory=list)
    conversations: int = 0
    errors: int = 0
    error_user: str = ""
    ratings: int = 0
    showcase_session: str = ""
    model: str = ""
    seconds: float = 0.0


class _BackdatingExporter(SQLiteExporter):
    """
    The demo's SQLite exporter, moving each session to its day on the calendar.

    The turns are recorded now, in a few seconds; before they are stored, each
    record's times move by its session's offset (:func:`_demo_script.session_start`
    minus the run's start), so the store holds several weeks of activity. Nothing
    else about a record changes.
    """

    def __init__(self, path: Path, offsets: Mapping[str, float]) -> None:
        super().__init__(path)
        self._offsets = offsets

    def export(self, batch: Sequence[Record]) -> ExportResult:
        return super().export([self._move(record) for record in batch])

    def _move(self, record: Record) -> Record:
        delta = self._offsets.get(record.session_id or "", 0.0)
        if isinstance(record, Feedback):
            return dataclasses.replace(record, created_at=record.created_at + delta)
        return dataclasses.replace(
            record,
            started_at=record.started_at + delta,
            ended_at=record.ended_at + delta,
            spans=tuple(
                span._replace(
                    started_at=span.started_at + delta, ended_at=span.ended_at + delta
                )
                for span in record.spans
            ),
        )


class _Client:
    """One simulated user: talks to the app over HTTP, on its own thread."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url
        # No proxy: the app listens on 127.0.0.1, whatever *_PROXY says.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post(
        self, path: str, payload: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            self._base + path,
            data=json.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json", **headers},
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=_REQUEST_TIMEOUT) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read() or b"{}")


@contextlib.contextmanager
def _serve(app: flask.Flask) -> Iterator[Any]:
    """Yield a running loopback server for *app*; shut it down afterwards."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass  # no access log lines in the demo's output

    server = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever, name="context-trace-demo-server", daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def _check_count(name: str, value: object, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= value <= high:
        raise ValueError(f"{name} must be between 1 and {high}, got {value}")
    return value


def _check_replaceable(path: Path) -> None:
    """
    Raise ValueError unless *path* is missing, empty or a store the demo wrote:
    the demo replaces its store, so it must never be pointed at an app's.
    """
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a database")
    if not path.exists() or path.stat().st_size == 0:
        return
    with SQLiteStore(path).reads() as reader:
        outbox = reader.outbox_counts()
        foreign = outbox["pending"] + outbox["leased"] > 0 or any(
            c.metadata.get(key) != value
            for c in reader.conversations()
            for key, value in DEMO_METADATA.items()
        )
    if foreign:
        raise ValueError(
            f"{path} holds conversations the demo did not record; the demo replaces "
            "its store, so it leaves this one alone: choose another file"
        )


def _install(staging: Path, path: Path) -> None:
    """Move the finished store *staging* to *path*, over the previous demo store."""
    # The old store's WAL and shared-memory files belong to the old file.
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")
    os.replace(staging, path)
    # The writer checkpoints its WAL into the file as it closes; if it could not,
    # the WAL holds committed turns and goes along.
    with contextlib.suppress(FileNotFoundError):
        os.replace(f"{staging}-wal", f"{path}-wal")


def run_demo(
    db_path: str | PathLike[str],
    *,
    users: int = DEFAULT_USERS,
    sessions_per_user: int = DEFAULT_SESSIONS_PER_USER,
    turns: int = DEFAULT_TURNS,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """
    Run the demo app, drive it with concurrent users, and store every turn.

    It reconfigures context_trace in this process to write to a new SQLite store
    (a Context token in the environment is ignored), shuts the pipeline down
    after everything is stored, and then moves the store to *db_path*,
    replacing the previous demo's: re-running never adds up. A store at
    *db_path* that holds anything but the demo's turns is refused, untouched.

    Args:
        db_path: The demo's SQLite store (created if missing, else replaced).
        users: Simulated users, each on its own client thread.
        sessions_per_user: Sessions each user opens, one after the other.
        turns: Questions per session.
        progress: Called as ``progress(done, total)`` after every turn, from the
            client threads (one call at a time).

    Returns:
        A :class:`DemoResult`.

    Raises:
        TypeError, ValueError: A count is not an int in range.
        OSError, ValueError: The store cannot be created, is not a
            context_trace store, or holds turns the demo did not record.
        RuntimeError: The app answered unexpectedly, or storing timed out.
        ImportError: Flask is not installed.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       Records into a new store and replaces the previous demo's with it;
       refuses a store with other turns.
    """
    _check_count("users", users, _MAX_USERS)
    _check_count("sessions_per_user", sessions_per_user, _MAX_SESSIONS)
    _check_count("turns", turns, _MAX_TURNS)
    started = time.monotonic()
    path = Path(db_path).expanduser()
    _check_replaceable(path)
    accounts = {name: _script.account(i) for i, name in enumerate(user_names(users))}
    app = build_app(
        accounts=accounts
    )  # imports Flask: fail before writing or reconfiguring anything
    path.parent.mkdir(parents=True, exist_ok=True)
    # Recorded in a new store beside the target, moved over it once complete: a
    # failed run leaves the previous demo store as it was.
    staging_dir = Path(tempfile.mkdtemp(prefix=".context-trace-demo-", dir=path.parent))
    try:
        result = _record(
            app,
            staging_dir / path.name,
            path,
            users,
            sessions_per_user,
            turns,
            progress,
        )
        _install(staging_dir / path.name, path)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _record(
    app: flask.Flask,
    staging: Path,
    path: Path,
    users: int,
    sessions_per_user: int,
    turns: int,
    progress: Callable[[int, int], None] | None,
) -> DemoResult:
    """Drive *app* and store its turns in *staging*; *path* is the store's name."""
    names = user_names(users)
    now = time.time()
    plan = {
        index: [uuid.uuid4().hex[:16] for _ in range(sessions_per_user)]
        for index in range(users)
    }
    offsets = {
        session_id: _script.session_start(
            index, s, users=users, sessions_per_user=sessions_per_user, now=now
        )
        - now
        for index, sessions in plan.items()
        for s, session_id in enumerate(sessions)
    }
    store = _BackdatingExporter(staging, offsets)
    store.check()
    # An explicit exporter: the demo always writes locally, whatever the env says.
    _runtime.configure(exporter=store, sample_rate=1.0, enabled=True)

    total = users * sessions_per_user * turns
    error_slot = _error_slot(users, turns)
    done = [0]
    lock = threading.Lock()
    failures: list[BaseException] = []
    result = DemoResult(db_path=path, url="", users=names)
    result.model = ", ".join(
        sorted({_script.model_for(_script.account(i)) for i in range(users)})
    )

    def turn_done() -> None:
        with lock:
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

    def simulate(index: int, client: _Client, sessions: Sequence[str]) -> None:
        user = names[index]
        try:
            for s, session_id in enumerate(sessions):
                headers = {"X-User-Id": user, "X-Session-Id": session_id}
                for t in range(turns):
                    failing = (index, s, t) == error_slot
                    text = _ERROR_TURN_TEXT if failing else _question(index, s, t)
                    status, body = client.post("/chat", {"message": text}, headers)
                    if status != (502 if failing else 200):
                        raise RuntimeError(
                            f"the demo app answered HTTP {status} to {user}: {body}"
                        )
                    turn_done()
                rating = planned_rating(
                    index,
                    s,
                    users=users,
                    sessions_per_user=sessions_per_user,
                    turns=turns,
                )
                if rating is not None:
                    status, body = client.post("/feedback", {"rating": rating}, headers)
                    if status != 200:
                        raise RuntimeError(
                            f"the demo app answered HTTP {status} to a rating: {body}"
                        )
        except Exception as exc:  # noqa: BLE001 - re-raised by the main thread
            with lock:
                failures.append(exc)

    try:
        with _serve(app) as server:
            result.url = f"http://127.0.0.1:{server.server_port}"
            threads = [
                threading.Thread(
                    target=simulate,
                    args=(index, _Client(result.url), plan[index]),
                    name=f"context-trace-demo-{names[index]}",
                )
                for index in range(users)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if failures:
            raise RuntimeError(f"the demo failed: {failures[0]}") from failures[0]
        if not _runtime.flush(_FLUSH_TIMEOUT):
            raise RuntimeError(
                f"storing the demo's conversations in {path} did not finish in "
                f"{_FLUSH_TIMEOUT:.0f} s"
            )
        failed = _runtime.stats()["failed"]
        if failed:
            raise RuntimeError(
                f"{failed} of the demo's records could not be stored in {path}"
            )
    finally:
        _runtime.shutdown()

    for index in range(users):
        for s, session_id in enumerate(plan[index]):
            result.sessions.append((names[index], session_id))
            if (
                planned_rating(
                    index,
                    s,
                    users=users,
                    sessions_per_user=sessions_per_user,
                    turns=turns,
                )
                is not None
            ):
                result.ratings += 1
    result.conversations = total
    result.errors = 1
    result.error_user = names[error_slot[0]]
    result.showcase_session = plan[0][0]
    return result
