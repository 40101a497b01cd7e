"""The ASGI middleware with Starlette: headers, resolvers, streaming, pass-through, lifespan flush."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from langchain_core.language_models.fake_chat_models import (
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

import context_trace
from context_trace import (
    Conversation,
    InMemoryExporter,
    configure,
    current_session,
    current_user,
    flush,
    track_user,
)
from context_trace._scopes import current_scope
from context_trace.integrations.asgi import ContextTraceMiddleware

CHAIN = ParrotFakeChatModel() | StrOutputParser()


def streaming_chain(answer: str) -> Any:
    """A chain whose model streams *answer* in several chunks."""
    return GenericFakeChatModel(messages=iter([AIMessage(answer)])) | StrOutputParser()


def session_id() -> str | None:
    session = current_session()
    return session.id if session is not None else None


async def chat(request: Request) -> JSONResponse:
    answer = await CHAIN.ainvoke((await request.json())["message"])
    return JSONResponse(
        {"answer": answer, "user": current_user(), "session": session_id()}
    )


async def stream(request: Request) -> StreamingResponse:
    message = request.query_params["message"]

    async def generate() -> AsyncIterator[str]:
        async for chunk in streaming_chain(f"streamed for {message}").astream(message):
            yield chunk
        yield f"|{current_user()}"

    return StreamingResponse(generate(), media_type="text/plain")


async def sync_stream(request: Request) -> StreamingResponse:
    message = request.query_params["message"]

    def generate() -> Iterator[str]:
        # A sync iterator: Starlette iterates it in its thread pool.
        yield from streaming_chain(f"streamed for {message}").stream(message)
        yield f"|{current_user()}"

    return StreamingResponse(generate(), media_type="text/plain")


async def own_header(request: Request) -> Response:
    return Response("ok", headers={"X-Session-Id": "mine"})


async def websocket_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"scoped": current_scope() is not None})
    await websocket.close()


def make_app(**options: Any) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.events.append("startup")
        yield
        app.state.events.append("shutdown")

    app = Starlette(
        routes=[
            Route("/chat", chat, methods=["POST"]),
            Route("/stream", stream),
            Route("/sync-stream", sync_stream),
            Route("/own-header", own_header),
            WebSocketRoute("/ws", websocket_endpoint),
        ],
        middleware=[Middleware(ContextTraceMiddleware, **options)],
        lifespan=lifespan,
    )
    app.state.events = []
    return app


def conversations(exporter: InMemoryExporter) -> list[Conversation]:
    assert flush(10.0)
    return exporter.conversations


class TestHeaderDefaults:
    def test_user_and_session_headers(self, exporter: InMemoryExporter) -> None:
        """X-User-Id and X-Session-Id attribute the turn; the session id is echoed."""
        client = TestClient(make_app())

        response = client.post(
            "/chat",
            json={"message": "hi"},
            headers={"X-User-Id": "u1", "X-Session-Id": "s-1"},
        )

        assert {"answer": "hi", "user": "u1", "session": "s-1"} == response.json()
        assert "s-1" == response.headers["X-Session-Id"]
        [conversation] = conversations(exporter)
        assert ("u1", "s-1") == (conversation.user_id, conversation.session_id)

    def test_request_without_identity_is_recorded_anonymously(
        self, exporter: InMemoryExporter
    ) -> None:
        """No headers: recorded without user or session, no X-Session-Id on the response."""
        client = TestClient(make_app())

        response = client.post("/chat", json={"message": "hi"})

        assert "X-Session-Id" not in response.headers
        [conversation] = conversations(exporter)
        assert (None, None) == (conversation.user_id, conversation.session_id)

    def test_session_header_set_by_the_app_is_kept(
        self, exporter: InMemoryExporter
    ) -> None:
        """A response that sets X-Session-Id itself keeps it, with no second header."""
        client = TestClient(make_app())

        response = client.get("/own-header", headers={"X-Session-Id": "s-1"})

        assert ["mine"] == response.headers.get_list("X-Session-Id")

    async def test_httpx_asgi_transport(self, exporter: InMemoryExporter) -> None:
        """Driven through httpx.ASGITransport, the headers attribute the turn too."""
        transport = httpx.ASGITransport(app=make_app())

        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver"
        ) as client:
            response = await client.post(
                "/chat",
                json={"message": "hi"},
                headers={"X-User-Id": "u-httpx", "X-Session-Id": "s-httpx"},
            )

        assert "s-httpx" == response.headers["X-Session-Id"]
        [conversation] = conversations(exporter)
        assert ("u-httpx", "s-httpx") == (conversation.user_id, conversation.session_id)


class TestStreaming:
    @pytest.mark.parametrize("path", ["/stream", "/sync-stream"])
    def test_streaming_response_is_attributed(
        self, exporter: InMemoryExporter, path: str
    ) -> None:
        """A StreamingResponse whose generator calls chain.(a)stream records for the user."""
        client = TestClient(make_app())

        response = client.get(
            f"{path}?message=hello",
            headers={"X-User-Id": "u-stream", "X-Session-Id": "s-stream"},
        )

        assert "streamed for hello|u-stream" == response.text
        [conversation] = conversations(exporter)
        assert ("u-stream", "s-stream") == (
            conversation.user_id,
            conversation.session_id,
        )
        assert [("user", "hello"), ("assistant", "streamed for hello")] == [
            (m.role, m.content) for m in conversation.messages
        ]

    def test_a_scope_a_decorated_routes_body_enters_spans_its_yields(
        self, exporter: InMemoryExporter
    ) -> None:
        """A decorated route's streamed body keeps a track_user it enters across its yields."""

        @track_user("route")
        async def endpoint(request: Request) -> StreamingResponse:
            async def generate() -> AsyncIterator[str]:
                with track_user("inner"):
                    yield f"{current_user()}|"
                    yield f"{await CHAIN.ainvoke('hello')}|{current_user()}|"
                yield f"{current_user()}"

            return StreamingResponse(generate(), media_type="text/plain")

        app = Starlette(
            routes=[Route("/decorated", endpoint)],
            middleware=[Middleware(ContextTraceMiddleware)],
        )

        response = TestClient(app).get("/decorated", headers={"X-User-Id": "header"})

        assert "inner|hello|inner|route" == response.text
        assert ["inner"] == [c.user_id for c in conversations(exporter)]

    async def test_streaming_through_httpx(self, exporter: InMemoryExporter) -> None:
        """Streaming through httpx.ASGITransport is attributed as well."""
        transport = httpx.ASGITransport(app=make_app())

        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver"
        ) as client:
            response = await client.get(
                "/stream?message=hi", headers={"X-User-Id": "u-async"}
            )

        assert "streamed for hi|u-async" == response.text
        [conversation] = conversations(exporter)
        assert "u-async" == conversation.user_id


