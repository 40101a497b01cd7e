"""
The PostgreSQL store: one database that the app servers share.

Each host writes its turns to its own durable outbox (a local SQLite file)
first; the outbox's ``postgresql`` sender (``_exporters/postgres.py``) then
delivers them here in batches, through :class:`PostgresStore`. This package
holds everything that speaks PostgreSQL (``connection``, ``schema``, ``write``,
``store``, ``reads``; their public names are imported here):

- **URLs and secrets.** :func:`check_url` accepts ``postgresql://`` (or
  ``postgres://``) URLs; :func:`safe_url` is the only form that reaches a
  message or a ``repr`` (the password never does).
- **Connections.** :func:`connect` opens one with a short connect timeout, the
  store's schema on the search path, and a statement timeout, so a server that
  hangs never holds the export worker for long. :func:`check` is the fast
  check ``configure()``, ``context-trace outbox`` and the dashboard run, and
  says which of the usual three things is wrong (:class:`StoreUnavailable`).
- **Schema.** :func:`migrate` applies the versioned migrations (one SQL file
  per version in ``migrations/``, recorded in ``schema_migrations``) under an
  advisory lock, so hosts starting at once apply each version exactly once.
- **Writes.** :meth:`PostgresStore.write` inserts a batch in one transaction:
  turns ``ON CONFLICT (id) DO NOTHING`` (a turn delivered twice is stored
  once), and the session and user aggregates moved only by the turns really
  inserted. Ratings are stored as given and resolved to their turn when read
  (the ``rated_turns`` view), so a rating may arrive before the turn it rates.
- **Reads.** A session's turns are ordered by start time (then end time, then
  id) whichever host served them; the history a prompt re-sent is dropped when
  the transcript is read, by the same rule the SQLite writer applies when it
  writes (``writer._strip_history``), so the result does not depend on the
  order in which the hosts' outboxes delivered.
- **The dashboard's cache.** ``cache`` (imported on its own: it loads the
  dashboard's index) copies the store incrementally into a local SQLite file
  in the store's own format, which ``context-trace ui`` and the analytics
  commands read as they read a local store.

psycopg 3 is imported here only: ``import context_trace`` never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .connection import (
    SCHEMA,
    StoreUnavailable,
    check_url,
    connect,
    is_postgres_url,
    safe_url,
)
from .reads import PostgresReads
from .schema import check, latest_version, migrate
from .store import PostgresStore
from .write import _turn_row as _turn_row
from .write import write_batch as write_batch

__all__ = [
    "SCHEMA",
    "PostgresReads",
    "PostgresStore",
    "StoreUnavailable",
    "check",
    "check_url",
    "connect",
    "is_postgres_url",
    "latest_version",
    "migrate",
    "safe_url",
]


if TYPE_CHECKING:
    from context_trace._store.base import Reads, ReportStore

    def _is_a_report_store(store: PostgresStore) -> ReportStore:
        """mypy checks here that PostgresStore has the store interface but the outbox."""
        return store

    def _are_reads(reads: PostgresReads) -> Reads:
        """mypy checks here that PostgresReads has the whole read interface."""
        return reads
