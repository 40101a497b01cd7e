"""``benchmarks/_dropin.py``: the drop-in row of the overhead benchmark records."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from context_trace.testing import CapturedRecords

from ._models import echo_chain

BENCH_ROW = Path(__file__).resolve().parents[2] / "benchmarks" / "_dropin.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_dropin", BENCH_ROW)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestDropinRow:
    def test_sync_calls_record_each_turn(self, records: CapturedRecords) -> None:
        """make_dropin_invoke answers like the chain and records every call."""
        invoke = _load().make_dropin_invoke(echo_chain())

        answers = [invoke({"question": f"q{i}"}) for i in range(3)]

        assert ["q0", "q1", "q2"] == answers
        assert ["q0", "q1", "q2"] == [c.answer for c in records.conversations]

    async def test_async_calls_record_each_turn(self, records: CapturedRecords) -> None:
        """make_dropin_ainvoke returns awaitables that answer and record."""
        ainvoke = _load().make_dropin_ainvoke(echo_chain())

        answers = [await ainvoke({"question": f"a{i}"}) for i in range(3)]

        assert ["a0", "a1", "a2"] == answers
        assert ["a0", "a1", "a2"] == [c.answer for c in records.conversations]
