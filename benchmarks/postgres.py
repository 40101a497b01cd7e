"""
PostgreSQL: the delivery rate from one host, and the dashboard on a big store.

    python benchmarks/postgres.py [--turns 50000] [--rounds 3]
        [--conversations 1000000] [--users 50000] [--reps 15]
        [--part delivery|dashboard|all] [--json FILE] [--smoke]

Starts its own PostgreSQL (Debian's ``initdb`` in a temporary directory, the
tests' ``tests/postgres/server.py``, with ``fsync`` on), then measures, as
medians over rounds, each into a fresh database:

- ``insert: unnest``: the store's write (``_store/postgres.write_batch``): one
  statement, ``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING
  RETURNING`` for the turns (the arrays as binary parameters) with the session
  and user aggregates upserted from the rows it returned, pipelined with its
  ``BEGIN`` and ``COMMIT``; one transaction per batch of 256.
- ``insert: executemany``: the same rows through psycopg's ``executemany`` of
  a one-row ``INSERT ... ON CONFLICT DO NOTHING`` (pipelined), turns only.
- ``insert: copy``: ``COPY`` into a temporary table, then ``INSERT ... SELECT
  ... ON CONFLICT DO NOTHING``, turns only (needs TEMP on the database).
- ``outbox -> postgres``: what a host's export worker does:
  ``OutboxExporter.export`` (the local SQLite outbox, 512 turns per batch) then
  ``deliver`` (claim 1,024 rows, write them to PostgreSQL in one transaction,
  delete them), until the outbox is empty; ``claiming 256`` is the same with
  the other destinations' claim size.

Then the request path with the store up and the store stopped: the median and
p99 µs of ``chain.invoke`` (``prompt | ParrotFakeChatModel | StrOutputParser``)
inside ``track_user``, with ``configure(store=...)``; the app never waits on
PostgreSQL, so both rows should be within noise of each other.

``turns/s`` is wall-clock, ``turns/CPU-s`` divides by this process's CPU time,
and ``server µs/turn`` is the CPU the PostgreSQL server's processes used per turn
(``/proc``; the postmaster, its live children and those it reaped). Target: at least 5,000 turns/s for ``outbox ->
postgres`` on 2 cores.

The dashboard part (``--part dashboard``) fills a fresh database with
``--conversations`` turns of ``--users`` users, the records of
``benchmarks/ui.py`` (its ``_records``), by ``COPY`` in the store's own rows
(``_turn_row``; 50,000 turns per transaction, the session and user aggregates
and the ratings as the writer keeps them), then measures what ``context-trace
ui --store`` does on it:

- *first sync*: copying the store into the dashboard's local cache
  (``PostgresCache.build``), its time and the cache's size on disk;
- *index build* on the cache, as on a SQLite store (and, after the next
  step, *topics build*);
- *incremental sync*: 1,000 new turns written by the real writer
  (``PostgresStore.write``), then copied and indexed (``SyncedIndex.refresh``
  until level), the median of 5;
- *pages*: every call ``benchmarks/ui.py`` times (its ``_calls`` and
  ``_topic_calls``), ``--reps`` times each through the WSGI app over the
  cache (after one warm-up request, which loads the topic model), each
  request syncing as the served dashboard does: p50 and p95.
  Target: p95 <= 300 ms.

``--smoke`` (CI) runs tiny sizes and checks only that it works.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

_BATCH = 256
# The runtime's claim size for an outbox whose one destination is PostgreSQL.
_CLAIM = 1024


def make_turns(n: int) -> list[Any]:
    """*n* turns of 100 sessions and 1,000 users: question, tool, answer."""
    from context_trace._record import Conversation, Message, new_id

    t0 = time.time()
    return [
        Conversation(
            id=new_id(),
            user_id=f"user-{i % 1000}",
            session_id=f"session-{i % 100}",
            started_at=t0 + i,
            ended_at=t0 + i + 0.8,
            messages=(
                Message("user", f"What is the weather in city {i}?"),
                Message("tool", "sunny", name="get_weather", tool_input='{"c":1}'),
                Message("assistant", f"It is sunny in city {i}."),
            ),
            metadata={"plan": "pro"},
        )
        for i in range(n)
    ]


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _insert_unnest(url: str, turns: list[Any]) -> Callable[[], None]:
    from context_trace._store.postgres import connect, migrate, write_batch

    conn = connect(url)
    migrate(conn)

    def run() -> None:
        for i in range(0, len(turns), _BATCH):
            write_batch(conn, turns[i : i + _BATCH], "bench")
        conn.close()

    return run


_ONE_ROW = (
    "INSERT INTO turns (id, host, user_id, session_id, started_at, ended_at,"
    " latency_ms, model, prompt_tokens, completion_tokens, total_tokens, error,"
    " metadata, messages, answered, tool_error) VALUES"
    " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (id) DO NOTHING"
)


def _insert_executemany(url: str, turns: list[Any]) -> Callable[[], None]:
    from context_trace._store.postgres import _turn_row, connect, migrate

    conn = connect(url)
    migrate(conn)

    def run() -> None:
        for i in range(0, len(turns), _BATCH):
            rows = [_turn_row(t, "bench") for t in turns[i : i + _BATCH]]
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_ONE_ROW, rows)
        conn.close()

    return run


def _insert_copy(url: str, turns: list[Any]) -> Callable[[], None]:
    from context_trace._store.postgres import _turn_row, connect, migrate

    conn = connect(url)
    migrate(conn)
    conn.execute(
        "CREATE TEMP TABLE staging (LIKE turns INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    conn.commit()
    columns = (
        "id, host, user_id, session_id, started_at, ended_at, latency_ms, model,"
        " prompt_tokens, completion_tokens, total_tokens, error, metadata, messages,"
        " answered, tool_error"
    )

    def run() -> None:
        for i in range(0, len(turns), _BATCH):
            rows = [_turn_row(t, "bench") for t in turns[i : i + _BATCH]]
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY staging ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(
                    f"INSERT INTO turns ({columns}) SELECT {columns} FROM staging"
                    " ON CONFLICT (id) DO NOTHING"
                )
        conn.close()

    return run


def _outbox(
    url: str, turns: list[Any], tmp: str, claim: int | None = None
) -> Callable[[], None]:
    from context_trace._exporters.outbox import OutboxExporter
    from context_trace._exporters.postgres import PostgresSender
    from context_trace._exporters.senders import POSTGRESQL as DESTINATION
    from context_trace._exporters.sqlite import SQLiteExporter

    path = os.path.join(tmp, f"outbox-{time.monotonic_ns()}.db")
    local = SQLiteExporter(path, keep_local=False)
    local.check()
    sender = PostgresSender(url, host="bench")
    sender.store.open()
    outbox = (
        OutboxExporter(local, senders={DESTINATION: sender})
        if claim is None
        else OutboxExporter(local, senders={DESTINATION: sender}, claim_size=claim)
    )

    def run() -> None:
        for i in range(0, len(turns), 512):
            outbox.export(turns[i : i + 512])
            outbox.deliver()
        while outbox.pending():
            outbox.deliver()
        outbox.shutdown()

    return run


def _server_cpu(server: Any) -> float:
    """CPU seconds of the server's processes so far (Linux ``/proc``), or 0."""
    try:
        postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(pid) == postmaster:  # itself and the children it reaped
            ticks += sum(int(f) for f in fields[11:15])
        elif int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _count(server: Any, database: str) -> int:
    rows = server.admin("SELECT count(*) FROM context_trace.turns", database=database)
    return int(rows[0][0])


