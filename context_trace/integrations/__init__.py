"""
Web framework integrations: one context_trace scope per request.

- :mod:`context_trace.integrations.flask` (also ``context_trace.flask``):
  the ``ContextTrace`` Flask extension.
- :mod:`context_trace.integrations.asgi` (also ``context_trace.asgi``):
  ``ContextTraceMiddleware`` for Starlette, FastAPI and other ASGI apps.
- :class:`ContextTraceWSGIMiddleware`: any other WSGI app.

Importing this package never imports Flask or Starlette.
"""

from __future__ import annotations

from ._wsgi import ContextTraceWSGIMiddleware

__all__ = ["ContextTraceWSGIMiddleware"]
