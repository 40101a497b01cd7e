"""``from context_trace.asgi import ContextTraceMiddleware``: see :mod:`context_trace.integrations.asgi`."""

from context_trace.integrations.asgi import *  # noqa: F403
from context_trace.integrations.asgi import __all__ as __all__
