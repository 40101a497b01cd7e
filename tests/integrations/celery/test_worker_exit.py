"""
Every turn a worker recorded reaches the store when the worker stops (warm
shutdown, SIGTERM): prefork children end with ``os._exit``, which skips
``atexit``.

The workers run with a 600 s flush interval, so nothing is exported while they
work: the rows can only come from the exit paths (a prefork child replaced after
``--max-tasks-per-child`` tasks, and the warm shutdown).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import context_trace as ct

from .conftest import WAIT, start_worker, stored
from .tasks import ask


def _pids(seen: list[dict[str, object]]) -> set[str]:
    return {str(s["where"]).split(":")[0] for s in seen}


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_warm_shutdown_stores_every_scoped_turn_and_no_other(
    pool: str, broker: str, tmp_path: Path
) -> None:
    """12 scoped tasks (prefork: children replaced every 5 tasks), 2 unscoped: exactly the 12 stored."""
    m = uuid.uuid4().hex[:12]
    queue = f"exit-{pool}-{m}"
    worker = start_worker(
        broker,
        tmp_path,
        pool,
        queue=queue,
        flush_interval="600",
        options=("--max-tasks-per-child", "5") if pool == "prefork" else (),
    )
    try:
        sent = []
        for i in range(12):
            with ct.track_user(f"u{i}-{m}"), ct.context_session(f"s{i}-{m}"):
                sent.append(ask.apply_async((f"{m} {i:02d}",), queue=queue))
        seen = [r.get(timeout=WAIT) for r in sent]
        # 14 tasks in all: fewer than the 15 that would let all three children that
        # ran scoped tasks reach 5 and be replaced (their turns stored on exit,
        # before SIGTERM), however the tasks are spread over the children.
        unscoped = [ask.apply_async((f"{m} unscoped",), queue=queue) for _ in range(2)]
        for r in unscoped:
            r.get(timeout=WAIT)
        stored_before_exit = stored(worker.db, m)
        status = worker.terminate()
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()
    turns = stored(worker.db, m)

    assert 0 == status
    if pool == "prefork":
        # At most 5 tasks per child: 12 tasks ran in at least 3 children, and at
        # least one of them had run fewer than 5 of the 14 tasks, so was still alive
        # and holding its scoped turns at SIGTERM.
        assert 3 <= len(_pids(seen))
        assert len(stored_before_exit) < 12
    else:
        assert 1 == len(_pids(seen))
        assert [] == stored_before_exit
    assert [(f"u{i}-{m}", f"s{i}-{m}", f"{m} {i:02d}") for i in range(12)] == [
        (t.user_id, t.session_id, t.question) for t in turns
    ]
