"""``from context_trace.flask import ContextTrace``: see :mod:`context_trace.integrations.flask`."""

from context_trace.integrations.flask import *  # noqa: F403
from context_trace.integrations.flask import __all__ as __all__
