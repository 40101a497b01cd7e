"""The framework-neutral WSGI middleware, driven through the plain WSGI protocol."""

from __future__ import annotations

import contextvars
import io
import itertools
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.util import FileWrapper, setup_testing_defaults

import pytest
from langchain_core.language_models.fake_chat_models import (
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser

from context_trace import (
    Conversation,
    InMemoryExporter,
    current_user,
    flush,
    track_user,
)
from context_trace._scopes import current_scope
from context_trace.integrations import ContextTraceWSGIMiddleware
from tests.core._helpers import contexts_left_for_the_collector

CHAIN = ParrotFakeChatModel() | StrOutputParser()


def chat_app(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> list[bytes]:
    """A bare WSGI app: answers the query string through the chain."""
    answer = CHAIN.invoke(environ.get("QUERY_STRING") or "hello")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{answer}|{current_user()}".encode()]


class _Call:
    """What one WSGI call produced."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], **environ_extra: Any
    ) -> None:
        environ: dict[str, Any] = dict(environ_extra)
        setup_testing_defaults(environ)
        self.headers: list[tuple[str, str]] = []
        self.status = ""

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            self.status = status
            self.headers = headers
            return lambda data: None

        self.result = app(environ, start_response)
        try:
            self.body = b"".join(self.result)
        finally:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()


def conversations(exporter: InMemoryExporter) -> list[Conversation]:
    assert flush(10.0)
    return exporter.conversations


class TestMiddleware:
    def test_headers_attribute_the_turn(self, exporter: InMemoryExporter) -> None:
        """X-User-Id / X-Session-Id from the environ; the session id is echoed."""
        call = _Call(
            ContextTraceWSGIMiddleware(chat_app),
            HTTP_X_USER_ID="u1",
            HTTP_X_SESSION_ID="s-1",
        )

        assert b"hello|u1" == call.body
        assert ("X-Session-Id", "s-1") in call.headers
        [conversation] = conversations(exporter)
        assert ("u1", "s-1") == (conversation.user_id, conversation.session_id)
        assert current_scope() is None

    def test_environ_resolvers(self, exporter: InMemoryExporter) -> None:
        """Resolvers receive the WSGI environ."""
        app = ContextTraceWSGIMiddleware(
            chat_app,
            user_id=lambda environ: environ["REMOTE_USER"],
            metadata=lambda environ: {"method": environ["REQUEST_METHOD"]},
        )

        call = _Call(app, REMOTE_USER="remote", HTTP_X_USER_ID="ignored")

        assert b"hello|remote" == call.body
        [conversation] = conversations(exporter)
        assert "remote" == conversation.user_id
        assert "GET" == conversation.metadata["method"]

    def test_unsafe_session_id_is_not_echoed(self, exporter: InMemoryExporter) -> None:
        """A session id with CR/LF is recorded but never written into a header."""
        app = ContextTraceWSGIMiddleware(
            chat_app, session_id=lambda environ: "s\r\nSet-Cookie: x=1"
        )

        call = _Call(app)

        assert [("Content-Type", "text/plain")] == call.headers
        [conversation] = conversations(exporter)
        assert "s\r\nSet-Cookie: x=1" == conversation.session_id

    def test_wrapped_twice_the_outer_one_scopes(
        self, exporter: InMemoryExporter
    ) -> None:
        """The inner middleware of the same request passes it straight through."""
        inner = ContextTraceWSGIMiddleware(chat_app, user_id=lambda environ: "inner")
        outer = ContextTraceWSGIMiddleware(inner, user_id=lambda environ: "outer")

        call = _Call(outer)

        assert b"hello|outer" == call.body
        assert ["outer"] == [c.user_id for c in conversations(exporter)]

    def test_file_wrapper_bodies_keep_their_fast_path(self) -> None:
        """A body made with wsgi.file_wrapper is returned as is, for sendfile."""
        body = FileWrapper(io.BytesIO(b"file contents"))

        def file_app(
            environ: dict[str, Any], start_response: Callable[..., Any]
        ) -> Iterable[bytes]:
            start_response("200 OK", [])
            return body

        call = _Call(
            ContextTraceWSGIMiddleware(file_app),
            HTTP_X_USER_ID="u1",
            **{"wsgi.file_wrapper": FileWrapper},
        )

        assert call.result is body
        assert b"file contents" == call.body

    def test_app_error_restores_the_context(self) -> None:
        """An exception from the app propagates and leaves no scope behind."""

        def failing_app(
            environ: dict[str, Any], start_response: Callable[..., Any]
        ) -> Iterable[bytes]:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            _Call(ContextTraceWSGIMiddleware(failing_app), HTTP_X_USER_ID="u1")

        assert current_scope() is None

    def test_bad_arguments_are_rejected(self) -> None:
        """The app and the resolvers are checked at construction."""
        with pytest.raises(TypeError, match="app must be a WSGI callable"):
            ContextTraceWSGIMiddleware(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="user_id must be a callable"):
            ContextTraceWSGIMiddleware(chat_app, user_id="u1")  # type: ignore[arg-type]


_MARK: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "test_wsgi_mark", default=None
)


def streaming_app(
    body: Callable[[str], Iterator[bytes]],
) -> Callable[..., Iterable[bytes]]:
    """A WSGI app whose body is *body(question)*, a generator run after it returns."""

    def app(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body(environ.get("QUERY_STRING") or "hello")

    return app


def stream_answer(question: str) -> Iterator[bytes]:
    """The question streamed back by a real streaming chat model, word by word."""
    model = GenericFakeChatModel(messages=itertools.repeat(AIMessage(question)))
    for text in (model | StrOutputParser()).stream(question):
        yield text.encode()


class TestStreamedBodies:
    def test_a_scope_the_body_enters_spans_its_yields(
        self, exporter: InMemoryExporter
    ) -> None:
        """A track_user the generator enters holds across its yields, then the request's comes back."""

        def body(question: str) -> Iterator[bytes]:
            with track_user("inner"):
                yield b"a"
                yield f"{CHAIN.invoke(question)}|{current_user()}".encode()
            yield f"|{current_user()}".encode()

        call = _Call(
            ContextTraceWSGIMiddleware(streaming_app(body)), HTTP_X_USER_ID="outer"
        )

        assert b"ahello|inner|outer" == call.body
        assert ["inner"] == [c.user_id for c in conversations(exporter)]
        assert current_scope() is None

    def test_nothing_the_body_sets_leaks_into_the_server_thread(
        self, exporter: InMemoryExporter
    ) -> None:
        """Context variables the body's generator sets stay in the body's context."""

        def body(question: str) -> Iterator[bytes]:
            _MARK.set("set by the body")
            yield b"one"
            yield f"{_MARK.get()}|{current_user()}".encode()

        call = _Call(
            ContextTraceWSGIMiddleware(streaming_app(body)), HTTP_X_USER_ID="u1"
        )

        assert b"oneset by the body|u1" == call.body
        assert (None, None) == (_MARK.get(), current_scope())

    def test_a_finished_body_leaves_no_context_for_the_collector(
        self, exporter: InMemoryExporter
    ) -> None:
        """Closing a body frees its context and the scope's tokens by reference counting."""
        app = ContextTraceWSGIMiddleware(streaming_app(stream_answer))
        bodies: list[bytes] = []

        def work() -> None:
            for i in range(3):
                bodies.append(
                    _Call(app, HTTP_X_USER_ID="u1", QUERY_STRING=f"question {i}").body
                )

        left = contexts_left_for_the_collector(work)

        assert [f"question {i}".encode() for i in range(3)] == bodies
        assert [] == left
        assert 3 == len(conversations(exporter))

    def test_bodies_stepped_from_many_threads_are_each_attributed(
        self, exporter: InMemoryExporter
    ) -> None:
        """48 streamed bodies, each step pulled by a random one of 8 threads: every turn has its user."""
        app = ContextTraceWSGIMiddleware(streaming_app(stream_answer))
        calls = []
        for i in range(48):
            environ: dict[str, Any] = {
                "HTTP_X_USER_ID": f"u{i % 6}",
                "QUERY_STRING": f"question {i} for u{i % 6}",
            }
            setup_testing_defaults(environ)
            calls.append(
                (app(environ, lambda status, headers, exc_info=None: None), [])
            )
        lock = threading.Lock()
        rng = random.Random(7)
        steps = [i for i in range(48) for _ in range(5)]
        rng.shuffle(steps)
        failures: list[BaseException] = []

        def pull() -> None:
            while True:
                with lock:
                    if not steps:
                        return
                    i = steps.pop()
                    body, chunks = calls[i]
                    try:  # one step of body i, on this thread (never two at once)
                        chunks.append(next(iter(body)))
                    except StopIteration:
                        pass
                    except BaseException as exc:  # noqa: BLE001 - reported below
                        failures.append(exc)

        threads = [threading.Thread(target=pull) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60.0)
        for body, chunks in calls:
            chunks.extend(body)  # what is left, on this thread
            body.close()  # type: ignore[attr-defined]

        assert [] == failures
        for i, (_, chunks) in enumerate(calls):
            assert f"question {i} for u{i % 6}".encode() == b"".join(chunks)
        found = conversations(exporter)
        assert 48 == len(found)
        assert Counter({f"u{k}": 8 for k in range(6)}) == Counter(
            c.user_id for c in found
        )
        assert all(c.messages[-1].content.endswith(c.user_id) for c in found)
        assert current_scope() is None


class TestImports:
    def test_core_and_integrations_package_import_no_framework(self) -> None:
        """import context_trace (and context_trace.integrations) loads no Flask or Starlette."""
        code = (
            "import sys, context_trace, context_trace.integrations\n"
            "print(sorted(m for m in ('flask', 'starlette', 'fastapi', 'werkzeug')"
            " if m in sys.modules))"
        )

        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

        assert "[]" == result.stdout.strip()

    def test_flask_integration_without_flask_says_how_to_install_it(self) -> None:
        """Without Flask, importing the Flask integration names the extra to install."""
        code = (
            "import sys\n"
            "sys.modules['flask'] = None\n"
            "try:\n"
            "    import context_trace.integrations.flask\n"
            "except ImportError as exc:\n"
            "    print(exc)\n"
        )

        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

        assert (
            "context_trace.integrations.flask requires Flask; "
            "install 'context-trace[flask]'"
        ) == result.stdout.strip()

    def test_asgi_middleware_without_starlette_passes_the_scope_dict(self) -> None:
        """Without Starlette, the ASGI middleware works and resolvers get the raw scope."""
        code = (
            "import asyncio, sys\n"
            "sys.modules['starlette'] = None\n"
            "from context_trace import current_user\n"
            "from context_trace.integrations.asgi import ContextTraceMiddleware\n"
            "seen = []\n"
            "async def app(scope, receive, send):\n"
            "    seen.append(current_user())\n"
            "    await send({'type': 'http.response.start', 'status': 200})\n"
            "async def receive():\n"
            "    return {'type': 'http.request'}\n"
            "async def send(message):\n"
            "    pass\n"
            "mw = ContextTraceMiddleware(app, user_id=lambda s: type(s).__name__)\n"
            "asyncio.run(mw({'type': 'http', 'headers': []}, receive, send))\n"
            "print(seen, 'starlette' in sys.modules and sys.modules['starlette'])\n"
        )

        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

        assert "['dict'] None" == result.stdout.strip()
