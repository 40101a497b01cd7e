"""The Flask extension: per-request scopes, resolvers, streaming, threads, a real server."""

from __future__ import annotations

import importlib.machinery
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from flask import Flask, Response, g, request, stream_with_context
from langchain_core.language_models.fake_chat_models import (
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from werkzeug.serving import make_server

import context_trace
from context_trace import (
    Conversation,
    InMemoryExporter,
    context_session,
    current_session,
    current_user,
    flush,
    track_user,
)
from context_trace._scopes import current_scope
from context_trace.integrations import ContextTraceWSGIMiddleware
from context_trace.integrations.flask import ContextTrace

CHAIN = ParrotFakeChatModel() | StrOutputParser()


def streaming_chain(answer: str) -> Any:
    """A chain whose model streams *answer* in several chunks."""
    return GenericFakeChatModel(messages=iter([AIMessage(answer)])) | StrOutputParser()


def session_id() -> str | None:
    session = current_session()
    return session.id if session is not None else None


def add_routes(app: Flask) -> Flask:
    """The views every test app has."""

    @app.post("/chat")
    def chat() -> dict[str, Any]:
        answer = CHAIN.invoke(request.get_json()["message"])
        return {"answer": answer, "user": current_user(), "session": session_id()}

    @app.post("/chat/<user_id>")
    @track_user(user_id=lambda user_id: user_id)
    def chat_for(user_id: str) -> dict[str, Any]:
        answer = CHAIN.invoke(request.get_json()["message"])
        return {"answer": answer, "user": current_user(), "session": session_id()}

    @app.get("/stream-with-context")
    def stream_with_request_context() -> Response:
        def generate() -> Iterator[str]:
            # Reads the request while the server iterates the body.
            message = request.args["message"]
            yield from streaming_chain(f"streamed for {message}").stream(message)

        return Response(stream_with_context(generate()))

    @app.get("/stream")
    def stream() -> Response:
        message = request.args["message"]

        def generate() -> Iterator[str]:
            yield from streaming_chain(f"streamed for {message}").stream(message)
            yield f"|{current_user()}"

        return Response(generate())

    @app.get("/stream/<user_id>")
    @track_user(user_id=lambda user_id: user_id)
    def stream_for(user_id: str) -> Response:
        message = request.args["message"]

        def generate() -> Iterator[str]:
            yield from streaming_chain(f"streamed for {message}").stream(message)
            yield f"|{current_user()}"

        return Response(generate())

    @app.get("/stream-with-context/<user_id>")
    @track_user(user_id=lambda user_id: user_id)
    def stream_with_context_for(user_id: str) -> Response:
        def generate() -> Iterator[str]:
            message = request.args["message"]
            yield from streaming_chain(f"streamed for {message}").stream(message)
            yield f"|{current_user()}"

        return Response(stream_with_context(generate()))

    return app


def make_app(**options: Any) -> Flask:
    app = Flask(__name__)
    ContextTrace(app, **options)
    return add_routes(app)


def conversations(exporter: InMemoryExporter) -> list[Conversation]:
    assert flush(10.0)
    return exporter.conversations


def transcript(conversation: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conversation.messages]


class TestHeaderDefaults:
    def test_user_header_attributes_the_turn(self, exporter: InMemoryExporter) -> None:
        """X-User-Id names the user of every turn in the request."""
        client = make_app().test_client()

        response = client.post(
            "/chat", json={"message": "hi"}, headers={"X-User-Id": "u1"}
        )

        assert {"answer": "hi", "user": "u1", "session": None} == response.json
        [conversation] = conversations(exporter)
        assert ("u1", None) == (conversation.user_id, conversation.session_id)
        assert [("user", "hi"), ("assistant", "hi")] == transcript(conversation)

    def test_session_header_opens_a_session_and_is_echoed(
        self, exporter: InMemoryExporter
    ) -> None:
        """X-Session-Id puts the turn in that session and comes back on the response."""
        client = make_app().test_client()

        response = client.post(
            "/chat",
            json={"message": "hi"},
            headers={"X-User-Id": "u1", "X-Session-Id": "s-1"},
        )

        assert "s-1" == response.headers["X-Session-Id"]
        assert {"answer": "hi", "user": "u1", "session": "s-1"} == response.json
        [conversation] = conversations(exporter)
        assert ("u1", "s-1") == (conversation.user_id, conversation.session_id)

    def test_request_without_identity_is_recorded_anonymously(
        self, exporter: InMemoryExporter
    ) -> None:
        """No headers: the turn is recorded without user or session, no header echoed."""
        client = make_app().test_client()

        response = client.post("/chat", json={"message": "hi"})

        assert "X-Session-Id" not in response.headers
        [conversation] = conversations(exporter)
        assert (None, None) == (conversation.user_id, conversation.session_id)

    def test_session_header_set_by_the_app_is_kept(
        self, exporter: InMemoryExporter
    ) -> None:
        """A view that sets X-Session-Id itself keeps its value, not a second header."""
        app = make_app()

        @app.get("/own-header")
        def own_header() -> Response:
            return Response("ok", headers={"X-Session-Id": "mine"})

        response = app.test_client().get("/own-header", headers={"X-Session-Id": "s-1"})

        assert ["mine"] == response.headers.getlist("X-Session-Id")

    def test_scope_is_restored_after_the_request(
        self, exporter: InMemoryExporter
    ) -> None:
        """The test client runs the app on this thread: nothing leaks out of it."""
        client = make_app().test_client()

        client.post("/chat", json={"message": "hi"}, headers={"X-User-Id": "u1"})
        client.get("/stream?message=x", headers={"X-User-Id": "u2"})

        assert current_scope() is None


class TestResolvers:
    def test_resolver_uses_flask_request_and_wins_over_the_header(
        self, exporter: InMemoryExporter
    ) -> None:
        """A user_id callable runs in the request context and replaces X-User-Id."""
        client = make_app(user_id=lambda: request.args["uid"]).test_client()

        response = client.post(
            "/chat?uid=from-query", json={"message": "hi"}, headers={"X-User-Id": "u1"}
        )

        assert "from-query" == response.json["user"]
        [conversation] = conversations(exporter)
        assert "from-query" == conversation.user_id

    def test_session_resolver_and_header_user(self, exporter: InMemoryExporter) -> None:
        """A session_id callable opens that session; the user still comes from X-User-Id."""
        client = make_app(session_id=lambda: request.cookies["sid"]).test_client()
        client.set_cookie("sid", "cookie-session")

        response = client.post(
            "/chat", json={"message": "hi"}, headers={"X-User-Id": "u1"}
        )

        assert "cookie-session" == response.headers["X-Session-Id"]
        [conversation] = conversations(exporter)
        assert ("u1", "cookie-session") == (
            conversation.user_id,
            conversation.session_id,
        )

    def test_resolver_sees_what_earlier_before_request_functions_set(
        self, exporter: InMemoryExporter
    ) -> None:
        """Resolvers run after the before_request functions registered before init_app."""
        app = Flask(__name__)

        @app.before_request
        def authenticate() -> None:
            g.account = request.headers["Authorization"].removeprefix("Bearer ")

        ContextTrace(app, user_id=lambda: g.account)
        client = add_routes(app).test_client()

        client.post(
            "/chat", json={"message": "hi"}, headers={"Authorization": "Bearer acct-7"}
        )

        [conversation] = conversations(exporter)
        assert "acct-7" == conversation.user_id

    def test_resolver_returning_none_leaves_the_user_unset(
        self, exporter: InMemoryExporter
    ) -> None:
        """A resolver is the only source for its field: None means no user."""
        client = make_app(user_id=lambda: None).test_client()

        client.post("/chat", json={"message": "hi"}, headers={"X-User-Id": "u1"})

        [conversation] = conversations(exporter)
        assert conversation.user_id is None

    def test_int_user_id_is_recorded_as_str(self, exporter: InMemoryExporter) -> None:
        """A resolver may return an int id."""
        client = make_app(user_id=lambda: 42).test_client()

        client.post("/chat", json={"message": "hi"})

        [conversation] = conversations(exporter)
        assert "42" == conversation.user_id

    def test_metadata_static_and_callable(self, exporter: InMemoryExporter) -> None:
        """Static metadata and a metadata callable both reach the turn."""
        static = make_app(metadata={"service": "web"}).test_client()
        dynamic = make_app(metadata=lambda: {"path": request.path}).test_client()

        static.post("/chat", json={"message": "one"})
        dynamic.post("/chat", json={"message": "two"})

        first, second = conversations(exporter)
        assert "web" == first.metadata["service"]
        assert "/chat" == second.metadata["path"]

    @pytest.mark.parametrize(
        "resolver",
        [lambda: request.args["missing"], lambda: {"not": "an id"}],
        ids=["raises", "wrong-type"],
    )
    def test_failing_resolver_serves_the_request_anonymously(
        self,
        exporter: InMemoryExporter,
        caplog: pytest.LogCaptureFixture,
        resolver: Callable[[], Any],
    ) -> None:
        """A failing resolver: 200, turns recorded without user or session, one warning."""
        client = make_app(user_id=resolver).test_client()
        headers = {"X-User-Id": "u1", "X-Session-Id": "s-1"}

        with caplog.at_level(logging.DEBUG, logger="context_trace"):
            first = client.post("/chat", json={"message": "a"}, headers=headers)
            second = client.post("/chat", json={"message": "b"}, headers=headers)

        assert [200, 200] == [first.status_code, second.status_code]
        assert {"answer": "a", "user": None, "session": None} == first.json
        assert [(None, None), (None, None)] == [
            (c.user_id, c.session_id) for c in conversations(exporter)
        ]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert 1 == len(warnings)
        assert "could not resolve the user/session" in warnings[0].getMessage()


class _FakeUser:
    def __init__(self, user_id: str | None) -> None:
        self._id = user_id
        self.is_authenticated = user_id is not None

    def get_id(self) -> str | None:
        return self._id


class TestFlaskLogin:
    """
    flask-login is not installed here: a minimal module with its ``current_user``
    API (``is_authenticated``, ``get_id()``) stands in for it.
    """

    @pytest.fixture
    def login(self, monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
        state = types.SimpleNamespace(user=_FakeUser(None))
        module = types.ModuleType("flask_login")
        module.__spec__ = importlib.machinery.ModuleSpec("flask_login", None)

        def __getattr__(name: str) -> Any:
            if name == "current_user":
                return state.user
            raise AttributeError(name)

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        monkeypatch.setitem(sys.modules, "flask_login", module)
        return state

    def make_login_app(self) -> Flask:
        app = make_app()
        app.login_manager = object()  # type: ignore[attr-defined]
        return app

    def test_authenticated_user_is_the_default(
        self, exporter: InMemoryExporter, login: types.SimpleNamespace
    ) -> None:
        """Without X-User-Id, flask-login's authenticated user is the user."""
        login.user = _FakeUser("logged-in")
        client = self.make_login_app().test_client()

        client.post("/chat", json={"message": "hi"})

        [conversation] = conversations(exporter)
        assert "logged-in" == conversation.user_id

    def test_header_wins_over_flask_login(
        self, exporter: InMemoryExporter, login: types.SimpleNamespace
    ) -> None:
        """X-User-Id, when given, wins over the logged-in user."""
        login.user = _FakeUser("logged-in")
        client = self.make_login_app().test_client()

        client.post("/chat", json={"message": "hi"}, headers={"X-User-Id": "u1"})

        [conversation] = conversations(exporter)
        assert "u1" == conversation.user_id

    def test_anonymous_user_gives_no_user(
        self, exporter: InMemoryExporter, login: types.SimpleNamespace
    ) -> None:
        """An unauthenticated current_user leaves the turn without a user."""
        client = self.make_login_app().test_client()

        client.post("/chat", json={"message": "hi"})

        [conversation] = conversations(exporter)
        assert conversation.user_id is None


class TestRouteOverride:
    def test_track_user_on_a_view_overrides_the_header_user(
        self, exporter: InMemoryExporter
    ) -> None:
        """@track_user(user_id=lambda user_id: user_id) on /chat/<user_id> wins; the session stays."""
        client = make_app().test_client()

        response = client.post(
            "/chat/u-route",
            json={"message": "hi"},
            headers={"X-User-Id": "u-header", "X-Session-Id": "s-1"},
        )

        assert {"answer": "hi", "user": "u-route", "session": "s-1"} == response.json
        [conversation] = conversations(exporter)
        assert ("u-route", "s-1") == (conversation.user_id, conversation.session_id)


class TestStreaming:
    def test_stream_with_context_is_attributed(
        self, exporter: InMemoryExporter
    ) -> None:
        """A stream_with_context generator calling chain.stream records for the request's user."""
        client = make_app().test_client()

        response = client.get(
            "/stream-with-context?message=hello", headers={"X-User-Id": "u-stream"}
        )

        assert b"streamed for hello" == response.data
        [conversation] = conversations(exporter)
        assert "u-stream" == conversation.user_id
        assert [("user", "hello"), ("assistant", "streamed for hello")] == transcript(
            conversation
        )

    @pytest.mark.parametrize("route", ["/stream", "/stream-with-context"])
    def test_a_streaming_view_with_a_resolver_is_attributed_to_its_user(
        self, exporter: InMemoryExporter, route: str
    ) -> None:
        """@track_user(user_id=lambda user_id: ...) on a view that streams its body."""
        client = make_app().test_client()

        response = client.get(
            f"{route}/u-route?message=hello",
            headers={"X-User-Id": "u-header", "X-Session-Id": "s-3"},
        )

        assert b"streamed for hello|u-route" == response.data
        [conversation] = conversations(exporter)
        assert ("u-route", "s-3") == (conversation.user_id, conversation.session_id)
        assert [("user", "hello"), ("assistant", "streamed for hello")] == transcript(
            conversation
        )

    def test_plain_generator_is_attributed(self, exporter: InMemoryExporter) -> None:
        """A plain generator runs after the view returned and still sees the scope."""
        client = make_app().test_client()

        response = client.get(
            "/stream?message=hello",
            headers={"X-User-Id": "u-plain", "X-Session-Id": "s-9"},
        )

        assert b"streamed for hello|u-plain" == response.data
        assert "s-9" == response.headers["X-Session-Id"]
        [conversation] = conversations(exporter)
        assert ("u-plain", "s-9") == (conversation.user_id, conversation.session_id)

    def test_body_iterated_on_another_thread_is_attributed(
        self, exporter: InMemoryExporter
    ) -> None:
        """A server that sends the body from another thread still gets the scope."""
        client = make_app().test_client()
        response = client.get(
            "/stream?message=hello", headers={"X-User-Id": "u-thread"}, buffered=False
        )
        received: list[bytes] = []

        # A plain thread starts with an empty context: only the body wrapper
        # can bring the request's scope there.
        thread = threading.Thread(target=lambda: received.append(response.get_data()))
        thread.start()
        thread.join(10.0)
        response.close()

        assert [b"streamed for hello|u-thread"] == received
        [conversation] = conversations(exporter)
        assert "u-thread" == conversation.user_id

    def test_close_runs_inside_the_scope(self, exporter: InMemoryExporter) -> None:
        """Closing a half-sent body runs the generator's cleanup inside the scope."""
        app = make_app()
        seen_at_close: list[str | None] = []

        @app.get("/cleanup")
        def cleanup() -> Response:
            def generate() -> Iterator[str]:
                try:
                    yield "first"
                    yield "second"
                finally:
                    seen_at_close.append(current_user())

            return Response(generate())

        response = app.test_client().get(
            "/cleanup", headers={"X-User-Id": "u-close"}, buffered=False
        )
        chunks = iter(response.response)
        first = next(chunks)
        response.close()

        assert b"first" == first
        assert ["u-close"] == seen_at_close


class TestExtension:
    def test_init_app_in_an_app_factory(self, exporter: InMemoryExporter) -> None:
        """ContextTrace() then init_app(app) sets the app up and registers itself."""
        ext = ContextTrace()
        app = add_routes(Flask(__name__))

        ext.init_app(app)
        app.test_client().post(
            "/chat", json={"message": "hi"}, headers={"X-User-Id": "u1"}
        )

        assert ext is app.extensions["context_trace"]
        [conversation] = conversations(exporter)
        assert "u1" == conversation.user_id

    def test_init_app_twice_wraps_once(self, exporter: InMemoryExporter) -> None:
        """A second init_app with the same extension changes nothing."""
        ext = ContextTrace()
        app = add_routes(Flask(__name__))

        ext.init_app(app)
        ext.init_app(app)
        app.test_client().post(
            "/chat", json={"message": "hi"}, headers={"X-User-Id": "u1"}
        )

        assert isinstance(app.wsgi_app, ContextTraceWSGIMiddleware)
        assert not isinstance(app.wsgi_app.app, ContextTraceWSGIMiddleware)
        assert 1 == len(conversations(exporter))

    def test_second_extension_is_rejected(self) -> None:
        """Two ContextTrace instances on one app is an error, not double wrapping."""
        app = make_app()

        with pytest.raises(RuntimeError, match="already set up"):
            ContextTrace(app)

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"user_id": "u1"}, TypeError, "user_id must be a callable"),
            ({"session_id": 3}, TypeError, "session_id must be a callable"),
            ({"metadata": {"k": object()}}, TypeError, r"metadata\['k'\]"),
            ({"metadata": ["k"]}, TypeError, "metadata must be a mapping"),
        ],
    )
    def test_bad_arguments_are_rejected(
        self, kwargs: dict[str, Any], error: type[Exception], match: str
    ) -> None:
        """Bad resolver or metadata arguments fail at construction, naming the argument."""
        with pytest.raises(error, match=match):
            ContextTrace(**kwargs)

    def test_init_app_rejects_a_non_flask_app(self) -> None:
        """init_app names the expected type."""
        with pytest.raises(TypeError, match=r"app must be a flask\.Flask"):
            ContextTrace().init_app(object())  # type: ignore[arg-type]

    def test_init_app_after_the_first_request_changes_nothing(self) -> None:
        """Flask refuses the hook once the app has served; wsgi_app stays unwrapped."""
        app = add_routes(Flask(__name__))
        app.test_client().post("/chat", json={"message": "hi"})
        original = app.wsgi_app

        with pytest.raises(AssertionError, match="already handled its first request"):
            ContextTrace(app)

        assert original == app.wsgi_app
        assert "context_trace" not in app.extensions

    def test_lazy_attribute_is_this_module(self) -> None:
        """context_trace.flask is the integration module."""
        assert ContextTrace is context_trace.flask.ContextTrace


