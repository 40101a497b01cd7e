"""The framework-neutral WSGI middleware, driven through the plain WSGI protocol."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.util import FileWrapper, setup_testing_defaults

import pytest
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser

from context_trace import Conversation, InMemoryExporter, current_user, flush
from context_trace._scopes import current_scope
from context_trace.integrations import ContextTraceWSGIMiddleware

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
