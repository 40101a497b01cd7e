"""
Export throughput (SQLite, Context API) and app latency while the backend is down.

    python benchmarks/export.py [--records 50000] [--rounds 3] [--ops 200]
        [--lat-rounds 10] [--http-records 600] [--pool 4000] [--settle 6]
        [--tmpdir DIR] [--skip sqlite,http,latency] [--profile] [--json FILE]

The default run takes about two minutes on an idle 2-core machine.

Three parts, each measured against a baseline taken in the same run, with the
contenders interleaved in a freshly shuffled order every round so machine noise
hits all of them alike (medians over rounds):

1. **Pipeline into SQLite.** ``--records`` items are emitted into a fresh
   ``BatchPipeline`` + ``SQLiteExporter(tmpfile)`` and flushed; the clock runs
   from the first ``emit`` to the return of ``flush()``. Items are either
   (a) ready-made ``Conversation`` records (3 messages each: queue + SQLite), or
   (b) raw ``Turn`` objects recorded by the real recorder from
   ``ChatPromptTemplate | ParrotFakeChatModel | StrOutputParser`` under
   ``track_user`` (conversion + SQLite: what production does). Each comes as
   ``plain`` turns and as ``sessions`` (every other record belongs to one of 100
   sessions, so both de-dup passes run). The baseline is the same pipeline with
   a do-nothing exporter (``null``): the difference is what SQLite costs.
   Recording 50,000 turns through LangChain takes about a minute, so a pool of
   ``--pool`` real turns is recorded once and cloned with fresh run ids (each
   clone keeps its scope, so session clones stay in their session).
   Target: at least 20,000 records/s into SQLite.
2. **Pipeline into a loopback Context API.** ``--http-records`` ready-made
   records through ``ContextAPIExporter`` (the real ``context-python`` client),
   directly behind ``BatchPipeline`` and behind ``OutboxExporter`` (local SQLite
   outbox first), for plain records, for the sessions mix, and for plain records
   while the main thread keeps running the chain (``busy-app``: the worker then
   competes for the GIL with a CPU-bound app thread). The server runs in its own
   process so its parsing does not share our GIL; it answers 201 ``{}`` (200 for
   PATCH), the statuses the generated client expects.
3. **Invoke latency while the backend is unreachable or slow.** With
   ``configure(token="bench-token", endpoint=..., db_path=tmp)`` (the real
   outbox + Context exporter path), ``chain.invoke`` inside ``track_user`` is
   timed against the same chain with no scope (``none``: nothing recorded or
   exported), interleaved with two more rows that split the cost: ``noop-cb``
   (a do-nothing inline callback handler: LangChain's callback floor) and
   ``record-only`` (``track_user`` with the turns discarded: the recorder
   without export). Backends: ``down`` (a closed port) and ``slow`` (the server
   sleeps 2 s per request), each after ``--settle`` seconds of traffic so the
   worker is in its outage steady state, plus ``local`` (no token: SQLite only)
   and ``up`` (fast server) for reference. The worker retries in the background
   while we measure; its CPU use and the pipeline counters are printed per
   backend. Target: ``track_user`` within 1.1x of ``none`` for down and slow.

``--profile`` adds a cProfile of the worker thread (conversion and export calls)
for one (b) run into SQLite.

Run by hand; not part of the test suite.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import logging
import multiprocessing
import os
import pstats
import random
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

SQLITE_TARGET = 20_000.0  # records per second into SQLite
LATENCY_TARGET = 1.10  # track_user / no export, backend down or slow
SESSIONS = 100
SLOW_DELAY = 2.0  # seconds the slow server waits before answering
TOKEN = "bench-token"  # a fake token: the servers here never check it
QUESTION = {"q": "What is the capital of France? Answer in one word."}


# --------------------------------------------------------------------------- server
class _Sink(BaseHTTPRequestHandler):
    """Answers every Context API call with 201 {} (200 for PATCH), keep-alive."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    delay = 0.0
    counter: Any = None

    def _reply(self, status: bytes) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.delay:
            time.sleep(self.delay)
        if self.counter is not None:  # counted before the client can see the answer
            with self.counter.get_lock():
                self.counter.value += 1
        # One write: headers and body in the same segment (no Nagle stalls).
        self.wfile.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )

    def do_POST(self) -> None:
        self._reply(b"201 Created")

    def do_PATCH(self) -> None:
        self._reply(b"200 OK")

    def log_message(self, *args: Any) -> None:
        pass


