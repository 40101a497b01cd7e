"""
``context-trace export``: every turn as JSON lines or CSV; ``--since`` parsing.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from context_trace._record import COLUMN_KEYS
from context_trace._store.models import StoredConversation

from ._common import _EXIT_OK, _CLIError, _db_path, _describe, _open

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
