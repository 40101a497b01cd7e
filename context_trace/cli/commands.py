"""
The commands of ``context-trace``: each reads the store through the reader and
prints through the formatting helpers (``_format.py``).

Every ``_cmd_*`` takes the parsed arguments and the output stream and returns an
exit status; problems are raised as :class:`_CLIError`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shlex
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from context_trace import _config
from context_trace._record import COLUMN_KEYS
from context_trace._store.base import Reads
from context_trace._store.models import StoredConversation, Transcript
from context_trace._store.sqlite_store import SQLiteStore

from ._format import (
    _Column,
    _cut,
    _flat,
    _latency,
    _paragraph,
    _plural,
    _ProgressBar,
    _render_messages,
    _table,
    _table_width,
    _when,
    _width,
    _wrap,
)

_PROG = "context-trace"
_EXIT_OK = 0
_EXIT_DATA = 1
_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130
_NO_USER = "(no user)"  # the row totalling turns recorded without a user
_HINT = "run 'context-trace demo' or record something first"
# The demo's default size (the same as _demo.DEFAULT_*, which a test checks):
# written out here so that commands other than `demo` never import the demo app.
_DEMO_USERS = 6
_DEMO_SESSIONS = 4
_DEMO_TURNS = 3
# The demo's own store: never the app's (``$CONTEXT_TRACE_DB``, traces.db).
_DEMO_DB = "~/.context_trace/demo.db"
# The measurements with a store column of their own are named by the record module.
_CSV_STORED = (
    "id",
    "user_id",
    "session_id",
    "started_at",
    "ended_at",
    *COLUMN_KEYS,
    "error",
)
_CSV_COLUMNS = (
    *_CSV_STORED,
    "question",
    "answer",
    "metadata",
    "messages",
    "rating",
)


class _CLIError(Exception):
    """A problem reported as one line on stderr, with an exit status."""

    def __init__(self, message: str, code: int = _EXIT_DATA) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- the store
def _db_path(args: argparse.Namespace) -> Path:
    raw = getattr(args, "db", None)
    return Path(raw).expanduser() if raw else _config.default_db_path()


def _describe(exc: BaseException, path: Path) -> str:
    """One line for an error met opening or reading the store."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    text = str(cause)
    if isinstance(cause, sqlite3.OperationalError) and "locked" in text:
        return f"database at {path} is locked by another process; try again later"
    return " ".join(str(exc).split())


#: The commands that read a PostgreSQL store (``--store`` or $CONTEXT_TRACE_STORE).
STORE_COMMANDS = ("users", "sessions", "show", "stats", "export", "outbox", "replay")
# The PostgreSQL store this run reads, set by use_store() before a command runs.
_POSTGRES: list[str] = []


def store_url(args: argparse.Namespace) -> str | None:
    """``--store``, else $CONTEXT_TRACE_STORE, else None (the SQLite file)."""
    raw = getattr(args, "store", None) or os.environ.get(_config.ENV_STORE, "")
    return raw.strip() or None


def use_store(args: argparse.Namespace) -> None:
    """Read the PostgreSQL store this run names, or refuse a command that cannot."""
    _POSTGRES.clear()
    url = store_url(args)
    if url is None:
        return
    from context_trace._store.postgres import check_url

    try:
        check_url(url, "--store")
    except ValueError as exc:
        raise _CLIError(str(exc), _EXIT_USAGE) from None
    if args.command == "demo":
        return  # the demo records into a store of its own
    if args.command == "ui":
        _ui_store_check(url)
    if args.command not in STORE_COMMANDS:
        raise _CLIError(
            f"'{args.command}' does not read a PostgreSQL store yet (only "
            f"{', '.join(STORE_COMMANDS)}); unset {_config.ENV_STORE} or drop --store",
            _EXIT_USAGE,
        )
    if args.command not in ("outbox", "replay"):
        _POSTGRES.append(url)


