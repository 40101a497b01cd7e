"""
``context-trace cost``: what the recorded turns cost, by model, user, day or
session; and ``users --sort cost``.

Prices are applied when read (see :mod:`context_trace.analytics.pricing`):
``genai-prices`` by model name, overridden or extended by ``--prices FILE``
(JSON or TOML, ``{"model": {"input": 0.2, "output": 0.6}}`` in dollars per
million tokens). The token sums come from the dashboard's sidecar index (see
:mod:`context_trace._store.cost`), brought level with the store first.
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TextIO

from context_trace._store.analytics import Analytics
from context_trace._store.cost import COST_BY, CostReport, CostRow

from ._options import (
    add_meta_argument,
    add_prices_argument,
    add_range_argument,
    load_cli_prices,
)
from .commands import (
    _EXIT_OK,
    _EXIT_USAGE,
    _CLIError,
    _db_path,
    _describe,
    _print_json,
    _read,
)
from .retention import open_analytics, parse_cli_segment, parse_day, print_report

__all__ = ["add_parser", "cmd_cost", "cmd_users_by_cost"]


def add_parser(
    add: Callable[..., argparse.ArgumentParser], as_json: argparse.ArgumentParser
) -> None:
    """Add ``cost`` with *add* (the CLI's sub-command factory)."""
    parser = add(
        "cost",
        "what the turns cost (priced when read, from genai-prices and --prices),"
        " by model, user, UTC day or session, with the calls left unpriced",
        as_json,
    )
    parser.add_argument(
        "--by", choices=COST_BY, default="model", help="group by (default: model)"
    )
    add_range_argument(parser)
    parser.add_argument(
        "--since",
        metavar="YYYY-MM-DD",
        type=parse_day,
        help="only the UTC days from this one (instead of --range)",
    )
    add_meta_argument(parser)
    parser.add_argument(
        "--limit",
        metavar="N",
        type=int,
        default=20,
        help="at most N rows, the costliest (default 20; days: all)",
    )
    add_prices_argument(parser)


def _open(args: argparse.Namespace) -> Analytics:
    prices = load_cli_prices(args)  # a bad file is refused before the index is built
    path = _db_path(args)
    opened = open_analytics(path)
    opened.use_prices(prices)
    if getattr(args, "by", None) == "topic":
        try:
            from context_trace.analytics.topic_index import default_topics_path
        except ImportError:  # pragma: no cover - the analytics extra is missing
            return opened
        topics = default_topics_path(path)
        if topics.exists():
            opened.attach_topics(topics)
    return opened


def money(value: float | None) -> str:
    """Dollars as the CLI and the dashboard print them."""
    if value is None:
        return "-"
    return f"${value:,.4f}" if value < 1000 else f"${value:,.0f}"


def _line(row: CostRow, label: str) -> str:
    unpriced = f"{row.unpriced_calls}" if row.unpriced_calls else ""
    # Nothing of it priced: no cost to show, not a cost of zero.
    cost = None if row.calls and row.unpriced_calls >= row.calls else row.cost
    return (
        f"{label[:30]:<31}{row.turns:>7}{row.calls:>7}{unpriced:>9}"
        f"{row.input_tokens + row.output_tokens:>13,}{money(cost):>13}"
    )


def _lines(report: CostReport) -> list[str]:
    where = ", ".join(f"{k}:{v}" for k, v in report.segment.items())
    lines = [
        f"Cost by {report.by}, {report.range}"
        + (f", {where}" if where else "")
        + " (US$, priced when read)",
        "",
        f"{report.by.upper():<31}{'TURNS':>7}{'CALLS':>7}{'UNPRICED':>9}"
        f"{'TOKENS':>13}{'COST':>13}",
    ]
    lines += [
        _line(r, "(no user)" if r.key is None and report.by == "user" else r.key or "-")
        for r in report.rows
    ]
    lines += ["", _line(report.total, "total")]
    if report.total.unpriced_calls:
        names = ", ".join(report.unpriced_models) or "no model named"
        lines.append(
            f"{report.total.unpriced_calls} calls unpriced (not counted in the"
            f" cost): {names}; give their prices with --prices"
        )
    return lines


def cmd_cost(args: argparse.Namespace, out: TextIO) -> int:
    """Print the cost report (a table, or JSON with ``--json``)."""
    segment = parse_cli_segment(args.meta, "--meta")
    if args.limit < 1:
        raise _CLIError(f"--limit must be at least 1, got {args.limit}", _EXIT_USAGE)
    return print_report(
        args,
        out,
        _open(args),
        lambda a: a.cost(
            args.by, args.range, segment, since_day=args.since, limit=args.limit
        ),
        _lines,
    )


def cmd_users_by_cost(args: argparse.Namespace, out: TextIO) -> int:
    """``users --sort cost``: the store's per-user totals, costliest first, with cost."""
    path = _db_path(args)
    analytics = _open(args)
    try:
        page = analytics.users(sort="cost", limit=1 << 30)
    except sqlite3.Error as exc:
        raise _CLIError(_describe(exc, path)) from None
    finally:
        analytics.close()
    summaries = {u.user_id: u for u in _read(path, lambda r: r.users(sort="user"))}
    rows: list[dict[str, Any]] = []
    last: list[dict[str, Any]] = []
    for item in page.items:
        summary = summaries.get(item.user_id)
        if summary is None:
            continue
        row = {**asdict(summary), "cost": item.cost,
               "unpriced_calls": item.unpriced_calls}  # fmt: skip
        (last if item.user_id is None else rows).append(row)
    if args.limit is not None:
        rows = rows[: args.limit]
    rows += last  # the (no user) row always comes last
    if args.json:
        _print_json(rows, out)
        return _EXIT_OK
    if not rows:
        print(f"no users recorded yet in {path}", file=out)
        return _EXIT_OK
    print(f"{'USER':<32}{'CONVS':>7}{'ERRORS':>7}{'UNPRICED':>9}{'COST':>14}", file=out)
    for row in rows:
        user = "(no user)" if row["user_id"] is None else str(row["user_id"])[:31]
        unpriced = row["unpriced_calls"] or ""
        print(
            f"{user:<32}{row['conversations']:>7}{row['errors']:>7}{unpriced:>9}"
            f"{money(row['cost']):>14}",
            file=out,
        )
    return _EXIT_OK
