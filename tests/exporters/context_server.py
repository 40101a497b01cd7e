"""
A fake Context API on 127.0.0.1 for tests: a real HTTP server in a thread.

The exporter's tests drive ``context-python`` (``getcontext``) itself against this
server, so the wire format, the ``Authorization`` header and the status handling
are the real ones. Pipeline and end-to-end tests can reuse it::

    with FakeContextServer() as server:
        exporter = ContextAPIExporter("test-token-123", endpoint=server.url)
        ...
        server.script(ROUTE_THREAD, [503, Reply(429, {"Retry-After": "1"}), 201])
        requests = server.wait_for(3, timeout=5.0)

or through the :func:`context_server` fixture (import it into a test module or a
``conftest.py``).

What it does:

* Answers the Context log routes (:data:`ROUTE_LOG`, :data:`ROUTE_UPSERT`,
  :data:`ROUTE_THREAD`, :data:`ROUTE_THREAD_PATCH`) with the status the generated
  client expects (201, or 200 for the PATCH), unless a reply was scripted with
  :meth:`FakeContextServer.script`. Unknown routes get 404.
* Records every request (:attr:`FakeContextServer.requests`) when it arrives,
  before any delay, so a test can wait for a request that is still in flight.
* Validates every body against ``getcontext``'s generated models: it must
  deserialize into the route's request model and serialize back to the same JSON
  (so unknown fields, wrong types and non-string metadata values are caught), and
  message roles and ratings must be among the values Context knows. A body that
  fails gets a 400 and the problems are listed in :attr:`FakeContextServer.errors`.
* Keeps what a successful request stored: :attr:`FakeContextServer.conversations`
  (log/upsert bodies) and :attr:`FakeContextServer.threads` (each thread's messages
  in the order they were appended, Context's documented thread semantics; a PATCH
  applies the ratings of its array positionally to those messages, the way
  context_trace reads the generated ``[ThreadMessage]`` body).
* With ``token=...``, answers 401 to requests without ``Authorization: Bearer <token>``.

Nothing here sleeps to wait: delays wait on an Event that :meth:`close` sets, and
:meth:`wait_for` waits on a Condition.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from getcontext.generated import models as context_models

__all__ = [
    "ROUTE_LOG",
    "ROUTE_THREAD",
    "ROUTE_THREAD_PATCH",
    "ROUTE_UPSERT",
    "FakeContextServer",
    "RecordedRequest",
    "Reply",
    "context_server",
    "free_port",
]

ROUTE_LOG = "/api/v1/log/conversation"
ROUTE_UPSERT = "/api/v1/log/conversation/upsert"
ROUTE_THREAD = "/api/v1/log/conversation/thread"
ROUTE_THREAD_PATCH = "/api/v1/log/conversation/thread/{id}"

_THREAD_PREFIX = ROUTE_THREAD + "/"
_ROLES = frozenset(role.value for role in context_models.MessageParamsRole)
_TYPES = frozenset(kind.value for kind in context_models.MessageParamsType)
_RATINGS = frozenset(rating.value for rating in context_models.Rating)
_LOG_BODY = context_models.PathsLi5TynApiV1LogConversationPostRequestbodyContentApplicationJsonSchema
_UPSERT_BODY = context_models.PathsRai0VpApiV1LogConversationUpsertPostRequestbodyContentApplicationJsonSchema
_THREAD_BODY = context_models.Paths1S2Rf6XApiV1LogConversationThreadPostRequestbodyContentApplicationJsonSchema


@dataclass(frozen=True)
class Reply:
    """
    A scripted answer.

    Attributes:
        status: HTTP status code.
        headers: Extra response headers, e.g. ``{"Retry-After": "1"}``.
        body: JSON-serialisable body; None gives the route's default body.
        delay: Seconds to wait before answering (a slow or hung server).
        disconnect: Close the connection without answering (a reset).
    """

    status: int = 201
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    disconnect: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """
    One request as the server received it.

    Attributes:
        method: ``GET``, ``POST``, ``PATCH``...
        path: The path without the query string.
        route: The route template it matched (``ROUTE_THREAD_PATCH`` for
            ``/api/v1/log/conversation/thread/<id>``), else the path.
        query: Parsed query string.
        headers: Headers as received (use :meth:`header` for a case-insensitive
            lookup).
        raw: The raw body.
        body: The body parsed as JSON, or None when empty or not JSON.
        status: The status the server answered (0 for a scripted disconnect).
        errors: Schema problems found in the body (empty when it is valid).
    """

    method: str
    path: str
    route: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes
    body: Any
    status: int
    errors: tuple[str, ...]

    def header(self, name: str) -> str | None:
        """The value of header *name* (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    @property
    def thread_id(self) -> str | None:
        """The thread id of a PATCH path, or of a thread POST body."""
        if self.path.startswith(_THREAD_PREFIX):
            return self.path[len(_THREAD_PREFIX) :]
        if self.route == ROUTE_THREAD and isinstance(self.body, dict):
            conversation = self.body.get("conversation")
            if isinstance(conversation, dict) and isinstance(
                conversation.get("id"), str
            ):
                return conversation["id"]
        return None


def route_of(path: str) -> str:
    """The route template *path* belongs to (thread PATCH paths carry an id)."""
    if path.startswith(_THREAD_PREFIX) and "/" not in path[len(_THREAD_PREFIX) :]:
        return ROUTE_THREAD_PATCH
    return path


class FakeContextServer:
    """
    A loopback Context API; see the module docstring.

    Use it as a context manager, or call :meth:`close` yourself (the fixture does).

    Args:
        token: When set, requests must carry ``Authorization: Bearer <token>``.
        validate: Check request bodies against the generated models.
    """

    def __init__(self, *, token: str | None = None, validate: bool = True) -> None:
        self._token = token
        self._validate = validate
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._scripts: dict[str, deque[Reply]] = {}
        self._requests: list[RecordedRequest] = []
        self._delay = 0.0
        self._connections: set[socket.socket] = set()
        self.threads: dict[str, list[dict[str, Any]]] = {}
        """Each thread's stored messages, by thread id, in append order."""
        self.thread_metadata: dict[str, dict[str, str]] = {}
        """The metadata of the latest successful POST to each thread."""
        self.conversations: list[dict[str, Any]] = []
        """The ``conversation`` objects of successful log and upsert requests."""
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler, self)
        self._serve_thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-context-server",
            daemon=True,
        )
        self._serve_thread.start()
        self._closed = False

    # -- public API --------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to pass as ``endpoint``, e.g. ``http://127.0.0.1:53211``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._httpd.server_address[1])

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    def requests_to(
        self, route: str, method: str | None = None
    ) -> list[RecordedRequest]:
        """The requests whose route (template or exact path) is *route*."""
        return [
            r
            for r in self.requests
            if route in (r.route, r.path) and (method is None or r.method == method)
        ]

    @property
    def errors(self) -> list[str]:
        """Every schema problem found so far, prefixed with method and path."""
        return [
            f"{r.method} {r.path}: {problem}"
            for r in self.requests
            for problem in r.errors
        ]

    def script(self, route: str, replies: Iterable[int | Reply]) -> None:
        """
        Queue replies for *route*; each request to it takes the next one.

        *route* is a route template (``ROUTE_THREAD_PATCH``) or an exact path
        (``/api/v1/log/conversation/thread/s1``; an exact path's queue is used
        first). An int is a status with the route's default body. When the queue
        is empty the route answers with success again.
        """
        queue = [r if isinstance(r, Reply) else Reply(r) for r in replies]
        with self._cond:
            self._scripts.setdefault(route, deque()).extend(queue)

    def set_delay(self, seconds: float) -> None:
        """Wait *seconds* before answering every request (0 to stop)."""
        with self._cond:
            self._delay = seconds

    def wait_for(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """
        Block until at least *n* requests arrived; return them all.

        Raises:
            AssertionError: Fewer than *n* requests arrived within *timeout* seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise AssertionError(
                    f"expected {n} request(s) within {timeout}s, got {len(self._requests)}"
                )
            return list(self._requests)

    def reset(self) -> None:
        """Forget recorded requests, scripts, stored threads and the delay."""
        with self._cond:
            self._requests.clear()
            self._scripts.clear()
            self._delay = 0.0
            self.threads.clear()
            self.thread_metadata.clear()
            self.conversations.clear()

    def close(self) -> None:
        """Stop serving, drop open connections and join every thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()  # wakes handlers waiting out a delay
        self._httpd.shutdown()
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            # Keep-alive handlers block reading the next request; a shutdown makes
            # that read return so their threads end and server_close can join them.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._serve_thread.join(timeout=5.0)

    def __enter__(self) -> FakeContextServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FakeContextServer(url={self.url!r})"

    # -- request handling (runs in handler threads) --------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _next_reply(self, path: str, route: str) -> tuple[Reply | None, float]:
        with self._cond:
            for key in (path, route):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft(), self._delay
            return None, self._delay

    def _handle(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        path = split.path
        route = route_of(path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = _parse_json(raw)
        headers = {k: v for k, v in handler.headers.items()}

        errors: list[str] = []
        known = _known_route(handler.command, route)
        if known and self._validate:
            errors = _validate(route, raw, body)
        reply, delay = self._next_reply(path, route)
        if not self._authorized(headers):
            status = 401
        elif not known:
            status = 404
        elif errors:
            status = 400
        elif reply is not None:
            status = 0 if reply.disconnect else reply.status
        else:
            status = 200 if route == ROUTE_THREAD_PATCH else 201

        recorded = RecordedRequest(
            method=handler.command,
            path=path,
            route=route,
            query=parse_qs(split.query),
            headers=headers,
            raw=raw,
            body=body,
            status=status,
            errors=tuple(errors),
        )
        with self._cond:
            self._requests.append(recorded)
            self._cond.notify_all()

        wait = reply.delay if reply is not None and reply.delay else delay
        if wait > 0 and self._closing.wait(wait):
            handler.close_connection = True
            return
        if status == 0:
            handler.close_connection = True
            return
        if 200 <= status < 300:
            status = self._store(recorded, status)
        payload = reply.body if reply is not None and reply.body is not None else None
        if payload is None:
            payload = _default_body(recorded, status)
        extra = dict(reply.headers) if reply is not None else {}
        handler.respond(status, payload, extra)

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        if self._token is None:
            return True
        values = [v for k, v in headers.items() if k.lower() == "authorization"]
        return values == [f"Bearer {self._token}"]

    def _store(self, request: RecordedRequest, status: int) -> int:
        """Apply a successful request to the stored state; 404 for an unknown thread."""
        body = request.body
        with self._cond:
            if request.route in (ROUTE_LOG, ROUTE_UPSERT):
                self.conversations.append(body["conversation"])
            elif request.route == ROUTE_THREAD:
                thread = body["conversation"]
                thread_id = thread.get("id") or f"thread-{len(self.threads) + 1}"
                self.threads.setdefault(thread_id, []).extend(
                    dict(m) for m in thread["messages"]
                )
                self.thread_metadata[thread_id] = dict(thread.get("metadata") or {})
            elif request.route == ROUTE_THREAD_PATCH:
                messages = self.threads.get(request.thread_id or "")
                if messages is None or len(body) > len(messages):
                    return 404
                for stored, update in zip(messages, body, strict=False):
                    if "rating" in update:
                        stored["rating"] = update["rating"]
        return status


class _HTTPServer(ThreadingHTTPServer):
    # Non-daemon handler threads, so server_close() joins them (close() first
    # shuts their connections down, so the joins are quick).
    daemon_threads = False
    block_on_close = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: Callable[..., BaseHTTPRequestHandler],
        fake: FakeContextServer,
    ) -> None:
        self.fake = fake
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up makes the late answer fail with a
        # broken pipe: expected in these tests, and not worth a traceback.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind a proxy
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    do_PATCH = do_GET = do_PUT = do_DELETE = do_POST

    def respond(self, status: int, payload: Any, headers: Mapping[str, str]) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


def _known_route(method: str, route: str) -> bool:
    if route == ROUTE_THREAD_PATCH:
        return method == "PATCH"
    return method == "POST" and route in (ROUTE_LOG, ROUTE_UPSERT, ROUTE_THREAD)


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _default_body(request: RecordedRequest, status: int) -> Any:
    if status == 201 and request.route == ROUTE_THREAD:
        return {"status": "ok", "data": {"id": request.thread_id}}
    if 200 <= status < 300:
        return {"status": "ok"}
    return {"status": "error", "message": f"HTTP {status}"}


def _validate(route: str, raw: bytes, body: Any) -> list[str]:
    """Check *body* against the generated model for *route*; list the problems."""
    if body is None:
        return ["body is missing or not JSON" if not raw else "body is not JSON"]
    if route == ROUTE_THREAD_PATCH:
        if not isinstance(body, list):
            return ["PATCH body must be a JSON array of ThreadMessage"]
        problems: list[str] = []
        for i, item in enumerate(body):
            problems += _round_trip(context_models.ThreadMessage, item, f"[{i}]")
            if (
                isinstance(item, dict)
                and "rating" in item
                and item["rating"] not in _RATINGS
            ):
                problems.append(f"[{i}].rating {item['rating']!r} is not -1, 0 or 1")
        return problems
    model = {
        ROUTE_LOG: _LOG_BODY,
        ROUTE_UPSERT: _UPSERT_BODY,
        ROUTE_THREAD: _THREAD_BODY,
    }[route]
    problems = _round_trip(model, body, "body")
    conversation = body.get("conversation") if isinstance(body, dict) else None
    if not isinstance(conversation, dict):
        return [*problems, "body.conversation is missing"]
    messages = conversation.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append("conversation.messages must be a non-empty array")
        messages = []
    for i, message in enumerate(messages):
        problems += _check_message(message, f"conversation.messages[{i}]")
    problems += _check_metadata(conversation.get("metadata"), "conversation.metadata")
    if route == ROUTE_THREAD and not isinstance(conversation.get("id"), str):
        problems.append("conversation.id (the thread id) must be a string")
    return problems


def _check_message(message: Any, where: str) -> list[str]:
    if not isinstance(message, dict):
        return [f"{where} is not an object"]
    problems: list[str] = []
    kind = message.get("type", "message")
    if kind not in _TYPES:
        problems.append(f"{where}.type {kind!r} is unknown")
    if kind == "message":
        if message.get("role") not in _ROLES:
            problems.append(
                f"{where}.role {message.get('role')!r} is not one of {sorted(_ROLES)}"
            )
        if not isinstance(message.get("message"), str):
            problems.append(f"{where}.message must be a string")
    if "rating" in message and message["rating"] not in _RATINGS:
        problems.append(f"{where}.rating {message['rating']!r} is not -1, 0 or 1")
    problems += _check_metadata(message.get("metadata"), f"{where}.metadata")
    return problems


def _check_metadata(metadata: Any, where: str) -> list[str]:
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return [f"{where} must be an object"]
    return [
        f"{where}[{key!r}] must be a string, got {type(value).__name__}"
        for key, value in metadata.items()
        if not isinstance(value, str)
    ]


def _round_trip(model: Any, data: Any, where: str) -> list[str]:
    """*data* must deserialize into *model* and serialize back unchanged."""
    try:
        again = model.deserialize(data).serialize(keep_readonly=True)
    except Exception as exc:  # noqa: BLE001 - any failure is a schema problem to report
        return [f"{where} does not deserialize into {model.__name__}: {exc}"]
    if again != data:
        return [
            f"{where} does not round-trip through {model.__name__}: sent {data!r}, model gives {again!r}"
        ]
    return []


@pytest.fixture
def context_server() -> Iterator[FakeContextServer]:
    """A :class:`FakeContextServer` that is closed after the test."""
    server = FakeContextServer()
    try:
        yield server
    finally:
        server.close()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
