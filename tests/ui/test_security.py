"""Dashboard security: loopback by default, token checks, escaping, read-only."""

from __future__ import annotations

import http.client
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from context_trace.ui.app import CSP
from context_trace.ui.serve import ENV_UI_TOKEN, UIError, is_loopback, make_server

from .conftest import XSS_IMG, XSS_SCRIPT, Server, checksum

TOKEN = "t0ken-for-tests-only"


def test_non_loopback_without_token_refuses_to_start(store_path: Path):
    """--host 0.0.0.0 with no token exits 1 naming the fix, without listening."""
    result = subprocess.run(
        [sys.executable, "-m", "context_trace", "ui", "--db", str(store_path),
         "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert 1 == result.returncode
    assert f"set a token with --token or {ENV_UI_TOKEN}" in result.stderr
    assert "" == result.stdout


def test_make_server_refuses_non_loopback(store_path: Path):
    """make_server() raises UIError for a LAN address without a token."""
    with pytest.raises(UIError, match="reachable from other machines"):
        make_server(store_path, "192.168.1.10", 0, None)


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.org", False)],
)  # fmt: skip
def test_is_loopback(host: str, expected: bool):
    """Only loopback addresses count as local."""
    assert expected == is_loopback(host)


@pytest.fixture(scope="module")
def guarded(store_path: Path):
    with Server(store_path, env={ENV_UI_TOKEN: TOKEN}) as srv:
        yield srv


class TestToken:
    def test_missing_or_wrong_token_is_401(self, guarded):
        """Without the token, pages and API answer 401."""
        assert 401 == guarded.get("/api/users")[0]
        assert 401 == guarded.get("/users")[0]
        assert 401 == guarded.get("/api/users", {"Authorization": "Bearer nope"})[0]
        assert 401 == guarded.get("/users?token=nope")[0]

    def test_bearer_header(self, guarded):
        """Authorization: Bearer <token> is accepted."""
        status, body = guarded.get("/api/users", {"Authorization": f"Bearer {TOKEN}"})

        assert 200 == status
        assert 4 == body["total"]

    def test_query_token_sets_httponly_samesite_cookie(self, guarded):
        """?token= redirects without it and sets an HttpOnly SameSite cookie that works."""

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(f"{guarded.url}/users?token={TOKEN}&sort=user", timeout=10)
            raise AssertionError("expected a redirect")
        except urllib.error.HTTPError as exc:
            status, location, cookie = (
                exc.code,
                exc.headers["Location"],
                exc.headers["Set-Cookie"],
            )

        assert 303 == status
        assert "/users?sort=user" == location
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert TOKEN not in cookie
        value = cookie.split(";")[0]
        assert 200 == guarded.get("/api/users", {"Cookie": value})[0]

    def test_login_form(self, guarded):
        """POST /login with the token sets the cookie."""
        conn = http.client.HTTPConnection(guarded.url.split("//")[1], timeout=10)
        conn.request("POST", "/login", body=f"token={TOKEN}",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        response = conn.getresponse()
        cookie = response.getheader("Set-Cookie") or ""
        conn.close()

        assert 303 == response.status
        assert 200 == guarded.get("/", {"Cookie": cookie.split(";")[0]})[0]

    def test_token_never_printed(self, store_path: Path):
        """The token does not appear in the server's output."""
        srv = Server(store_path, "--token", TOKEN)
        srv.get(f"/users?token={TOKEN}")
        code, err = srv.stop()

        assert 0 == code
        assert TOKEN not in err + srv.output


class TestHeadersAndEscaping:
    def test_csp_on_every_response(self, server):
        """Pages and API responses carry the CSP without inline script."""
        server.get("/users")
        page_csp = server.last_headers["Content-Security-Policy"]
        server.get("/api/users")

        assert CSP == page_csp == server.last_headers["Content-Security-Policy"]
        assert "unsafe-inline" not in CSP
        assert "script-src 'self'" in CSP

    def test_stored_markup_is_escaped(self, server):
        """A stored <script> or <img onerror> shows as text in the session page."""
        status, page = server.get("/session?id=s-b1")

        assert 200 == status
        assert XSS_SCRIPT not in page
        assert XSS_IMG not in page
        assert "&lt;script&gt;window.__pwned = 1;" in page
        assert "&lt;img src=x onerror=" in page


def test_browsing_leaves_the_store_unchanged(store_path: Path):
    """A session of requests over every page and endpoint changes no byte of the store."""
    before = checksum(store_path)
    srv = Server(store_path)
    try:
        for path in ["/", "/?range=all", "/users", "/users?sort=errors&q=a",
                     "/user?id=alice", "/user?anonymous=1", "/session?id=s-a1",
                     "/conversations?q=order", "/conversations?errors=1",
                     "/api/overview?range=24h", "/api/users", "/api/conversations",
                     "/api/session?id=s-b1", "/api/user?id=bob", "/api/models"]:  # fmt: skip
            assert 200 == srv.get(path)[0], path
    finally:
        srv.stop()

    assert before == checksum(store_path)
