"""The dashboard's hook: topics kept level with its index refresh, if installed."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable

__all__ = ["dashboard_topics"]

_logger = logging.getLogger("context_trace.ui")


def dashboard_topics(
    store: str | os.PathLike[str], index: str | os.PathLike[str] | None = None
) -> Callable[[int], bool] | None:
    """
    A step that gives up to ``max_rows`` new turns of *store* their topic,
    their satisfaction read from the dashboard's *index* (default: its
    default path).

    The step returns True once every turn has its topic. None when the
    ``analytics`` extra is not installed or the topics file cannot be opened
    (logged); a failing step is logged once and reports itself level, so the
    dashboard serves on without topics.
    """
    try:
        from .topic_index import TopicIndex

        topics = TopicIndex(store, scores=index)
    except ImportError:
        return None
    except (OSError, ValueError, sqlite3.Error) as exc:
        _logger.warning("context-trace ui: topics are off: %s", exc)
        return None
    failed = False

    def step(max_rows: int) -> bool:
        nonlocal failed
        try:
            return topics.refresh(max_rows)
        except Exception as exc:  # noqa: BLE001 - topics must never stop the dashboard
            if not failed:
                failed = True
                _logger.warning("context-trace ui: cannot update the topics: %s", exc)
            return True

    return step
