"""
Logging that never floods: each problem is logged once at WARNING, then at DEBUG.

Every module logs under the ``context_trace`` logger (``logging.getLogger(__name__)``);
this module only remembers which keys were seen.
"""

from __future__ import annotations

import logging
from typing import Any

from ._state import STATE

__all__ = ["log_once"]

# The keys seen so far, in the process state (``reset()`` forgets them).
_LOGGED = STATE.logged


def log_once(
    logger: logging.Logger, key: str, msg: str, *args: Any, exc_info: bool = False
) -> None:
    """Log *msg* at WARNING the first time *key* is seen, at DEBUG afterwards."""
    level = logging.DEBUG if key in _LOGGED else logging.WARNING
    # set.add is atomic in CPython: two threads racing may both warn, never crash.
    _LOGGED.add(key)
    logger.log(level, msg, *args, exc_info=exc_info)