def throughput(server: Any, args: argparse.Namespace, tmp: str) -> None:
    turns = make_turns(args.turns)
    methods: dict[str, Callable[[str, list[Any]], Callable[[], None]]] = {
        "insert: unnest": _insert_unnest,
        "insert: executemany": _insert_executemany,
        "insert: copy": _insert_copy,
        "outbox -> postgres": lambda url, ts: _outbox(url, ts, tmp, _CLAIM),
        "  claiming 256": lambda url, ts: _outbox(url, ts, tmp, 256),
    }
    print(f"{args.turns} turns, batches of {_BATCH}, medians of {args.rounds} rounds")
    print(f"{'path':<22} {'turns/s':>10} {'turns/CPU-s':>12} {'server µs/turn':>15}")
    for name, make in methods.items():
        walls, cpus, servers = [], [], []
        for _ in range(args.rounds):
            database = server.database()
            server.admin(f"GRANT TEMPORARY ON DATABASE {database} TO ct_writer")
            run = make(server.url(database=database), turns)
            before = _server_cpu(server)
            wall, cpu = timed(run)
            servers.append(_server_cpu(server) - before)
            stored = _count(server, database)
            if stored != len(turns):
                raise SystemExit(f"{name}: stored {stored} of {len(turns)} turns")
            server.admin(f"DROP DATABASE {database}")
            walls.append(wall)
            cpus.append(cpu)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        used = statistics.median(servers) / len(turns) * 1e6
        print(
            f"{name:<22} {len(turns) / wall:>10,.0f} {len(turns) / cpu:>12,.0f}"
            f" {used:>15.1f}"
        )


