"""
The request path's own cost per turn, counted in instructions (valgrind's callgrind).

    python benchmarks/request_path.py [--turns 100] [--warmup 20] [--rows A,B]
                                      [--valgrind PATH] [--smoke]

A loaded machine blurs wall and CPU clocks; instruction counts it does not. Each
row runs in its own child under ``valgrind --tool=callgrind --collect-atstart=no
--toggle-collect=<marker>``, so only the measured turns are counted (imports,
set-up and warm-up are not). The chain is ``benchmarks/overhead.py``'s
(``ChatPromptTemplate | ParrotFakeChatModel | StrOutputParser``), called with
``invoke``; rows, as there:

- ``bare``: no callbacks.
- ``noop+meta``: a do-nothing inline handler with ``user_id`` in the run metadata
  (LangChain's own floor for a recorder that gives every run the user's id).
- ``track_user:no-export``: ``with context_trace.track_user(...)``, finished turns
  discarded instead of queued (what recording costs on the request path alone).
- ``scope-only`` (only when named in ``--rows``): entering and leaving
  ``with context_trace.track_user(...)`` around nothing (the scope's share).
- ``noop`` and ``track_user:no-meta`` (only when named): the do-nothing handler
  without metadata, and ``track_user`` (export discarded) with
  ``run_metadata="auto"`` and no tracer to serve, so no run metadata: their
  difference is the recording alone, and ``noop+meta`` minus ``noop`` is what
  LangChain's propagation of one metadata key costs.

With ``noop`` and ``track_user:no-meta`` both counted, the report prints that
difference too.

The report prints instructions per turn for each row, the difference of the last
two (the request path's own cost), and, from one timing of the bare chain outside
valgrind, that difference in µs (instructions x the bare chain's CPU µs per
instruction: a conversion, not a measurement).

``--smoke`` runs each row a few turns without valgrind: it checks the script runs
(CI) and measures nothing.
"""

from __future__ import annotations

import argparse
import gc
import operator
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

ROWS = ("bare", "noop+meta", "track_user:no-export")
EXTRA_ROWS = ("scope-only", "noop", "track_user:no-meta")
# callgrind sees C functions, not Python ones: the measured loop runs inside
# ``operator.call`` (nothing else here calls it), and callgrind counts only while
# that C function is on the stack.
MARKER = "_operator_call"


def row_call(name: str) -> Callable[[], Any]:
    """The one-turn call of row ``name`` (export discarded for ``:no-export``)."""
    from overhead import _Discard, build_chain, contenders

    import context_trace as ct
    from context_trace import _runtime

    chain = build_chain()
    calls = contenders(chain)
    if name == "scope-only":

        def scope_only() -> None:
            with ct.track_user("bench-user"):
                pass

        ct.configure(run_metadata=True)
        return scope_only
    if name == "track_user:no-meta":
        # No tracer is active here, so "auto" puts nothing into run metadata.
        ct.configure(run_metadata="auto")
        name = "track_user:no-export"
    elif name.startswith("track_user"):
        ct.configure(run_metadata=True)
    if name not in calls:
        raise SystemExit(f"--rows: unknown row {name!r}")
    if name.endswith(":no-export"):
        state = _runtime._STATE
        with state.lock:
            state.pipeline = _Discard()  # type: ignore[assignment]
    return calls[name][0]


def measured_turns(call: Callable[[], Any], turns: int) -> None:
    """``turns`` calls and nothing else (run inside the marker)."""
    for _ in range(turns):
        call()


def child(name: str, turns: int, warmup: int) -> None:
    call = row_call(name)
    for _ in range(warmup):
        call()
    # The heap built so far (modules, the warm-up's survivors) out of the
    # collector's way: an occasional full collection walking it is noise that
    # depends on where it happens to fall, not a cost of the row.
    gc.collect()
    gc.freeze()
    operator.call(measured_turns, call, turns)


def count(valgrind: str, name: str, turns: int, warmup: int, tmp: str) -> int:
    """Instructions callgrind counted inside ``measured_turns`` for row ``name``."""
    out = os.path.join(tmp, f"cg.{name.replace(':', '_').replace('+', '_')}")
    subprocess.run(
        [
            valgrind,
            "--tool=callgrind",
            "--collect-atstart=no",
            f"--toggle-collect={MARKER}",
            f"--callgrind-out-file={out}",
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            name,
            "--turns",
            str(turns),
            "--warmup",
            str(warmup),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # The same dict and set layouts every run: counts repeat exactly.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    with open(out, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^summary:\s*(\d+)", text, re.M) or re.search(
        r"^totals:\s*(\d+)", text, re.M
    )
    if not m:
        raise SystemExit(f"no instruction total in {out}")
    return int(m.group(1))


def bare_us_per_call(turns: int) -> float:
    call = row_call("bare")
    for _ in range(50):
        call()
    best = float("inf")
    for _ in range(5):  # the quietest of five blocks
        # CPU time, not wall time: on a shared machine a block's wall time
        # includes the time other processes held the cores.
        t0 = time.process_time()
        for _ in range(turns):
            call()
        best = min(best, (time.process_time() - t0) / turns * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--turns", type=int, default=100, help="measured turns per row")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--valgrind", default=shutil.which("valgrind") or "valgrind")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a few turns per row without valgrind: checks the script runs (CI)",
    )
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ct-request-path-")
    os.environ.setdefault("CONTEXT_TRACE_DB", os.path.join(tmp, "bench.db"))
    for var in ("CONTEXT_TOKEN", "GETCONTEXT_TOKEN"):
        os.environ.pop(var, None)
    if args.child:
        child(args.child, args.turns, args.warmup)
        return
    rows = args.rows.split(",")
    unknown = set(rows) - set(ROWS) - set(EXTRA_ROWS)
    if unknown:
        known = ", ".join(ROWS + EXTRA_ROWS)
        ap.error(f"--rows: unknown rows {sorted(unknown)}; known: {known}")
    if args.smoke:
        for name in rows:
            subprocess.run(
                [sys.executable, __file__, "--child", name, "--turns", "3"],
                check=True,
            )
        print("smoke: ok")
        return
    per_turn = {
        name: count(args.valgrind, name, args.turns, args.warmup, tmp) / args.turns
        for name in rows
    }
    print(f"{'row':<24}{'instructions/turn':>20}")
    for name, n in per_turn.items():
        print(f"{name:<24}{n:>20,.0f}")
    if {"noop+meta", "track_user:no-export"} <= per_turn.keys():
        diff = per_turn["track_user:no-export"] - per_turn["noop+meta"]
        line = f"request path (track_user:no-export - noop+meta): {diff:,.0f} instructions/turn"
        if "bare" in per_turn:
            us = bare_us_per_call(args.turns)
            ratio = us / per_turn["bare"]
            line += (
                f" = {diff * ratio:.1f} µs at the bare chain's {us:.0f} µs of CPU/turn"
            )
        print(line)
    for label, high, low in (
        ("recording alone", "track_user:no-meta", "noop"),
        ("LangChain's run metadata", "noop+meta", "noop"),
    ):
        if {high, low} <= per_turn.keys():
            diff = per_turn[high] - per_turn[low]
            print(f"{label} ({high} - {low}): {diff:,.0f} instructions/turn")


if __name__ == "__main__":
    main()
