"""
OTLP export throughput: 3-span turns through the outbox to a loopback receiver.

    python benchmarks/otel.py [--turns 20000] [--rounds 3] [--tmpdir DIR] [--smoke]

The receiver runs in its own (spawned) process, so decoding the requests does
not share our GIL: it parses every ``ExportTraceServiceRequest`` with
``opentelemetry-proto`` and counts the spans, and the benchmark checks that
exactly ``3 x turns`` arrived. Each turn is a ready-made ``Conversation`` with
a session, metadata, a transcript (user, tool, answer) and two span records
(``chat`` and ``execute_tool``): a root span plus two children on the wire.

Rows (medians over rounds, one core: everything below runs on one thread):

- ``encode``: mapping plus protobuf encoding alone (``encode_request``).
- ``outbox``: what the export worker does: ``OutboxExporter.export`` (the
  SQLite outbox write) then ``deliver`` (claim, encode, POST, delete), per
  batch of 512, until the outbox is empty.
- ``pipeline``: the same behind ``BatchPipeline``: ``emit`` every turn, then
  ``flush()``; the clock runs from the first ``emit`` to ``flush``'s return.

``turns/s`` is wall-clock; ``turns/CPU-s`` divides by this process's CPU
time (the receiver's is not counted), i.e. the rate one core sustains.
Target: at least 5,000 turns/s for ``outbox`` and ``pipeline``.

Then the request path (``--ops`` calls per row per round, ``--lat-rounds``
rounds, rows in a freshly shuffled order each round): the median µs of
``chain.invoke`` (``prompt | ParrotFakeChatModel | StrOutputParser``) inside
``track_user`` with the local store only (``sqlite``), and with
``exporter="sqlite,otlp"`` to the same receiver (``sqlite,otlp``), against the
bare chain; ``configure()`` switches between them between blocks (after a
flush), so both rows see the same machine. Target: ``sqlite,otlp`` within noise
of ``sqlite``. Run by hand; ``--smoke`` (CI) runs tiny sizes and checks only
that it works.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

_BATCH = 512


def _serve(conn: Any, counter: Any) -> None:
    """The receiver process: decode each request, count its spans, answer 200."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    reply = ExportTraceServiceResponse().SerializeToString()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            spans = sum(
                len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans
            )
            with counter.get_lock():
                counter.value += spans
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    conn.send(server.server_address[1])
    server.serve_forever()


