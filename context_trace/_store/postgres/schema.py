"""
The PostgreSQL store's schema: the versioned migrations (one SQL file per
version in ``migrations/``), applied under an advisory lock, and :func:`check`.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from typing import Any

from .connection import (
    _CONNECT_TIMEOUT,
    SCHEMA,
    StoreUnavailable,
    _psycopg,
    connect,
    safe_url,
)

# pg_advisory_xact_lock's key for migrations: "ctrace" + 1 in hex.
_MIGRATION_LOCK = 0x637472616365_01
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its number, its name and its SQL."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The package's migrations, in version order (one ``NNNN_name.sql`` each)."""
    found: list[Migration] = []
    folder = importlib.resources.files(__package__).joinpath("migrations")
    for item in folder.iterdir():
        match = _MIGRATION_FILE.match(item.name)
        if match:
            found.append(
                Migration(int(match.group(1)), match.group(2), item.read_text("utf-8"))
            )
    found.sort(key=lambda m: m.version)
    return found


def latest_version() -> int:
    """The schema version this package writes."""
    return migrations()[-1].version


def _applied(conn: Any) -> set[int] | None:
    """The versions applied, or None when the store has no schema yet."""
    exists = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.schema_migrations",)
    ).fetchone()[0]
    if not exists:
        return None
    return {
        int(row[0]) for row in conn.execute("SELECT version FROM schema_migrations")
    }


def migrate(conn: Any) -> list[int]:
    """
    Bring the schema up to the newest version; return the versions applied now.

    The role needs only to own (or have CREATE on) the store's schema; it
    creates the schema when it may, else a DBA creates it for the role
    (``CREATE SCHEMA context_trace AUTHORIZATION writer``). Several hosts may
    call this at once: each version is applied by one of them, under a
    transaction-scoped advisory lock, and the others find it applied.

    Raises:
        StoreUnavailable: the schema is newer than this package, or the role
            may not create it.
    """
    latest = latest_version()
    applied = _applied(conn)
    conn.rollback()
    if applied is not None and max(applied, default=0) >= latest:
        _refuse_newer(applied, latest)
        return []
    psycopg = _psycopg()
    done: list[int] = []
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            schema = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (SCHEMA,)
            ).fetchone()
            if schema is None:
                conn.execute(f"CREATE SCHEMA {SCHEMA}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = _applied(conn) or set()
            _refuse_newer(applied, latest)
            for migration in migrations():
                if migration.version in applied:
                    continue
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                done.append(migration.version)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StoreUnavailable(
            "permission denied",
            "the PostgreSQL role may not create the store's schema "
            f"({exc.diag.message_primary}); create it for the role: "
            f"CREATE SCHEMA {SCHEMA} AUTHORIZATION <role>",
        ) from None
    return done


def _refuse_newer(applied: set[int], latest: int) -> None:
    newest = max(applied, default=0)
    if newest > latest:
        raise StoreUnavailable(
            "newer schema",
            f"the PostgreSQL store has schema version {newest}, newer than this "
            f"context-trace writes ({latest}): upgrade context-trace",
        )


def check(url: str, *, timeout: float = _CONNECT_TIMEOUT, create: bool = True) -> None:
    """
    Connect to *url* now and, with *create*, bring its schema up to date.

    The fast check of ``configure()``, ``context-trace outbox`` and the
    dashboard's start-up.

    Raises:
        StoreUnavailable: which problem it is, with the server's safe URL.
    """
    conn = connect(url, timeout=timeout, read_only=not create)
    try:
        if create:
            migrate(conn)
        elif _applied(conn) is None:
            raise StoreUnavailable(
                "unknown database",
                f"the PostgreSQL database at {safe_url(url)} holds no context_trace "
                "store yet (a writer creates it on its first start)",
            )
    finally:
        conn.close()


# -- writing ---------------------------------------------------------------------------