def _serve(conn: Any, delay: float, counter: Any) -> None:
    """Child process: serve on a free loopback port; send the port back."""
    handler = type("Handler", (_Sink,), {"delay": delay, "counter": counter})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    conn.send(server.server_address[1])
    conn.close()
    server.serve_forever(poll_interval=0.1)


class SinkServer:
    """A loopback sink in a separate (spawned) process."""

    def __init__(self, delay: float = 0.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.counter = ctx.Value("q", 0)
        parent, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child, delay, self.counter), daemon=True
        )
        self.process.start()
        child.close()
        if not parent.poll(30):
            self.process.terminate()
            raise RuntimeError("sink server did not start")
        self.port = int(parent.recv())
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        with self.counter.get_lock():
            return int(self.counter.value)

    def reset(self) -> None:
        with self.counter.get_lock():
            self.counter.value = 0

    def close(self) -> None:
        self.process.terminate()
        self.process.join(10)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- records
def new_run_id() -> uuid.UUID:
    """A run id as the installed LangChain makes them: UUIDv7 (time-ordered) since 1.0."""
    try:
        from langchain_core.utils.uuid import uuid7
    except ImportError:  # an older LangChain: random ids
        return uuid.uuid4()
    return uuid7()


def build_chain() -> Any:
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a helpful assistant."), ("human", "{q}")]
    )
    return prompt | ParrotFakeChatModel() | StrOutputParser()


def _is_session_slot(i: int, sessions: bool) -> bool:
    return sessions and i % 2 == 1


def make_conversations(n: int, sessions: bool) -> list[Any]:
    """*n* ready-made records with fresh ids; with *sessions* every other one is in a session."""
    from context_trace._record import Conversation, Message

    now = time.time()
    out = []
    for i in range(n):
        sid = (
            f"session-{(i // 2) % SESSIONS}" if _is_session_slot(i, sessions) else None
        )
        out.append(
            Conversation(
                id=new_run_id().hex,
                user_id=f"user-{i % 1000}",
                session_id=sid,
                started_at=now,
                ended_at=now + 0.25,
                messages=(
                    Message("system", "You are a helpful assistant."),
                    Message(
                        "user", f"Question number {i}: what is the capital of France?"
                    ),
                    Message("assistant", f"Paris (answer {i})."),
                ),
                metadata={"model": "parrot", "latency_ms": "250", "plan": "pro"},
            )
        )
    return out