class TestResolvers:
    def test_resolver_receives_a_starlette_request(
        self, exporter: InMemoryExporter
    ) -> None:
        """user_id gets a starlette Request and wins over X-User-Id."""
        seen: list[object] = []

        def resolve(request: Request) -> str:
            seen.append(request)
            return request.query_params["uid"]

        client = TestClient(make_app(user_id=resolve))

        client.post(
            "/chat?uid=from-query", json={"message": "hi"}, headers={"X-User-Id": "u1"}
        )

        assert [Request] == [type(r) for r in seen]
        [conversation] = conversations(exporter)
        assert "from-query" == conversation.user_id

    def test_async_resolvers(self, exporter: InMemoryExporter) -> None:
        """Resolvers may be coroutine functions."""

        async def user(request: Request) -> str:
            return request.headers["authorization"].removeprefix("Bearer ")

        async def session(request: Request) -> str:
            return request.cookies["sid"]

        client = TestClient(make_app(user_id=user, session_id=session))
        client.cookies.set("sid", "cookie-session")

        response = client.post(
            "/chat", json={"message": "hi"}, headers={"Authorization": "Bearer acct-1"}
        )

        assert "cookie-session" == response.headers["X-Session-Id"]
        [conversation] = conversations(exporter)
        assert ("acct-1", "cookie-session") == (
            conversation.user_id,
            conversation.session_id,
        )

    def test_metadata_static_and_callable(self, exporter: InMemoryExporter) -> None:
        """Static metadata and a metadata callable both reach the turn."""
        TestClient(make_app(metadata={"service": "api"})).post(
            "/chat", json={"message": "one"}
        )
        TestClient(make_app(metadata=lambda request: {"path": request.url.path})).post(
            "/chat", json={"message": "two"}
        )

        first, second = conversations(exporter)
        assert "api" == first.metadata["service"]
        assert "/chat" == second.metadata["path"]

    @pytest.mark.parametrize(
        "resolver",
        [lambda request: request.query_params["missing"], lambda request: 1.5],
        ids=["raises", "wrong-type"],
    )
    def test_failing_resolver_serves_the_request_anonymously(
        self,
        exporter: InMemoryExporter,
        caplog: pytest.LogCaptureFixture,
        resolver: Callable[[Request], Any],
    ) -> None:
        """A failing resolver: 200, recorded without user or session, one warning."""
        client = TestClient(make_app(user_id=resolver))
        headers = {"X-User-Id": "u1", "X-Session-Id": "s-1"}

        with caplog.at_level(logging.DEBUG, logger="context_trace"):
            first = client.post("/chat", json={"message": "a"}, headers=headers)
            second = client.post("/chat", json={"message": "b"}, headers=headers)

        assert [200, 200] == [first.status_code, second.status_code]
        assert "X-Session-Id" not in first.headers
        assert [(None, None), (None, None)] == [
            (c.user_id, c.session_id) for c in conversations(exporter)
        ]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert 1 == len(warnings)
        assert "could not resolve the user/session" in warnings[0].getMessage()

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"user_id": "u1"}, "user_id must be a callable"),
            ({"session_id": 3}, "session_id must be a callable"),
            ({"metadata": {"k": object()}}, r"metadata\['k'\]"),
        ],
    )
    def test_bad_arguments_are_rejected(
        self, kwargs: dict[str, Any], match: str
    ) -> None:
        """Bad resolver or metadata arguments fail at construction, naming the argument."""

        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise AssertionError("never called")

        with pytest.raises(TypeError, match=match):
            ContextTraceMiddleware(app, **kwargs)


