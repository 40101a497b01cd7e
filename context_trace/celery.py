"""``from context_trace.celery import ContextTraceCelery``: see :mod:`context_trace.integrations.celery`."""

from context_trace.integrations.celery import *  # noqa: F403
from context_trace.integrations.celery import __all__ as __all__