class _Keep:
    """A stand-in pipeline that keeps whatever the recorder emits."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def emit(self, item: Any) -> None:
        self.items.append(item)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        return {"enqueued": len(self.items)}


def record_pool(
    chain: Any, plain: int, per_session: int
) -> tuple[list[Any], list[list[Any]]]:
    """Record real raw turns: *plain* outside sessions, *per_session* in each of 100 sessions."""
    import context_trace as ct
    from context_trace import _runtime

    keep = _Keep()
    state = _runtime._STATE
    with state.lock:
        previous, state.pipeline = state.pipeline, keep  # type: ignore[assignment]
    try:
        with ct.track_user("pool-user", metadata={"plan": "pro"}):
            for i in range(plain):
                chain.invoke(
                    {"q": f"Question number {i}: what is the capital of France?"}
                )
        plain_turns = list(keep.items)
        by_session: list[list[Any]] = []
        for s in range(SESSIONS):
            keep.items.clear()
            with ct.track_user(f"user-{s}", session_id=f"session-{s}"):
                for i in range(per_session):
                    chain.invoke(
                        {"q": f"Session {s} question {i}: and the capital of Spain?"}
                    )
            by_session.append(list(keep.items))
    finally:
        with state.lock:
            state.pipeline = previous
    return plain_turns, by_session


def _clone(turn: Any) -> Any:
    twin = copy.copy(turn)
    twin.run_id = new_run_id()
    twin.run_ids = [twin.run_id]
    return twin


def make_turns(
    n: int, sessions: bool, pool: tuple[list[Any], list[list[Any]]]
) -> list[Any]:
    """*n* raw turns cloned from the pool with fresh run ids, laid out like make_conversations."""
    plain, by_session = pool
    out = []
    session_counts = [0] * SESSIONS
    for i in range(n):
        if _is_session_slot(i, sessions):
            s = (i // 2) % SESSIONS
            turns = by_session[s]
            out.append(_clone(turns[session_counts[s] % len(turns)]))
            session_counts[s] += 1
        else:
            out.append(_clone(plain[i % len(plain)]))
    return out


def reset_session_state(pool: tuple[list[Any], list[list[Any]]]) -> None:
    """Forget the in-process de-dup state, so every replay converts like the first."""
    from context_trace import _convert

    if pool[1]:
        _convert.reset_header_sessions()


# --------------------------------------------------------------------------- pipeline runs
class NullExporter:
    """The baseline: accepts every batch and does nothing."""

    def export(self, batch: Sequence[Any]) -> Any:
        from context_trace._exporters.base import ExportResult

        return ExportResult.success(len(batch))

    def shutdown(self, timeout: float | None = None) -> None:
        pass


class WorkerTimer:
    """Times (and optionally profiles) prepare and export calls on the worker thread."""

    def __init__(self, exporter: Any, profile: cProfile.Profile | None = None) -> None:
        from context_trace._convert import prepare

        self.exporter = exporter
        self._prepare = prepare
        self.profile = profile
        # wall seconds and thread CPU seconds spent in each step
        self.prepare_s = self.export_s = 0.0
        self.prepare_cpu = self.export_cpu = 0.0

    def _timed(self, fn: Callable[[], Any]) -> tuple[Any, float, float]:
        t0, c0 = time.perf_counter(), time.thread_time()
        if self.profile is not None:
            self.profile.enable()
        try:
            out = fn()
        finally:
            if self.profile is not None:
                self.profile.disable()
        return out, time.perf_counter() - t0, time.thread_time() - c0

    def prepare(self, items: Sequence[Any]) -> list[Any]:
        out, wall, cpu = self._timed(lambda: self._prepare(items))
        self.prepare_s += wall
        self.prepare_cpu += cpu
        return out  # type: ignore[no-any-return]

    def export(self, batch: Sequence[Any]) -> Any:
        out, wall, cpu = self._timed(lambda: self.exporter.export(batch))
        self.export_s += wall
        self.export_cpu += cpu
        return out

    def shutdown(self, timeout: float | None = None) -> None:
        self.exporter.shutdown(timeout)

    def __getattr__(self, name: str) -> Any:  # idle(), after_fork() of the outbox
        return getattr(self.exporter, name)


def run_pipeline(
    items: Sequence[Any],
    exporter: Any,
    timer: WorkerTimer | None = None,
    busy: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """
    Emit *items* into a fresh BatchPipeline and flush; return timings and counters.

    With *busy*, this thread keeps calling it until the flush returns (the flush
    waits on a helper thread): the worker then competes for the GIL with a
    CPU-bound app thread, as in a busy server.
    """
    import threading

    from context_trace._pipeline import BatchPipeline

    n = len(items)
    if timer is not None:
        pipeline = BatchPipeline(timer, max_queue=n + 1, prepare=timer.prepare)
    else:
        pipeline = BatchPipeline(exporter, max_queue=n + 1)
    pipeline.start()  # thread start is not part of the measurement
    emit = pipeline.emit
    flushed: list[bool] = []
    t0 = time.perf_counter()
    for item in items:
        emit(item)
    if busy is None:
        flushed.append(pipeline.flush(timeout=600))
    else:
        waiter = threading.Thread(target=lambda: flushed.append(pipeline.flush(600)))
        waiter.start()
        while waiter.is_alive():
            busy()
        waiter.join()
    t1 = time.perf_counter()
    stats = pipeline.stats()
    pipeline.shutdown(30)
    if not flushed[0] or stats["exported"] != n or stats["dropped"] or stats["failed"]:
        raise RuntimeError(f"pipeline run incomplete: flushed={flushed} stats={stats}")
    return {"seconds": t1 - t0, "stats": stats}


def sqlite_rows(path: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM conversations").fetchone()[0])


def part_sqlite(args: argparse.Namespace, pool: Any, tmp: str) -> dict[str, Any]:
    from context_trace._exporters.sqlite import SQLiteExporter

    n = args.records
    units = [
        (kind, mix, sink)
        for kind in ("a", "b")
        for mix in ("plain", "sessions")
        for sink in ("null", "sqlite")
    ]
    rates: dict[tuple[str, str, str], list[float]] = {u: [] for u in units}
    worker: dict[tuple[str, str, str], list[tuple[float, float]]] = {
        u: [] for u in units
    }
    counter = 0
    for r in range(args.rounds):
        random.shuffle(units)
        for kind, mix, sink in units:
            sessions = mix == "sessions"
            if kind == "a":
                items = make_conversations(n, sessions)
            else:
                items = make_turns(n, sessions, pool)
                reset_session_state(pool)
            counter += 1
            path = os.path.join(tmp, f"tp-{counter}.db")
            exporter = SQLiteExporter(path) if sink == "sqlite" else NullExporter()
            timer = WorkerTimer(exporter)
            result = run_pipeline(items, exporter, timer)
            if sink == "sqlite":
                stored = sqlite_rows(path)
                if stored != n:
                    raise RuntimeError(f"expected {n} rows in SQLite, found {stored}")
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(path + suffix):
                        os.remove(path + suffix)
            rates[(kind, mix, sink)].append(n / result["seconds"])
            worker[(kind, mix, sink)].append(
                (timer.prepare_cpu / n * 1e6, timer.export_cpu / n * 1e6)
            )
            del items
        print(f"  round {r + 1}/{args.rounds} done", flush=True)

    print(f"\n1. Pipeline throughput, {n:,} records, median of {args.rounds} rounds")
    print(
        f"{'items':<14}{'mix':<10}{'exporter':<9}{'rec/s':>10}{'µs/rec':>9}"
        f"{'x null':>8}{'prep':>7}{'export':>8}{'cpu rec/s':>11}  target"
    )
    report: dict[str, Any] = {}
    for kind in ("a", "b"):
        for mix in ("plain", "sessions"):
            base = rates[(kind, mix, "null")]
            for sink in ("null", "sqlite"):
                vals = rates[(kind, mix, sink)]
                rate = statistics.median(vals)
                # time ratio (how much slower than the null exporter), per round
                ratio = statistics.median(
                    b / v for v, b in zip(vals, base, strict=True)
                )
                prep = statistics.median(p for p, _ in worker[(kind, mix, sink)])
                exp = statistics.median(e for _, e in worker[(kind, mix, sink)])
                verdict = ""
                if sink == "sqlite":
                    verdict = "PASS" if rate >= SQLITE_TARGET else "MISS"
                label = "(a) records" if kind == "a" else "(b) raw turns"
                capacity = 1e6 / (prep + exp) if prep + exp > 0 else float("inf")
                print(
                    f"{label:<14}{mix:<10}{sink:<9}{rate:>10,.0f}{1e6 / rate:>9.1f}"
                    f"{ratio:>8.2f}{prep:>7.1f}{exp:>8.1f}{capacity:>11,.0f}  {verdict}"
                )
                report[f"{kind}/{mix}/{sink}"] = {
                    "records_per_s": rate,
                    "x_null": ratio,
                    "prepare_cpu_us": prep,
                    "export_cpu_us": exp,
                    "cpu_capacity_per_s": capacity,
                    "all_rates": vals,
                }
    print(
        "   rec/s: wall clock, first emit to flush return. prep/export: worker"
        " thread CPU µs per record\n   in _convert.prepare and exporter.export;"
        " cpu rec/s: 1e6 / (prep + export), the rate\n   one uncontended core"
        " would reach (the gap to rec/s is queueing, GIL and other load)."
    )
    return report


def profile_sqlite(args: argparse.Namespace, pool: Any, tmp: str) -> str:
    """cProfile of the worker's prepare and export calls for one (b) sessions run."""
    from context_trace._exporters.sqlite import SQLiteExporter

    items = make_turns(args.records, True, pool)
    reset_session_state(pool)
    prof = cProfile.Profile()
    timer = WorkerTimer(SQLiteExporter(os.path.join(tmp, "profile.db")), prof)
    run_pipeline(items, None, timer)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(20)
    return out.getvalue()


