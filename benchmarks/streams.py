"""
What a decorated generator's scope costs per step, sync and async.

    python benchmarks/streams.py [--steps 20] [--loops 2000] [--repeat 7] [--smoke]

Each row drains a generator of ``--steps`` steps that yields its counter and
does nothing else, ``--loops`` times, and reports the best of ``--repeat`` runs
in CPU time (``time.process_time``) per generator and per step:

- ``bare``: the generator, undecorated, inside ``with track_user(...)`` (the
  scope entered once per generator, as a decorated plain function pays).
- ``decorated``: ``@track_user(...)`` on the generator function: the scope is
  opened when it is called and kept for every step by ``_streams.py``.

The "scope per step" line is ``(decorated - bare) / steps``: what the stream
wrapper adds to each step (including, spread over the steps, building its
context and leaving the scope when the generator ends). No LangChain run is
made: it is the wrapper's own cost, not recording's. ``--smoke`` runs a few
loops once: it checks the script runs (CI) and measures nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from context_trace import track_user


def _best(run: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def sync_rows(steps: int, loops: int, repeat: int) -> dict[str, float]:
    """CPU seconds for *loops* drained sync generators, per row."""

    def plain() -> Iterator[int]:
        yield from range(steps)

    @track_user("bench")
    def decorated() -> Iterator[int]:
        yield from range(steps)

    def bare() -> None:
        for _ in range(loops):
            with track_user("bench"):
                for _ in plain():
                    pass

    def wrapped() -> None:
        for _ in range(loops):
            for _ in decorated():
                pass

    return {"bare": _best(bare, repeat), "decorated": _best(wrapped, repeat)}


def async_rows(steps: int, loops: int, repeat: int) -> dict[str, float]:
    """CPU seconds for *loops* drained async generators, per row (one event loop)."""

    async def plain() -> AsyncIterator[int]:
        for i in range(steps):
            yield i

    @track_user("bench")
    async def decorated() -> AsyncIterator[int]:
        for i in range(steps):
            yield i

    async def bare() -> None:
        for _ in range(loops):
            with track_user("bench"):
                async for _ in plain():
                    pass

    async def wrapped() -> None:
        for _ in range(loops):
            async for _ in decorated():
                pass

    loop = asyncio.new_event_loop()
    try:
        return {
            "bare": _best(lambda: loop.run_until_complete(bare()), repeat),
            "decorated": _best(lambda: loop.run_until_complete(wrapped()), repeat),
        }
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--loops", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="a few loops, once")
    args = parser.parse_args()
    if args.smoke:
        args.loops, args.repeat = 10, 1
    for kind, rows in (
        ("sync", sync_rows(args.steps, args.loops, args.repeat)),
        ("async", async_rows(args.steps, args.loops, args.repeat)),
    ):
        per_gen = {name: 1e6 * cpu / args.loops for name, cpu in rows.items()}
        print(
            f"{kind:5}  bare {per_gen['bare']:7.2f} µs/generator"
            f"  decorated {per_gen['decorated']:7.2f} µs/generator"
            f"  scope per step {(per_gen['decorated'] - per_gen['bare']) / args.steps:5.2f} µs"
        )


if __name__ == "__main__":
    main()
