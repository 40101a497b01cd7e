"""
What :class:`~.context_api.ContextAPIExporter` sent to each Context thread.

A rating targets its thread's last assistant message. That message's index
comes from the session's transcript (``transcript_source``, which the SQLite
store provides) when there is one, else from the messages this process sent to
the thread: a bounded in-process LRU of sessions (:class:`SentThreads`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from context_trace._record import Message

__all__ = ["SentThreads"]


@dataclass(slots=True)
class _ThreadState:
    """What this exporter sent to one thread: message count, last assistant index."""

    count: int = 0
    last_assistant: int | None = None


class SentThreads:
    """
    The sessions sent to Context, least recently used forgotten first.

    Args:
        size: Sessions remembered.
        transcript_source: Returns a session's transcript so far, or None.
        warn_once: ``(key, message, *args)``: logs a failing *transcript_source*
            once.
    """

    def __init__(
        self,
        size: int,
        transcript_source: Callable[[str], Sequence[Message]] | None,
        warn_once: Callable[..., None],
    ) -> None:
        self._size = size
        self._source = transcript_source
        self._warn_once = warn_once
        self._lock = threading.Lock()
        self._threads: OrderedDict[str, _ThreadState] = OrderedDict()

    def remember(self, session_id: str, messages: Sequence[Message]) -> None:
        """Count *messages* as sent to *session_id*'s thread."""
        with self._lock:
            state = self._threads.pop(session_id, None) or _ThreadState()
            for message in messages:
                if message.role == "assistant":
                    state.last_assistant = state.count
                state.count += 1
            self._threads[session_id] = state
            while len(self._threads) > self._size:
                self._threads.popitem(last=False)

    def last_assistant(self, session_id: str) -> int | None:
        """Index of the session's last assistant message in its Context thread."""
        if self._source is not None:
            try:
                transcript = self._source(session_id)
            except Exception as exc:  # noqa: BLE001 - fall back to what we sent
                self._warn_once(
                    ("transcript_source", type(exc).__name__),
                    "context_trace: transcript_source failed (%s); using this process's record",
                    type(exc).__name__,
                )
            else:
                for index in range(len(transcript) - 1, -1, -1):
                    if transcript[index].role == "assistant":
                        return index
                # Not in the source (e.g. a store that keeps no local copy):
                # fall back to what this process sent.
        with self._lock:
            state = self._threads.get(session_id)
            if state is None:
                return None
            self._threads.move_to_end(session_id)
            return state.last_assistant
