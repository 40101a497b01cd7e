"""
Every turn a worker recorded reaches the store when the worker stops (warm
shutdown, SIGTERM): prefork children end with ``os._exit``, which skips
``atexit``.

The workers run with a 60 s flush interval, so nothing is exported while they
work: the rows can only come from the exit path.
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
    """Scoped tasks (in both prefork children) and 3 unscoped: exactly the scoped turns stored at exit."""
    m = uuid.uuid4().hex[:12]
    queue = f"exit-{pool}-{m}"
    worker = start_worker(broker, tmp_path, pool, queue=queue, flush_interval="60")
    try:
        # Bursts of 4 until at least 12 and, for prefork, both children answered.
        seen: list[dict[str, object]] = []
        while len(seen) < 100 and (
            len(seen) < 12 or (pool == "prefork" and len(_pids(seen)) < 2)
        ):
            burst = []
            for i in range(len(seen), len(seen) + 4):
                with ct.track_user(f"u{i}-{m}"), ct.context_session(f"s{i}-{m}"):
                    burst.append(ask.apply_async((f"{m} {i:03d}",), queue=queue))
            seen += [r.get(timeout=WAIT) for r in burst]
        unscoped = [ask.apply_async((f"{m} unscoped",), queue=queue) for _ in range(3)]
        for r in unscoped:
            r.get(timeout=WAIT)
        stored_before_exit = stored(worker.db, m)
        status = worker.terminate()
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()
    turns = stored(worker.db, m)

    assert [] == stored_before_exit
    assert 0 == status
    assert (2 if pool == "prefork" else 1) == len(_pids(seen))
    assert [(f"u{i}-{m}", f"s{i}-{m}", f"{m} {i:03d}") for i in range(len(seen))] == [
        (t.user_id, t.session_id, t.question) for t in turns
    ]