def request_path(server: Any, args: argparse.Namespace, tmp: str) -> None:
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    import context_trace

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are helpful."), ("human", "{q}")]
    )
    chain = prompt | ParrotFakeChatModel() | StrOutputParser()
    database = server.database()
    context_trace.configure(
        store=server.url(database=database), db_path=os.path.join(tmp, "app.db")
    )

    def sample() -> list[float]:
        out = []
        for i in range(args.ops):
            start = time.perf_counter()
            with context_trace.track_user(f"u{i % 50}"):
                chain.invoke({"q": f"question {i}"})
            out.append((time.perf_counter() - start) * 1e6)
        context_trace.flush(30.0)
        return out

    rows = {}
    sample()  # warm up
    rows["store up"] = sample()
    server.stop()
    try:
        rows["store stopped"] = sample()
    finally:
        server.start()
    deadline = time.monotonic() + 60
    while context_trace.stats()["pending"] and time.monotonic() < deadline:
        context_trace.flush(5.0)
        time.sleep(0.2)
    context_trace.shutdown()
    stored = _count(server, database)
    expected = args.ops * 3
    if stored != expected:
        raise SystemExit(f"request path: stored {stored} of {expected} turns")
    print(f"\nrequest path, {args.ops} calls each (µs)")
    print(f"{'store':<14} {'median':>8} {'p99':>8}")
    for name, values in rows.items():
        values.sort()
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(f"{name:<14} {statistics.median(values):>8.0f} {p99:>8.0f}")


# Turns per COPY transaction when filling the store for the dashboard part.
_FILL_CHUNK = 50_000
_TURN_COLUMNS = (
    "id, host, user_id, session_id, started_at, ended_at, latency_ms, model,"
    " prompt_tokens, completion_tokens, total_tokens, error, metadata, messages,"
    " answered, tool_error"
)


