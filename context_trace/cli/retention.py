"""
``context-trace retention``: active users, stickiness, weekly cohorts and churn.

The figures come from the dashboard's sidecar index (see
:mod:`context_trace._store.ui_index`), brought level with the store first:
the first run on a big store builds it, as the first ``context-trace ui`` does.
Definitions: :mod:`context_trace._store.retention`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sqlite3
import time
from collections.abc import Callable
from datetime import date, tzinfo
from pathlib import Path
from typing import TextIO, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from context_trace._store.analytics import Analytics
from context_trace._store.retention import MAX_WEEKS, Retention
from context_trace._store.segments import Segment, parse_segment
from context_trace._store.sqlite_store import SQLiteStore
from context_trace._store.ui_index import UIIndex

from ._common import time_zone as _time_zone
from ._options import add_meta_argument
from .commands import (
    _EXIT_OK,
    _EXIT_USAGE,
    _HINT,
    _CLIError,
    _db_path,
    _describe,
    _print_json,
)

__all__ = [
    "add_parser",
    "cmd_retention",
    "open_analytics",
    "parse_cli_segment",
    "parse_day",
    "parse_time_zone",
    "print_report",
]

_Report = TypeVar("_Report")

# Week columns of the cohort table, at most: 80 terminal columns.
_COHORT_COLUMNS = 10


def parse_day(text: str) -> date:
    """A ``YYYY-MM-DD`` day (UTC), for ``--since``."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a day as YYYY-MM-DD, got {text!r}"
        ) from None


def parse_time_zone(text: str) -> tzinfo:
    """An IANA time zone name (``--tz``), checked against the zone database."""
    try:
        return ZoneInfo(text.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown time zone {text!r} (expected an IANA name such as"
            " Europe/Paris, or UTC)"
        ) from None


def _weeks(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_WEEKS:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 1 to {MAX_WEEKS}, got {text!r}"
        )
    return value


def add_parser(
    add: Callable[..., argparse.ArgumentParser], as_json: argparse.ArgumentParser
) -> None:
    """Add ``retention`` with *add* (the CLI's sub-command factory)."""
    parser = add(
        "retention",
        "active users, new and returning, stickiness, weekly cohorts and"
        " churned users (UTC days, ISO weeks from Monday)",
        as_json,
    )
    parser.add_argument(
        "--weeks",
        metavar="N",
        type=_weeks,
        default=8,
        help=f"cover the last N ISO weeks, this one included (default 8, at most"
        f" {MAX_WEEKS})",
    )
    parser.add_argument(
        "--since",
        metavar="YYYY-MM-DD",
        type=parse_day,
        help="cover from the ISO week of this UTC day instead of --weeks",
    )
    add_meta_argument(
        parser, "a user's first conversation is then their first in the segment"
    )
    parser.add_argument(
        "--tz",
        metavar="ZONE",
        type=parse_time_zone,
        help="bucket days and weeks in this IANA time zone (default:"
        " $CONTEXT_TRACE_TZ, else UTC), e.g. Europe/Paris; the dashboard's index"
        " keeps the zone's figures from then on",
    )


def open_analytics(path: Path, tz: tzinfo | None = None) -> Analytics:
    """
    The store's dashboard queries, its sidecar index brought level first (and
    keeping the time zone *tz*'s retention aggregates, if given).
    """
    if not path.exists():
        raise _CLIError(f"no database at {path} ({_HINT})")
    if path.is_dir():
        raise _CLIError(f"{path} is a directory, not a database")
    try:
        with UIIndex(path, zones=[tz]) as index:
            index.build()
        with SQLiteStore(path).reads() as reads:
            return reads.dashboard(index=index.path)
    except (OSError, ValueError, sqlite3.Error) as exc:
        raise _CLIError(_describe(exc, path)) from None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _lines(report: Retention) -> list[str]:
    lines = [
        f"Retention from {report.since} to {report.today} (UTC days, ISO weeks"
        f" from Monday): {report.users} users in all",
        "",
        f"{'week of':<12}{'active':>8}{'new':>8}{'returning':>11}",
    ]
    lines += [
        f"{p.period:<12}{p.active:>8}{p.new:>8}{p.returning:>11}" for p in report.weekly
    ]
    lines += ["", f"{'month':<12}{'active':>8}{'new':>8}{'returning':>11}"
              f"{'DAU/MAU':>9}"]  # fmt: skip
    lines += [
        f"{p.period:<12}{p.active:>8}{p.new:>8}{p.returning:>11}{_pct(p.stickiness):>9}"
        for p in report.monthly
    ]
    lines += [
        f"Stickiness this month (mean daily / monthly active): {_pct(report.stickiness)}",
        "",
        "Cohorts: share of each first-seen week's users active 1, 2, ... weeks after",
    ]
    longest = max((len(c.retained) for c in report.cohorts), default=0)
    if longest > _COHORT_COLUMNS:
        lines[-1] += f" (the first {_COHORT_COLUMNS} weeks; --json has all)"
        longest = _COHORT_COLUMNS
    lines.append(
        f"{'first week':<12}{'users':>6}"
        + "".join(f"{'w' + str(k):>6}" for k in range(1, longest + 1))
    )
    lines += [
        f"{c.week:<12}{c.users:>6}"
        + "".join(f"{_pct(s) if c.users else '-':>6}" for s in c.retained[:longest])
        for c in report.cohorts
    ]
    lines += [
        "",
        f"Churned: {report.churned_total} active in the 7 days before the last 7,"
        " none since",
    ]
    if report.churned:
        lines.append(f"{'user':<32}{'turns then':>11}  last seen (UTC)")
        lines += [
            f"{u.user_id[:31]:<32}{u.previous_conversations:>11}  " + _when(u.last_seen)
            for u in report.churned
        ]
    return lines


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch))


def parse_cli_segment(items: list[str], name: str) -> Segment:
    """
    A command line's ``KEY=VALUE`` conditions (``KEY:VALUE``, the dashboard's
    form, is read too) as a segment; a bad one is a usage error naming *name*.
    """
    same = [item if "=" in item else item.replace(":", "=", 1) for item in items]
    try:
        return parse_segment(same, "=", name)
    except ValueError as exc:
        raise _CLIError(str(exc), _EXIT_USAGE) from None


def print_report(
    args: argparse.Namespace,
    out: TextIO,
    analytics: Analytics,
    query: Callable[[Analytics], _Report],
    lines: Callable[[_Report], list[str]],
) -> int:
    """
    Run *query* on *analytics* (closed after), then print its report: JSON with
    ``--json``, else *lines*. A bad argument is a usage error; a store error
    is described.
    """
    try:
        report = query(analytics)
    except ValueError as exc:
        raise _CLIError(str(exc), _EXIT_USAGE) from None
    except sqlite3.Error as exc:
        raise _CLIError(_describe(exc, _db_path(args))) from None
    finally:
        analytics.close()
    if args.json:
        _print_json(dataclasses.asdict(report), out)  # type: ignore[call-overload]
    else:
        out.write("\n".join(lines(report)) + "\n")
    return _EXIT_OK


def cmd_retention(args: argparse.Namespace, out: TextIO) -> int:
    """Print the retention report (a table, or JSON with ``--json``)."""
    segment = parse_cli_segment(args.meta, "--meta")
    tz = _time_zone(args)
    return print_report(
        args,
        out,
        open_analytics(_db_path(args), tz),
        lambda a: a.retention(
            weeks=args.weeks, since=args.since, segment=segment, tz=tz
        ),
        _lines,
    )
