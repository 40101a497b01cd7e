"""
The commands of ``context-trace``: each reads the store through the reader and
prints through the formatting helpers (``_format.py``).

Every ``_cmd_*`` takes the parsed arguments and the output stream and returns an
exit status; problems are raised as :class:`_CLIError`.

The commands are in modules by family: ``_browse.py`` (users, sessions,
show), ``_export.py``, ``_demo_ui.py`` (demo, ui) and, here, stats, outbox,
replay and unhappy; what they share is in ``_common.py``. Every name stays
importable from here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, TextIO

from context_trace import _config

from ._browse import _cmd_sessions as _cmd_sessions
from ._browse import _cmd_show as _cmd_show
from ._browse import _cmd_users as _cmd_users
from ._browse import _show_lines as _show_lines
from ._browse import _users_lines as _users_lines
from ._common import _DEMO_DB as _DEMO_DB
from ._common import _DEMO_SESSIONS as _DEMO_SESSIONS
from ._common import _DEMO_TURNS as _DEMO_TURNS
from ._common import _DEMO_USERS as _DEMO_USERS
from ._common import _EXIT_DATA as _EXIT_DATA
from ._common import _EXIT_INTERRUPTED as _EXIT_INTERRUPTED
from ._common import _EXIT_OK as _EXIT_OK
from ._common import _EXIT_USAGE as _EXIT_USAGE
from ._common import _HINT as _HINT
from ._common import _PROG as _PROG
from ._common import STORE_COMMANDS as STORE_COMMANDS
from ._common import _CLIError as _CLIError
from ._common import _db_path as _db_path
from ._common import _describe as _describe
from ._common import _open as _open
from ._common import _print_json as _print_json
from ._common import _read as _read
from ._common import store_url as store_url
from ._common import use_store as use_store
from ._demo_ui import _cmd_demo as _cmd_demo
from ._demo_ui import _cmd_ui as _cmd_ui
from ._export import _CSV_COLUMNS as _CSV_COLUMNS
from ._export import _cmd_export as _cmd_export
from ._export import _parse_since as _parse_since
from ._format import (
    _Column,
    _latency,
    _plural,
    _ProgressBar,
    _table,
    _table_width,
)


def _cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    path = _db_path(args)
    days = _read(path, lambda r: r.daily_stats())
    if args.json:
        _print_json([asdict(d) for d in days], out)
        return _EXIT_OK
    if not days:
        print(f"no conversations recorded yet in {path}", file=out)
        return _EXIT_OK
    columns = (
        _Column("DAY (UTC)"),
        _Column("CONVERSATIONS", right=True),
        _Column("USERS", right=True),
        _Column("SESSIONS", right=True),
        _Column("ERRORS", right=True),
        _Column("AVG LATENCY", right=True),
    )
    rows: list[Sequence[object]] = [
        (
            d.day,
            d.conversations,
            d.users,
            d.sessions,
            d.errors,
            _latency(d.avg_latency_ms),
        )
        for d in days
    ]
    total = sum(d.conversations for d in days)
    weighted = sum(
        d.avg_latency_ms * d.conversations for d in days if d.avg_latency_ms is not None
    )
    rows.append(
        (
            "total",
            total,
            "",
            "",
            sum(d.errors for d in days),
            _latency(weighted / total if total else None),
        )
    )
    for line in _table(columns, rows, _table_width(out)):
        print(line, file=out)
    return _EXIT_OK


def _cmd_outbox(args: argparse.Namespace, out: TextIO) -> int:
    path = _db_path(args)
    counts = _read(path, lambda r: r.outbox_counts())
    per = _read(path, lambda r: r.outbox_destinations())
    # Per destination only when there is more than the Context API (OTLP), so a
    # Context-only outbox prints as it always did.
    several = any(name != "context" for name in per)
    store = _store_state(args)
    if args.json:
        shown = {**counts, "destinations": per} if several else counts
        _print_json({**shown, "store": store} if store else shown, out)
        return _EXIT_OK
    labels = {
        "pending": "waiting for delivery",
        "leased": "being delivered now",
        "dropped": "dropped (outbox full), since the file was created",
        "failed": "rejected by the API, since the file was created",
    }
    for key, value in counts.items():
        print(f"{key:<8} {value:>8}  {labels.get(key, '')}".rstrip(), file=out)
    if several:
        for name, row in per.items():
            print(
                f"  {name:<8} {row['waiting']:>6} waiting, {row['failed']} failed",
                file=out,
            )
    if store:
        print(f"store    {store['url']}: {store['state']}", file=out)
        if store["state"] != "reachable":
            return _EXIT_DATA
    return _EXIT_OK


def _store_state(args: argparse.Namespace) -> dict[str, str] | None:
    """The PostgreSQL store's URL (no password) and whether it answers now."""
    url = store_url(args)
    if url is None:
        return None
    from context_trace._store.postgres import check, safe_url

    try:
        check(url, create=False)
    except ValueError as exc:
        return {"url": safe_url(url), "state": str(exc)}
    return {"url": safe_url(url), "state": "reachable"}


