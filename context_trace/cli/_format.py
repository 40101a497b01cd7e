"""
Terminal layout for the ``context-trace`` command: tables, wrapping, progress.

Pure text functions: they take rows and a width and return lines; nothing here
reads the store or parses arguments.
"""

from __future__ import annotations

import shutil
import textwrap
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from context_trace._record import Message

_DEFAULT_WIDTH = 80
_MIN_WIDTH = 40
_ROLE_WIDTH = 11  # "assistant" plus two spaces


def _width() -> int:
    """The terminal's width (80 when not a terminal), at least 40."""
    columns = shutil.get_terminal_size((_DEFAULT_WIDTH, 24)).columns
    return max(_MIN_WIDTH, columns)


def _table_width(out: TextIO) -> int | None:
    """
    How wide a table may be on *out*: the terminal's width, or None (no limit).

    Output that is not a terminal goes to a file, a pipe or a script, where a cut
    id is a broken id: nothing is truncated there.
    """
    isatty = getattr(out, "isatty", None)
    return _width() if callable(isatty) and isatty() else None


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
    columns: Sequence[_Column], rows: Iterable[Sequence[object]], width: int | None
) -> list[str]:
    """
    Format *rows* as aligned columns no wider than *width* (None: any width).

    Only flexible columns (free text) are narrowed, widest first; ids never are.
    """
    cells = [[_flat(str(value)) for value in row] for row in rows]
    widths = [
        max([len(column.header), *(len(row[i]) for row in cells)])
        for i, column in enumerate(columns)
    ]
    gap = 2
    excess = 0 if width is None else sum(widths) + gap * (len(columns) - 1) - width
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


def _render_messages(
    messages: Sequence[Message],
    width: int,
    *,
    failed: bool = False,
    error: str | None = None,
    first: bool = True,
) -> list[str]:
    """
    A transcript: the role in a column, the text wrapped beside it.

    A failed tool is marked "(failed)" and its output shown as its error.
    *failed* is set for a turn that failed: an answer it ends with never
    reached the user, and is marked so; *error*, if given, follows in place.
    *first* is False for a session's later turns, so a blank line separates
    each question from what came before.
    """
    text_width = max(20, width - _ROLE_WIDTH)
    pad = " " * _ROLE_WIDTH
    out: list[str] = []
    undelivered = (
        len(messages) - 1
        if failed and messages and messages[-1].role == "assistant"
        else None
    )
    for index, message in enumerate(messages):
        if message.role == "user" and (index > 0 or not first):
            out.append("")  # a blank line before each new question
        label = message.role.ljust(_ROLE_WIDTH)
        if message.role == "tool":
            name = _flat(message.name or "tool") + (
                " (failed)" if message.error else ""
            )
            out.append(label + _cut(name, text_width))
            fields = (
                ("input: ", message.tool_input),
                ("error: " if message.error else "output: ", message.content),
            )
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
        if index == undelivered:
            out.append(pad + "(not delivered: the turn failed after this answer)")
    if error is not None:
        body = _wrap(f"the turn failed: {error}", text_width)
        out.append("error".ljust(_ROLE_WIDTH) + body[0])
        out.extend(pad + rest for rest in body[1:])
    return out


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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _paragraph(text: str, width: int, out: TextIO) -> None:
    # Paths and commands are never split: a long one overflows its line instead.
    for line in textwrap.wrap(
        text, width, break_long_words=False, break_on_hyphens=False
    ):
        print(line, file=out)
