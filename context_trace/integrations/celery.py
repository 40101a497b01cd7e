"""
Celery integration: a task runs in the scope of the code that sent it.

``ContextTraceCelery(app)`` connects four Celery signals, once per process:

- ``before_task_publish`` (where a task is sent): inside a scope, the scope's
  user id, session id and metadata go into the message headers under one key of
  our own, :data:`HEADER`; outside every scope that key is removed, so nothing
  from outside a scope ever travels. The app's other headers are not touched.
  Every way of sending goes through it: ``delay``, ``apply_async``, the members
  of a group, the first task of a chain or a chord's header. The rest of a
  chain, a chord's body, link callbacks and a retry are sent by the worker
  while the task before them runs in its scope, so they carry the same ids.
- ``task_prerun`` (in the worker, on the thread that runs the task): a valid
  header opens a scope with those ids (:func:`~context_trace._integration_api.open_scope`)
  and activates it; a missing one leaves the task unscoped, as before; a
  malformed one is ignored, counted and logged once.
- ``task_postrun`` (same thread; Celery sends it from a ``finally``, whether the
  task returned, raised or retried) restores the state from before the task:
  the task's scope, and any scope the task's own code left open, are closed,
  so nothing reaches the next task on that thread.
- ``worker_process_shutdown`` (in a prefork child, just before its
  ``os._exit``): the child's queued turns are exported. billiard ends its
  children with ``os._exit`` and runs neither ``atexit`` nor
  ``multiprocessing``'s finalizers.

The header is a small mapping of a version number and plain strings
(``{"v": 1, "user_id": ..., "session_id": ..., "metadata": {...}}``), which
brokers carry as it is: ids need no encoding. It is bounded as W3C baggage is: at most 64
metadata entries and 8,192 bytes of ids and metadata (UTF-8). A scope whose
metadata does not fit sends its ids alone; ids that do not fit are not sent.
The broker is trusted (anyone who can publish to it can run your tasks), so the
header is checked for shape and size, not for origin.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, NamedTuple

try:
    import celery
    from celery import signals
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "context_trace.integrations.celery requires Celery; "
        "install 'context-trace[celery]'"
    ) from exc

from context_trace._integration_api import (
    Scope,
    activation,
    celery_counts,
    count_celery,
    current_scope,
    leave,
    open_scope,
    shutdown,
)
from context_trace._log import log_once

__all__ = ["HEADER", "MAX_BYTES", "MAX_ENTRIES", "ContextTraceCelery", "stats"]

_logger = logging.getLogger(__name__)

#: The message header that carries the scope (a key of its own, never the app's).
HEADER = "context_trace"
#: Metadata entries the header carries at most (W3C baggage's list limit).
MAX_ENTRIES = 64
#: Bytes of ids and metadata keys and values (UTF-8) the header carries at most.
MAX_BYTES = 8192

_VERSION = 1
_FIELDS = frozenset(("v", "user_id", "session_id", "metadata"))
# Scopes a task's own code may have left open, closed at its end (a bound on a loop).
_MAX_UNWIND = 1000

_APPS: weakref.WeakSet[celery.Celery] = weakref.WeakSet()
_CONNECT_LOCK = threading.Lock()
_connected = False


class _Frame(NamedTuple):
    """A task running on this thread: what to restore when it ends."""

    task_id: str | None
    #: the scopes' activation marker (``activation()``) before the task started
    before: Any
    #: the entry of the scope opened from the task's header (``before`` if none)
    opened: Any


# Tasks running in this context, innermost last (more than one only when a task
# runs another eagerly with ``apply()``).
_TASKS: ContextVar[tuple[_Frame, ...]] = ContextVar(
    "context_trace.celery.tasks", default=()
)


def stats() -> dict[str, int]:
    """
    This process's counters of the Celery integration.

    Each process counts its own (a prefork worker's children, each of them).

    Returns:
        ``sent`` (tasks sent with the scope's header), ``not_sent`` (tasks sent
        inside a scope whose ids exceed :data:`MAX_BYTES`), ``received`` (tasks
        run in the scope of their header) and ``ignored`` (tasks whose header
        was malformed and which ran unscoped).

    .. versionadded:: 0.3.0
    """
    # In the process state: reset() zeroes them, a forked child (a prefork
    # worker) gets a fresh lock.
    return celery_counts()


# --------------------------------------------------------------------------- header
def _size(*texts: str) -> int:
    return sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)


def _encode(scope: Scope) -> dict[str, Any] | None:
    """The header for *scope*, or None when its ids alone exceed the limit."""
    value: dict[str, Any] = {"v": _VERSION}
    size = 0
    if scope.user_id is not None:
        value["user_id"] = scope.user_id
        size += _size(scope.user_id)
    if scope.session is not None:
        value["session_id"] = scope.session.id
        size += _size(scope.session.id)
    if size > MAX_BYTES:
        return None
    metadata = scope.metadata
    if metadata:
        total = size + sum(_size(k, v) for k, v in metadata.items())
        if len(metadata) <= MAX_ENTRIES and total <= MAX_BYTES:
            value["metadata"] = dict(metadata)
        else:
            log_once(
                _logger,
                "celery.metadata_too_large",
                "context_trace: a task sent in a scope whose metadata exceeds %d"
                " entries or %d bytes carries the user and session only",
                MAX_ENTRIES,
                MAX_BYTES,
            )
    return value


class _Malformed(ValueError):
    """The header is not one :func:`_encode` could have written."""


def _text(value: Mapping[str, Any], key: str) -> str | None:
    text = value.get(key)
    if text is None:
        return None
    if not isinstance(text, str) or not text.strip():
        raise _Malformed(f"{key} is not a non-empty str")
    return text


def _decode(value: object) -> tuple[str | None, str | None, dict[str, str]]:
    """``(user_id, session_id, metadata)`` from a received header (checked)."""
    if not isinstance(value, Mapping):
        raise _Malformed(f"a {type(value).__name__}, not a mapping")
    unknown = set(value) - _FIELDS
    if unknown:
        raise _Malformed(f"unknown fields {sorted(map(str, unknown))}")
    if value.get("v") != _VERSION or isinstance(value.get("v"), bool):
        raise _Malformed(f"version {value.get('v')!r}, expected {_VERSION}")
    user_id = _text(value, "user_id")
    session_id = _text(value, "session_id")
    size = _size(user_id or "", session_id or "")
    raw = value.get("metadata")
    metadata: dict[str, str] = {}
    if raw is not None:
        if not isinstance(raw, Mapping):
            raise _Malformed("metadata is not a mapping")
        if len(raw) > MAX_ENTRIES:
            raise _Malformed(f"{len(raw)} metadata entries, at most {MAX_ENTRIES}")
        for key, item in raw.items():
            if not isinstance(key, str) or not isinstance(item, str):
                raise _Malformed("metadata is not str -> str")
            metadata[key] = item
            size += _size(key, item)
    if size > MAX_BYTES:
        raise _Malformed(f"{size} bytes, at most {MAX_BYTES}")
    return user_id, session_id, metadata


# --------------------------------------------------------------------------- signals
def _before_task_publish(headers: Any = None, **_: Any) -> None:
    """Put the active scope in the message's headers (or take ours out)."""
    if not isinstance(headers, dict):
        return  # task protocol 1 has no message headers to carry it
    try:
        scope = current_scope()
        if scope is None:
            # Never anything from outside a scope: not even a header copied
            # from another task's request (a retry copies its request's).
            headers.pop(HEADER, None)
            return
        value = _encode(scope)
        if value is None:
            headers.pop(HEADER, None)
            count_celery("not_sent")
            log_once(
                _logger,
                "celery.ids_too_large",
                "context_trace: a task sent in a scope whose ids exceed %d bytes"
                " runs unscoped",
                MAX_BYTES,
            )
            return
        headers[HEADER] = value
        count_celery("sent")
    except Exception:  # noqa: BLE001 - sending the task must never fail because of us
        log_once(
            _logger,
            "celery.publish",
            "context_trace: could not add the scope to a task's headers",
            exc_info=True,
        )


def _scope_of(task: Any, task_id: str | None) -> Scope | None:
    """The scope a received task runs in, from its header; None to run unscoped."""
    value = getattr(task.request, HEADER, None)
    if value is None:
        return None
    try:
        user_id, session_id, metadata = _decode(value)
    except _Malformed as exc:
        count_celery("ignored")
        log_once(
            _logger,
            "celery.malformed",
            "context_trace: task %s[%s] has a malformed %r header (%s); it runs"
            " unscoped",
            getattr(task, "name", "?"),
            task_id,
            HEADER,
            exc,
        )
        return None
    count_celery("received")
    return open_scope(user_id, session_id, metadata)


def _task_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Open the task's scope on the thread that runs it."""
    if task is None or getattr(task, "app", None) not in _APPS:
        return
    before = activation()
    try:
        scope = _scope_of(task, task_id)
        if scope is not None:
            scope.activate()
    except Exception:  # noqa: BLE001 - the task must run even when we cannot scope it
        log_once(
            _logger,
            "celery.prerun",
            "context_trace: could not open the scope of a task; it runs unscoped",
            exc_info=True,
        )
        _restore(before)
    _TASKS.set((*_TASKS.get(), _Frame(task_id, before, activation())))


def _restore(before: Any) -> bool:
    """
    Deactivate scopes, innermost first, until the activation *before* is current.

    Returns:
        Whether it is (False: a scope could not be deactivated here).
    """
    for _ in range(_MAX_UNWIND):
        entry = activation()
        if entry is before:
            return True
        scope = current_scope()
        if entry is None or scope is None:
            break
        scope.deactivate()
        if activation() is entry:  # not reset: a token of another context
            break
    return False


def _task_postrun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Close the task's scope, and any its code left open, whatever its outcome."""
    frames = _TASKS.get()
    for index in range(len(frames) - 1, -1, -1):
        if frames[index].task_id == task_id:
            break
    else:
        return  # not a task we saw start (not an instrumented app's)
    frame = frames[index]
    _TASKS.set(frames[:index])
    try:
        leaked = activation() is not frame.opened
        if not _restore(frame.before):
            log_once(
                _logger,
                "celery.restore",
                "context_trace: could not close every scope task %s left open",
                getattr(task, "name", "?"),
            )
        elif leaked:
            log_once(
                _logger,
                "celery.leaked",
                "context_trace: task %s left a scope open; it was closed when the"
                " task ended",
                getattr(task, "name", "?"),
            )
        leave()
    except Exception:  # noqa: BLE001 - must not fail the worker
        log_once(
            _logger,
            "celery.postrun",
            "context_trace: could not close a task's scope",
            exc_info=True,
        )


def _worker_process_shutdown(**_: Any) -> None:
    """A prefork child is about to ``os._exit``: export what it recorded."""
    try:
        shutdown()
    except Exception:  # the child must exit anyway
        _logger.warning(
            "context_trace: could not export at the worker's exit", exc_info=True
        )


def _connect() -> None:
    global _connected
    with _CONNECT_LOCK:
        if _connected:
            return
        signals.before_task_publish.connect(
            _before_task_publish, weak=False, dispatch_uid="context_trace.publish"
        )
        signals.task_prerun.connect(
            _task_prerun, weak=False, dispatch_uid="context_trace.prerun"
        )
        signals.task_postrun.connect(
            _task_postrun, weak=False, dispatch_uid="context_trace.postrun"
        )
        signals.worker_process_shutdown.connect(
            _worker_process_shutdown,
            weak=False,
            dispatch_uid="context_trace.worker_process_shutdown",
        )
        _connected = True


# --------------------------------------------------------------------------- public
class ContextTraceCelery:
    """
    Run each task of a Celery app in the user and session of the code that sent it.

    Call it once where the app is defined, so that the processes that send
    tasks and the workers that run them both have it:
    ``app = Celery(...); ContextTraceCelery(app)``. A task sent inside a
    :func:`~context_trace.track_user` or :func:`~context_trace.context_session`
    scope then runs in a scope with the same user id, session id and metadata,
    and its LangChain turns are recorded for them. A task sent outside every
    scope runs unscoped, as without the integration.

    The worker exports its turns through its own pipeline, configured like any
    process (``CONTEXT_TRACE_DB`` or :func:`~context_trace.configure`). Each
    prefork child exports its own, also when it exits.

    Args:
        app: The Celery app, or None to call :meth:`init_app` later.

    Raises:
        TypeError: *app* is not a ``celery.Celery``.

    .. versionadded:: 0.3.0
    """

    def __init__(self, app: celery.Celery | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: celery.Celery) -> None:
        """
        Scope *app*'s tasks from now on. Calling it again for the same app does nothing.

        The header is added to every task this process sends inside a scope
        (Celery's publish signal does not name the app); only the tasks of
        apps set up here are run in the scope it names.

        Args:
            app: The Celery app.

        Raises:
            TypeError: *app* is not a ``celery.Celery``.

        .. versionadded:: 0.3.0
        """
        if not isinstance(app, celery.Celery):
            raise TypeError(f"app must be a celery.Celery, got {type(app).__name__}")
        _APPS.add(app)
        _connect()