def _cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    token = (
        args.token
        or os.environ.get(_config.ENV_TOKEN)
        or os.environ.get(_config.ENV_TOKEN_ALT)
        or ""
    ).strip()  # as configure() does: a trailing newline from a secrets file is fine
    per = _read(_db_path(args), lambda r: r.outbox_destinations())
    # Only the Context API's rows need a token; OTLP rows go where OTEL_* says,
    # PostgreSQL rows to --store or $CONTEXT_TRACE_STORE.
    store = store_url(args)
    if per.get("postgresql", {}).get("waiting", 0) and store is None:
        raise _CLIError(
            "the outbox holds rows for a PostgreSQL store: pass --store or set "
            f"{_config.ENV_STORE}",
            _EXIT_USAGE,
        )
    if not token and (
        (not per and store is None) or per.get("context", {}).get("waiting", 0)
    ):
        raise _CLIError(
            f"replay needs a Context token: pass --token or set {_config.ENV_TOKEN}",
            _EXIT_USAGE,
        )
    endpoint = (
        args.endpoint
        or os.environ.get(_config.ENV_ENDPOINT)
        or _config.DEFAULT_ENDPOINT
    )
    path = _db_path(args)
    waiting = _read(path, lambda r: r.outbox_counts())["pending"]
    if waiting == 0:
        print(f"nothing to deliver: the outbox in {path} is empty", file=out)
        return _EXIT_OK
    from context_trace._exporters.outbox import replay

    bar = _ProgressBar(sys.stderr, "delivering")
    try:
        delivered, failed, pending = replay(
            path,
            token,
            endpoint,
            progress=lambda done, attempted: bar.update(attempted, waiting),
            store=store,
        )
    except ValueError as exc:
        raise _CLIError(" ".join(str(exc).split()), _EXIT_USAGE) from None
    except OSError as exc:
        raise _CLIError(_describe(exc, path)) from None
    finally:
        bar.close()
    print(
        f"delivered {delivered}, failed {failed}, still pending {pending}",
        file=out,
    )
    return _EXIT_OK if failed == 0 and pending == 0 else _EXIT_DATA


# --------------------------------------------------------------------------- unhappy
def _unhappy_data(args: argparse.Namespace) -> dict[str, Any]:
    """The satisfaction report's unhappy users (``context-trace unhappy``)."""
    from context_trace import _satisfaction

    path = _db_path(args)
    _open(path).close()  # the same checks, and messages, as every command
    try:
        report = _satisfaction.analyze(path, since=args.since)
    except (OSError, ValueError) as exc:
        raise _CLIError(_describe(exc, path)) from None
    return {
        "sentiment": report.sentiment,
        "min_turns": args.min_turns,
        "users": report.unhappy(limit=args.limit, min_turns=args.min_turns),
    }


def _cmd_unhappy(args: argparse.Namespace, out: TextIO) -> int:
    data = _unhappy_data(args)
    if args.json:
        _print_json(data, out)
        return _EXIT_OK
    path = _db_path(args)
    users = data["users"]
    if not users:
        print(
            f"no unhappy users in {path} (users with at least"
            f" {_plural(args.min_turns, 'turn')} and a flagged turn)",
            file=out,
        )
        return _EXIT_OK
    width = _table_width(out)
    columns = (
        _Column("USER"),
        _Column("SCORE", right=True),
        _Column("TURNS", right=True),
        _Column("FLAGGED", right=True),
        _Column("UP", right=True),
        _Column("DOWN", right=True),
        _Column("SIGNALS", flexible=True),
    )
    rows = [
        (
            u["key"],
            f"{u['score']:.2f}",
            u["turns"],
            u["flagged_turns"],
            u["ratings_up"],
            u["ratings_down"],
            ", ".join(
                f"{name} {count}"
                for name, count in u["signals"].items()
                if name != "rating_up"
            ),
        )
        for u in users
    ]
    for line in _table(columns, rows, width):
        print(line, file=out)
    for u in users:
        print(f"\n{u['key']}:", file=out)
        for e in u["evidence"]:
            where = f"  session {e['session_id']} turn {e['turn']}"
            if e["session_id"] is None:
                where = f"  conversation {e['conversation_id']}"
            print(f"{where}: {'; '.join(e['reasons'])}", file=out)
    if not data["sentiment"]:
        print(
            "\n(negative sentiment uses phrases only: pip install"
            " 'context-trace[analytics]' for VADER)",
            file=out,
        )
    return _EXIT_OK