def part_http(
    args: argparse.Namespace, server: SinkServer, chain: Any, tmp: str
) -> dict[str, Any]:
    from context_trace._exporters.context_api import ContextAPIExporter
    from context_trace._exporters.outbox import OutboxExporter
    from context_trace._exporters.sqlite import SQLiteExporter

    n = args.http_records

    def app_call() -> Any:
        return chain.invoke(QUESTION)

    mixes = ("plain", "sessions", "busy-app")
    units = [(mix, sink) for mix in mixes for sink in ("direct", "outbox")]
    rates: dict[tuple[str, str], list[float]] = {u: [] for u in units}
    cpu: dict[tuple[str, str], list[float]] = {u: [] for u in units}
    counter = 0
    for _ in range(args.rounds):
        random.shuffle(units)
        for mix, sink in units:
            size = n if mix != "busy-app" else max(1, n // 3)
            items = make_conversations(size, mix == "sessions")
            counter += 1
            path = os.path.join(tmp, f"http-{counter}.db")
            store = SQLiteExporter(path, keep_local=False)
            remote = ContextAPIExporter(
                TOKEN, endpoint=server.url, transcript_source=store.session_messages
            )
            exporter: Any = (
                OutboxExporter(store, remote) if sink == "outbox" else remote
            )
            server.reset()
            timer = WorkerTimer(exporter)
            busy = app_call if mix == "busy-app" else None
            result = run_pipeline(items, exporter, timer, busy)
            if sink == "direct":
                store.shutdown()
            got = server.requests
            if got != size:
                raise RuntimeError(f"server saw {got} requests for {size} records")
            rates[(mix, sink)].append(size / result["seconds"])
            cpu[(mix, sink)].append(timer.export_cpu / size * 1e6)

    print(
        f"\n2. Pipeline throughput into a loopback Context API, {n:,} records, median of {args.rounds} rounds"
    )
    print(
        f"{'mix':<10}{'exporter':<10}{'rec/s':>10}{'µs/rec':>9}{'x direct':>10}"
        f"{'worker cpu µs/rec':>19}"
    )
    report: dict[str, Any] = {}
    for mix in mixes:
        base = rates[(mix, "direct")]
        for sink in ("direct", "outbox"):
            vals = rates[(mix, sink)]
            rate = statistics.median(vals)
            ratio = statistics.median(b / v for v, b in zip(vals, base, strict=True))
            used = statistics.median(cpu[(mix, sink)])
            print(
                f"{mix:<10}{sink:<10}{rate:>10,.0f}{1e6 / rate:>9.1f}{ratio:>10.2f}"
                f"{used:>19.0f}"
            )
            report[f"{mix}/{sink}"] = {
                "records_per_s": rate,
                "x_direct": ratio,
                "worker_cpu_us": used,
            }
    print(
        "   busy-app: plain records (a third as many) while this thread keeps"
        " calling chain.invoke\n   (no scope), so the worker competes for the GIL"
        " with a CPU-bound app thread."
    )
    return report


# --------------------------------------------------------------------------- latency
def time_sync(call: Callable[[], Any], n: int) -> float:
    pc = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = pc()
        call()
        samples.append(pc() - t0)
    return statistics.median(samples) / 1000.0


class _Drop:
    """A stand-in pipeline that discards what the recorder emits."""

    def emit(self, item: Any) -> None:
        pass


def worker_cpu_seconds() -> float:
    """CPU seconds used so far by every live ``context-trace-exporter`` thread (Linux)."""
    import threading

    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for thread in threading.enumerate():
        if thread.name != "context-trace-exporter" or thread.native_id is None:
            continue
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def part_latency(
    args: argparse.Namespace, chain: Any, fast: SinkServer, slow: SinkServer, tmp: str
) -> dict[str, Any]:
    from langchain_core.callbacks import BaseCallbackHandler

    import context_trace as ct
    from context_trace import _runtime

    class Noop(BaseCallbackHandler):
        run_inline = True

    noop_config: Any = {"callbacks": [Noop()]}
    state = _runtime._STATE
    drop = _Drop()

    def bare() -> Any:
        return chain.invoke(QUESTION)

    def noop() -> Any:
        return chain.invoke(QUESTION, config=noop_config)

    def recorded_only() -> Any:
        # The recorder runs in full; its turns go nowhere (no export at all).
        saved, state.pipeline = state.pipeline, drop  # type: ignore[assignment]
        try:
            with ct.track_user("bench-user"):
                return chain.invoke(QUESTION)
        finally:
            state.pipeline = saved

    def scoped() -> Any:
        with ct.track_user("bench-user"):
            return chain.invoke(QUESTION)

    phases: list[tuple[str, str | None]] = [
        ("local", None),
        ("up", fast.url),
        ("down", f"http://127.0.0.1:{closed_port()}"),
        ("slow", slow.url),  # last: its worker stays stuck in requests after shutdown
    ]
    rows = {
        "none": bare,
        "noop-cb": noop,
        "record-only": recorded_only,
        "track_user": scoped,
    }
    report: dict[str, Any] = {}
    print(
        f"\n3. chain.invoke latency by backend state, {args.ops} calls per row per round,"
        f" median of {args.lat_rounds} rounds;\n   down and slow first run"
        f" {args.settle:g} s of traffic so the worker is in its outage steady state"
    )
    print(
        f"{'backend':<9}{'row':<13}{'median µs':>10}{'x none':>8}{'x rec-only':>11}"
        f"  target"
    )
    time_sync(bare, args.warmup)
    for name, endpoint in phases:
        db = os.path.join(tmp, f"latency-{name}.db")
        if endpoint is None:
            ct.configure(token=None, db_path=db)
        else:
            ct.configure(token=TOKEN, endpoint=endpoint, db_path=db)
        units = list(rows)
        for unit in units:
            time_sync(rows[unit], args.warmup)
        if name in ("down", "slow") and args.settle > 0:
            until = time.perf_counter() + args.settle
            while time.perf_counter() < until:
                time_sync(scoped, 50)
        cpu0, t0 = worker_cpu_seconds(), time.perf_counter()
        results: dict[str, list[float]] = {u: [] for u in units}
        for _ in range(args.lat_rounds):
            random.shuffle(units)
            for unit in units:
                results[unit].append(time_sync(rows[unit], args.ops))
        seconds = time.perf_counter() - t0
        worker_cpu = worker_cpu_seconds() - cpu0
        stats = ct.stats()
        base = results["none"]
        rec = results["record-only"]
        row_report: dict[str, Any] = {
            "seconds": seconds,
            "worker_cpu_s": worker_cpu,
            "stats": stats,
        }
        for unit in rows:
            vals = results[unit]
            med = statistics.median(vals)
            ratio = statistics.median(v / b for v, b in zip(vals, base, strict=True))
            vs_rec = statistics.median(v / r for v, r in zip(vals, rec, strict=True))
            verdict = ""
            if unit == "track_user" and name in ("down", "slow"):
                verdict = "PASS" if ratio <= LATENCY_TARGET else "MISS"
            label = name if unit == "none" else ""
            print(
                f"{label:<9}{unit:<13}{med:>10.1f}{ratio:>8.3f}{vs_rec:>11.3f}  {verdict}"
            )
            row_report[unit] = {
                "median_us": med,
                "x_none": ratio,
                "x_record_only": vs_rec,
            }
        keys = ("enqueued", "exported", "pending", "queued", "dropped", "failed")
        print(
            f"{'':<9}worker: {worker_cpu * 1000:.0f} ms CPU in {seconds:.1f} s"
            f" ({worker_cpu / seconds:.0%} of a core); "
            + " ".join(f"{k}={stats[k]}" for k in keys)
        )
        report[name] = row_report
        if name == "slow":
            # Do not wait for 2-s requests: the worker keeps its turns in memory.
            ct.shutdown(0.5)
        elif name == "down":
            ct.shutdown(1.0)
        else:
            ct.shutdown(30)
    print(
        "   none: no scope; noop-cb: a do-nothing inline callback handler (LangChain's"
        " callback floor);\n   record-only: track_user with the turns discarded;"
        " track_user: the configured export path\n   (outbox + Context exporter;"
        " SQLite alone for local)."
    )
    ct.configure(enabled=False)
    return report


class _OneLine(logging.Formatter):
    """Library log records on one line: the exception's last line, no traceback."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"  [log {record.levelname.lower()}] {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f" ({type(exc).__name__}: {exc})"
        return text


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--records", type=int, default=50_000, help="records per SQLite run"
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds of parts 1 and 2")
    ap.add_argument(
        "--ops", type=int, default=200, help="calls per latency row per round"
    )
    ap.add_argument("--lat-rounds", type=int, default=10, help="rounds of part 3")
    ap.add_argument(
        "--warmup", type=int, default=100, help="warm-up calls per latency row"
    )
    ap.add_argument(
        "--http-records", type=int, default=600, help="records per HTTP run"
    )
    ap.add_argument(
        "--settle", type=float, default=6.0, help="seconds of traffic before down/slow"
    )
    ap.add_argument(
        "--pool", type=int, default=4_000, help="real turns recorded for (b)"
    )
    ap.add_argument(
        "--skip", default="", help="comma list of parts to skip: sqlite,http,latency"
    )
    ap.add_argument(
        "--tmpdir",
        help="where the SQLite files go (e.g. /dev/shm to take the disk out)",
    )
    ap.add_argument(
        "--profile", action="store_true", help="cProfile one (b) SQLite run"
    )
    ap.add_argument("--json", dest="json_out")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, seconds in all: checks the script runs (CI), measures nothing",
    )
    args = ap.parse_args()
    if args.smoke:
        args.records, args.rounds, args.ops, args.lat_rounds = 500, 1, 20, 1
        args.warmup, args.http_records, args.settle, args.pool = 5, 30, 0.5, 200
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    for var in [v for v in os.environ if v.startswith("CONTEXT_")]:
        del os.environ[var]
    os.environ.pop("GETCONTEXT_TOKEN", None)
    tmp = tempfile.mkdtemp(prefix="ct-export-", dir=args.tmpdir)
    os.environ["CONTEXT_TRACE_DB"] = os.path.join(tmp, "default.db")

    import context_trace as ct

    # Library warnings go to stdout in order with the tables, one line each.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_OneLine())
    logging.getLogger("context_trace").addHandler(handler)
    logging.getLogger("context_trace").propagate = False

    started = time.perf_counter()
    chain = build_chain()
    report: dict[str, Any] = {"records": args.records, "rounds": args.rounds}
    fast = SinkServer()
    slow = SinkServer(SLOW_DELAY)
    try:
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {loadavg()};"
            f" records={args.records:,}"
            f" rounds={args.rounds} http-records={args.http_records:,} ops={args.ops}"
            f" lat-rounds={args.lat_rounds} pool={args.pool:,}"
        )
        if "sqlite" not in skip or args.profile:
            t0 = time.perf_counter()
            per_session = max(1, args.pool // (2 * SESSIONS))
            pool = record_pool(chain, max(1, args.pool // 2), per_session)
            recorded = len(pool[0]) + sum(len(t) for t in pool[1])
            print(
                f"recorded a pool of {recorded:,} real turns in {time.perf_counter() - t0:.1f} s"
                f" ({len(pool[0]):,} plain, {per_session} in each of {SESSIONS} sessions)"
            )
            if "sqlite" not in skip:
                report["sqlite"] = part_sqlite(args, pool, tmp)
        if "http" not in skip:
            report["http"] = part_http(args, fast, chain, tmp)
        if "latency" not in skip:
            report["latency"] = part_latency(args, chain, fast, slow, tmp)
        if args.profile:
            print("\nworker profile, one (b) sessions run into SQLite:")
            print(profile_sqlite(args, pool, tmp))
    finally:
        ct.shutdown(1.0)
        fast.close()
        slow.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nsummary (total {time.perf_counter() - started:.0f} s)")
    if "sqlite" in report:
        for key, label in (
            ("a/plain/sqlite", "(a) records, plain"),
            ("a/sessions/sqlite", "(a) records, sessions"),
            ("b/plain/sqlite", "(b) raw turns, plain"),
            ("b/sessions/sqlite", "(b) raw turns, sessions"),
        ):
            rate = report["sqlite"][key]["records_per_s"]
            verdict = "PASS" if rate >= SQLITE_TARGET else "MISS"
            print(
                f"  SQLite {label:<26}{rate:>10,.0f} rec/s   target >= {SQLITE_TARGET:,.0f}: {verdict}"
            )
    if "http" in report:
        for key, row in report["http"].items():
            print(
                f"  Context API {key:<21}{row['records_per_s']:>10,.0f} rec/s   (no target)"
            )
    if "latency" in report:
        for name in ("local", "up", "down", "slow"):
            row = report["latency"][name]
            tu = row["track_user"]
            verdict = ""
            if name in ("down", "slow"):
                verdict = "PASS" if tu["x_none"] <= LATENCY_TARGET else "MISS"
                verdict = f"target <= {LATENCY_TARGET:.2f}x: {verdict}"
            print(
                f"  invoke, backend {name:<6}{tu['median_us']:>8.1f} µs vs"
                f" {row['none']['median_us']:>6.1f} µs no export = {tu['x_none']:.3f}x"
                f" ({tu['x_record_only']:.3f}x record-only)   {verdict}"
            )
    print(f"  load average at the end: {loadavg()} ({os.cpu_count()} CPUs)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2, default=str)


if __name__ == "__main__":
    main()
