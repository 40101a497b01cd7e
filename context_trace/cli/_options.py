"""
The options that several report commands (``cost``, ``compare``, ``retention``,
``ui``) take, each declared here once: the same name, help, choices and checks
wherever it appears.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from context_trace._store.analytics import RANGES

from ._common import _EXIT_USAGE, _CLIError

__all__ = [
    "add_meta_argument",
    "add_prices_argument",
    "add_range_argument",
    "load_cli_prices",
]

_PRICES_HELP = (
    "price overrides, JSON or TOML (.toml): {model: {input, output, cache_read,"
    " cache_write, reasoning}} in dollars per million tokens; they override"
    " genai-prices or add models"
)


def add_range_argument(parser: argparse.ArgumentParser) -> None:
    """``--range``: the dashboard's ranges (24h, 7d, 30d, all), default all."""
    parser.add_argument(
        "--range",
        choices=tuple(RANGES),
        default="all",
        help="only the turns of the last 24h, 7d, 30d (UTC days) or all (default)",
    )


def add_meta_argument(parser: argparse.ArgumentParser, note: str = "") -> None:
    """
    ``--meta KEY=VALUE`` (``KEY:VALUE`` is read too), repeatable: a segment,
    read with :func:`~context_trace.cli.retention.parse_cli_segment`; *note*
    ends the help with what the segment means for this command.
    """
    parser.add_argument(
        "--meta",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="only the turns whose metadata has this value (KEY:VALUE too;"
        " repeat: all must hold)" + (f"; {note}" if note else ""),
    )


def add_prices_argument(
    parser: argparse.ArgumentParser, help: str = _PRICES_HELP
) -> None:
    """``--prices FILE``, for every command that shows a cost (read by :func:`load_cli_prices`)."""
    parser.add_argument("--prices", metavar="FILE", type=Path, help=help)


def load_cli_prices(args: argparse.Namespace) -> dict[str, dict[str, float]] | None:
    """The ``--prices`` file's prices, or None without one; a bad file is a usage error."""
    path = getattr(args, "prices", None)
    if path is None:
        return None
    from context_trace.analytics.pricing import load_prices

    try:
        return load_prices(path, "--prices")
    except ValueError as exc:
        raise _CLIError(str(exc), _EXIT_USAGE) from None
