"""
Web framework integrations: one context_trace scope per request.

- :mod:`context_trace.integrations.flask` (also ``context_trace.flask``):
  the ``ContextTrace`` Flask extension.
- :mod:`context_trace.integrations.asgi` (also ``context_trace.asgi``):
  ``ContextTraceMiddleware`` for Starlette, FastAPI and other ASGI apps.
- :class:`ContextTraceWSGIMiddleware`: any other WSGI app.
- :class:`BaggageTrust`: which senders the integrations accept the user and
  session from, as W3C ``baggage`` (``accept_baggage=``).
- :mod:`context_trace.integrations.http`: outgoing httpx/requests calls carry
  the user and session as ``baggage``.

Importing this package never imports Flask or Starlette.
"""

from __future__ import annotations

from context_trace._baggage import BaggageTrust

from ._wsgi import ContextTraceWSGIMiddleware

__all__ = ["BaggageTrust", "ContextTraceWSGIMiddleware"]