class TestConcurrency:
    def test_200_requests_from_8_threads(self, exporter: InMemoryExporter) -> None:
        """200 requests from 8 threads: 200 records, each attributed to its own user."""
        app = make_app()
        local = threading.local()

        def call(i: int) -> str:
            if not hasattr(local, "client"):
                local.client = app.test_client()
            response = local.client.post(
                "/chat",
                json={"message": f"message from user-{i}"},
                headers={"X-User-Id": f"user-{i}", "X-Session-Id": f"session-{i}"},
            )
            return str(response.json["user"])

        with ThreadPoolExecutor(8) as pool:
            users = list(pool.map(call, range(200)))

        records = conversations(exporter)
        assert [f"user-{i}" for i in range(200)] == users
        assert 200 == len(records)
        mismatches = [
            c
            for c in records
            if c.messages[0].content != f"message from {c.user_id}"
            or c.session_id != f"session-{c.user_id.removeprefix('user-')}"  # type: ignore[union-attr]
        ]
        assert [] == mismatches
        assert {f"user-{i}" for i in range(200)} == {c.user_id for c in records}


class TestRealServer:
    @pytest.fixture
    def base_url(self) -> Iterator[str]:
        server = make_server("127.0.0.1", 0, make_app(), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10.0)

    def test_concurrent_requests_over_loopback(
        self, exporter: InMemoryExporter, base_url: str
    ) -> None:
        """A threaded werkzeug server on 127.0.0.1: 40 concurrent requests, each attributed."""

        def call(client: httpx.Client, i: int) -> tuple[int, str | None, str]:
            headers = {"X-User-Id": f"user-{i}", "X-Session-Id": f"session-{i}"}
            if i % 2:
                response = client.get(
                    "/stream", params={"message": f"m{i}"}, headers=headers
                )
                body = response.text
            else:
                response = client.post(
                    "/chat", json={"message": f"m{i}"}, headers=headers
                )
                body = response.json()["answer"]
            return response.status_code, response.headers.get("X-Session-Id"), body

        with (
            httpx.Client(base_url=base_url, timeout=30.0) as client,
            ThreadPoolExecutor(8) as pool,
        ):
            results = list(pool.map(lambda i: call(client, i), range(40)))

        assert [
            (
                200,
                f"session-{i}",
                f"streamed for m{i}|user-{i}" if i % 2 else f"m{i}",
            )
            for i in range(40)
        ] == results
        records = conversations(exporter)
        assert 40 == len(records)
        assert {(f"user-{i}", f"session-{i}", f"m{i}") for i in range(40)} == {
            (c.user_id, c.session_id, c.messages[0].content) for c in records
        }


