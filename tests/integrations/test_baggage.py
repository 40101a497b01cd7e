"""
W3C baggage between services: what httpx/requests send, what the integrations accept.

Sending goes to a real HTTP server on 127.0.0.1 that echoes the ``baggage``
header it received. Receiving runs the real ASGI middleware (through httpx's
ASGI transport, which sets the peer address) and the real Flask extension
(its test client sets ``REMOTE_ADDR``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import flask
import httpx
import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from context_trace import (
    configure,
    context_session,
    current_session,
    current_user,
    stats,
    track_user,
)
from context_trace._baggage import ENV_BAGGAGE_SECRET, BaggageTrust
from context_trace.integrations import http as ct_http
from context_trace.integrations.asgi import ContextTraceMiddleware
from context_trace.integrations.flask import ContextTrace
from tests.conftest import echo_chain

SECRET = "a-shared-secret"


class _Echo(BaseHTTPRequestHandler):
    """Answers with the ``baggage`` headers it received (a redirect on /redirect)."""

    def do_GET(self) -> None:
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/echo")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(self.headers.get_all("baggage") or []).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 echoing the baggage headers it gets."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def _unhook() -> Iterator[None]:
    """Every test starts and ends with the client libraries unhooked."""
    yield
    ct_http.uninstrument_httpx()
    ct_http.uninstrument_requests()


def sent(url: str, client: str = "httpx", **headers: str) -> list[str]:
    """The baggage headers the echo server received for one GET with *client*."""
    if client == "requests":
        return list(requests.get(url + "/echo", headers=headers, timeout=10).json())
    if client == "async":

        async def get() -> list[str]:
            async with httpx.AsyncClient() as async_client:
                response = await async_client.get(url + "/echo", headers=headers)
                return list(response.json())

        return asyncio.run(get())
    with httpx.Client() as sync_client:
        return list(sync_client.get(url + "/echo", headers=headers).json())


class TestSending:
    def test_off_by_default(self, echo_url: str) -> None:
        """Without the opt-in, requests inside a scope carry no baggage."""
        with track_user("alice"), context_session("s-1"):
            assert [] == sent(echo_url, "httpx")
            assert [] == sent(echo_url, "requests")
        assert 0 == stats()["baggage_sent"]

    @pytest.mark.parametrize("client", ["httpx", "async", "requests"])
    def test_propagate_baggage_sends_the_scope(
        self, echo_url: str, client: str
    ) -> None:
        """configure(propagate_baggage=True): each client sends user.id and session.id."""
        configure(propagate_baggage=True)
        with track_user("alice"), context_session("s-1"):
            assert ["user.id=alice,session.id=s-1"] == sent(echo_url, client)
        assert 1 == stats()["baggage_sent"]

    def test_configuring_again_without_it_stops_sending(self, echo_url: str) -> None:
        """A later configure() without propagate_baggage stops the hooks from sending."""
        configure(propagate_baggage=True)
        configure()
        with track_user("alice"):
            assert [] == sent(echo_url, "httpx")
            assert [] == sent(echo_url, "requests")

    def test_nothing_is_sent_outside_a_scope(self, echo_url: str) -> None:
        """Outside any scope (or in one with no ids) requests go out untouched."""
        configure(propagate_baggage=True)
        assert [] == sent(echo_url, "httpx")
        assert ["tenant=acme"] == sent(echo_url, "requests", baggage="tenant=acme")
        assert 0 == stats()["baggage_sent"]

    def test_ids_are_percent_encoded(self, echo_url: str) -> None:
        """Spaces, commas, semicolons, '=' and non-ASCII are percent-encoded (UTF-8)."""
        configure(propagate_baggage=True)
        with track_user("a b,c;d=é+%"):
            assert ["user.id=a%20b%2Cc%3Bd%3D%C3%A9%2B%25"] == sent(echo_url)

    def test_the_apps_own_entries_pass_through(self, echo_url: str) -> None:
        """The app's baggage entries (properties included) are kept; ours are appended."""
        configure(propagate_baggage=True)
        own = "tenant=acme;ttl=60,k=v%20w"
        with track_user("alice"):
            assert [f"{own},user.id=alice"] == sent(echo_url, "httpx", baggage=own)
            assert [f"{own},user.id=alice"] == sent(echo_url, "requests", baggage=own)

    def test_the_apps_own_user_id_wins(self, echo_url: str) -> None:
        """An app's own user.id is left as is and ours is not added next to it."""
        configure(propagate_baggage=True)
        with track_user("alice"), context_session("s-1"):
            assert ["user.id=bob"] == sent(echo_url, "httpx", baggage="user.id=bob")

    def test_a_redirect_does_not_duplicate_our_entries(self, echo_url: str) -> None:
        """requests re-sends the request after a redirect: the entries appear once."""
        configure(propagate_baggage=True)
        with track_user("alice"):
            response = requests.get(echo_url + "/redirect", timeout=10)
        assert ["user.id=alice"] == response.json()

    def test_too_many_entries_are_not_exceeded(
        self, echo_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With 63 entries already there, ours (2) would exceed 64: not added, counted, logged once."""
        configure(propagate_baggage=True)
        own = ",".join(f"k{i}=v" for i in range(63))
        with (
            caplog.at_level(logging.DEBUG, logger="context_trace"),
            track_user("alice"),
            context_session("s-1"),
        ):
            assert [own] == sent(echo_url, "httpx", baggage=own)
            assert [own] == sent(echo_url, "requests", baggage=own)
        assert 2 == stats()["baggage_not_sent"]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert 1 == len(warnings)
        assert "W3C limits" in warnings[0].getMessage()

    def test_too_many_bytes_are_not_exceeded(self, echo_url: str) -> None:
        """A header that would pass 8,192 bytes with ours is left as it is."""
        configure(propagate_baggage=True)
        own = "big=" + "x" * 8180
        with track_user("alice"):
            assert [own] == sent(echo_url, "httpx", baggage=own)
        assert 1 == stats()["baggage_not_sent"]

    def test_explicit_instrumentation_without_configure(self, echo_url: str) -> None:
        """instrument_httpx() alone sends; uninstrument_httpx() stops it."""
        ct_http.instrument_httpx()
        ct_http.instrument_httpx()  # twice: one hook
        with track_user("alice"):
            assert ["user.id=alice"] == sent(echo_url, "async")
            assert [] == sent(echo_url, "requests")
            ct_http.uninstrument_httpx()
            assert [] == sent(echo_url, "httpx")

    def test_a_secret_signs_the_entries(self, echo_url: str) -> None:
        """With baggage_secret, a context_trace.sig entry is added that a receiver verifies."""
        configure(propagate_baggage=True, baggage_secret=SECRET)
        with track_user("alice"), context_session("s-1"):
            [header] = sent(echo_url, "requests")
        assert header.startswith("user.id=alice,session.id=s-1,context_trace.sig=v1.")
        assert ("alice", "s-1") == BaggageTrust(secret=SECRET).read([header], None)
        assert (None, None) == BaggageTrust(secret="other").read([header], None)


# --------------------------------------------------------------------------- receiving
async def whoami(request: Request) -> JSONResponse:
    await echo_chain().ainvoke({"q": "hi"})
    session = current_session()
    return JSONResponse(
        {"user": current_user(), "session": session.id if session else None}
    )


def asgi_get(
    middleware: ContextTraceMiddleware, peer: str, **headers: str
) -> dict[str, Any]:
    """GET /whoami through *middleware* as seen from the client address *peer*."""

    async def get() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=middleware, client=(peer, 40000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://service"
        ) as client:
            response = await client.get("/whoami", headers=headers)
            response.raise_for_status()
            return dict(response.json())

    return asyncio.run(get())


def asgi_app(**options: Any) -> ContextTraceMiddleware:
    return ContextTraceMiddleware(
        Starlette(routes=[Route("/whoami", whoami)]), **options
    )


class TestReceivingASGI:
    def test_baggage_is_not_read_by_default(self) -> None:
        """Without accept_baggage, user.id baggage is ignored (and not counted)."""
        body = asgi_get(asgi_app(), "127.0.0.1", baggage="user.id=alice")
        assert {"user": None, "session": None} == body
        assert 0 == stats()["baggage_rejected"]

    def test_network_allowlist_accepts_and_rejects(self) -> None:
        """Unsigned entries are accepted from 10.0.0.0/8 (IPv4-mapped too), rejected (counted) elsewhere."""
        app = asgi_app(accept_baggage=BaggageTrust(["10.0.0.0/8", "::1"]))
        header = "user.id=alice,session.id=s-1"
        assert {"user": "alice", "session": "s-1"} == asgi_get(
            app, "10.20.30.40", baggage=header
        )
        assert {"user": "alice", "session": "s-1"} == asgi_get(
            app, "::1", baggage=header
        )
        assert {"user": "alice", "session": "s-1"} == asgi_get(
            app, "::ffff:10.0.0.9", baggage=header
        )
        assert {"user": None, "session": None} == asgi_get(
            app, "192.0.2.7", baggage=header
        )
        assert (3, 1) == (stats()["baggage_accepted"], stats()["baggage_rejected"])

    def test_forwarded_for_is_not_trusted(self) -> None:
        """X-Forwarded-For naming an allowlisted address does not make a peer trusted."""
        app = asgi_app(accept_baggage=BaggageTrust(["10.0.0.0/8"]))
        body = asgi_get(
            app, "192.0.2.7", baggage="user.id=alice", **{"X-Forwarded-For": "10.0.0.1"}
        )
        assert {"user": None, "session": None} == body

    def test_a_resolver_wins_over_baggage_which_wins_over_headers(self) -> None:
        """Precedence per field: the app's resolver, then trusted baggage, then X-User-Id."""
        app = asgi_app(
            accept_baggage=BaggageTrust(["127.0.0.0/8"]),
            session_id=lambda request: "from-resolver",
        )
        body = asgi_get(
            app,
            "127.0.0.1",
            baggage="user.id=from-baggage,session.id=s-baggage",
            **{"X-User-Id": "from-header"},
        )
        assert {"user": "from-baggage", "session": "from-resolver"} == body

    @pytest.mark.parametrize(
        "header",
        [
            "user.id=%FF%FE",  # not UTF-8
            "user.id=alice,user.id=bob",  # a key given twice
            "user.id=a%0Ab",  # a control character
            "user.id=alice," + ",".join(f"k{i}=v" for i in range(64)),  # 65 entries
            "user.id=alice,big=" + "x" * 8200,  # over 8,192 bytes
        ],
    )
    def test_malformed_or_too_long_baggage_is_rejected(self, header: str) -> None:
        """Malformed or oversized entries are ignored and counted, never an error."""
        app = asgi_app(accept_baggage=BaggageTrust(["127.0.0.0/8"]))
        assert {"user": None, "session": None} == asgi_get(
            app, "127.0.0.1", baggage=header
        )
        assert 1 == stats()["baggage_rejected"]

    def test_the_apps_own_baggage_is_not_counted(self) -> None:
        """Baggage without user.id/session.id is none of ours: not rejected, not counted."""
        app = asgi_app(accept_baggage=BaggageTrust(secret=SECRET))
        asgi_get(app, "192.0.2.7", baggage="tenant=acme")
        assert (0, 0) == (stats()["baggage_accepted"], stats()["baggage_rejected"])

    def test_rejections_are_logged_once_without_the_secret(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Two spoofed requests: one WARNING naming the reason; the secret is never shown."""
        trust = BaggageTrust(secret=SECRET)
        app = asgi_app(accept_baggage=trust)
        with caplog.at_level(logging.DEBUG, logger="context_trace"):
            asgi_get(app, "192.0.2.7", baggage="user.id=admin")
            asgi_get(app, "192.0.2.7", baggage="user.id=admin")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert 1 == len(warnings)
        assert "unsigned" in warnings[0].getMessage()
        assert SECRET not in caplog.text
        assert SECRET not in repr(trust)
        assert SECRET not in repr(configure(baggage_secret=SECRET))


class TestOpenTelemetryAgreement:
    def test_entries_written_by_opentelemetry_read_the_same(self) -> None:
        """OTel's W3CBaggagePropagator writes user.id/session.id that we read unchanged."""
        otel_baggage = pytest.importorskip("opentelemetry.baggage")
        propagation = pytest.importorskip("opentelemetry.baggage.propagation")
        user, session = "a b,+é/x", "s 1"
        ctx = otel_baggage.set_baggage("user.id", user)
        ctx = otel_baggage.set_baggage("session.id", session, context=ctx)
        carrier: dict[str, str] = {}
        propagation.W3CBaggagePropagator().inject(carrier, context=ctx)
        app = asgi_app(accept_baggage=BaggageTrust(["127.0.0.0/8"]))
        assert {"user": user, "session": session} == asgi_get(
            app, "127.0.0.1", baggage=carrier["baggage"]
        )

    def test_entries_we_write_read_the_same_in_opentelemetry(
        self, echo_url: str
    ) -> None:
        """What httpx sends from a scope, OTel's propagator extracts as the same ids."""
        otel_baggage = pytest.importorskip("opentelemetry.baggage")
        propagation = pytest.importorskip("opentelemetry.baggage.propagation")
        configure(propagate_baggage=True)
        with track_user("a b,+é/x"), context_session("s 1"):
            [header] = sent(echo_url)
        ctx = propagation.W3CBaggagePropagator().extract({"baggage": header})
        assert {"user.id": "a b,+é/x", "session.id": "s 1"} == dict(
            otel_baggage.get_all(ctx)
        )


class TestReceivingFlask:
    def make_app(self, trust: BaggageTrust) -> flask.Flask:
        app = flask.Flask(__name__)
        ContextTrace(app, accept_baggage=trust)

        @app.get("/whoami")
        def whoami_view() -> dict[str, Any]:
            echo_chain().invoke({"q": "hi"})
            session = current_session()
            return {"user": current_user(), "session": session.id if session else None}

        return app

    def test_network_allowlist_uses_remote_addr(self) -> None:
        """Flask: REMOTE_ADDR inside the allowlist is trusted; outside it is not."""
        client = self.make_app(BaggageTrust(["192.168.0.0/16"])).test_client()
        header = {"baggage": "user.id=alice,session.id=s-1"}
        inside = client.get(
            "/whoami", headers=header, environ_base={"REMOTE_ADDR": "192.168.1.5"}
        )
        outside = client.get(
            "/whoami", headers=header, environ_base={"REMOTE_ADDR": "192.0.2.7"}
        )
        assert {"user": "alice", "session": "s-1"} == inside.json
        assert {"user": None, "session": None} == outside.json
        assert (1, 1) == (stats()["baggage_accepted"], stats()["baggage_rejected"])


# --------------------------------------------------------------------------- configuration
class TestBadConfiguration:
    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"networks": ["10.0.0.300/8"]}, ValueError, "networks must hold CIDRs"),
            ({"networks": [10]}, TypeError, "networks must hold CIDR strings"),
            ({"secret": ""}, ValueError, "secret must not be empty"),
            ({"secret": "   "}, ValueError, "secret must not be empty"),
            ({"secret": SECRET, "max_age": 0}, ValueError, "max_age must be greater"),
            ({"secret": SECRET, "max_age": -5}, ValueError, "max_age must be greater"),
            (
                {"secret": SECRET, "max_age": "60"},
                TypeError,
                "max_age must be a number",
            ),
            ({}, ValueError, "needs networks or a secret"),
        ],
    )
    def test_baggage_trust_rejects_bad_arguments(
        self, kwargs: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        """BaggageTrust fails at construction, naming the parameter."""
        with pytest.raises(error, match=message):
            BaggageTrust(**kwargs)

    def test_the_secret_can_come_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """BaggageTrust() reads CONTEXT_TRACE_BAGGAGE_SECRET; so does configure()."""
        monkeypatch.setenv(ENV_BAGGAGE_SECRET, SECRET)
        trust = BaggageTrust()
        assert "'***'" in repr(trust)
        assert SECRET == configure().baggage_secret

    def test_configure_rejects_bad_baggage_arguments(self) -> None:
        """configure() names baggage_secret / propagate_baggage when they are bad."""
        with pytest.raises(ValueError, match="baggage_secret must not be empty"):
            configure(baggage_secret=" ")
        with pytest.raises(TypeError, match="propagate_baggage must be a bool"):
            configure(propagate_baggage="yes")  # type: ignore[arg-type]

    def test_integrations_reject_a_non_trust_accept_baggage(self) -> None:
        """accept_baggage must be a BaggageTrust: a dict fails at construction."""
        with pytest.raises(TypeError, match="accept_baggage must be"):
            asgi_app(accept_baggage={"networks": ["10.0.0.0/8"]})
        with pytest.raises(TypeError, match="accept_baggage must be"):
            ContextTrace(accept_baggage=["10.0.0.0/8"])  # type: ignore[arg-type]
