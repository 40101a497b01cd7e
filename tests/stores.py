"""
Builders of the SQLite stores the tests read: records written by the real
writer, and stores recorded by real LangChain turns in a clean process state.

Every test that fills a store file goes through these, so a store is written
one way (``SQLiteExporter``, every record accepted) wherever a test needs one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from context_trace import _runtime
from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Feedback, Message
from context_trace._store.ui_index import UIIndex

Record = Conversation | Feedback

# The variables a recording reads its settings from (tests/conftest.py clears
# them per test; a module-scoped store is built before that fixture runs).
_SETTINGS_PREFIXES = ("CONTEXT_", "GETCONTEXT_")


def write_records(
    path: Path, *batches: Sequence[Record], ui_index: bool = False
) -> Path:
    """
    Write each batch of records into the store at *path* with the real writer,
    one export per batch (as the pipeline delivers them), and assert that none
    failed. With *ui_index*, build the dashboard's index too. Returns *path*.
    """
    store = SQLiteExporter(path)
    try:
        for batch in batches:
            assert 0 == store.export(list(batch)).failed
    finally:
        store.shutdown()
    if ui_index:
        with UIIndex(path) as index:
            index.build()
    return path


def in_batches(records: Sequence[Record], size: int) -> list[Sequence[Record]]:
    """*records* cut into batches of *size* (the last one shorter)."""
    return [records[start : start + size] for start in range(0, len(records), size)]


def with_metadata(conv: Conversation, **metadata: str) -> Conversation:
    """*conv* with *metadata* added to (or replacing keys of) its own."""
    return dataclasses.replace(conv, metadata={**conv.metadata, **metadata})


def greeting(
    n: int,
    user: str | None,
    started: float,
    *,
    seconds: float = 0.1,
    **fields: Any,
) -> Conversation:
    """
    Turn ``c<n>``: "hi", answered "hello", *seconds* long, in the user's session
    ``s-<user>`` (no session without a user); *fields* are the Conversation's
    others (metadata, error, model, usage...).
    """
    return Conversation(
        id=f"c{n}",
        user_id=user,
        session_id=None if user is None else f"s-{user}",
        started_at=started,
        ended_at=started + seconds,
        messages=(Message("user", "hi"), Message("assistant", "hello")),
        **fields,
    )


def record_store(path: Path, record: Callable[[Path], object]) -> Path:
    """
    Run ``record(path)`` (real turns, recorded into *path*) in a clean process
    state: no settings from the environment, the runtime reset before and after.
    For a store a module's tests share, built before the per-test clean-up runs.
    Returns *path*.
    """
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(_SETTINGS_PREFIXES):
                mp.delenv(name)
        _runtime.reset()
        try:
            record(path)
        finally:
            _runtime.reset()
    return path
