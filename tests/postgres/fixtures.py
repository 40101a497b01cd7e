"""
A real PostgreSQL server for the tests (``server.py``), one per test session.

The root ``conftest.py`` imports these fixtures, so the PostgreSQL tests here
and the store contract suite (``tests/store``) share one server.

Without Debian's ``postgresql`` package the README's test command skips these
tests, saying how to install it; CI (``CI=true``, or
``CONTEXT_TRACE_REQUIRE_POSTGRES=1``, which ``.ci/run`` sets) fails them
instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .server import INSTALL_HINT, READER, READER_PASSWORD, Server, binaries

REQUIRE_POSTGRES_ENV = "CONTEXT_TRACE_REQUIRE_POSTGRES"
_FALSE = ("", "0", "false", "no", "off")


def _required() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() not in _FALSE
        for name in ("CI", REQUIRE_POSTGRES_ENV)
    )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """A PostgreSQL server on a free loopback port, run as an unprivileged user."""
    bindir = binaries()
    if bindir is None:
        message = f"the PostgreSQL tests need Debian's postgresql ({INSTALL_HINT})"
        if _required():
            pytest.fail(message)
        pytest.skip(message)
    server = Server(bindir)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(pg_server: Server) -> str:
    """The writer's URL to a fresh database holding an empty store schema."""
    return pg_server.url(database=pg_server.database())


@pytest.fixture
def pg_reader_url(pg_server: Server, pg_url: str) -> str:
    """The read-only role's URL to the same database as ``pg_url``."""
    database = pg_url.rsplit("/", 1)[1]
    return pg_server.url(READER, READER_PASSWORD, database)