def _ui_store_check(url: str) -> None:
    """The dashboard's start-up: say what is wrong with the store, then what is not."""
    from context_trace._store.postgres import check

    try:
        check(url, create=False)
    except ValueError as exc:
        raise _CLIError(f"the dashboard cannot start: {exc}") from None


def _open_postgres(url: str) -> Any:
    from context_trace._store.postgres import PostgresReads

    try:
        return PostgresReads(url)
    except ValueError as exc:  # StoreUnavailable says which problem, no password
        raise _CLIError(str(exc)) from None


def _open(path: Path) -> Reads:
    """Open the store read-only, or raise :class:`_CLIError` saying why not."""
    if _POSTGRES:
        return _open_postgres(_POSTGRES[0])  # type: ignore[no-any-return]
    if not path.exists():
        raise _CLIError(f"no database at {path} ({_HINT})")
    if path.is_dir():
        raise _CLIError(f"{path} is a directory, not a database")
    if path.stat().st_size == 0:
        raise _CLIError(f"database at {path} is empty ({_HINT})")
    try:
        return SQLiteStore(path).reads()
    except FileNotFoundError:
        raise _CLIError(f"no database at {path} ({_HINT})") from None
    except (OSError, ValueError) as exc:
        raise _CLIError(_describe(exc, path)) from None


def _read(path: Path, query: Callable[[Reads], Any]) -> Any:
    """Run *query* on a reader of *path*; store errors become :class:`_CLIError`."""
    reader = _open(path)
    try:
        return query(reader)
    except (OSError, ValueError) as exc:
        raise _CLIError(_describe(exc, path)) from None
    finally:
        reader.close()


def _print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2, ensure_ascii=False)
    out.write("\n")


# --------------------------------------------------------------------------- commands
def _users_lines(
    path: Path, width: int | None, sort: str = "last_seen", limit: int | None = None
) -> list[str]:
    users = _read(path, lambda r: r.users(sort=sort, limit=limit))
    if not users:
        return [f"no users recorded yet in {path}"]
    columns = (
        _Column("USER"),
        _Column("CONVS", right=True),
        _Column("SESSIONS", right=True),
        _Column("LAST SEEN"),
        _Column("AVG LATENCY", right=True),
        _Column("UP", right=True),
        _Column("DOWN", right=True),
        _Column("ERRORS", right=True),
        _Column("TOOL ERR", right=True),
    )
    rows = [
        (
            u.user_id if u.user_id is not None else _NO_USER,
            u.conversations,
            u.sessions,
            _when(u.last_seen),
            _latency(u.avg_latency_ms),
            u.ratings_up,
            u.ratings_down,
            u.errors,
            u.tool_errors,
        )
        for u in users
    ]
    return _table(*_tool_column(columns, rows), width)


def _cmd_users(args: argparse.Namespace, out: TextIO) -> int:
    path = _db_path(args)
    if args.json:
        users = _read(path, lambda r: r.users(sort=args.sort, limit=args.limit))
        _print_json([asdict(u) for u in users], out)
        return _EXIT_OK
    for line in _users_lines(path, _table_width(out), args.sort, args.limit):
        print(line, file=out)
    return _EXIT_OK


def _cmd_sessions(args: argparse.Namespace, out: TextIO) -> int:
    path = _db_path(args)
    sessions = _read(path, lambda r: r.sessions(user_id=args.user, limit=args.limit))
    if args.json:
        _print_json([asdict(s) for s in sessions], out)
        return _EXIT_OK
    if not sessions:
        who = f" for user {args.user!r}" if args.user is not None else ""
        print(f"no sessions recorded{who} in {path}", file=out)
        return _EXIT_OK
    width = _table_width(out)
    columns = (
        # Ids are never cut: they are what `show` and `sessions --user` take.
        _Column("SESSION"),
        _Column("USER"),
        _Column("LAST ACTIVE"),
        _Column("TURNS", right=True),
        _Column("UP", right=True),
        _Column("DOWN", right=True),
        _Column("ERRORS", right=True),
        _Column("TOOL ERR", right=True),
    )
    rows = [
        (
            s.session_id,
            s.user_id if s.user_id is not None else "-",
            _when(s.last_at),
            s.turns,
            s.rating_up,
            s.rating_down,
            s.errors,
            s.tool_errors,
        )
        for s in sessions
    ]
    for line in _table(*_tool_column(columns, rows), width):
        print(line, file=out)
    return _EXIT_OK


