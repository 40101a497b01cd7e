"""
Dashboard scale: every page and API call of ``context-trace ui`` on a big store.

    python benchmarks/ui.py [--conversations 1000000] [--users 50000]
        [--append 100000] [--days 60] [--reps 15] [--db FILE] [--smoke]
        [--json FILE] [--reuse] [--match TEXT]

1. Builds a store of ``--conversations`` turns from ``--users`` users (5% with
   no user, 3% failed, sessions of about four turns, a rating on one session in
   ten, ``--days`` of history, 60 by default) with the real writer:
   ``SQLiteExporter.export`` of ``Conversation`` records in batches of 512. The clock runs over the
   ``export`` calls only: *writer throughput, building*.
2. Builds the dashboard's sidecar index (``<db>.ui-index``) from scratch, as the
   first ``context-trace ui`` on that store does: *index build time*.
3. Appends ``--append`` more turns to the full store, index in place: *writer
   throughput on the full store* (the figure the dashboard must not lower; with
   0.2's first design, triggers in the store, it fell from ~23,000 to ~12,200).
4. Brings the index level with the appended turns in the chunks a request runs
   (``REQUEST_CHUNK``, 1,000 turns): *incremental refresh*, per chunk and in all.
5. Re-prices the whole history with new prices (a fresh pricer, another
   override each time): the total, every user, every day, a segment's users,
   priced when read; then the app's start, which prices every user's and
   session's cost into the index under the app's prices (see
   ``context_trace._store.cost_priced``): *app start (costs priced)*.
6. Times each page and API call (retention, segment filters, cost and two
   periods compared included; retention again in a time zone, ``TZ``: every
   user's scope carries a ``plan``, one in five ``pro``) ``--reps`` times through the WSGI app in this
   process (server time, no network): p50 and p95 per call. Target: p95 <= 300 ms.
   The topic pages (``/topics``, a topic's page, ``/conversations?topic=``
   alone and with filters, struggling topics, ``/unhappy``) come last, after
   the topics are built (``TopicIndex.build``, timed: *topics, first build*).

``--reuse --db FILE`` skips steps 1-5 on a store built before (a copy: the
index and topics files beside it are brought level and written): it times the
index catching up (a new index table fills here), then the calls;
``--match TEXT`` times only the calls containing TEXT.

``--smoke`` runs it small (20,000 turns, 1,000 users) in well under a minute.
Build time for the full size is several minutes. Timings are noisy on a shared
machine; report them as such.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Feedback, Message
from context_trace._store.ui_index import REQUEST_CHUNK, UIIndex

_BATCH = 512
_WORDS = [
    "order",
    "refund",
    "shipping",
    "invoice",
    "password",
    "account",
    "delivery",
    "return",
    "label",
    "discount",
    "warranty",
    "upgrade",
    "cancel",
    "subscription",
    "billing",
    "address",
    "tracking",
]


def _plan(user: str) -> str:
    """A user's plan, as its scope's metadata would carry it: one in five is pro."""
    return "pro" if int(user.rsplit("-", 1)[1]) % 5 == 0 else "free"


def _records(
    count: int,
    users: int,
    start_index: int,
    now: float,
    rng: random.Random,
    days: float = 60,
) -> Iterator[list[Conversation | Feedback]]:
    """Batches of records over ``days`` of history, generated lazily (flat memory)."""
    batch: list[Conversation | Feedback] = []
    span = days * 86_400.0
    for i in range(start_index, start_index + count):
        anon = rng.random() < 0.05
        user = None if anon else f"user-{rng.randrange(users):05d}"
        session = None if anon else f"s-{user}-{i // (4 * users)}"
        started = now - span * (1 - i / (start_index + count)) - rng.random() * 60
        latency = rng.lognormvariate(6.5, 0.6) / 1000
        words = " ".join(rng.choice(_WORDS) for _ in range(6))
        batch.append(
            Conversation(
                id=f"c{i:08d}",
                user_id=user,
                session_id=session,
                started_at=started,
                ended_at=started + latency,
                messages=(
                    Message("user", f"question {i} about {words}"),
                    Message("assistant", f"here is the answer about {words}"),
                ),
                metadata={
                    **({} if user is None else {"plan": _plan(user)}),
                    # gpt-4o-mini is priced by genai-prices, claude-haiku by
                    # the benchmark's override, llama-3 by nothing (unpriced).
                    "model": rng.choice(("gpt-4o-mini", "claude-haiku", "llama-3")),
                    "prompt_tokens": str(rng.randrange(20, 400)),
                    "completion_tokens": str(rng.randrange(10, 300)),
                    "cache_read_tokens": str(rng.randrange(0, 20)),
                },
                error="TimeoutError: upstream" if rng.random() < 0.03 else None,
            )
        )
        if session is not None and rng.random() < 0.025:
            batch.append(
                # Rated once answered: a rating targets an answered turn.
                Feedback(
                    f"f{i}",
                    session,
                    user,
                    rng.choice((1, 1, -1)),
                    None,
                    started + latency,
                )
            )
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _write(path: Path, batches: Iterator[list[Conversation | Feedback]]) -> float:
    """Export every batch; returns conversations per second over the exports."""
    store = SQLiteExporter(path)
    store.check()
    total = 0
    elapsed = 0.0
    for batch in batches:
        total += sum(isinstance(r, Conversation) for r in batch)
        began = time.perf_counter()
        if store.export(batch).failed:
            raise SystemExit("export failed")
        elapsed += time.perf_counter() - began
    store.shutdown()
    return total / elapsed


def _migrate_a_v1_copy(
    path: Path, users: int, now: float, rng: random.Random
) -> tuple[float, float]:
    """
    Seconds for a writer to open a v1 copy of the store, and its rate after.

    The copy is made a v1 file (0.1's layout: the outbox without its holder
    and destination columns) and migrated in place by the first writer that opens it.
    """
    copy = path.with_name(path.name + ".v1")
    source = sqlite3.connect(path)
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.execute("DROP INDEX outbox_destination_due")  # v3
    target.execute("ALTER TABLE outbox DROP COLUMN destination")
    target.execute("CREATE INDEX outbox_due ON outbox (lease_until)")
    target.execute("DROP INDEX outbox_holder")  # v2
    target.execute("ALTER TABLE outbox DROP COLUMN holder")
    target.execute("PRAGMA user_version = 1")
    target.commit()
    target.close()
    began = time.perf_counter()
    store = SQLiteExporter(copy)
    store.check()
    store.shutdown()
    migration = time.perf_counter() - began
    rate = _write(copy, _records(20_000, users, 10**9, now, rng))
    for end in ("", "-wal", "-shm"):
        Path(f"{copy}{end}").unlink(missing_ok=True)
    return migration, rate


def _calls(path: Path, index: Path) -> list[str]:
    conn = sqlite3.connect(path)
    conn.execute("ATTACH DATABASE ? AS ui", (str(index),))
    heavy = conn.execute(
        "SELECT user_key FROM ui_user_stats WHERE user_key != ''"
        " ORDER BY conversations DESC LIMIT 1"
    ).fetchone()[0]
    session = conn.execute(
        "SELECT id FROM sessions WHERE user_id = ? ORDER BY last_at DESC LIMIT 1",
        (heavy,),
    ).fetchone()[0]
    middle = conn.execute("SELECT max(n) / 2 FROM conversations").fetchone()[0]
    conn.close()
    calls = []
    for prefix in ("", "/api"):
        root = "/api/overview" if prefix else "/"
        calls += [f"{root}?range={r}" for r in ("24h", "7d", "30d", "all")]
        users = f"{prefix}/users"
        calls += [
            users,
            f"{users}?sort=conversations",
            f"{users}?sort=errors&order=asc&offset=25000",
            f"{users}?q=user-0042",
            f"{prefix}/user?id={heavy}",
            f"{prefix}/user?anonymous=1",
            f"{prefix}/session?id={session}",
        ]
        conv = f"{prefix}/conversations"
        calls += [
            conv,
            f"{conv}?before={middle}",
            f"{conv}?q=refund",
            f"{conv}?q=refund+warranty+billing",
            f"{conv}?q=question+{middle}",
            f"{conv}?user={heavy}",
            f"{conv}?anonymous=1",
            f"{conv}?errors=1",
            f"{conv}?model=claude-haiku&range=7d",
            f"{conv}?rating=down",
            f"{conv}?q=refund&errors=1&range=30d",
        ]
    calls.append("/api/models")
    # Retention and segments.
    calls += [
        "/retention",
        "/api/retention",
        "/api/retention?weeks=12",
        "/api/segments",
        "/api/compare?a=plan:pro&b=plan:free",
        "/api/compare?a=plan:pro&b=plan:free&range=7d",
        "/?meta=plan:pro",
        "/api/overview?range=24h&meta=plan:pro",
        "/api/overview?range=30d&meta=plan:pro",
        "/api/overview?range=all&meta=plan:free",
        "/users?meta=plan:pro",
        "/api/users?meta=plan:pro&sort=conversations",
        "/api/users?range=7d",
        "/conversations?meta=plan:pro",
        "/api/conversations?meta=plan:free&errors=1",
        "/api/conversations?meta=plan:pro&q=refund",
        f"/api/conversations?meta=plan:pro&before={middle}",
        # Retention of a segment (it reads the segment's turns) and the pages
        # and CSV exports added with the charts.
        "/retention?meta=plan:pro",
        "/api/retention?meta=plan:pro",
        "/api/retention?meta=plan:free",
        "/compare?a=plan:pro&b=plan:free",
        "/api/users?format=csv&sort=conversations",
        "/api/retention?format=csv&table=cohorts",
        # Cost, priced when read (PRICES override claude-haiku).
        "/api/cost",
        "/api/cost?by=user",
        "/api/cost?by=day&range=30d",
        "/api/cost?by=session&range=24h",
        "/api/cost?range=7d",
        "/api/cost?meta=plan:pro",
        "/api/cost?by=user&meta=plan:pro",
        "/api/cost?by=day&range=7d&meta=plan:pro",
        "/api/cost?range=24h&meta=plan:pro",
        "/users?sort=cost",
        "/api/users?sort=cost&order=asc&offset=25000",
        "/api/users?sort=cost&meta=plan:pro",
        # Satisfaction, from the per-user sums kept in the index.
        "/users?sort=satisfaction",
        "/api/users?sort=satisfaction&order=asc",
        "/api/users?sort=satisfaction&meta=plan:pro",
        "/api/unhappy",
        "/api/unhappy?range=24h",
        "/api/unhappy?range=7d",
        "/api/unhappy?range=30d",
        "/api/cost?by=session",
        "/api/cost?by=session&range=7d",
        "/api/cost?by=session&range=30d",
        "/api/cost?by=model&range=24h",
        "/api/cost?by=session&meta=plan:pro",
        "/api/cost?by=session&range=7d&meta=plan:pro",
        # Per user over a range: the per-user, per-day sums of its days.
        "/api/cost?by=user&range=7d",
        "/api/cost?by=user&range=30d",
        "/api/cost?by=user&range=24h",
        "/api/cost?by=user&range=7d&meta=plan:pro",
        "/api/cost?by=user&range=30d&meta=plan:pro",
        "/api/cost?by=user&range=24h&meta=plan:pro",
        # Two periods compared (from the per-day tables).
        "/api/compare?period=week",
        "/api/compare?period=week&meta=plan:pro",
        "/api/compare?period=month&meta=model:llama-3",
        "/compare?period=week&meta=plan:pro",
        f"/api/compare?a_range={_days_ago(27)}..{_days_ago(14)}"
        f"&b_range={_days_ago(13)}..{_days_ago(0)}",
    ]
    return calls


def _days_ago(n: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() - n * 86_400))


#: Retention in a time zone other than UTC (the dashboard started with --tz):
#: from the zone's aggregates, which the index fills when it first sees it.
TZ = "Europe/Paris"
TZ_CALLS = [
    "/retention",
    "/api/retention",
    "/api/retention?weeks=12",
    "/retention?meta=plan:pro",
    "/api/retention?meta=plan:pro",
    "/api/retention?meta=model:claude-haiku",
]


#: The benchmark's price override (claude-haiku is not a genai-prices name).
PRICES = {"claude-haiku": {"input": 0.8, "output": 4.0, "cache_read": 0.08}}


def _repricing(path: Path, index: Path, reps: int) -> dict[str, float]:
    """
    Milliseconds to re-price the whole history with new prices: a fresh
    pricer (every model looked up again) and a new override each time, for
    the total by model, every user, every day, and a segment's users.
    """
    from context_trace._store.analytics import Analytics

    out: dict[str, float] = {}
    for label, by, segment in (
        ("total by model", "model", ()),
        ("every user", "user", ()),
        ("every day", "day", ()),
        ("plan:pro users", "user", (("plan", "pro"),)),
    ):
        times = []
        for rep in range(reps):
            prices = {"claude-haiku": {"input": 0.8 + rep / 100, "output": 4.0}}
            began = time.perf_counter()
            with Analytics(path, index, prices=prices) as analytics:
                analytics.cost(by, "all", segment, limit=None)
            times.append((time.perf_counter() - began) * 1000)
        times.sort()
        out[label] = round(
            times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 1
        )
        print(f"  re-pricing, {label}: p95 {out[label]} ms")
    return out


def _topic_calls(path: Path, topics: Path) -> list[str]:
    """The topic pages: the biggest topic, a struggling one, a rare word in it."""
    conn = sqlite3.connect(topics)
    biggest = conn.execute(
        "SELECT topic_id FROM topic_summary WHERE topic_id != 'misc'"
        " ORDER BY turns DESC LIMIT 1"
    ).fetchone()[0]
    smallest = conn.execute(
        "SELECT topic_id FROM topic_summary WHERE topic_id != 'misc'"
        " ORDER BY turns LIMIT 1"
    ).fetchone()[0]
    middle = conn.execute("SELECT max(n) / 2 FROM topic_turns").fetchone()[0]
    conn.close()
    calls = [
        "/topics", "/topics?range=7d", "/topics?sort=struggling",
        "/api/topics", "/api/topics?range=30d", "/api/topics?sort=struggling",
        f"/topics/{biggest}", f"/topics/{biggest}?range=7d", f"/topics/{smallest}",
        "/unhappy", "/api/cost?by=topic", "/api/cost?by=topic&range=7d",
        "/api/cost?by=topic&range=30d", "/api/cost?by=topic&range=24h",
        "/api/cost?by=topic&meta=plan:pro", "/api/cost?by=topic&range=7d&meta=plan:pro",
    ]  # fmt: skip
    for topic in (biggest, smallest):
        conv = f"/conversations?topic={topic}"
        calls += [
            conv,
            f"/api{conv}",
            f"{conv}&before={middle}",
            f"{conv}&q=refund",
            # A word in one turn only: the search and the topic meet rarely.
            f"{conv}&q=question+{middle}",
            f"{conv}&errors=1&range=30d",
            f"{conv}&meta=plan:pro",
        ]
    return calls


def time_calls(
    client: Any,
    calls: list[str],
    reps: int,
    results: dict[str, dict[str, float]],
    label: str = "",
) -> float:
    """
    GET each call *reps* times through the app's test client, print and record
    its p50 and p95 (ms) in *results* under *label* + call; return the worst p95.
    A call that does not answer 200 stops the benchmark.
    """
    worst = 0.0
    for call in calls:
        times = []
        for _ in range(reps):
            began = time.perf_counter()
            response = client.get(call)
            times.append((time.perf_counter() - began) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{label}{call}: HTTP {response.status_code}")
        times.sort()
        p50 = statistics.median(times)
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        worst = max(worst, p95)
        results[label + call] = {"p50_ms": round(p50, 1), "p95_ms": round(p95, 1)}
        print(f"{(label + call)[:62]:<62} {p50:8.1f} {p95:8.1f}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--append", type=int, default=100_000)
    parser.add_argument(
        "--days", type=float, default=60, help="span of the store's history, in days"
    )
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--db", type=Path, help="keep the store here")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--match", default="", help="time only the calls containing this text"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="time the calls on the existing --db (its index brought level first)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.conversations, args.users, args.append, args.reps = 20_000, 1_000, 5_000, 5
    path = args.db or Path(tempfile.mkdtemp()) / "ui-bench.db"
    if args.reuse:
        if not path.exists():
            raise SystemExit(f"--reuse: no store at {path}")
        _time_calls(path, args, {})
        return
    if path.exists():
        raise SystemExit(f"{path} exists; give a new --db")
    rng = random.Random(13)
    now = time.time()
    figures: dict[str, object] = {
        "conversations": args.conversations,
        "users": args.users,
    }

    print(f"building a store of {args.conversations:,} turns in {path} ...")
    batches = _records(args.conversations, args.users, 0, now - 3600, rng, args.days)
    building = _write(path, batches)
    figures["writer_building_per_s"] = round(building)
    print(f"  writer, building: {building:,.0f} conversations/s")

    migration, migrated = _migrate_a_v1_copy(path, args.users, now, random.Random(1))
    figures["migration_s"] = round(migration, 2)
    figures["writer_migrated_per_s"] = round(migrated)
    print(
        f"  migration of a v1 (0.1) copy of it: {migration:.2f} s; then the writer"
        f" on the migrated file: {migrated:,.0f} conversations/s"
    )

    began = time.perf_counter()
    index = UIIndex(path)
    index.build()
    build = time.perf_counter() - began
    figures["index_build_s"] = round(build, 1)
    size = (
        sum(
            Path(f"{index.path}{end}").stat().st_size
            for end in ("", "-wal")
            if Path(f"{index.path}{end}").exists()
        )
        / 1e6
    )
    figures["index_mb"] = round(size)
    print(f"  index build (first run): {build:.1f} s, {size:,.0f} MB at {index.path}")

    extra = _records(args.append, args.users, args.conversations, now, rng, args.days)
    after = _write(path, extra)
    figures["writer_full_store_per_s"] = round(after)
    print(
        f"  writer on the full store ({args.append:,} more): {after:,.0f}"
        " conversations/s"
    )

    chunks = []
    began = time.perf_counter()
    caught_up = False
    while not caught_up:
        step = time.perf_counter()
        caught_up = index.refresh(REQUEST_CHUNK)
        chunks.append((time.perf_counter() - step) * 1000)
    refresh = time.perf_counter() - began
    chunks.sort()
    figures["refresh_s"] = round(refresh, 1)
    figures["refresh_chunk_p95_ms"] = round(chunks[round(0.95 * (len(chunks) - 1))], 1)
    print(
        f"  incremental refresh of {args.append:,} turns: {refresh:.1f} s in"
        f" {len(chunks)} chunks, p95 {figures['refresh_chunk_p95_ms']} ms per chunk"
    )

    _time_calls(path, args, figures, index)


def _time_calls(
    path: Path,
    args: argparse.Namespace,
    figures: dict[str, object],
    index: UIIndex | None = None,
) -> None:
    """Build the topics, then time re-pricing and every call (see the docstring)."""
    if index is None:  # --reuse: bring the existing index level, timed
        began = time.perf_counter()
        index = UIIndex(path)
        index.build()
        figures["index_catch_up_s"] = round(time.perf_counter() - began, 1)
        print(f"  index brought level: {figures['index_catch_up_s']} s")
    from context_trace.analytics.topic_index import TopicIndex

    began = time.perf_counter()
    with TopicIndex(path) as topics:
        topics.build()
        topics_path = topics.path
    figures["topics_build_s"] = round(time.perf_counter() - began, 1)
    print(f"  topics, first build: {figures['topics_build_s']} s")

    from context_trace.ui.app import create_app

    figures["repricing_p95_ms"] = _repricing(path, index.path, args.reps)
    # The app keeps every user's and session's cost priced in the index: the
    # first time under these prices, all of history is priced here.
    began = time.perf_counter()
    client = create_app(
        path, index=index, refresh_interval=0, prices=PRICES
    ).test_client()
    figures["app_start_pricing_s"] = round(time.perf_counter() - began, 1)
    print(
        f"  app start (costs priced into the index): {figures['app_start_pricing_s']} s"
    )
    results: dict[str, dict[str, float]] = {}
    print(f"\n{'call':<62} {'p50 ms':>8} {'p95 ms':>8}")
    calls = _calls(path, index.path) + _topic_calls(path, topics_path)
    worst = time_calls(
        client, [c for c in calls if args.match in c], args.reps, results
    )
    # A --match applies to the zone's calls as printed, "[tz=Europe/Paris] /retention".
    zone_calls = [c for c in TZ_CALLS if args.match in f"[tz={TZ}] {c}"]
    if zone_calls:
        from zoneinfo import ZoneInfo

        began = time.perf_counter()
        client = create_app(
            path, index=index, refresh_interval=0, prices=PRICES, tz=ZoneInfo(TZ)
        ).test_client()
        figures["zone_first_fill_s"] = round(time.perf_counter() - began, 1)
        print(
            f"  a new time zone ({TZ}), its aggregates filled:"
            f" {figures['zone_first_fill_s']} s"
        )
        worst = max(
            worst, time_calls(client, zone_calls, args.reps, results, f"[tz={TZ}] ")
        )
    figures["calls"] = results
    figures["worst_p95_ms"] = round(worst, 1)
    print(f"\nworst p95: {worst:.1f} ms (target 300 ms)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