class TestSessionHeader:
    """X-Session-Id names the session a view put its turn in, over a real server."""

    @pytest.fixture
    def base_url(self) -> Iterator[str]:
        app = Flask(__name__)
        ContextTrace(app)

        @app.post("/own-session")
        def own_session() -> dict[str, Any]:
            with context_session("route-s"):
                answer = CHAIN.invoke(request.get_json()["message"])
            return {"answer": answer}

        @app.post("/decorated")
        @context_session()
        def decorated() -> dict[str, Any]:
            answer = CHAIN.invoke(request.get_json()["message"])
            return {"answer": answer, "session": session_id()}

        @app.post("/tracked/<user_id>")
        @track_user(
            user_id=lambda user_id: user_id, session_id=lambda user_id: f"s-{user_id}"
        )
        def tracked(user_id: str) -> dict[str, Any]:
            return {"answer": CHAIN.invoke(request.get_json()["message"])}

        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10.0)

    @pytest.mark.parametrize("sent", [None, "from-the-client"])
    @pytest.mark.parametrize(
        ("path", "expected"),
        [("/own-session", "route-s"), ("/tracked/ann", "s-ann"), ("/decorated", None)],
    )
    def test_header_names_the_session_the_view_used(
        self,
        exporter: InMemoryExporter,
        base_url: str,
        path: str,
        expected: str | None,
        sent: str | None,
    ) -> None:
        """A view's own context_session (or track_user session) is the one in
        X-Session-Id, with or without a session header on the request."""
        headers = {"X-Session-Id": sent} if sent else {}
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            response = client.post(path, json={"message": "hi"}, headers=headers)
        [conversation] = conversations(exporter)

        assert 200 == response.status_code
        assert conversation.session_id is not None
        assert expected in (None, conversation.session_id)
        assert conversation.session_id == response.headers.get("X-Session-Id")