def _tool_column(
    columns: Sequence[_Column], rows: Sequence[Sequence[Any]]
) -> tuple[Sequence[_Column], Sequence[Sequence[Any]]]:
    """
    The table without its last column, TOOL ERR, when no row has a tool error.

    Turns whose tool failed but which still answered are rare and most apps
    call no tools: the column shows when there is something in it, and the
    table keeps to 80 columns otherwise. ``--json`` always has the count.
    """
    if any(row[-1] for row in rows):
        return columns, rows
    return columns[:-1], [row[:-1] for row in rows]


def _show_data(
    reader: Reads, ident: str
) -> tuple[Transcript | None, list[StoredConversation]]:
    transcript = reader.transcript(ident)
    if transcript is None:
        return None, []
    if transcript.kind == "session":
        return transcript, reader.session_turns(ident)
    turn = reader.conversation(ident)
    return transcript, [] if turn is None else [turn]


def _find(path: Path, ident: str) -> tuple[Transcript, list[StoredConversation]]:
    transcript, turns = _read(path, lambda r: _show_data(r, ident))
    if transcript is None:
        raise _CLIError(f"no session or conversation with id {ident!r} in {path}")
    return transcript, turns


def _counts(turns: Sequence[StoredConversation]) -> str:
    """ " · 1 failed · 2 with a failed tool", or "" when every turn went well."""
    failed = sum(t.error is not None for t in turns)
    tools = sum(t.tool_error for t in turns)
    text = f" · {failed} failed" if failed else ""
    if tools:
        text += f" · {tools} with a failed tool"
    return text


def _show_lines(path: Path, ident: str, width: int) -> list[str]:
    transcript, turns = _find(path, ident)
    meta = transcript.metadata
    user = meta.get("user_id") or "-"
    if transcript.kind == "session":
        header = [
            f"session {meta['session_id']}",
            f"user {user} · {meta['turns']} turn{'s' if meta['turns'] != 1 else ''}"
            f" · rated +{meta['rating_up']}/-{meta['rating_down']}{_counts(turns)}",
            f"from {_when(meta['started_at'])} to {_when(meta['last_at'])}",
        ]
    else:
        tokens = ""
        if meta.get("total_tokens") is not None:
            tokens = (
                f" · tokens {meta['prompt_tokens']} in / "
                f"{meta['completion_tokens']} out"
            )
        rated = "" if meta.get("rating") is None else f" · rated {meta['rating']:+d}"
        header = [
            f"conversation {meta['id']}",
            f"user {user} · session {meta.get('session_id') or '-'}{rated}",
            f"{_when(meta['started_at'])} · {meta.get('model') or 'unknown model'}"
            f" · {_latency(meta['latency_ms'])}{tokens}",
        ]
    # Header lines hold ids, which are never cut (they are what `show` and
    # `sessions --user` take); the error, free text, is wrapped instead.
    lines = [_flat(line) for line in header]
    if transcript.kind != "session" and meta.get("error"):
        lines.extend(_wrap(_flat(f"error: {meta['error']}"), width))
    lines.append("─" * min(width, 60))
    if not transcript.messages and not any(t.error for t in turns):
        lines.append("(no messages)")
    if transcript.kind != "session":
        failed = meta.get("error") is not None
        lines.extend(_render_messages(transcript.messages, width, failed=failed))
        return lines
    # Turn by turn, so that each failed turn shows its error where it happened
    # (and an answer it did not deliver is marked), not only in `show TURN_ID`.
    for index, turn in enumerate(turns):
        lines.extend(
            _render_messages(
                turn.messages,
                width,
                failed=turn.error is not None,
                error=turn.error,
                first=index == 0,
            )
        )
    return lines


