"""
The ``context-trace`` command: look at what context_trace recorded.

Every command reads the local SQLite store (``--db``, else ``$CONTEXT_TRACE_DB``,
else ``~/.context_trace/traces.db``)::

    context-trace users                    per-user totals
    context-trace sessions --user ava      a user's sessions
    context-trace show SESSION_OR_TURN_ID  a transcript
    context-trace export --format csv      every conversation, for a spreadsheet
    context-trace stats                    totals per day
    context-trace outbox                   records waiting for the Context API
    context-trace replay                   deliver them now
    context-trace demo                     record a demo app's traffic

Output fits an 80-column terminal; ``--json`` on ``users``, ``sessions``,
``stats`` and ``outbox`` prints JSON instead (times as epoch seconds). Problems
are reported in one line on stderr with exit status 1 (data: a missing or
unreadable store, an unknown id) or 2 (usage).

This is the only module of context_trace that prints.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import sqlite3
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from . import __version__, _config
from ._record import Message
from ._store.models import StoredConversation
from ._store.reader import SQLiteReader

__all__ = ["main"]

_PROG = "context-trace"
_EXIT_OK = 0
_EXIT_DATA = 1
_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130
_DEFAULT_WIDTH = 80
_MIN_WIDTH = 40
_ROLE_WIDTH = 11  # "assistant" plus two spaces
_HINT = "run 'context-trace demo' or record something first"
# The demo's default size (the same as _demo.DEFAULT_*, which a test checks):
# written out here so that commands other than `demo` never import the demo app.
_DEMO_USERS = 6
_DEMO_SESSIONS = 2
_DEMO_TURNS = 3
_CSV_COLUMNS = (
    "id",
    "user_id",
    "session_id",
    "started_at",
    "ended_at",
    "latency_ms",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "error",
    "question",
    "answer",
    "metadata",
    "messages",
)


class _CLIError(Exception):
    """A problem reported as one line on stderr, with an exit status."""

    def __init__(self, message: str, code: int = _EXIT_DATA) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- formatting
def _width() -> int:
    """The terminal's width (80 when not a terminal), at least 40."""
    columns = shutil.get_terminal_size((_DEFAULT_WIDTH, 24)).columns
    return max(_MIN_WIDTH, columns)


# Control characters in stored text (escape sequences in a model's output, a
# user id with a carriage return) would move the cursor or restyle the terminal.
_CONTROL = {
    code: "?" for code in (*range(0x20), *range(0x7F, 0xA0)) if code not in (9, 10)
}


def _flat(text: str) -> str:
    """*text* on one line, whitespace collapsed, control characters shown as "?"."""
    if any(c in text for c in "\n\r\t"):
        text = " ".join(text.split())
    return text.translate(_CONTROL)


def _cut(text: str, width: int) -> str:
    """*text* on one line, cut to *width* characters with an ellipsis."""
    flat = _flat(text)
    if len(flat) <= width:
        return flat
    return flat[: max(0, width - 1)].rstrip() + "…"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M")


