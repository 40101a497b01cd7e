"""
The ``context-trace`` command's start-up: wall time of each read command.

    python benchmarks/cli.py [--reps 15] [--conversations 200] [--smoke] [--json FILE]

Writes a small store (``--conversations`` turns, 20 users, sessions of four
turns, one turn in ten failed, one in ten with a failed tool) with the real
writer, then runs each read command (``users``, ``users --json``, ``sessions``,
``show SESSION``, ``show --json SESSION``, ``stats``, ``export``) as a new
``python -m context_trace`` process ``--reps`` times, and prints the median and
the fastest wall time of each. On a tiny store nearly all of it is the
interpreter starting and importing: two reference rows show the bare
interpreter (``python -c pass``) and the import of what read commands leave
out, LangChain's tracer module (which imports the LangSmith client), the
figure the CLI paid on every command before its read path stopped importing the
recording machinery. Target: a read command within 0.3 s.

``--smoke`` runs three repetitions in a few seconds. Timings are noisy on a
shared machine; report them as such.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Feedback, Message

_TARGET_S = 0.3


def _store(path: Path, conversations: int) -> str:
    """Write the store; returns one session id (for ``show``)."""
    now = time.time() - 86_400
    records: list[Conversation | Feedback] = []
    for i in range(conversations):
        started = now + i * 30
        tool = Message(
            "tool",
            "timeout" if i % 10 == 3 else "order 42: shipped",
            "lookup_order",
            '{"id": 42}',
            error=i % 10 == 3,
        )
        records.append(
            Conversation(
                id=f"bench-cli-{i:06d}",
                user_id=f"user-{i % 20:02d}",
                session_id=f"session-{i // 4:05d}",
                started_at=started,
                ended_at=started + 0.4,
                messages=(
                    Message("user", f"where is order {i}?"),
                    tool,
                    Message("assistant", f"Order {i} is on its way."),
                ),
                metadata={"model": "fake-model", "latency_ms": "400"},
                error="ValueError: model down" if i % 10 == 7 else None,
            )
        )
    records.append(Feedback("bench-cli-rating", "session-00000", "user-00", 1))
    writer = SQLiteExporter(path)
    try:
        result = writer.export(records)
        if result.failed:
            raise SystemExit(f"could not write the store: {result}")
    finally:
        writer.shutdown()
    return "session-00000"


def _time(argv: list[str], reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, check=False)
        times.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise SystemExit(
                f"{' '.join(argv)}: exit {done.returncode}: {done.stderr!r}"
            )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="3 repetitions")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    reps = 3 if args.smoke else args.reps

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "traces.db"
        session = _store(db, args.conversations)
        cli = [sys.executable, "-m", "context_trace"]
        calls = {
            "python -c pass (the interpreter alone)": [sys.executable, "-c", "pass"],
            "import langchain_core.tracers.context (left out)": [
                sys.executable,
                "-c",
                "import langchain_core.tracers.context",
            ],
            "users": [*cli, "users", "--db", str(db)],
            "users --json": [*cli, "users", "--json", "--db", str(db)],
            "sessions": [*cli, "sessions", "--db", str(db)],
            "show SESSION": [*cli, "show", session, "--db", str(db)],
            "show --json SESSION": [*cli, "show", "--json", session, "--db", str(db)],
            "stats": [*cli, "stats", "--db", str(db)],
            "export": [*cli, "export", "--db", str(db)],
        }
        print(
            f"context-trace read commands on a {args.conversations}-turn store,"
            f" {reps} runs each (wall time of a new process)\n"
        )
        print(f"{'command':<50} {'median s':>9} {'best s':>8}")
        figures: dict[str, dict[str, float]] = {}
        worst = 0.0
        for name, argv in calls.items():
            times = _time(argv, reps)
            median = statistics.median(times)
            figures[name] = {
                "median_s": round(median, 3),
                "best_s": round(min(times), 3),
            }
            if argv[:3] == cli:
                worst = max(worst, median)
            print(f"{name:<50} {median:9.3f} {min(times):8.3f}")
    print(f"\nslowest read command: {worst:.3f} s (target {_TARGET_S} s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