def _turn_json(turn: StoredConversation) -> dict[str, Any]:
    """One turn, as the dashboard's session API lists it, plus what the store holds."""
    return {
        "conversation_id": turn.id,
        "user_id": turn.user_id,
        "session_id": turn.session_id,
        "started_at": turn.started_at,
        "ended_at": turn.ended_at,
        "latency_ms": turn.latency_ms,
        "model": turn.model,
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.completion_tokens,
        "total_tokens": turn.total_tokens,
        "error": turn.error,
        "tool_error": turn.tool_error,
        "metadata": turn.metadata,
        "messages": [asdict(m) for m in turn.messages],
    }


def _show_json(path: Path, ident: str) -> dict[str, Any]:
    transcript, turns = _find(path, ident)
    if transcript.kind != "session":
        return {"conversation": _turn_json(turns[0])}
    meta = transcript.metadata
    return {
        "session": {
            "session_id": meta["session_id"],
            "user_id": meta["user_id"],
            "started_at": meta["started_at"],
            "last_at": meta["last_at"],
            "turns": meta["turns"],
            "errors": sum(t.error is not None for t in turns),
            "tool_errors": sum(t.tool_error for t in turns),
            "rating_up": meta["rating_up"],
            "rating_down": meta["rating_down"],
            "metadata": meta["metadata"],
        },
        "turns": [_turn_json(t) for t in turns],
    }


def _cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    if args.json:
        _print_json(_show_json(_db_path(args), args.id), out)
        return _EXIT_OK
    for line in _show_lines(_db_path(args), args.id, _width()):
        print(line, file=out)
    return _EXIT_OK


def _parse_since(text: str) -> float:
    """``YYYY-MM-DD`` or an ISO 8601 datetime (UTC unless it says otherwise)."""
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected YYYY-MM-DD or an ISO datetime, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _record_dict(c: StoredConversation) -> dict[str, Any]:
    """A stored conversation as plain data (messages included), for JSON and CSV."""
    return dataclasses.asdict(c)


def _csv_row(c: StoredConversation) -> list[Any]:
    question = next((m.content for m in reversed(c.messages) if m.role == "user"), "")
    answer = next(
        (m.content for m in reversed(c.messages) if m.role == "assistant"), ""
    )
    record = _record_dict(c)
    return [
        *("" if record[key] is None else record[key] for key in _CSV_STORED),
        question,
        answer,
        json.dumps(c.metadata, ensure_ascii=False, sort_keys=True),
        json.dumps(record["messages"], ensure_ascii=False),
        "" if c.rating is None else c.rating,
    ]


def _write_export(
    conversations: Iterator[StoredConversation], fmt: str, out: TextIO
) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        for conversation in conversations:
            writer.writerow(_csv_row(conversation))
            count += 1
    else:
        for conversation in conversations:
            out.write(json.dumps(_record_dict(conversation), ensure_ascii=False))
            out.write("\n")
            count += 1
    return count


