"""
Topics: quality on a labelled intent set, and cost on a big synthetic store.

    python benchmarks/topics.py [--data DIR] [--split test] [--messages 1000000]
        [--db FILE] [--smoke]

1. **Quality.** Fits topics to the labelled questions of ``--data``
   (default ``../shared/data/clinc150`` from the repository root: CLINC150,
   ``<split>.csv`` with ``text,intent``), with the number of topics chosen by
   the product, assigns every question, and prints NMI and ARI against the
   labels, the number of topics, the share in the miscellaneous bucket, the
   time and the peak memory (of a child process doing only this).
   Targets on CLINC150's test split: NMI >= 0.78, ARI >= 0.40, 75-300 topics.
2. **Cost.** Writes a store of ``--messages`` turns with the real writer
   (synthetic questions: 10 openings x 15 verbs x 20 objects x 11 endings;
   sessions, users), then, in a child process, gives every turn its topic from scratch
   as the first ``context-trace topics`` does (``TopicIndex.build``: sample,
   fit, assign in chunks): time and peak memory. Then appends 1,000 turns and
   times assigning them (one ``TopicIndex.refresh``). Targets: 1M turns in
   <= 10 min with <= 1 GiB on 2 cores; 1,000 new turns in <= 1 s.

``--smoke`` runs both small (the quality part on the repository's small
labelled fixture if the data directory is missing; 20,000 turns), in well
under a minute. Timings are noisy on a shared machine; report them as such.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "clinc150"
FIXTURE = ROOT / "tests" / "analytics" / "intents.csv"
_BATCH = 512

_OPENERS = ("how do i", "can you help me", "i need to", "please", "is it possible to",
            "what's the best way to", "i want to", "could you", "help me", "tell me how to")  # fmt: skip
_VERBS = ("cancel", "change", "check", "update", "book", "find", "reset", "pay",
          "renew", "track", "order", "return", "transfer", "schedule", "report")  # fmt: skip
_NOUNS = ("subscription", "password", "flight", "hotel", "invoice", "package", "loan",
          "insurance", "appointment", "prescription", "car rental", "gym membership",
          "phone plan", "internet bill", "credit card", "mortgage", "train ticket",
          "pizza order", "doctor visit", "tax return")  # fmt: skip
_TAILS = ("", "", "today", "for next week", "right now", "online", "from my phone",
          "before friday", "this month", "as soon as possible", "for my family")  # fmt: skip


def _question(rng: random.Random) -> str:
    verb = rng.choice(_VERBS)
    noun = rng.choice(_NOUNS)
    return f"{rng.choice(_OPENERS)} {verb} my {noun} {rng.choice(_TAILS)}".strip()


def _records(count: int, start: int, rng: random.Random) -> Iterator[list[object]]:
    from context_trace._record import Conversation, Message

    batch: list[object] = []
    now = time.time()
    for i in range(start, start + count):
        user = f"user-{rng.randrange(max(count // 20, 1)):06d}"
        at = now - (start + count - i)
        question = _question(rng)
        batch.append(
            Conversation(
                id=f"c{i:09d}", user_id=user, session_id=f"s-{user}-{i // 5000}",
                started_at=at, ended_at=at + 0.5,
                messages=(Message("user", question), Message("assistant", "Done.")),
            )
        )  # fmt: skip
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _write(path: Path, count: int, start: int, seed: int) -> None:
    from context_trace._exporters.sqlite import SQLiteExporter

    store = SQLiteExporter(path)
    store.check()
    for batch in _records(count, start, random.Random(seed)):
        if store.export(batch).failed:  # type: ignore[arg-type]
            raise SystemExit("export failed")
    store.shutdown()


def _load(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["intent"] for r in rows]


# --------------------------------------------------------------------- child parts
def _child_quality(path: str) -> dict[str, object]:
    from context_trace.analytics import topics

    questions, truth = _load(Path(path))
    began = time.perf_counter()
    model = topics.fit(questions)
    found = model.assign(questions)
    elapsed = time.perf_counter() - began
    nmi, ari = topics.clustering_scores(truth, found)
    return {
        "questions": len(questions), "intents": len(set(truth)),
        "topics": len(model.topics), "nmi": round(nmi, 3), "ari": round(ari, 3),
        "misc_share": round(found.count(topics.MISC) / len(found), 3),
        "seconds": round(elapsed, 2),
    }  # fmt: skip


def _child_build(db: str) -> dict[str, object]:
    from context_trace.analytics.topic_index import TopicIndex

    began = time.perf_counter()
    with TopicIndex(db) as index:
        index.build()
        elapsed = time.perf_counter() - began
        model = index.model
        rows = index.summary()
    return {
        "seconds": round(elapsed, 1),
        "topics": len(model.topics) if model else 0,
        "top": [r.label for r in rows[:3]],
    }


def _child_append(db: str) -> dict[str, object]:
    from context_trace.analytics.topic_index import TopicIndex

    with TopicIndex(db) as index:
        index.build()
        began_write = time.perf_counter()
        total = index._store_n()
        _write(Path(db), 1000, total, seed=7)
        write = time.perf_counter() - began_write
        began = time.perf_counter()
        done = index.refresh(max_rows=1000)
        elapsed = time.perf_counter() - began
    return {"assign_1000_seconds": round(elapsed, 3), "level": done,
            "write_seconds": round(write, 2)}  # fmt: skip


def _run_child(part: str, arg: str) -> dict[str, object]:
    """Run one part in a fresh process: its own time and its own peak memory."""
    proc = subprocess.run(
        [sys.executable, __file__, "--_child", part, arg],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="test")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--db", type=Path, default=None, help="keep the store here")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        part, arg = args._child
        result = {"quality": _child_quality, "build": _child_build,
                  "append": _child_append}[part](arg)  # fmt: skip
        result["peak_mib"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        )
        print(json.dumps(result))
        return 0

    messages = args.messages or (20_000 if args.smoke else 1_000_000)
    data = args.data / f"{args.split}.csv"
    if not data.exists():
        if not args.smoke:
            raise SystemExit(f"no labelled data at {data} (use --data, or --smoke)")
        data = FIXTURE
    quality = _run_child("quality", str(data))
    print(f"quality on {data}: {json.dumps(quality)}")

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "topics.db"
        began = time.perf_counter()
        if not db.exists():
            _write(db, messages, 0, seed=1)
        print(f"store: {messages} turns written in {time.perf_counter() - began:.0f} s")
        for suffix in (".topics",):
            Path(str(db) + suffix).unlink(missing_ok=True)
        build = _run_child("build", str(db))
        print(f"topics for {messages} turns from scratch: {json.dumps(build)}")
        append = _run_child("append", str(db))
        print(f"1,000 new turns: {json.dumps(append)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