class TestPassThrough:
    def test_websocket_is_not_scoped(self, exporter: InMemoryExporter) -> None:
        """websocket scopes pass straight through, headers or not."""
        client = TestClient(make_app())

        with client.websocket_connect("/ws", headers={"X-User-Id": "u1"}) as ws:
            message = ws.receive_json()

        assert {"scoped": False} == message

    def test_lifespan_reaches_the_app(self) -> None:
        """The app's own lifespan still runs through the middleware."""
        app = make_app()

        with TestClient(app):
            started = list(app.state.events)

        assert ["startup"] == started
        assert ["startup", "shutdown"] == app.state.events

    async def test_other_scope_types_pass_through(self) -> None:
        """A scope type the middleware does not know reaches the app untouched."""
        seen: list[tuple[str, bool]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append((scope["type"], current_scope() is not None))

        async def receive() -> dict[str, Any]:
            raise AssertionError("never called")

        async def send(message: Any) -> None:
            raise AssertionError("never called")

        scope = {"type": "custom", "headers": [(b"x-user-id", b"u1")]}
        await ContextTraceMiddleware(app)(scope, receive, send)

        assert [("custom", False)] == seen

    def test_two_middlewares_record_once(self, exporter: InMemoryExporter) -> None:
        """Wrapped twice, the outer middleware scopes the request and the inner passes."""
        app = make_app(user_id=lambda request: "inner")
        app.add_middleware(ContextTraceMiddleware, user_id=lambda request: "outer")

        TestClient(app).post("/chat", json={"message": "hi"})

        [conversation] = conversations(exporter)
        assert "outer" == conversation.user_id

    def test_scope_is_restored_after_the_request(
        self, exporter: InMemoryExporter
    ) -> None:
        """Nothing leaks into the caller's context."""
        TestClient(make_app()).post(
            "/chat", json={"message": "hi"}, headers={"X-User-Id": "u1"}
        )

        assert current_scope() is None

    def test_lazy_attribute_is_this_module(self) -> None:
        """context_trace.asgi is the integration module."""
        assert ContextTraceMiddleware is context_trace.asgi.ContextTraceMiddleware


class _ShutdownProbe:
    """An outer ASGI layer noting how many records were exported when shutdown completed."""

    def __init__(self, app: Any, exporter: InMemoryExporter) -> None:
        self.app = app
        self.exporter = exporter
        self.at_shutdown: list[tuple[str, int]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def probe(message: Any) -> None:
            if message["type"].startswith("lifespan.shutdown"):
                self.at_shutdown.append(
                    (message["type"], len(self.exporter.conversations))
                )
            await send(message)

        await self.app(scope, receive, probe)


class TestLifespanFlush:
    def test_shutdown_flushes_before_completing(self) -> None:
        """Records still queued are exported by the time lifespan.shutdown.complete is sent."""
        exporter = InMemoryExporter()
        # A long interval: nothing is exported in the background during the test.
        configure(exporter=exporter, flush_interval=60.0)
        probe = _ShutdownProbe(make_app(), exporter)

        with TestClient(probe) as client:
            client.post("/chat", json={"message": "hi"}, headers={"X-User-Id": "u1"})
            exported_before_shutdown = len(exporter.conversations)

        assert 0 == exported_before_shutdown
        assert [("lifespan.shutdown.complete", 1)] == probe.at_shutdown
        assert "u1" == exporter.conversations[0].user_id

    async def test_failed_shutdown_flushes_too(self) -> None:
        """lifespan.shutdown.failed also waits for the flush."""
        exporter = InMemoryExporter()
        configure(exporter=exporter, flush_interval=60.0)
        with track_user("u1"):
            await CHAIN.ainvoke("queued before shutdown")

        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert "lifespan.startup" == (await receive())["type"]
            await send({"type": "lifespan.startup.complete"})
            assert "lifespan.shutdown" == (await receive())["type"]
            await send({"type": "lifespan.shutdown.failed", "message": "boom"})

        inbox = [{"type": "lifespan.shutdown"}, {"type": "lifespan.startup"}]
        sent: list[tuple[str, int]] = []

        async def receive() -> dict[str, Any]:
            return inbox.pop()

        async def send(message: Any) -> None:
            sent.append((message["type"], len(exporter.conversations)))

        await ContextTraceMiddleware(app)({"type": "lifespan"}, receive, send)

        assert [
            ("lifespan.startup.complete", 0),
            ("lifespan.shutdown.failed", 1),
        ] == sent