def _cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    path = _db_path(args)
    reader = _open(path)
    try:
        conversations = reader.conversations(since=args.since)
        if args.output in (None, "-"):
            count = _write_export(conversations, args.format, out)
        else:
            target = Path(args.output).expanduser()
            try:
                handle = target.open("w", encoding="utf-8", newline="")
            except OSError as exc:
                raise _CLIError(
                    f"cannot write {target}: {exc.strerror or exc}"
                ) from None
            with handle:
                count = _write_export(conversations, args.format, handle)
            noun = "conversation" if count == 1 else "conversations"
            print(f"exported {count} {noun} to {target}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        raise _CLIError(_describe(exc, path)) from None
    finally:
        reader.close()
    return _EXIT_OK


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


def _shell_path(path: Path) -> str:
    """*path* as a shell word: ``~/...`` under the home directory, else quoted."""
    try:
        relative = path.relative_to(Path.home()).as_posix()
    except ValueError:
        return shlex.quote(str(path))
    return (
        "~/" + relative if shlex.quote(relative) == relative else shlex.quote(str(path))
    )


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from context_trace import _demo

    # Only --db: $CONTEXT_TRACE_DB names the app's store, which the demo never touches.
    path = Path(args.db or _DEMO_DB).expanduser()
    where = _shell_path(path)
    width = _width()
    if not args.quiet:
        _paragraph(
            f"Recording a demo support chatbot: {_plural(args.users, 'user')} x "
            f"{_plural(args.sessions_per_user, 'session')} x "
            f"{_plural(args.turns, 'turn')}, sent over HTTP to a Flask app on "
            "127.0.0.1 with a fake model (no API key needed).",
            width,
            out,
        )
        _paragraph(
            f"Everything goes to the demo's own store {where}, replacing the last "
            f"demo's; your store ({_config.ENV_DB}, ~/.context_trace/traces.db) and "
            f"{_config.ENV_TOKEN} are left alone.",
            width,
            out,
        )
        out.flush()
    bar = _ProgressBar(sys.stderr, "chatting", enabled=not args.quiet)
    try:
        result = _demo.run_demo(
            path,
            users=args.users,
            sessions_per_user=args.sessions_per_user,
            turns=args.turns,
            progress=bar.update,
        )
    except ImportError as exc:
        raise _CLIError(f"the demo needs Flask: {exc}") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise _CLIError(_describe(exc, path)) from None
    finally:
        bar.close()
    summary = (
        f"Demo done in {result.seconds:.1f} s: {_plural(len(result.users), 'user')}, "
        f"{_plural(len(result.sessions), 'session')}, "
        f"{_plural(result.conversations, 'conversation')} ({result.errors} failed), "
        f"{_plural(result.ratings, 'rating')}"
    )
    if args.quiet:
        _paragraph(f"{summary}, in {where}.", width, out)
        return _EXIT_OK
    _paragraph(f"{summary}.", width, out)
    print(file=out)
    print("$ context-trace users", file=out)
    for line in _users_lines(path, width):
        print(line, file=out)
    print(file=out)
    print(_cut(f"$ context-trace show {result.showcase_session}", width), file=out)
    for line in _show_lines(path, result.showcase_session, width):
        print(line, file=out)
    print(file=out)
    # Whole commands, never cut or wrapped: each is meant to be pasted as it is.
    print("Try next, on the demo's store:", file=out)
    hint = _path_hint()
    if hint:
        print(f"  {hint}", file=out)
    for command, note in (
        (f"sessions --user {result.error_user}", ""),
        ("stats", ""),
        ("export --format csv -o demo.csv", ""),
        ("ui", "  # the dashboard"),
    ):
        print(f"  context-trace {command} --db {where}{note}", file=out)
    return _EXIT_OK


def _path_hint() -> str | None:
    """
    The command that puts ``context-trace`` on PATH, when the demo was started
    from a virtualenv that is not active (the README's first command runs
    ``.venv/bin/context-trace demo``): else the suggested commands would not be
    found. None when PATH already finds this script, or under ``python -m``.
    """
    script = Path(sys.argv[0]).absolute()
    if script.name != "context-trace":
        return None
    found = shutil.which("context-trace")
    if found and Path(found).resolve() == script.resolve():
        return None
    scripts = script.parent
    try:
        shown = scripts.relative_to(Path.cwd())
    except ValueError:
        shown = scripts
    activate = shown / "activate"
    if not (scripts / "activate").is_file():
        return f"export PATH={shlex.quote(str(scripts))}:$PATH  # finds context-trace"
    return f"source {shlex.quote(str(activate))}  # puts context-trace on your PATH"


def _cmd_ui(args: argparse.Namespace, out: TextIO) -> int:
    try:
        from context_trace.ui import serve
    except ImportError as exc:
        raise _CLIError(str(exc)) from None
    try:
        return serve.main(
            _db_path(args), args.host, args.port, args.token, args.open, out,
            args.index, getattr(args, "tz", None), args.prices,
        )  # fmt: skip
    except serve.UIError as exc:
        raise _CLIError(str(exc)) from None


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
