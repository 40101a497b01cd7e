"""
context_trace: per-user, per-session conversation analytics for LangChain apps.

Put ``@track_user(...)`` on a request handler (or ``with track_user(...)``
around chain calls) and every LangChain run inside is recorded for that user,
with no callbacks passed. ``with context_session() as s:`` groups turns into one
conversation thread. Finished conversations are exported in the background to
the Context API (with a token) or to a local SQLite store.
"""

from __future__ import annotations

from typing import Any as _Any

from ._compat import ContextCallbackHandler
from ._config import Config
from ._exporters import Exporter, ExportResult, InMemoryExporter
from ._handler import RecordingHandler
from ._record import Conversation, Feedback, Message, Record
from ._runtime import configure, flush, get_config, shutdown, stats
from ._scopes import (
    ContextThreadPoolExecutor,
    Scope,
    Session,
    context_session,
    current_handler,
    current_session,
    current_user,
    headers,
    instrument_threads,
    propagate,
    runnable_config,
    track_user,
    uninstrument_threads,
)

__version__ = "0.2.0"

__all__ = [
    "Config",
    "ContextCallbackHandler",
    "ContextThreadPoolExecutor",
    "Conversation",
    "ExportResult",
    "Exporter",
    "Feedback",
    "InMemoryExporter",
    "Message",
    "Record",
    "RecordingHandler",
    "Scope",
    "Session",
    "asgi",
    "configure",
    "context_session",
    "current_handler",
    "current_session",
    "current_user",
    "flask",
    "flush",
    "get_config",
    "headers",
    "instrument_threads",
    "propagate",
    "runnable_config",
    "shutdown",
    "stats",
    "testing",
    "track_user",
    "uninstrument_threads",
]

_LAZY_MODULES = {
    "asgi": "context_trace.asgi",
    "flask": "context_trace.flask",
    "testing": "context_trace.testing",
}


def __getattr__(name: str) -> _Any:
    # PEP 562: optional parts load on first use, so `import context_trace` never
    # imports pytest, Flask or Starlette.
    module = _LAZY_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'context_trace' has no attribute {name!r}")
    import importlib

    return importlib.import_module(module)
