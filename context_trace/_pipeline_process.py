"""
The batch pipeline's ties to its process: the exit, ``os.fork`` and ``multiprocessing``.

- After ``os.fork`` the child gets an empty queue, fresh locks and no thread;
  the thread starts again on the child's first ``emit``.
- Exit: ``atexit`` shuts the pipeline down (bounded). A ``multiprocessing``
  child (``Process``, ``Pool`` workers; fork, forkserver) ends with
  ``os._exit``, where ``atexit`` never runs, right after
  ``multiprocessing.util._exit_function`` has run the registered
  ``util.Finalize`` callbacks: the pipeline registers one there too, and again
  in each child (the child clears the registry after the fork, then runs the
  ``util.register_after_fork`` callbacks).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._pipeline import BatchPipeline

__all__ = ["after_fork", "attach", "detach", "watch_multiprocessing"]

# The logger of the module these came from: its records keep their name.
_logger = logging.getLogger("context_trace._pipeline")

# multiprocessing runs finalizers of priority >= 0 first, before it terminates
# and joins the exiting process's own children.
_MP_EXIT_PRIORITY = 0


def attach(pipeline: BatchPipeline) -> None:
    """Shut *pipeline* down when the process exits; start it clean in a forked child."""
    atexit.register(pipeline._at_exit)
    watch_multiprocessing(pipeline)
    # A weak reference: the fork hook must not keep old pipelines alive.
    ref = weakref.ref(pipeline)

    def _after_fork_in_child() -> None:
        alive = ref()
        if alive is not None:
            after_fork(alive)

    os.register_at_fork(after_in_child=_after_fork_in_child)


def detach(pipeline: BatchPipeline) -> None:
    """Undo the exit hooks of :func:`attach` (the pipeline is shutting down)."""
    atexit.unregister(pipeline._at_exit)
    if pipeline._finalizer is not None:
        pipeline._finalizer.cancel()
        pipeline._finalizer = None


def watch_multiprocessing(pipeline: BatchPipeline) -> None:
    """
    Shut down at a ``multiprocessing`` child's exit, which skips ``atexit``.

    Registers a ``util.Finalize`` (run by ``util._exit_function`` before the
    child's ``os._exit``), and an after-fork callback that registers it
    again in each child, whose bootstrap clears the finalizers it inherited.
    Only once ``multiprocessing`` is imported: before that no child of it
    exists, and a fork made later calls this again (:func:`after_fork`).
    """
    util: Any = sys.modules.get("multiprocessing.util")
    if util is None or pipeline._closed:
        return
    if pipeline._finalizer is not None:
        pipeline._finalizer.cancel()
    ref = weakref.ref(pipeline)

    def _at_multiprocessing_exit() -> None:
        alive = ref()
        if alive is not None:
            alive._at_exit()

    pipeline._finalizer = util.Finalize(
        None, _at_multiprocessing_exit, exitpriority=_MP_EXIT_PRIORITY
    )
    util.register_after_fork(pipeline, watch_multiprocessing)


def after_fork(pipeline: BatchPipeline) -> None:
    """In a forked child: a clean queue, locks and no thread; the exporter reopens."""
    # The child has a copy of the parent's queue (the parent exports those) and
    # no worker thread: start clean. Exporters holding connections reopen on
    # their own (SQLite tracks the pid; see _exporters/).
    pipeline._init_runtime()
    try:
        watch_multiprocessing(pipeline)
    except Exception:
        _logger.warning(
            "context_trace: cannot watch multiprocessing's exit", exc_info=True
        )
    after_fork_hook = pipeline._capabilities.after_fork
    if after_fork_hook is not None:
        try:
            after_fork_hook()
        except Exception:
            _logger.warning("context_trace: exporter after_fork failed", exc_info=True)