def _latency(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s"


@dataclass(frozen=True)
class _Column:
    header: str
    right: bool = False
    #: May be cut (with …) to make the table fit; other columns never are.
    flexible: bool = False
    min_width: int = 6


def _table(
    columns: Sequence[_Column], rows: Iterable[Sequence[object]], width: int
) -> list[str]:
    """Format *rows* as aligned columns no wider than *width* (flexible ones cut)."""
    cells = [[_flat(str(value)) for value in row] for row in rows]
    widths = [
        max([len(column.header), *(len(row[i]) for row in cells)])
        for i, column in enumerate(columns)
    ]
    gap = 2
    excess = sum(widths) + gap * (len(columns) - 1) - width
    while excess > 0:
        candidates = [
            i
            for i, column in enumerate(columns)
            if column.flexible and widths[i] > max(column.min_width, len(column.header))
        ]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1

    def line(values: Sequence[str]) -> str:
        parts = []
        for value, column, size in zip(values, columns, widths, strict=True):
            text = _cut(value, size)
            parts.append(text.rjust(size) if column.right else text.ljust(size))
        return (" " * gap).join(parts).rstrip()

    return [line([c.header for c in columns]), *(line(row) for row in cells)]


def _wrap(text: str, width: int) -> list[str]:
    """Wrap *text* to *width*, keeping its own line breaks."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lines.extend(
            textwrap.wrap(
                paragraph.expandtabs(4).translate(_CONTROL),
                width,
                break_on_hyphens=False,
                drop_whitespace=True,
            )
            or [""]
        )
    return lines


def _render_messages(messages: Sequence[Message], width: int) -> list[str]:
    """A transcript: the role in a column, the text wrapped beside it."""
    text_width = max(20, width - _ROLE_WIDTH)
    pad = " " * _ROLE_WIDTH
    out: list[str] = []
    for index, message in enumerate(messages):
        if message.role == "user" and index > 0:
            out.append("")  # a blank line before each new question
        label = message.role.ljust(_ROLE_WIDTH)
        if message.role == "tool":
            out.append(label + _cut(message.name or "tool", text_width))
            fields = (("input: ", message.tool_input), ("output: ", message.content))
            for prefix, value in fields:
                if value is None:
                    continue
                body = _wrap(value, text_width - len(prefix) - 2)
                out.append(pad + "  " + prefix + body[0])
                out.extend(pad + "  " + " " * len(prefix) + rest for rest in body[1:])
            continue
        body = _wrap(message.content, text_width)
        out.append(label + body[0])
        out.extend(pad + rest for rest in body[1:])
    return out


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


def _open(path: Path) -> SQLiteReader:
    """Open the store read-only, or raise :class:`_CLIError` saying why not."""
    if not path.exists():
        raise _CLIError(f"no database at {path} ({_HINT})")
    if path.is_dir():
        raise _CLIError(f"{path} is a directory, not a database")
    if path.stat().st_size == 0:
        raise _CLIError(f"database at {path} is empty ({_HINT})")
    try:
        return SQLiteReader(path)
    except FileNotFoundError:
        raise _CLIError(f"no database at {path} ({_HINT})") from None
    except (OSError, ValueError) as exc:
        raise _CLIError(_describe(exc, path)) from None


def _read(path: Path, query: Callable[[SQLiteReader], Any]) -> Any:
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
def _users_lines(path: Path, width: int) -> list[str]:
    users = _read(path, lambda r: r.users())
    if not users:
        return [f"no users recorded yet in {path}"]
    columns = (
        _Column("USER", flexible=True, min_width=8),
        _Column("CONVS", right=True),
        _Column("SESSIONS", right=True),
        _Column("LAST SEEN"),
        _Column("AVG LATENCY", right=True),
        _Column("UP", right=True),
        _Column("DOWN", right=True),
        _Column("ERRORS", right=True),
    )
    rows = [
        (
            u.user_id,
            u.conversations,
            u.sessions,
            _when(u.last_seen),
            _latency(u.avg_latency_ms),
            u.ratings_up,
            u.ratings_down,
            u.errors,
        )
        for u in users
    ]
    return _table(columns, rows, width)


def _cmd_users(args: argparse.Namespace, out: TextIO) -> int:
    path = _db_path(args)
    if args.json:
        _print_json([asdict(u) for u in _read(path, lambda r: r.users())], out)
        return _EXIT_OK
    for line in _users_lines(path, _width()):
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
    width = _width()
    id_width = max(len(s.session_id) for s in sessions)
    columns = (
        # Session ids are never cut: they are what `show` takes.
        _Column("SESSION", min_width=id_width),
        _Column("USER", flexible=True, min_width=6),
        _Column("LAST ACTIVE"),
        _Column("TURNS", right=True),
        _Column("UP", right=True),
        _Column("DOWN", right=True),
    )
    rows = [
        (
            s.session_id,
            s.user_id if s.user_id is not None else "-",
            _when(s.last_at),
            s.turns,
            s.rating_up,
            s.rating_down,
        )
        for s in sessions
    ]
    for line in _table(columns, rows, width):
        print(line, file=out)
    return _EXIT_OK


def _show_lines(path: Path, ident: str, width: int) -> list[str]:
    transcript = _read(path, lambda r: r.transcript(ident))
    if transcript is None:
        raise _CLIError(f"no session or conversation with id {ident!r} in {path}")
    meta = transcript.metadata
    user = meta.get("user_id") or "-"
    if transcript.kind == "session":
        header = [
            f"session {meta['session_id']}",
            f"user {user} · {meta['turns']} turn{'s' if meta['turns'] != 1 else ''}"
            f" · rated +{meta['rating_up']}/-{meta['rating_down']}",
            f"from {_when(meta['started_at'])} to {_when(meta['last_at'])}",
        ]
    else:
        tokens = ""
        if meta.get("total_tokens") is not None:
            tokens = (
                f" · tokens {meta['prompt_tokens']} in / "
                f"{meta['completion_tokens']} out"
            )
        header = [
            f"conversation {meta['id']}",
            f"user {user} · session {meta.get('session_id') or '-'}",
            f"{_when(meta['started_at'])} · {meta.get('model') or 'unknown model'}"
            f" · {_latency(meta['latency_ms'])}{tokens}",
        ]
        if meta.get("error"):
            header.append(f"error: {meta['error']}")
    lines = [_cut(line, width) for line in header]
    lines.append("─" * min(width, 60))
    if not transcript.messages:
        lines.append("(no messages)")
    lines.extend(_render_messages(transcript.messages, width))
    return lines


def _cmd_show(args: argparse.Namespace, out: TextIO) -> int:
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
        *("" if record[key] is None else record[key] for key in _CSV_COLUMNS[:11]),
        question,
        answer,
        json.dumps(c.metadata, ensure_ascii=False, sort_keys=True),
        json.dumps(record["messages"], ensure_ascii=False),
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
    for line in _table(columns, rows, _width()):
        print(line, file=out)
    return _EXIT_OK


def _cmd_outbox(args: argparse.Namespace, out: TextIO) -> int:
    counts = _read(_db_path(args), lambda r: r.outbox_counts())
    if args.json:
        _print_json(counts, out)
        return _EXIT_OK
    labels = {
        "pending": "waiting for delivery",
        "leased": "being delivered now",
        "dropped": "dropped (outbox full), since the file was created",
        "failed": "rejected by the API, since the file was created",
    }
    for key, value in counts.items():
        print(f"{key:<8} {value:>8}  {labels.get(key, '')}".rstrip(), file=out)
    return _EXIT_OK


class _ProgressBar:
    """A one-line progress bar on a terminal; silent when the stream is not one."""

    def __init__(self, stream: TextIO, label: str, *, enabled: bool = True) -> None:
        self._stream = stream
        self._label = label
        isatty = getattr(stream, "isatty", None)
        self._enabled = enabled and callable(isatty) and bool(isatty())
        self._lock = threading.Lock()
        self._last = 0.0
        self._drawn = 0

    def update(self, done: int, total: int) -> None:
        if not self._enabled:
            return
        with self._lock:
            now = time.monotonic()
            if done < total and now - self._last < 0.05:
                return  # redraw at most 20 times a second
            self._last = now
            size = max(10, min(40, _width() - len(self._label) - 24))
            filled = size if total <= 0 else min(size, round(size * done / total))
            text = f"\r{self._label} [{'#' * filled}{'.' * (size - filled)}] {done}/{total}"
            self._stream.write(text.ljust(self._drawn))
            self._stream.flush()
            self._drawn = len(text)

    def close(self) -> None:
        if self._enabled and self._drawn:
            self._stream.write("\r" + " " * self._drawn + "\r")
            self._stream.flush()
            self._drawn = 0


def _cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    token = (
        args.token
        or os.environ.get(_config.ENV_TOKEN)
        or os.environ.get(_config.ENV_TOKEN_ALT)
        or ""
    ).strip()  # as configure() does: a trailing newline from a secrets file is fine
    if not token:
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
    from ._exporters.outbox import replay

    bar = _ProgressBar(sys.stderr, "delivering")
    try:
        delivered, failed, pending = replay(
            path,
            token,
            endpoint,
            progress=lambda done, attempted: bar.update(attempted, waiting),
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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _paragraph(text: str, width: int, out: TextIO) -> None:
    # Paths and commands are never split: a long one overflows its line instead.
    for line in textwrap.wrap(
        text, width, break_long_words=False, break_on_hyphens=False
    ):
        print(line, file=out)


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from . import _demo

    path = _db_path(args)
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
            f"Everything goes to the local store {path}; the demo ignores "
            f"{_config.ENV_TOKEN}.",
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
        f"{_plural(result.ratings, 'rating')}."
    )
    _paragraph(summary, width, out)
    if args.quiet:
        return _EXIT_OK
    print(file=out)
    print("$ context-trace users", file=out)
    for line in _users_lines(path, width):
        print(line, file=out)
    print(file=out)
    print(_cut(f"$ context-trace show {result.showcase_session}", width), file=out)
    for line in _show_lines(path, result.showcase_session, width):
        print(line, file=out)
    print(file=out)
    if path == _config.default_db_path():
        print("Try next:", file=out)
    else:
        _paragraph(
            f"Try next, with {_config.ENV_DB}={path} set (or --db {path}):",
            width,
            out,
        )
    for command in (
        f"sessions --user {result.error_user}",
        "stats",
        "export --format csv -o demo.csv",
    ):
        print(f"  context-trace {command}", file=out)
    return _EXIT_OK


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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=db_help)
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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def add(
        name: str, help: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help, description=help, parents=[common, *parents]
        )

    add(
        "users",
        "per-user totals: conversations, sessions, latency, ratings, errors",
        as_json,
    )

    sessions = add("sessions", "sessions, most recently active first", as_json)
    sessions.add_argument("--user", metavar="USER", help="only this user's sessions")
    sessions.add_argument(
        "--limit",
        metavar="N",
        type=_positive_int,
        default=50,
        help="at most N (default 50)",
    )

    show = add("show", "the transcript of a session or of one conversation")
    show.add_argument("id", metavar="ID", help="a session id or a conversation id")

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
    add("outbox", "records waiting for the Context API, and dropped ones", as_json)

    replay = add("replay", "deliver the outbox to the Context API now")
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

    demo = add(
        "demo", "record a demo chatbot's traffic into the store (no keys needed)"
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


_COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "users": _cmd_users,
    "sessions": _cmd_sessions,
    "show": _cmd_show,
    "export": _cmd_export,
    "stats": _cmd_stats,
    "outbox": _cmd_outbox,
    "replay": _cmd_replay,
    "demo": _cmd_demo,
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
