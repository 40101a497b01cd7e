"""
context_trace: per-user, per-session conversation analytics for LangChain apps.

Put ``@track_user(...)`` on a request handler (or ``with track_user(...)``
around chain calls) and every LangChain run inside is recorded for that user,
with no callbacks passed. ``with context_session() as s:`` groups turns into one
conversation thread. Finished conversations are exported in the background to
the Context API (with a token) or to a local SQLite store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

# Light names (the standard library only) are imported here; the recording
# machinery (scopes, handler, runtime) imports LangChain, whose tracer module
# imports the LangSmith client: about 0.6 s. It loads on the first use of one
# of its names (PEP 562, below), so `context-trace users` and other readers of
# the store never pay for it.
from ._config import Config
from ._exporters import Exporter, ExportResult, InMemoryExporter
from ._record import Conversation, Feedback, Message, Record

if _TYPE_CHECKING:
    from ._compat import ContextCallbackHandler
    from ._handler import RecordingHandler
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
    "celery",
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

# Public names resolved on first use, by the private module that defines them.
_LAZY_NAMES = {
    "ContextCallbackHandler": "._compat",
    "RecordingHandler": "._handler",
    **dict.fromkeys(
        ("configure", "flush", "get_config", "shutdown", "stats"), "._runtime"
    ),
    **dict.fromkeys(
        (
            "ContextThreadPoolExecutor",
            "Scope",
            "Session",
            "context_session",
            "current_handler",
            "current_session",
            "current_user",
            "headers",
            "instrument_threads",
            "propagate",
            "runnable_config",
            "track_user",
            "uninstrument_threads",
        ),
        "._scopes",
    ),
}
_LAZY_MODULES = {
    "asgi": "context_trace.asgi",
    "celery": "context_trace.celery",
    "flask": "context_trace.flask",
    "testing": "context_trace.testing",
}


def __getattr__(name: str) -> _Any:
    # PEP 562: the recording machinery loads on first use (see above), and the
    # optional parts too, so `import context_trace` never imports pytest, Flask,
    # Starlette or Celery.
    import importlib

    source = _LAZY_NAMES.get(name)
    if source is not None:
        value = getattr(importlib.import_module(source, __name__), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    module = _LAZY_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'context_trace' has no attribute {name!r}")
    return importlib.import_module(module)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
