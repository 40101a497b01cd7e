"""
PostgreSQL delivery rate: turns from one host's outbox into a local server.

    python benchmarks/postgres.py [--turns 50000] [--rounds 3] [--smoke]

Starts its own PostgreSQL (Debian's ``initdb`` in a temporary directory, the
tests' ``tests/postgres/server.py``, with ``fsync`` on), then measures, as
medians over rounds, each into a fresh database:

- ``insert: unnest``: the store's write (``_store/postgres.write_batch``): one
  ``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING RETURNING``
  for the turns (the arrays as binary parameters), then the session and user
  aggregates, one transaction per batch of 256.
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

``turns/s`` is wall-clock, ``turns/CPU-s`` divides by this process's CPU time
(the server's is not counted). Target: at least 5,000 turns/s for ``outbox ->
postgres`` on 2 cores. ``--smoke`` (CI) runs tiny sizes and checks only that it
works.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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
    print(f"{'path':<22} {'turns/s':>10} {'turns/CPU-s':>12}")
    for name, make in methods.items():
        walls, cpus = [], []
        for _ in range(args.rounds):
            database = server.database()
            server.admin(f"GRANT TEMPORARY ON DATABASE {database} TO ct_writer")
            run = make(server.url(database=database), turns)
            wall, cpu = timed(run)
            stored = _count(server, database)
            if stored != len(turns):
                raise SystemExit(f"{name}: stored {stored} of {len(turns)} turns")
            server.admin(f"DROP DATABASE {database}")
            walls.append(wall)
            cpus.append(cpu)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        print(f"{name:<22} {len(turns) / wall:>10,.0f} {len(turns) / cpu:>12,.0f}")


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
    args = ap.parse_args()
    if args.smoke:
        args.turns, args.rounds, args.ops = 1_000, 1, 50

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
            throughput(server, args, tmp)
            request_path(server, args, tmp)
    finally:
        server.close()


if __name__ == "__main__":
    main()
