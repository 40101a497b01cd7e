"""
``context-trace demo`` (records the demo app into its own store) and
``context-trace ui`` (starts the dashboard).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path
from typing import TextIO

from context_trace import _config

from ._browse import _show_lines, _users_lines
from ._common import _DEMO_DB, _EXIT_OK, _CLIError, _db_path, _describe, time_zone
from ._format import (
    _cut,
    _paragraph,
    _plural,
    _ProgressBar,
    _width,
)


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
            args.index, time_zone(args), args.prices,
            getattr(args, "postgres_cache", None),
        )  # fmt: skip
    except serve.UIError as exc:
        raise _CLIError(str(exc)) from None
