"""
Testing helpers for your own test suite: capture what context_trace records.

``capture()`` swaps the export pipeline for an in-memory one that records each
turn the moment it ends (no background thread, no flush, no timing), and
restores the real one afterwards::

    from context_trace.testing import capture, assert_conversation

    def test_greets_the_user():
        with capture() as records:
            handle_request(user="u1", text="hi")
        assert_conversation(records, user_id="u1", contains="hello")

With pytest the ``context_trace_records`` fixture does the same (the plugin is
registered through the ``pytest11`` entry point when context-trace is installed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import _runtime
from ._exporters.memory import InMemoryExporter
from ._pipeline import InlinePipeline
from ._record import Conversation, Feedback, Record

__all__ = ["CapturedRecords", "assert_conversation", "capture", "context_trace_records"]

_ANY: Any = object()


class CapturedRecords(list[Record]):
    """The list ``capture()`` yields: every record, in the order turns ended."""

    @property
    def conversations(self) -> list[Conversation]:
        """Only the :class:`Conversation` records."""
        return [r for r in self if isinstance(r, Conversation)]

    @property
    def feedback(self) -> list[Feedback]:
        """Only the :class:`Feedback` records (ratings)."""
        return [r for r in self if isinstance(r, Feedback)]

    def for_user(self, user_id: str) -> list[Conversation]:
        """The conversations attributed to *user_id*."""
        return [c for c in self.conversations if c.user_id == user_id]


class _ListExporter(InMemoryExporter):
    def __init__(self, target: CapturedRecords) -> None:
        super().__init__()
        self._target = target

    def export(self, batch: Any) -> Any:
        self._target.extend(batch)
        return super().export(batch)


@contextmanager
def capture(*, redact: Callable[[str], str] | None = None) -> Iterator[CapturedRecords]:
    """
    Record into a list instead of the configured exporter, synchronously.

    Args:
        redact: A redactor for the captured texts (default: the configured one).

    Yields:
        A :class:`CapturedRecords` list that fills as turns end.

    .. versionadded:: 0.1.0
    """
    records = CapturedRecords()
    pipeline = InlinePipeline(
        _ListExporter(records),
        prepare=_runtime.preparer(
            redact if redact is not None else _runtime.active_config().redact
        ),
    )
    previous = _runtime.install_pipeline(pipeline)
    try:
        yield records
    finally:
        _runtime.restore_pipeline(pipeline, previous)


def assert_conversation(
    records: list[Record],
    *,
    user_id: str | None = _ANY,
    session_id: str | None = _ANY,
    contains: str | None = None,
    error: bool | None = None,
    count: int | None = None,
) -> list[Conversation]:
    """
    Assert that *records* hold conversations matching every given criterion.

    Args:
        records: What :func:`capture` (or an in-memory exporter) collected.
        user_id: The conversation's user (None matches anonymous turns).
        session_id: The conversation's session.
        contains: A substring of some message's text.
        error: True for failed turns only, False for successful ones.
        count: The exact number of matching conversations (default: at least one).

    Returns:
        The matching conversations.

    Raises:
        AssertionError: with a summary of what was recorded.

    .. versionadded:: 0.1.0
    """
    conversations = [r for r in records if isinstance(r, Conversation)]
    found = [
        c
        for c in conversations
        if (user_id is _ANY or c.user_id == user_id)
        and (session_id is _ANY or c.session_id == session_id)
        and (contains is None or any(contains in m.content for m in c.messages))
        and (error is None or (c.error is not None) == error)
    ]
    ok = len(found) == count if count is not None else bool(found)
    if not ok:
        wanted = {
            k: v
            for k, v in (
                ("user_id", user_id),
                ("session_id", session_id),
                ("contains", contains),
                ("error", error),
            )
            if v is not _ANY and v is not None
        }
        summary = "\n".join(
            f"  - user={c.user_id!r} session={c.session_id!r} "
            f"messages={[m.content[:40] for m in c.messages]!r}"
            for c in conversations[:20]
        )
        expected = f"exactly {count}" if count is not None else "at least one"
        raise AssertionError(
            f"expected {expected} conversation(s) matching {wanted}, found {len(found)}; "
            f"recorded {len(conversations)}:\n{summary or '  (none)'}"
        )
    return found


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional at run time
    pass
else:

    @pytest.fixture
    def context_trace_records() -> Iterator[CapturedRecords]:
        """Everything context_trace records during the test (see :func:`capture`)."""
        with capture() as records:
            yield records
