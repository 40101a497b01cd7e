"""
``context-trace compare``: two segments, or two periods, side by side.

A segment is ``KEY=VALUE`` conditions on the turns' metadata (``--segment-a
plan=pro``; repeat the option for several, all of which must hold). Periods
are ``--period week`` (this ISO week so far against the last) or ``month``, or
two ranges of UTC days (``--a-range 2026-03-01..2026-03-07 --b-range ...``),
of every turn or of one ``--meta KEY=VALUE`` (see
:mod:`context_trace._store.compare_period`). The
figures come from the dashboard's sidecar index (see
:mod:`context_trace._store.segments`), brought level with the store first.
"""

from __future__ import annotations

import argparse
import dataclasses
import sqlite3
from collections.abc import Callable
from typing import TextIO

from context_trace._store.compare_period import PERIODS, DayRange, parse_day_range
from context_trace._store.segments import (
    MIN_SAMPLE,
    Comparison,
    Figure,
    SegmentFigures,
)

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
)
from .retention import open_analytics, parse_cli_segment

__all__ = ["add_parser", "cmd_compare"]

# (attribute, label, format) of each figure, in the order printed.
_ROWS: tuple[tuple[str, str, str], ...] = (
    ("users", "users", "int"),
    ("conversations", "conversations", "int"),
    ("conversations_per_user", "conversations per user", "float"),
    ("rating_up_share", "rated helpful", "pct"),
    ("error_rate", "error rate", "pct"),
    ("latency_p50_ms", "p50 latency (ms)", "int"),
    ("latency_p95_ms", "p95 latency (ms)", "int"),
    ("tokens_per_conversation", "tokens per conversation", "float"),
    ("cost_per_conversation", "cost per conversation", "money"),
    ("week1_retention", "week-1 retention", "pct"),
)


def add_parser(
    add: Callable[..., argparse.ArgumentParser], as_json: argparse.ArgumentParser
) -> None:
    """Add ``compare`` with *add* (the CLI's sub-command factory)."""
    parser = add(
        "compare",
        "two segments of the turns (metadata KEY=VALUE), or two periods, side"
        " by side, with counts and a two-proportion z-test of their shares",
        as_json,
    )
    for side in ("a", "b"):
        parser.add_argument(
            f"--segment-{side}",
            metavar="KEY=VALUE",
            action="append",
            help=f"segment {side.upper()}: turns whose metadata has this value"
            " (repeat: all must hold)",
        )
    parser.add_argument(
        "--period",
        choices=PERIODS,
        help="compare this ISO week (or month) so far with the whole one before",
    )
    for side in ("a", "b"):
        parser.add_argument(
            f"--{side}-range",
            metavar="FIRST..LAST",
            help=f"period {side.upper()}: UTC days FIRST to LAST (YYYY-MM-DD, both"
            " included)",
        )
    add_meta_argument(parser, "with --period or the ranges, one condition at most")
    add_range_argument(parser)
    add_prices_argument(
        parser,
        help="price overrides for the cost per conversation, JSON or TOML (see"
        " the cost command)",
    )


def _value(figure: Figure, kind: str) -> str:
    if figure.value is None:
        return f"- (n={figure.count})"
    if kind == "pct":
        return f"{100 * figure.value:.1f}% (n={figure.count})"
    if kind == "money":
        return f"${figure.value:.5f} (n={figure.count})"
    if kind == "float":
        return f"{figure.value:.2f} (n={figure.count})"
    return f"{round(figure.value)}" + ("" if figure.count == figure.value else
                                       f" (n={figure.count})")  # fmt: skip


def _label(figures: SegmentFigures) -> str:
    return ", ".join(f"{k}={v}" for k, v in figures.segment.items())


def _lines(result: Comparison) -> list[str]:
    a, b = result.a, result.b
    # Both are given on the command line.
    assert a is not None
    assert b is not None
    head_a = "A: " + _label(a)
    values = [(label, _value(getattr(a, name), kind), _value(getattr(b, name), kind))
              for name, label, kind in _ROWS]  # fmt: skip
    # Side A's column is as wide as its widest cell, so B never runs into it.
    width = max(26, len(head_a) + 2, *(len(va) + 2 for _, va, _ in values))
    lines = [f"{'':<25}{head_a:<{width}}{'B: ' + _label(b)}"]
    lines += [f"{label:<25}{va:<{width}}{vb}" for label, va, vb in values]
    lines += ["", "Two-proportion z-test (two-sided, p < 0.05 at |z| >= 1.96):"]
    lines += [
        f"  {d.measure}: {d.note}" + ("" if d.z is None else f" (z = {d.z})")
        for d in result.differences
    ]
    lines.append(
        f"  (tested only with at least {MIN_SAMPLE} of each outcome on each side)"
    )
    return lines


def _periods(
    args: argparse.Namespace,
) -> tuple[DayRange | None, DayRange | None] | None:
    """The periods asked for (None: segments are compared); usage errors named."""
    ranges = (args.a_range, args.b_range)
    if args.period is None and ranges == (None, None):
        if args.meta:
            raise _CLIError("--meta goes with --period or the ranges", _EXIT_USAGE)
        return None
    if args.segment_a or args.segment_b:
        raise _CLIError(
            "give segments (--segment-a/-b) or periods, not both", _EXIT_USAGE
        )
    if args.period is not None:
        if ranges != (None, None):
            raise _CLIError(
                "give --period or --a-range/--b-range, not both", _EXIT_USAGE
            )
        return None, None
    if None in ranges:
        raise _CLIError("--a-range and --b-range go together", _EXIT_USAGE)
    try:
        return (
            parse_day_range(args.a_range, "--a-range"),
            parse_day_range(args.b_range, "--b-range"),
        )
    except ValueError as exc:
        raise _CLIError(str(exc), _EXIT_USAGE) from None


def cmd_compare(args: argparse.Namespace, out: TextIO) -> int:
    """Print the comparison (a table, or JSON with ``--json``)."""
    periods = _periods(args)
    if periods is None:
        if not args.segment_a or not args.segment_b:
            raise _CLIError(
                "compare needs --segment-a and --segment-b, or --period, or"
                " --a-range and --b-range",
                _EXIT_USAGE,
            )
        a = parse_cli_segment(args.segment_a, "--segment-a")
        b = parse_cli_segment(args.segment_b, "--segment-b")
    meta = parse_cli_segment(args.meta, "--meta")
    if len(meta) > 1:
        raise _CLIError(
            "--meta: periods are compared for one condition at most", _EXIT_USAGE
        )
    prices = load_cli_prices(args)
    path = _db_path(args)
    analytics = open_analytics(path)
    analytics.use_prices(prices)
    try:
        if periods is None:
            result = analytics.compare(a, b, args.range)
        else:
            result = analytics.compare_periods(
                meta, period=args.period, a=periods[0], b=periods[1]
            )
    except sqlite3.Error as exc:
        raise _CLIError(_describe(exc, path)) from None
    finally:
        analytics.close()
    if args.json:
        _print_json(dataclasses.asdict(result), out)
    else:
        out.write("\n".join(_lines(result)) + "\n")
    return _EXIT_OK