def _ui_bench() -> Any:
    """``benchmarks/ui.py``, for its records and its list of calls."""
    spec = importlib.util.spec_from_file_location(
        "ui_bench", os.path.join(HERE, "ui.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fill(url: str, batches: Iterator[list[Any]]) -> tuple[int, float]:
    """COPY the records into the store's tables; (turns, seconds)."""
    from context_trace._record import Conversation
    from context_trace._store.postgres import _turn_row, connect

    conn = connect(url)
    sessions: dict[str, list[Any]] = {}
    users: dict[str, list[float]] = {}
    turns: list[tuple[Any, ...]] = []
    ratings: list[tuple[Any, ...]] = []
    count = 0
    began = time.perf_counter()

    def flush() -> None:
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY turns ({_TURN_COLUMNS}) FROM STDIN") as copy:
                for row in turns:
                    copy.write_row(row)
            with cur.copy(
                "COPY ratings (id, host, session_id, conversation_id, rating,"
                " created_at) FROM STDIN"
            ) as copy:
                for row in ratings:
                    copy.write_row(row)
        turns.clear()
        ratings.clear()

    for batch in batches:
        for record in batch:
            if isinstance(record, Conversation):
                turns.append(_turn_row(record, "bench"))
                count += 1
                start, end = record.started_at, record.ended_at
                if record.session_id is not None:
                    row = sessions.setdefault(
                        record.session_id, [record.user_id, start, end, 0]
                    )
                    row[1], row[2] = min(row[1], start), max(row[2], end)
                    row[3] += 1
                if record.user_id is not None:
                    span = users.setdefault(record.user_id, [start, end, 0])
                    span[0], span[1] = min(span[0], start), max(span[1], end)
                    span[2] += 1
            else:  # a rating: it moves its session's and user's last activity
                ratings.append(
                    (record.id, "bench", record.session_id, record.conversation_id,
                     record.rating, record.created_at)
                )  # fmt: skip
                row = sessions[record.session_id]
                row[2] = max(row[2], record.created_at)
                if row[0] is not None:
                    users[row[0]][1] = max(users[row[0]][1], record.created_at)
        if len(turns) >= _FILL_CHUNK:
            flush()
    flush()
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(
            "COPY sessions (id, user_id, started_at, last_at, turns) FROM STDIN"
        ) as copy:
            for sid, (uid, start, last, n) in sessions.items():
                copy.write_row((sid, uid, start, last, n))
        with cur.copy(
            "COPY users (id, first_seen, last_seen, turns) FROM STDIN"
        ) as copy:
            for uid, (first, last, n) in users.items():
                copy.write_row((uid, first, last, n))
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    return count, time.perf_counter() - began


def _size_mb(path: Path) -> float:
    return (
        sum(
            Path(f"{path}{end}").stat().st_size
            for end in ("", "-wal")
            if Path(f"{path}{end}").exists()
        )
        / 1e6
    )


def dashboard(server: Any, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """The dashboard over a big PostgreSQL store, through its local cache."""
    from context_trace._store.postgres import PostgresStore
    from context_trace._store.postgres.cache import PostgresCache, SyncedIndex
    from context_trace.analytics.topic_index import TopicIndex
    from context_trace.ui.app import create_app

    ui = _ui_bench()
    figures: dict[str, Any] = {
        "conversations": args.conversations,
        "users": args.users,
    }
    url = server.url(database=server.database())
    PostgresStore(url, host="bench").open()  # the schema, as a writer makes it
    rng = random.Random(13)
    now = time.time()
    print(f"\nfilling PostgreSQL with {args.conversations:,} turns (COPY) ...")
    count, took = _fill(
        url, ui._records(args.conversations, args.users, 0, now - 3600, rng)
    )
    figures["fill_s"] = round(took, 1)
    print(f"  filled: {count:,} turns in {took:.1f} s")

    cache_path = Path(tmp) / "cache.db"
    began = time.perf_counter()
    cache = PostgresCache(url, cache_path)
    cache.build()
    first = time.perf_counter() - began
    figures["first_sync_s"] = round(first, 1)
    figures["first_sync_turns_per_s"] = round(count / first)
    figures["cache_mb"] = round(_size_mb(cache_path))
    print(
        f"  first sync into the cache: {first:.1f} s ({count / first:,.0f} turns/s),"
        f" {figures['cache_mb']:,} MB on disk"
    )
    began = time.perf_counter()
    index = SyncedIndex(cache)
    index.build()
    figures["index_build_s"] = round(time.perf_counter() - began, 1)
    figures["index_mb"] = round(_size_mb(index.path))
    print(
        f"  index build on the cache: {figures['index_build_s']} s,"
        f" {figures['index_mb']:,} MB"
    )
    writer = PostgresStore(url, host="bench-2")
    syncs, steps = [], []
    for round_ in range(5):
        more = [
            r
            for batch in ui._records(
                1_000, args.users, args.conversations + 1_000 * round_, now, rng
            )
            for r in batch
        ]
        writer.write(more)
        began = time.perf_counter()
        while not cache.sync():
            pass
        syncs.append((time.perf_counter() - began) * 1000)
        while not index.refresh(1_000):
            pass
        steps.append((time.perf_counter() - began) * 1000)
    writer.close()
    figures["sync_1000_ms"] = round(statistics.median(syncs), 1)
    figures["sync_and_index_1000_ms"] = round(statistics.median(steps), 1)
    print(
        f"  1,000 new turns: copied in {figures['sync_1000_ms']} ms, copied and"
        f" indexed in {figures['sync_and_index_1000_ms']} ms (medians of 5)"
    )

    began = time.perf_counter()
    with TopicIndex(cache_path) as topics:
        topics.build()
        topics_path = topics.path
    figures["topics_build_s"] = round(time.perf_counter() - began, 1)
    print(f"  topics, first build: {figures['topics_build_s']} s")

    client = create_app(
        cache_path, index=index, refresh_interval=0, prices=ui.PRICES
    ).test_client()
    client.get("/")  # warm-up: the topic model loads on the first request
    results: dict[str, dict[str, float]] = {}
    print(f"\n{'call':<62} {'p50 ms':>8} {'p95 ms':>8}")
    calls = ui._calls(cache_path, index.path) + ui._topic_calls(cache_path, topics_path)
    worst = ui.time_calls(client, calls, args.reps, results)
    index.close()
    figures["calls"] = results
    figures["worst_p95_ms"] = round(worst, 1)
    print(f"\nworst p95: {worst:.1f} ms (target 300 ms)")
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--turns", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ops", type=int, default=2_000, help="request-path calls per row")
    ap.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks the script runs"
    )
    ap.add_argument(
        "--conversations", type=int, default=1_000_000, help="dashboard: store size"
    )
    ap.add_argument("--users", type=int, default=50_000, help="dashboard: users")
    ap.add_argument("--reps", type=int, default=15, help="dashboard: calls per page")
    ap.add_argument("--part", choices=("delivery", "dashboard", "all"), default="all")
    ap.add_argument("--json", type=Path, help="write the dashboard's figures here")
    args = ap.parse_args()
    if args.smoke:
        args.turns, args.rounds, args.ops = 1_000, 1, 50
        args.conversations, args.users, args.reps = 2_000, 200, 2

    from tests.postgres.server import INSTALL_HINT, Server, binaries

    bindir = binaries()
    if bindir is None:
        if os.environ.get("CONTEXT_TRACE_REQUIRE_POSTGRES", "") not in ("", "0"):
            raise SystemExit(f"PostgreSQL is not installed ({INSTALL_HINT})")
        print(f"skipped: PostgreSQL is not installed ({INSTALL_HINT})")
        return
    server = Server(bindir, fsync=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.part in ("delivery", "all"):
                throughput(server, args, tmp)
                request_path(server, args, tmp)
            if args.part in ("dashboard", "all"):
                figures = dashboard(server, args, tmp)
                if args.json:
                    args.json.write_text(json.dumps(figures, indent=2))
    finally:
        server.close()


if __name__ == "__main__":
    main()
