"""
The batch pipeline's overload policy (back-pressure): wait for room, else drop.

The worker shares the GIL with the app: 32 busy request threads leave it ~1/33
of the CPU, so it falls behind an app it could out-write alone. At the
high-water mark (:data:`HIGH_WATER` = 256 items, at most ``max_queue``) the
emitting thread waits on the pipeline's ``_room``, up to
``backpressure_timeout`` seconds, for the worker to take a chunk; waiting
releases the GIL, so the worker catches up. Then the item is queued if the
queue is below ``max_queue``, else the *new* item is dropped and counted, with
one warning. The wait is bounded three ways: never on the worker thread (it
would wait for itself), never longer than the timeout, and not at all while the
worker is stalled (a wait that timed out with nothing taken marks it stalled
until it takes a chunk), so a hung exporter costs one timeout, not one per
request. ``stats()`` counts the waits (``waited``, ``waited_ms``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._pipeline import BatchPipeline

__all__ = ["DEFAULT_BACKPRESSURE_TIMEOUT", "HIGH_WATER", "drop", "make_room"]

# The logger of the module these came from: its records keep their name.
_logger = logging.getLogger("context_trace._pipeline")

# Queued turns at which an emitting thread waits for room (back-pressure). The
# turns in the queue hold their LangChain objects (~5 KB each) and RSS keeps
# the peak: measured over 20,000 turns with sessions, growth was 7.5 MiB at
# 1,024 and 3.4 MiB at 256. The worker takes room a chunk (_WAKE_AT) at a time,
# so a wait at 256 is short.
HIGH_WATER = 256
DEFAULT_BACKPRESSURE_TIMEOUT = 0.1


def make_room(pipeline: BatchPipeline) -> bool:
    """
    Back-pressure: wait (bounded) until the worker takes a chunk.

    Returns:
        Whether the item may be queued (the queue is below ``max_queue``).
    """
    p = pipeline
    thread = p._thread
    if (
        p._backpressure_timeout > 0
        and thread is not None
        and thread.is_alive()
        and thread is not threading.current_thread()
        and p._stalled_at != p._progress
    ):
        start = time.monotonic_ns()
        deadline = start + int(p._backpressure_timeout * 1e9)
        progress = p._progress
        p._wake.set()
        with p._room:
            p._waiters += 1
            try:
                while len(p._queue) >= p._high_water and not p._closed:
                    left = deadline - time.monotonic_ns()
                    if left <= 0:
                        if p._progress == progress:
                            p._stalled_at = progress  # nothing taken
                        break
                    p._room.wait(left / 1e9)
            finally:
                p._waiters -= 1
                p._waited += 1
                p._waited_ns += time.monotonic_ns() - start
    return len(p._queue) < p._max_queue and not p._closed


def drop(pipeline: BatchPipeline) -> None:
    """Count one dropped item; the first drop logs why, once."""
    with pipeline._drop_lock:
        pipeline._dropped += 1
        first = pipeline._dropped == 1
    if first:
        reason = (
            "the pipeline is shut down"
            if pipeline._closed
            else (f"the queue is full ({pipeline._max_queue} records)")
        )
        _logger.warning(
            "context_trace: dropping records because %s; see context_trace.stats()",
            reason,
        )
