"""
The process state: everything context_trace keeps for the whole process, in one object.

Per-request state lives in ContextVars (see ``_activation``); what outlives a
request lives here, in :data:`STATE`:

- the configuration, why the environment's was rejected, and the pipeline
  (``_runtime`` builds and swaps them under :attr:`ProcessState.lock`);
- the recorders' root claims and shared runs (``_handler``, touched on the
  callback hot path through module aliases of these very dicts);
- the process's counters (baggage, Celery), each set under its own lock, and
  the problems ``log_once`` has already logged;
- the process-wide patches installed on request (``instrument_threads``) and
  how to undo them.

:meth:`ProcessState.clear` forgets all of it; ``_runtime.reset()`` calls it
after shutting the pipeline down, and the tests use that one ``reset()``.
Hooks installed once for the life of the process and idempotent by design
(the LangGraph stream patch, the HTTP-client hooks, the Celery signal
connections) keep their flag next to the code that installs them; SIGTERM's
handler is given back by ``reset()`` through ``_sigterm``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._config import Config
    from ._handler import RecordingHandler
    from ._pipeline import BatchPipeline, ClosedPipeline, InlinePipeline

__all__ = ["STATE", "Counters", "ProcessState"]


class Counters:
    """A fixed set of named process counters behind one lock (fork-safe)."""

    __slots__ = ("_keys", "_lock", "_values")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = keys
        self._lock = threading.Lock()
        self._values = dict.fromkeys(keys, 0)

    def add(self, key: str) -> None:
        """Count one *key*."""
        with self._lock:
            self._values[key] += 1

    def snapshot(self) -> dict[str, int]:
        """A copy of the counters."""
        with self._lock:
            return dict(self._values)

    def clear(self) -> None:
        """Zero every counter."""
        with self._lock:
            for key in self._keys:
                self._values[key] = 0

    def after_fork(self) -> None:
        """A forked child gets a lock no parent thread can hold."""
        self._lock = threading.Lock()


BAGGAGE_KEYS = (
    "baggage_sent",
    "baggage_not_sent",
    "baggage_accepted",
    "baggage_rejected",
)
CELERY_KEYS = ("sent", "not_sent", "received", "ignored")


class ProcessState:
    """The process-wide state of context_trace (one instance: :data:`STATE`)."""

    def __init__(self) -> None:
        #: guards ``config``, ``config_error`` and ``pipeline``
        self.lock = threading.RLock()
        self.config: Config | None = None
        #: why the environment's configuration was rejected (``get_config``)
        self.config_error: Exception | None = None
        self.pipeline: BatchPipeline | InlinePipeline | ClosedPipeline | None = None
        #: root run id (``int``) -> the recorder that records it
        self.claimed: dict[int, RecordingHandler] = {}
        #: run id -> the drop-in recorder whose turn holds that run
        self.shared_runs: dict[int, RecordingHandler] = {}
        self.baggage = Counters(BAGGAGE_KEYS)
        self.celery = Counters(CELERY_KEYS)
        #: the keys ``log_once`` has logged at WARNING already
        self.logged: set[str] = set()
        #: process-wide patches installed on request, and how to undo each
        #: (``instrument_threads``): ``clear`` undoes them
        self.undo: dict[str, Callable[[], None]] = {}

    def clear(self) -> None:
        """
        Forget configuration, pipeline reference, run claims and counters.

        The caller shuts the pipeline down first (``_runtime.reset``).
        """
        with self.lock:
            self.config = None
            self.config_error = None
            self.pipeline = None
        self.claimed.clear()
        self.shared_runs.clear()
        self.logged.clear()
        self.baggage.clear()
        self.celery.clear()
        for undo in list(self.undo.values()):
            undo()
        self.undo.clear()

    def _after_fork_in_child(self) -> None:
        self.baggage.after_fork()
        self.celery.after_fork()


STATE = ProcessState()
os.register_at_fork(after_in_child=STATE._after_fork_in_child)
