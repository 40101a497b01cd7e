"""
``context-trace users``, ``sessions`` and ``show``: the tables and a session's
transcript, turn by turn (text and ``--json``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from context_trace._store.base import Reads
from context_trace._store.models import StoredConversation, Transcript

from ._common import _EXIT_OK, _NO_USER, _CLIError, _db_path, _print_json, _read
from ._format import (
    _Column,
    _flat,
    _latency,
    _render_messages,
    _table,
    _table_width,
    _when,
    _width,
    _wrap,
)

# The last columns of the users and sessions tables: the ratings, the failed
# turns and the turns whose tool failed (left out when none: _tool_column).
_OUTCOME_COLUMNS = (
    _Column("UP", right=True),
    _Column("DOWN", right=True),
    _Column("ERRORS", right=True),
    _Column("TOOL ERR", right=True),
)


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
        *_OUTCOME_COLUMNS,
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
        *_OUTCOME_COLUMNS,
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
