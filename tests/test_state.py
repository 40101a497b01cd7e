"""``_runtime.reset()`` forgets every piece of process state, so tests need no hand resets."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from context_trace import _handler, _runtime, instrument_threads, stats, track_user
from context_trace._log import log_once
from context_trace._state import STATE


class TestReset:
    def test_reset_undoes_thread_instrumentation(self):
        """reset() gives Thread.start and ThreadPoolExecutor.submit back."""
        start, submit = threading.Thread.start, ThreadPoolExecutor.submit
        instrument_threads()
        assert threading.Thread.start is not start

        _runtime.reset()

        assert threading.Thread.start is start
        assert ThreadPoolExecutor.submit is submit

    def test_reset_forgets_run_claims(self):
        """A root claim left by a run that never ended is gone after reset()."""
        with track_user("u1") as scope:
            _handler._CLAIMED[12345] = scope.handler

        _runtime.reset()

        assert 12345 not in _handler._CLAIMED

    def test_reset_zeroes_the_process_counters(self):
        """Baggage and Celery counters restart from zero after reset()."""
        STATE.baggage.add("baggage_sent")
        STATE.celery.add("sent")
        assert 1 == stats()["baggage_sent"]

        _runtime.reset()

        assert 0 == stats()["baggage_sent"]
        assert 0 == STATE.celery.snapshot()["sent"]

    def test_reset_lets_a_logged_problem_warn_again(self, caplog):
        """A problem logged once at WARNING warns again after reset()."""
        logger = logging.getLogger("context_trace.test_state")
        with caplog.at_level(logging.DEBUG, logger="context_trace"):
            log_once(logger, "state-test", "first")
            log_once(logger, "state-test", "second")
            _runtime.reset()
            log_once(logger, "state-test", "third")

        assert ["WARNING", "DEBUG", "WARNING"] == [
            r.levelname for r in caplog.records if r.name == logger.name
        ]
