"""
Flush before SIGTERM ends the process, when nobody else handles SIGTERM.

Python's default disposition for SIGTERM (``SIG_DFL``) kills the process at
once: ``atexit`` hooks never run, so turns that already returned from
``invoke()`` but still wait in the export queue would be lost. That is how a
plain script or worker ends under ``kill``, ``docker stop`` or a Kubernetes
shutdown.

:func:`install` sets a handler only while the disposition is ``SIG_DFL`` and
only on the main thread (the only thread that may set one). When the signal
comes, the handler runs the *flush* it was given with a bounded timeout, puts
``SIG_DFL`` back and sends SIGTERM to the process again, so it ends exactly as
it would have: killed by signal 15. A second SIGTERM during the flush ends it
at once.

An app's own handler stays in charge: one set before :func:`install` is never
replaced, and one set after it simply replaces ours (servers such as gunicorn
and uvicorn do this). A handler that chains to the previous one calls ours
last, which flushes and ends the process by the signal, as ``SIG_DFL`` would.

This module knows nothing of the pipeline: the runtime hands in what to run.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["block_process_signals", "install", "installed", "uninstall"]

_logger = logging.getLogger(__name__)

#: What the handler runs: ``flush(timeout)``; bounded by the caller's timeout.
Flush = Callable[[float], object]

#: The signals sent to a whole process from outside it (``kill``, a terminal, a
#: supervisor). The kernel gives each to any one thread that does not block it.
PROCESS_SIGNALS = frozenset(
    getattr(signal, name)
    for name in (
        "SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2",
        "SIGALRM", "SIGCHLD", "SIGWINCH",
    )
    if hasattr(signal, name)
)  # fmt: skip

_flush: Flush | None = None
_timeout: Callable[[], float] = lambda: 5.0  # noqa: E731 - replaced by install()
_terminating = False


def block_process_signals() -> None:
    """
    Block :data:`PROCESS_SIGNALS` in the calling thread: call it first thing
    in each background thread the package starts.

    Python runs signal handlers on the main thread only, and only when that
    thread runs Python code. When the kernel gives a process's SIGTERM to a
    background thread instead (it may: it picks the main thread only while
    that thread has no signal pending), a main thread asleep in a C wait
    (``Event.wait``, ``Thread.join``, a lock, ``select``) is not woken, and the
    app's handler (or :func:`install`'s flush) waits until that wait ends on
    its own: minutes, or never. Blocked in every thread but the main one, such
    signals can only go to the main thread, which they wake. No-op where
    ``pthread_sigmask`` does not exist (Windows).
    """
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is not None:
        try:
            mask(signal.SIG_BLOCK, PROCESS_SIGNALS)
        except (OSError, ValueError):  # pragma: no cover - a platform without them
            _logger.debug("context_trace: cannot block signals", exc_info=True)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Flush (bounded), then end the process by SIGTERM as the default would."""
    global _terminating
    if not _terminating:
        _terminating = True
        flush = _flush
        if flush is not None:
            try:
                flush(_timeout())
            except BaseException:  # the process must still end
                _logger.warning("context_trace: flush on SIGTERM failed", exc_info=True)
    # Restore the default and send the signal again: the process ends killed by
    # SIGTERM, the exit status its parent or orchestrator expects.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)


def installed() -> bool:
    """Whether our handler is SIGTERM's handler now."""
    try:
        return signal.getsignal(signal.SIGTERM) is _on_sigterm
    except (AttributeError, ValueError):
        return False


def install(flush: Flush, timeout: Callable[[], float]) -> bool:
    """
    Handle SIGTERM with *flush* if its disposition is the default.

    Never replaces another handler; does nothing off the main thread.

    Args:
        flush: Called with the timeout when SIGTERM arrives.
        timeout: Returns the seconds the flush may take (read at signal time).

    Returns:
        Whether our handler is installed now.
    """
    global _flush, _timeout
    if threading.current_thread() is not threading.main_thread():
        return installed()
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is _on_sigterm:
            _flush, _timeout = flush, timeout
            return True
        if current is not signal.SIG_DFL:
            return False  # the app's own handler (or SIG_IGN) stays in charge
        _flush, _timeout = flush, timeout
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (AttributeError, ValueError, OSError):
        # No SIGTERM on this platform, or signals unavailable (an embedded
        # interpreter): the exit-time flush is all there is.
        return False
    return True


def uninstall() -> None:
    """Put ``SIG_DFL`` back if our handler is SIGTERM's handler (main thread only)."""
    global _flush
    if threading.current_thread() is not threading.main_thread():
        return
    if installed():
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except (ValueError, OSError):
            return
    _flush = None