class Receiver:
    """A loopback OTLP/HTTP receiver in a spawned process, counting spans."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.counter = ctx.Value("q", 0)
        parent, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child, self.counter), daemon=True
        )
        self.process.start()
        child.close()
        if not parent.poll(30):
            self.process.terminate()
            raise RuntimeError("receiver did not start")
        self.url = f"http://127.0.0.1:{parent.recv()}/v1/traces"

    def take(self) -> int:
        with self.counter.get_lock():
            n, self.counter.value = int(self.counter.value), 0
        return n

    def close(self) -> None:
        self.process.terminate()
        self.process.join(10)


def make_turns(n: int) -> list[Any]:
    """*n* 3-span turns: root, a chat call and a tool run."""
    from context_trace._record import Conversation, Message, Span, new_id

    t0 = time.time()
    out = []
    for i in range(n):
        run = new_id()
        out.append(
            Conversation(
                id=run,
                user_id=f"user-{i % 1000}",
                session_id=f"session-{i % 100}",
                started_at=t0 + i,
                ended_at=t0 + i + 0.8,
                messages=(
                    Message("user", f"What is the weather in city {i}?"),
                    Message("tool", "sunny", name="get_weather", tool_input='{"c":1}'),
                    Message("assistant", f"It is sunny in city {i}."),
                ),
                metadata={"plan": "pro", "model": "gpt-4o-mini", "latency_ms": "800"},
                spans=(
                    Span(
                        id=run[:16],
                        parent_id=None,
                        kind="chat",
                        name="gpt-4o-mini",
                        started_at=t0 + i + 0.1,
                        ended_at=t0 + i + 0.4,
                        request_model="gpt-4o-mini",
                        response_model="gpt-4o-mini-2024-07-18",
                        provider="openai",
                        input_tokens=42,
                        output_tokens=7,
                        finish_reasons=("tool_calls",),
                    ),
                    Span(
                        id=run[16:],
                        parent_id=None,
                        kind="tool",
                        name="get_weather",
                        started_at=t0 + i + 0.45,
                        ended_at=t0 + i + 0.5,
                        tool_call_id=f"call_{i}",
                    ),
                ),
            )
        )
    return out


Timing = tuple[float, float]  # (wall seconds, CPU seconds of this process)


def _clock() -> Timing:
    return time.perf_counter(), time.process_time()


def _since(start: Timing) -> Timing:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def run_encode(turns: list[Any]) -> Timing:
    from context_trace._exporters.otlp import encode_request

    started = _clock()
    for i in range(0, len(turns), _BATCH):
        encode_request(turns[i : i + _BATCH], {"service.name": "bench"})
    return _since(started)


def _outbox(url: str, path: str) -> Any:
    from context_trace._exporters.otlp import OTLPSender
    from context_trace._exporters.outbox import OutboxExporter
    from context_trace._exporters.sqlite import SQLiteExporter

    store = SQLiteExporter(path, keep_local=False)
    store.check()
    return OutboxExporter(
        store,
        senders={"otlp": OTLPSender(url, resource={"service.name": "bench"})},
        claim_size=_BATCH,
    )


def run_outbox(turns: list[Any], url: str, path: str) -> Timing:
    outbox = _outbox(url, path)
    try:
        started = _clock()
        for i in range(0, len(turns), _BATCH):
            outbox.export(turns[i : i + _BATCH])
            outbox.deliver()
        elapsed = _since(started)
        assert outbox.pending() == 0, "rows left in the outbox"
        return elapsed
    finally:
        outbox.shutdown(5)


def run_pipeline(turns: list[Any], url: str, path: str) -> Timing:
    from context_trace._pipeline import BatchPipeline

    pipeline = BatchPipeline(
        _outbox(url, path), max_queue=len(turns) + 1, max_batch=_BATCH
    )
    try:
        started = _clock()
        for turn in turns:
            pipeline.emit(turn)
        assert pipeline.flush(120), "flush timed out"
        return _since(started)
    finally:
        pipeline.shutdown(5)


def request_path(args: argparse.Namespace, url: str, tmp: str) -> None:
    import random

    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    import context_trace as ct

    chain = (
        ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{q}")])
        | ParrotFakeChatModel()
        | StrOutputParser()
    )
    question = {"q": "What is the capital of France?"}
    db = os.path.join(tmp, "request.db")
    settings: dict[str, dict[str, Any]] = {
        "bare": {"db_path": db},
        "sqlite": {"db_path": db},
        "sqlite,otlp": {"db_path": db, "exporter": "sqlite,otlp", "otlp_endpoint": url},
    }

    def block(name: str, n: int) -> float:
        ct.configure(**settings[name])
        samples = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            if name == "bare":
                chain.invoke(question)
            else:
                with ct.track_user("bench-user"):
                    chain.invoke(question)
            samples.append(time.perf_counter_ns() - t0)
        ct.flush(60)
        return statistics.median(samples) / 1000.0

    for name in settings:  # warm-up
        block(name, args.ops // 2)
    results: dict[str, list[float]] = {name: [] for name in settings}
    order = list(settings)
    for _ in range(args.lat_rounds):
        random.shuffle(order)
        for name in order:
            results[name].append(block(name, args.ops))
    ct.shutdown(10)
    print(f"request path: {args.ops} calls x {args.lat_rounds} rounds, medians")
    print(f"{'row':<12} {'µs':>8} {'x bare':>8} {'x sqlite':>9}")
    bare, local = results["bare"], results["sqlite"]
    for name, vals in results.items():
        ratio = statistics.median(v / b for v, b in zip(vals, bare, strict=True))
        vs_local = statistics.median(v / s for v, s in zip(vals, local, strict=True))
        print(
            f"{name:<12} {statistics.median(vals):>8.1f} {ratio:>8.3f} {vs_local:>9.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--turns", type=int, default=20_000, help="turns per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tmpdir", help="where the outbox files go")
    ap.add_argument("--ops", type=int, default=300, help="calls per request-path row")
    ap.add_argument("--lat-rounds", type=int, default=15)
    ap.add_argument(
        "--skip", default="", help="comma list of parts to skip: export,request"
    )
    ap.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks the script runs"
    )
    args = ap.parse_args()
    if args.smoke:
        args.turns, args.rounds, args.ops, args.lat_rounds = 300, 1, 10, 1
    skip = {p.strip() for p in args.skip.split(",") if p.strip()}
    for var in [v for v in os.environ if v.startswith(("CONTEXT_", "OTEL_"))]:
        del os.environ[var]
    tmp = tempfile.mkdtemp(prefix="ct-otel-", dir=args.tmpdir)
    receiver = Receiver()
    try:
        if "request" not in skip:
            request_path(args, receiver.url, tmp)
        if "export" in skip:
            return
        turns = make_turns(args.turns)
        rows: dict[str, list[Timing]] = {"encode": [], "outbox": [], "pipeline": []}
        runners: dict[str, Callable[[int], Timing]] = {
            "encode": lambda r: run_encode(turns),
            "outbox": lambda r: run_outbox(
                turns, receiver.url, os.path.join(tmp, f"outbox-{r}.db")
            ),
            "pipeline": lambda r: run_pipeline(
                turns, receiver.url, os.path.join(tmp, f"pipeline-{r}.db")
            ),
        }
        for r in range(args.rounds):
            for name, run in runners.items():
                receiver.take()
                elapsed = run(r)
                if name != "encode":
                    deadline = time.monotonic() + 10
                    got = receiver.take()
                    while got < 3 * len(turns) and time.monotonic() < deadline:
                        time.sleep(0.01)
                        got += receiver.take()
                    assert 3 * len(turns) == got, f"{name}: {got} spans arrived"
                rows[name].append((len(turns) / elapsed[0], len(turns) / elapsed[1]))
        print(f"{args.turns} turns of 3 spans, {args.rounds} rounds, medians")
        print(f"{'row':<10} {'turns/s':>10} {'spans/s':>10} {'turns/CPU-s':>12}")
        for name, rates in rows.items():
            wall = statistics.median(r[0] for r in rates)
            cpu = statistics.median(r[1] for r in rates)
            print(f"{name:<10} {wall:>10,.0f} {3 * wall:>10,.0f} {cpu:>12,.0f}")
    finally:
        receiver.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
