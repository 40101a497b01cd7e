"""
Who a turn is for, and the system prompt a session last recorded: the converter's
attribution rules (see ``_rules.py``), on the export thread.

A turn's user and session come from its scope, else from the HTTP headers its
model calls carry (:func:`header_ids`), else from the framework's session id.
A session's system prompt is recorded only when it changes, which needs a small
per-process memory of the last one per session id.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from ._record import Message
from ._text import system_text
from ._turn import ModelRun, Turn

__all__ = [
    "FRAMEWORK_SESSION_KEYS",
    "attribution",
    "header_ids",
    "reset_header_sessions",
    "system_prompt",
]

# The framework's session ids: ``configurable.session_id``
# (RunnableWithMessageHistory) and ``configurable.thread_id`` (LangGraph, which
# also copies it to the run metadata).
FRAMEWORK_SESSION_KEYS = ("session_id", "thread_id")
# Where a model's invocation params carry HTTP headers, most specific first:
# per-call ``extra_headers`` (OpenAI), the model's ``headers`` (what LangChain's
# Context docs show: ``ChatOpenAI(headers={"user_id": "123"})``, which lands in
# ``model_kwargs`` and from there in the params), then ``default_headers``.
_HEADER_PARAMS = ("extra_headers", "headers", "default_headers")
# Every params key header_ids reads: params with none of them carry no ids.
_HEADER_SOURCES = frozenset({*_HEADER_PARAMS, "model_kwargs", "user"})
# Header names after lower-casing and "_" -> "-": user_id, X-User-Id, ...
_USER_HEADERS = frozenset({"user-id", "x-user-id"})
_SESSION_HEADERS = frozenset({"session-id", "x-session-id"})
# The last system prompt of this many recent sessions is kept (least recently
# used dropped first) to record a system prompt only when it changes, within
# _SESSIONS_MAX_BYTES of memory (~900 sessions with 32-character ids): every
# web worker pays it.
_SESSIONS_MAX = 10_000
_SESSIONS_MAX_BYTES = 256 * 1024
# What an entry costs besides its id: the hash and the OrderedDict entry (and
# its share of the table), measured with tracemalloc.
_SESSION_ENTRY_BYTES = 200


def _header_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, UUID)):
        return None
    text = str(value).strip()
    return text or None


def header_ids(params: Any) -> tuple[str | None, str | None]:
    """
    The ``(user_id, session_id)`` a model's invocation params carry, if any.

    Looked up in the ``extra_headers``, ``headers`` and ``default_headers``
    mappings (also inside ``model_kwargs``), in that order, under the names
    ``user_id``/``X-User-Id`` and ``session_id``/``X-Session-Id`` (any case,
    ``_`` or ``-``); the user falls back to OpenAI's ``user`` parameter.
    """
    if type(params) is dict:
        if params.keys().isdisjoint(_HEADER_SOURCES):
            return None, None  # the common case: one set operation
    elif not isinstance(params, Mapping):
        return None, None
    sources: list[Mapping[str, Any]] = [params]
    model_kwargs = params.get("model_kwargs")
    if isinstance(model_kwargs, Mapping):
        sources.append(model_kwargs)
    user: str | None = None
    session: str | None = None
    for source in sources:
        for key in _HEADER_PARAMS:
            headers = source.get(key)
            if not isinstance(headers, Mapping):
                continue
            for name, value in headers.items():
                if not isinstance(name, str):
                    continue
                norm = name.strip().lower().replace("_", "-")
                if user is None and norm in _USER_HEADERS:
                    user = _header_id(value)
                elif session is None and norm in _SESSION_HEADERS:
                    session = _header_id(value)
    if user is None:
        for source in sources:
            user = _header_id(source.get("user"))
            if user is not None:
                break
    return user, session


class _SessionSystems:
    """
    The last system prompt recorded per session id: an LRU bounded in bytes, locked.

    Keyed by id, not kept on the ``Session`` object: web integrations (and
    ``context_session(session_id=...)`` on a request handler) open a fresh
    ``Session`` for every request of the same conversation, and framework or
    header sessions have no object at all. The prompt's 64-bit hash is kept,
    not the text (one process only, so the hash seed does not matter). A
    session evicted records its system prompt once more on its next turn (the
    local store's history de-duplication then drops it again).

    Args:
        maxsize: The most sessions kept.
        max_bytes: The most memory the entries may hold (each counted as its
            id plus a fixed overhead).
    """

    def __init__(self, maxsize: int, max_bytes: int = _SESSIONS_MAX_BYTES) -> None:
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self._last: OrderedDict[str, int] = OrderedDict()

    @property
    def nbytes(self) -> int:
        """The estimated bytes the entries hold now."""
        return self._bytes

    def changed(self, session_id: str, text: str) -> bool:
        """Whether *text* differs from the session's last system prompt (then keep it)."""
        value = hash(text)
        with self._lock:
            last = self._last.get(session_id)
            if last is not None:
                self._last.move_to_end(session_id)
                if last == value:
                    return False
            else:
                self._bytes += sys.getsizeof(session_id) + _SESSION_ENTRY_BYTES
            self._last[session_id] = value
            while self._last and (
                len(self._last) > self._maxsize or self._bytes > self._max_bytes
            ):
                evicted, _ = self._last.popitem(last=False)
                self._bytes -= sys.getsizeof(evicted) + _SESSION_ENTRY_BYTES
            return True

    def clear(self) -> None:
        with self._lock:
            self._last.clear()
            self._bytes = 0


_SESSION_SYSTEMS = _SessionSystems(_SESSIONS_MAX)


def reset_header_sessions() -> None:
    """Forget the per-session system prompts seen so far (tests, ``reset()``)."""
    _SESSION_SYSTEMS.clear()


def _framework_session(metadata: Mapping[str, Any] | None) -> str | None:
    """``session_id`` / ``thread_id`` of a run's ``configurable`` or metadata."""
    if not metadata:
        return None
    for key in FRAMEWORK_SESSION_KEYS:
        raw = metadata.get(key)
        if raw is not None:
            value = _header_id(raw)
            if value is not None:
                return value
    return None


def attribution(turn: Turn, calls: Sequence[ModelRun]) -> tuple[str | None, str | None]:
    """
    The turn's ``(user_id, session_id)``.

    The scope's user, else the models' headers (see :func:`header_ids`); the
    scope's session, else the headers', else the framework's
    (``configurable.session_id``, then ``thread_id``; then the run metadata's).
    """
    user_id = turn.user_id
    session = turn.session
    session_id = session.id if session is not None else None
    if user_id is None or session_id is None:
        header_user = header_session = None
        for call in calls:
            header_user, header_session = header_ids(call.params)
            if header_user is not None or header_session is not None:
                break
        if user_id is None:
            user_id = header_user
        if session_id is None:
            session_id = header_session
    if session_id is None:
        session_id = _framework_session(turn.configurable) or _framework_session(
            turn.run_metadata
        )
    return user_id, session_id


def system_prompt(answering: ModelRun | None, session_id: str | None) -> Message | None:
    """
    The answering model's system prompt, when it is to be recorded.

    Always for a turn with no session; in a session only when it differs from
    the one last recorded for that session (kept per id, see
    :class:`_SessionSystems`).
    """
    text = system_text(answering.input) if answering is not None else None
    if text is not None and (
        session_id is None or _SESSION_SYSTEMS.changed(session_id, text)
    ):
        return Message("system", text)
    return None
