"""
The ``context-trace`` command: look at what context_trace recorded.

Every command reads the local SQLite store (``--db``, else ``$CONTEXT_TRACE_DB``,
else ``~/.context_trace/traces.db``), except ``demo``, which writes a store of its
own (``--db``, else ``~/.context_trace/demo.db``)::

    context-trace users                    per-user totals
    context-trace sessions --user ava      a user's sessions
    context-trace show SESSION_OR_TURN_ID  a transcript
    context-trace export --format csv      every conversation, for a spreadsheet
    context-trace stats                    totals per day
    context-trace outbox                   records waiting for delivery (Context API, OTLP)
    context-trace replay                   deliver them now
    context-trace demo                     record a demo app's traffic (its own store)
    context-trace ui                       the same, in a local web dashboard
    context-trace topics                   what users ask about (analytics extra)
    context-trace retention                active users, cohorts, churned users
    context-trace compare --segment-a plan=pro --segment-b plan=free
    context-trace cost --by user           what the turns cost (priced when read)

With ``--store URL`` (or ``$CONTEXT_TRACE_STORE``) every command reads a shared
PostgreSQL store instead: ``users``, ``sessions``, ``show``, ``stats`` and
``export`` query it, ``ui`` and the analytics read a local cache of it
(``--cache``, see ``_store/postgres/cache.py``).

Output fits an 80-column terminal; ``--json`` on ``users``, ``sessions``,
``show``, ``stats``, ``outbox``, ``topics``, ``unhappy``, ``retention``,
``compare`` and ``cost`` prints JSON instead (times as epoch seconds). Problems are reported in
one line on stderr with exit status 1 (data: a missing or
unreadable store, an unknown id) or 2 (usage).

This package and the dashboard's server (``context_trace.ui.serve``) are the
only parts of context_trace that print.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from context_trace import __version__, _config
from context_trace._store.reader import USER_SORTS

from . import compare as _compare
from . import cost as _cost
from . import retention as _retention
from ._options import add_prices_argument
from ._topics import add_topics_arguments, cmd_topics
from .commands import (
    _DEMO_DB,
    _DEMO_SESSIONS,
    _DEMO_TURNS,
    _DEMO_USERS,
    _EXIT_DATA,
    _EXIT_INTERRUPTED,
    _EXIT_USAGE,
    _PROG,
    _CLIError,
    _cmd_demo,
    _cmd_export,
    _cmd_outbox,
    _cmd_replay,
    _cmd_sessions,
    _cmd_show,
    _cmd_stats,
    _cmd_ui,
    _cmd_unhappy,
    _cmd_users,
    _parse_since,
    use_store,
)

__all__ = ["main"]


# --------------------------------------------------------------------------- parser
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number of at least 1, got {value}"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    # --db works before and after the command: the sub-parsers' copy has no
    # default (SUPPRESS), so it never overwrites a value given before the command.
    db_help = (
        "the SQLite store (default: $CONTEXT_TRACE_DB or ~/.context_trace/traces.db)"
    )
    store_help = (
        "a shared PostgreSQL store, postgresql://user:password@host/db (default:"
        " $CONTEXT_TRACE_STORE; prefer it, since other users can see command-line"
        " arguments); read by users, sessions, show, stats, export, and through a"
        " local cache (--cache) by ui, topics, unhappy, retention, compare, cost;"
        " outbox checks it and replay delivers to it"
    )
    cache_help = (
        "with --store: the local SQLite copy of the PostgreSQL store that ui and the"
        " analytics read, brought level first (default: under"
        " ~/.cache/context-trace, named by the server and database)"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=db_help)
    common.add_argument(
        "--store", metavar="URL", default=argparse.SUPPRESS, help=store_help
    )
    common.add_argument(
        "--cache", metavar="PATH", default=argparse.SUPPRESS, help=cache_help
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", help="print JSON instead of a table"
    )

    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Look at the conversations context_trace recorded.",
        epilog="Run 'context-trace demo' to record a sample app first.",
    )
    parser.add_argument("--version", action="version", version=f"{_PROG} {__version__}")
    parser.add_argument("--db", metavar="PATH", default=None, help=db_help)
    parser.add_argument("--store", metavar="URL", default=None, help=store_help)
    parser.add_argument("--cache", metavar="PATH", default=None, help=cache_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def add(
        name: str,
        help: str,
        *parents: argparse.ArgumentParser,
        db: argparse.ArgumentParser = common,
    ) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help, description=help, parents=[db, *parents]
        )

    users = add(
        "users",
        "per-user totals: conversations, sessions, latency, ratings, errors",
        as_json,
    )
    users.add_argument(
        "--sort",
        metavar="KEY",
        choices=(*USER_SORTS, "cost"),
        default="last_seen",
        help=f"one of {', '.join(USER_SORTS)}, cost: the most recently seen first"
        " (default), the most conversations, sessions, errors, tool errors or"
        " ratings first, the slowest first, by user id, or the costliest first"
        " (priced when read; see the cost command); the (no user) row always"
        " comes last",
    )
    users.add_argument(
        "--limit",
        metavar="N",
        type=_positive_int,
        help="at most N users (the (no user) row is not counted)",
    )
    add_prices_argument(users)

    sessions = add("sessions", "sessions, most recently active first", as_json)
    sessions.add_argument("--user", metavar="USER", help="only this user's sessions")
    sessions.add_argument(
        "--limit",
        metavar="N",
        type=_positive_int,
        default=50,
        help="at most N (default 50)",
    )

    show = add("show", "the transcript of a session or of one conversation", as_json)
    show.add_argument("id", metavar="ID", help="a session id or a conversation id")

    _retention.add_parser(add, as_json)
    _compare.add_parser(add, as_json)
    _cost.add_parser(add, as_json)

    export = add("export", "every conversation as JSON lines or CSV")
    export.add_argument(
        "--format", choices=("jsonl", "csv"), default="jsonl", help="default: jsonl"
    )
    export.add_argument(
        "--since",
        metavar="DATE",
        type=_parse_since,
        help="only conversations started at or after DATE "
        "(YYYY-MM-DD or ISO datetime; UTC unless it has an offset)",
    )
    export.add_argument(
        "--output", "-o", metavar="FILE", help="write to FILE (default: stdout)"
    )

    add("stats", "totals per day (UTC)", as_json)
    add(
        "outbox",
        "records waiting for delivery (Context API, OTLP), and dropped ones",
        as_json,
    )

    replay = add(
        "replay",
        "deliver the outbox now (Context API rows need a token; OTLP rows go to"
        " the OTEL_EXPORTER_OTLP_* endpoint)",
    )
    replay.add_argument(
        "--token",
        help=f"Context API token (default: ${_config.ENV_TOKEN}; prefer it, since "
        "other users can see command-line arguments)",
    )
    replay.add_argument(
        "--endpoint",
        metavar="URL",
        help=f"Context API base URL (default: ${_config.ENV_ENDPOINT} or "
        f"{_config.DEFAULT_ENDPOINT})",
    )

    ui = add("ui", "browse the store in a local, read-only web dashboard")
    ui.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    ui.add_argument("--port", type=int, default=8765, help="default: 8765")
    ui.add_argument("--open", action="store_true", help="open it in a web browser")
    ui.add_argument(
        "--index",
        type=Path,
        help="the dashboard's own index file (default: <db>.ui-index next to"
        " the store, or under ~/.cache/context-trace if that is read-only)",
    )
    ui.add_argument(
        "--tz",
        metavar="ZONE",
        type=_retention.parse_time_zone,
        help="bucket retention's days and weeks in this IANA time zone (default:"
        " $CONTEXT_TRACE_TZ, else UTC), e.g. Europe/Paris",
    )
    ui.add_argument(
        "--token",
        help="require this token from every request (default:"
        " $CONTEXT_TRACE_UI_TOKEN; required for a non-loopback --host)",
    )
    add_prices_argument(ui)

    unhappy = add(
        "unhappy",
        "the users with the lowest satisfaction scores, with reasons and evidence",
        as_json,
    )
    unhappy.add_argument(
        "--limit",
        metavar="N",
        type=_positive_int,
        default=10,
        help="at most N (default 10)",
    )
    unhappy.add_argument(
        "--since",
        metavar="DATE",
        type=_parse_since,
        help="only turns started at or after DATE "
        "(YYYY-MM-DD or ISO datetime; UTC unless it has an offset)",
    )
    unhappy.add_argument(
        "--min-turns",
        metavar="N",
        type=_positive_int,
        default=3,
        help="only users with at least N turns (default 3)",
    )

    topics = add(
        "topics",
        "what users ask about: topics with their conversations, users, share,"
        " label and a representative question",
        as_json,
    )
    add_topics_arguments(topics, _positive_int)

    # The demo has a store of its own: its --db ignores $CONTEXT_TRACE_DB.
    demo_db = argparse.ArgumentParser(add_help=False)
    demo_db.add_argument(
        "--db",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"the demo's own store, replaced on each run (default: {_DEMO_DB}); "
        "a store with other turns is refused",
    )
    demo = add(
        "demo",
        "record a demo chatbot's traffic into a store of its own (no keys needed)",
        db=demo_db,
    )
    demo.add_argument(
        "--users",
        metavar="N",
        type=_positive_int,
        default=_DEMO_USERS,
        help=f"simulated users (default {_DEMO_USERS})",
    )
    demo.add_argument(
        "--sessions-per-user",
        metavar="M",
        type=_positive_int,
        default=_DEMO_SESSIONS,
        help=f"sessions per user (default {_DEMO_SESSIONS})",
    )
    demo.add_argument(
        "--turns",
        metavar="T",
        type=_positive_int,
        default=_DEMO_TURNS,
        help=f"questions per session (default {_DEMO_TURNS})",
    )
    demo.add_argument(
        "--quiet", "-q", action="store_true", help="print only a one-line summary"
    )
    return parser


def _users(args: argparse.Namespace, out: TextIO) -> int:
    if args.sort == "cost":  # priced from the dashboard's index
        return _cost.cmd_users_by_cost(args, out)
    return _cmd_users(args, out)


_COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "users": _users,
    "sessions": _cmd_sessions,
    "show": _cmd_show,
    "export": _cmd_export,
    "stats": _cmd_stats,
    "outbox": _cmd_outbox,
    "replay": _cmd_replay,
    "demo": _cmd_demo,
    "ui": _cmd_ui,
    "unhappy": _cmd_unhappy,
    "topics": cmd_topics,
    "retention": _retention.cmd_retention,
    "compare": _compare.cmd_compare,
    "cost": _cost.cmd_cost,
}


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the ``context-trace`` command line.

    The console script calls it with no arguments; call it with *argv* to run a
    command from Python (``main(["users", "--db", "traces.db"])``).

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 for a data problem (missing or
        unreadable store, unknown id, undelivered records), 2 for a usage error.

    .. versionadded:: 0.1.0
    """
    _tolerate_unencodable_output()
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error
        return exc.code if isinstance(exc.code, int) else _EXIT_USAGE
    out = sys.stdout
    try:
        use_store(args)
        return _COMMANDS[args.command](args, out)
    except _CLIError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`context-trace export | head`): stop quietly, and
        # keep Python from complaining about stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return _EXIT_DATA
    except Exception as exc:  # noqa: BLE001 - a bug still gets one line, not a traceback
        print(
            f"{_PROG}: internal error: {type(exc).__name__}: {exc} "
            "(this is a bug in context-trace; please report it)",
            file=sys.stderr,
        )
        return _EXIT_DATA


def _tolerate_unencodable_output() -> None:
    """On a non-UTF-8 terminal, print "?" for characters like "…" instead of failing."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        reconfigure = getattr(stream, "reconfigure", None)
        if encoding != "utf8" and callable(reconfigure):
            reconfigure(errors="replace")
