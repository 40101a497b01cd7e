"""``context-trace topics``: what users ask about (needs the ``analytics`` extra)."""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Callable, Sequence
from typing import TextIO

from ._format import _Column, _flat, _table, _table_width
from .commands import _EXIT_OK, _CLIError, _db_path, _describe, _open, _print_json

__all__ = ["add_topics_arguments", "cmd_topics"]


def add_topics_arguments(
    parser: argparse.ArgumentParser, count: Callable[[str], int]
) -> None:
    """The ``topics`` command's own options (``--db`` and ``--json`` are shared)."""
    parser.add_argument(
        "--refit",
        action="store_true",
        help="fit the topics again on the whole store now (they are otherwise"
        " fitted once, then again each time the store has doubled)",
    )
    parser.add_argument(
        "--struggling",
        action="store_true",
        help="only the struggling topics: big enough, with satisfaction below"
        " the store's or an error rate above it; the worst first",
    )
    parser.add_argument(
        "--topics",
        metavar="N",
        type=count,
        default=None,
        help="with --refit (or the first fit): exactly N topics instead of the"
        " number the data gives",
    )


def cmd_topics(args: argparse.Namespace, out: TextIO) -> int:
    path = _db_path(args)
    n_topics = getattr(args, "topics", None)
    _open(path).close()  # the same errors as every command for a missing store
    try:
        from context_trace._store.ui_index import UIIndex
        from context_trace.analytics.topic_index import TopicIndex, struggling
    except ImportError as exc:
        raise _CLIError(
            f"topics need the analytics extra ({exc.name} is missing):"
            " pip install 'context-trace[analytics]'"
        ) from None
    try:
        # Each turn's satisfaction comes from the dashboard's index: bring it
        # level first (the dashboard does the same).
        with UIIndex(path) as ui:
            ui.build()
        with TopicIndex(path, n_topics=n_topics) as index:
            if args.refit:
                index.refit()
            else:
                index.build()
            rows = index.summary()
            model = index.model
        if args.struggling:
            rows = struggling(rows, None)
    except (OSError, ValueError, sqlite3.Error) as exc:
        raise _CLIError(_describe(exc, path)) from None
    if args.json:
        _print_json(
            {"topics": [r.to_json() for r in rows],
             "fitted_on": model.fitted_on if model is not None else 0},
            out,
        )  # fmt: skip
        return _EXIT_OK
    if not rows:
        what = "struggling topics" if args.struggling else "questions to group"
        print(f"no {what} yet in {path}", file=out)
        return _EXIT_OK
    columns = (
        _Column("TOPIC"),
        _Column("CONVERSATIONS", right=True),
        _Column("USERS", right=True),
        _Column("SHARE", right=True),
        _Column("SATISFACTION", right=True),
        _Column("ERRORS", right=True),
        _Column("P50", right=True),
        _Column("LABEL", flexible=True, min_width=12),
        _Column("QUESTION", flexible=True, min_width=12),
    )
    table: list[Sequence[object]] = [
        (r.id, r.conversations, r.users, f"{100 * r.share:.1f}%",
         "-" if r.satisfaction is None else f"{r.satisfaction:.2f}",
         "-" if r.error_rate is None else f"{100 * r.error_rate:.1f}%",
         "-" if r.latency_p50_ms is None else f"{r.latency_p50_ms} ms",
         _flat(r.label), _flat(r.question))
        for r in rows
    ]  # fmt: skip
    for line in _table(columns, table, _table_width(out)):
        print(line, file=out)
    return _EXIT_OK
