"""
Realistic load: a chat server under many concurrent users, with and without recording.

    python benchmarks/server.py [--frameworks flask,fastapi] [--responses invoke,stream]
        [--concurrency 8,64,256] [--rounds 3] [--duration 10] [--warmup 2]
        [--ttft 0.2] [--per-token 0.002] [--tokens 20] [--agent] [--threads 64]
        [--floor] [--peers langfuse,langsmith] [--harness DIR] [--tmpdir DIR] [--json FILE]
        [--smoke]

The default run takes about 16 minutes (3 rounds x 2 frameworks x 2 response
kinds x 3 concurrency levels x 2 modes, 12 s a block).

**Servers.** ``flask``: a Flask app under waitress (a production WSGI server,
``--threads`` worker threads); ``fastapi``: a FastAPI app under uvicorn (one
process, its default event loop and HTTP parser: asyncio and h11 unless uvloop
and httptools are installed). Each route runs ``ChatPromptTemplate |
SleepyChatModel | StrOutputParser`` (``--agent`` adds LangGraph's
``create_react_agent`` with one tool, or LangChain 1.x's ``create_agent``: two
model calls and a tool call a request). The model waits like a remote one, by
sleeping (``time.sleep`` in sync code, ``asyncio.sleep`` in async code): first
token after ``--ttft`` seconds, then one every ``--per-token`` seconds,
``--tokens`` in all (defaults: 200 ms to the first token, 238 ms in all).
``invoke`` returns the whole answer as JSON; ``stream`` sends each token as it
comes (Flask ``Response(generator)``, FastAPI ``StreamingResponse``; chunked).

**Modes**, each its own server process on a free 127.0.0.1 port:

- ``bare``: nothing recorded (context_trace is not even imported).
- ``tracked``: the product as the README shows it: ``ContextTrace(app)`` (Flask)
  or ``ContextTraceMiddleware`` (FastAPI), so every request is a
  ``track_user``/``context_session`` scope from its ``X-User-Id``/``X-Session-Id``
  headers, exporting to a SQLite store in a temp dir (the default sink).
- with ``--floor``: ``noop``, the same app with a do-nothing inline handler passed
  per request (``config={"callbacks": [...]}``): LangChain's own dispatch to a
  handler, the floor under any callback-based recorder (the shared harness's
  ``noop``).
- with ``--peers``: ``langfuse`` and ``langsmith``, the same app with that
  vendor's LangChain handler passed per request (``config={"callbacks": [...]}``),
  sending to the loopback stub of the shared harness (``shared/bench``, when it
  exists). A peer whose package does not import is skipped, and said so.

**Load.** A client in its own process (so it never shares the server's GIL)
runs ``--concurrency`` virtual users, closed loop: each sends its next request
when its last one's final byte arrived, over its own keep-alive connection,
with its own user id and session. A block is ``--warmup`` seconds of traffic,
then ``--duration`` measured seconds. Every round runs every cell (framework x
response x users) once per mode, bare and tracked interleaved with their order
alternating from cell to cell and round to round, so machine noise hits both
alike; ``--rounds`` rounds.

**Figures**, per framework x response x users x mode, pooled over rounds:

- ``p50``/``p95``/``p99``: latency from sending the request to the response's
  last byte, ms (requests started in the measured window).
- ``TTFB``: for streamed responses, the median time to the first body byte
  (the first token), ms.
- ``req/s``: requests completed in the measured window per second; at the
  highest concurrency this is the server's saturation throughput.
- ``CPU ms/req``: the server process's CPU time (utime + stime of all its
  threads, from ``/proc/<pid>/stat``) over the window, per request completed in
  it. What recording costs the host, background export included.
- ``RSS``: the server's ``VmRSS`` (``/proc/<pid>/status``) at the end of its
  last block, MiB.
- On the other modes' rows, ``(1.02x)`` is the ratio to ``bare`` of the same
  cell: pooled tracked figure / pooled bare figure.

Finally every tracked server is shut down cleanly (its queue flushed) and its
store is read: it must hold exactly one conversation per request the server
answered (warm-up included), each with its user. The run exits non-zero when
that fails, when a server fails to start or dies, when a request fails, or when
a streamed response arrives in one piece. With ``--peers``, it also prints how
many root runs (LangSmith) or traces (Langfuse) the stub received per request
served. Servers are always shut down, on errors and Ctrl-C too.

``--smoke`` (CI) runs both frameworks and both response kinds at 4 users, a
36 ms model and 1-second blocks, with no peers, in about 30 s: it measures
nothing, but every check above runs.

Run by hand; not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER_APP = os.path.join(HERE, "_server_app.py")
LOAD_CLIENT = os.path.join(HERE, "_load_client.py")
DEFAULT_HARNESS = "/work/shared/bench"  # the shared peer harness (its stub server)
PEER_PACKAGES = {"langfuse": "langfuse", "langsmith": "langsmith"}
START_TIMEOUT = 120.0  # seconds for a server to import everything and listen
STOP_TIMEOUT = 120.0  # seconds for a server to stop and flush its store


class BenchError(Exception):
    """Something is broken: the run's figures cannot be trusted."""


# --------------------------------------------------------------------------- processes
class Child:
    """A child process that speaks JSON lines on stdout; stopped by closing stdin."""

    def __init__(self, name: str, argv: list[str], log_path: str) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            # Its own session: Ctrl-C reaches only us, and we stop it cleanly.
            start_new_session=True,
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, name=f"{name}-out", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    self._lines.put(json.loads(line))
        self._lines.put(None)  # end of output

    def message(self, timeout: float) -> dict[str, Any]:
        """The next JSON line; BenchError if the child exits or times out first."""
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name}: no answer in {timeout:g} s") from None
        if item is None:
            self.proc.wait(10)
            raise BenchError(
                f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}"
            )
        return item

    def log_tail(self, lines: int = 8) -> str:
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float) -> dict[str, Any] | None:
        """Close stdin, wait for its last line and its exit; kill it if it hangs."""
        final: dict[str, Any] | None = None
        try:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.close()
            if self.proc.poll() is None or not self._lines.empty():
                deadline = time.monotonic() + timeout
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        item = self._lines.get(timeout=left)
                    except queue.Empty:
                        break
                    if item is None:
                        break
                    if item.get("stopped"):
                        final = item
            self.proc.wait(max(1.0, timeout / 10))
        except (subprocess.TimeoutExpired, OSError):
            pass
        finally:
            self.kill()
            self._log.close()
        return final

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Server:
    framework: str
    mode: str
    child: Child
    info: dict[str, Any]
    db: str | None = None
    served: int = 0
    final: dict[str, Any] | None = None


def start_servers(
    framework: str, modes: Sequence[str], args: argparse.Namespace, tmp: str
) -> dict[str, Server]:
    """Start one server per mode (in parallel: importing LangChain takes seconds)."""
    pending: dict[str, tuple[Child, str | None]] = {}
    for mode in modes:
        db = os.path.join(tmp, f"{framework}-{mode}.db") if mode == "tracked" else None
        spec = {
            "framework": framework,
            "mode": mode,
            "db": db,
            "threads": args.threads,
            "connection_limit": max(args.concurrency) + 64,
            "agent": args.agent,
            "stub": args.stub_url,
            "ttft": args.ttft,
            "per_token": args.per_token,
            "tokens": args.tokens,
        }
        name = f"{framework}/{mode} server"
        log = os.path.join(tmp, f"{framework}-{mode}.log")
        child = Child(name, [sys.executable, SERVER_APP, json.dumps(spec)], log)
        pending[mode] = (child, db)
    servers: dict[str, Server] = {}
    try:
        for mode, (child, db) in pending.items():
            info = child.message(START_TIMEOUT)
            servers[mode] = Server(framework, mode, child, info, db)
    except BaseException:
        for child, _db in pending.values():
            child.kill()
        raise
    return servers


def stop_servers(servers: Iterable[Server]) -> None:
    for server in servers:
        if server.child.proc.poll() is None or server.final is None:
            server.final = server.child.stop(STOP_TIMEOUT)


# --------------------------------------------------------------------------- blocks
def run_block(
    server: Server, path: str, users: int, args: argparse.Namespace, *, tag: str
) -> dict[str, Any]:
    """One closed-loop block against *server*; the load client's result."""
    spec = {
        "port": server.info["port"],
        "path": path,
        "users": users,
        "warmup": args.warmup,
        "duration": args.duration,
        "server_pid": server.info["pid"],
        "tag": tag,
    }
    # The client's warm-up may wait up to its request timeout (120 s) for
    # every user's first answer, and its drain as long again.
    budget = args.warmup + args.duration + 300.0
    try:
        done = subprocess.run(
            [sys.executable, LOAD_CLIENT, json.dumps(spec)],
            capture_output=True,
            timeout=budget,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"load client on {path} took over {budget:g} s") from None
    if done.returncode != 0 or not done.stdout.strip():
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise BenchError(f"load client failed ({done.returncode}): {' | '.join(err)}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    server.served += int(result["served"])
    if server.child.proc.poll() is not None:
        raise BenchError(f"{server.child.name} died: {server.child.log_tail()}")
    return result


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100), linear between closest ranks; nan if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Cell:
    """Blocks of one framework x kind x response x users x mode, over the rounds."""

    blocks: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        latency = [x for b in self.blocks for x in b["latency"]]
        ttfb = [x for b in self.blocks for x in b["ttfb"]]
        completed = sum(b["completed_in_window"] for b in self.blocks)
        window = sum(b["window_s"] for b in self.blocks)
        cpu = sum(b["cpu_s"] for b in self.blocks)
        return {
            "p50_ms": percentile(latency, 50) * 1000,
            "p95_ms": percentile(latency, 95) * 1000,
            "p99_ms": percentile(latency, 99) * 1000,
            "ttfb_p50_ms": percentile(ttfb, 50) * 1000,
            "ttfb_p95_ms": percentile(ttfb, 95) * 1000,
            "req_per_s": completed / window if window else float("nan"),
            "cpu_ms_per_req": cpu * 1000 / completed if completed else float("nan"),
            "rss_mib": self.blocks[-1]["rss_kib"] / 1024 if self.blocks else 0.0,
            "requests": len(latency),
            "errors": sum(b["errors"] for b in self.blocks),
            "per_round_req_per_s": [
                b["completed_in_window"] / b["window_s"] for b in self.blocks
            ],
        }


# --------------------------------------------------------------------------- checks
def store_counts(db: str) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        total, no_user, errors = conn.execute(
            "SELECT count(*), sum(user_id IS NULL), sum(error IS NOT NULL)"
            " FROM conversations"
        ).fetchone()
    return {"stored": total, "no_user": no_user or 0, "errors": errors or 0}


def check_stores(servers: Iterable[Server]) -> tuple[list[dict[str, Any]], bool]:
    rows: list[dict[str, Any]] = []
    ok = True
    for server in servers:
        if server.mode != "tracked" or server.db is None:
            continue
        counts = store_counts(server.db) if os.path.exists(server.db) else {}
        stats = (server.final or {}).get("stats", {})
        good = (
            server.final is not None
            and counts.get("stored") == server.served
            and counts.get("no_user") == 0
            and counts.get("errors") == 0
        )
        ok = ok and good
        rows.append(
            {
                "framework": server.framework,
                "served": server.served,
                **counts,
                "stats": stats,
                "clean_stop": server.final is not None,
                "ok": good,
            }
        )
    return rows, ok


# --------------------------------------------------------------------------- peers
def start_stub(harness: str, tmp: str) -> tuple[Child, str] | None:
    """
    The shared harness's loopback stub (for the peers), if the harness exists.

    It runs as its own process (``stub_server.py --port 0``), prints its port,
    and stops when we close its stdin.
    """
    stub = os.path.join(harness, "stub_server.py")
    if not os.path.exists(stub):
        print(f"peers skipped: no harness at {harness}")
        return None
    child = Child(
        "stub",
        # The stub stops itself after 30 min by default; a full run takes longer.
        [sys.executable, stub, "--port", "0", "--max-seconds", "86400"],
        os.path.join(tmp, "stub.log"),
    )
    try:
        port = int(child.message(30)["port"])
    except BaseException:
        child.kill()
        raise
    return child, f"http://127.0.0.1:{port}"


def stub_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/__stats", timeout=10) as resp:
        return dict(json.loads(resp.read()))


# --------------------------------------------------------------------------- report
def _fmt(value: float, digits: int = 0) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:,.{digits}f}"


def _with_ratio(value: float, base: float | None, digits: int = 0) -> str:
    text = _fmt(value, digits)
    if base is None or value != value or not base or base != base:
        return text
    return f"{text} ({value / base:.2f}x)"


def table(results: dict[str, dict[str, Any]], modes: Sequence[str]) -> str:
    """The markdown table: one row per cell and mode, other modes with x bare."""
    columns = [
        ("p50_ms", 0),
        ("p95_ms", 0),
        ("p99_ms", 0),
        ("ttfb_p50_ms", 0),
        ("req_per_s", 0),
        ("cpu_ms_per_req", 2),
        ("rss_mib", 0),
    ]
    lines = [
        "| framework | response | users | mode | p50 ms | p95 ms | p99 ms |"
        " TTFB p50 ms | req/s | CPU ms/req | RSS MiB |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, by_mode in results.items():
        framework, response, users = key.split("|")
        base = by_mode.get("bare")
        for mode in modes:
            row = by_mode.get(mode)
            if row is None:
                continue
            cells = []
            for name, digits in columns:
                if name == "ttfb_p50_ms" and not response.startswith("stream"):
                    cells.append("")
                    continue
                ref = None if base is None or row is base else base[name]
                cells.append(_with_ratio(row[name], ref, digits))
            lines.append(
                f"| {framework} | {response} | {users} | {mode} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines)


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------- main
def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--frameworks", default="flask,fastapi", help="flask,fastapi")
    ap.add_argument("--responses", default="invoke,stream", help="invoke,stream")
    ap.add_argument("--concurrency", default="8,64,256", help="virtual users")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0, help="measured s/block")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured s/block")
    ap.add_argument("--ttft", type=float, default=0.2, help="s to the first token")
    ap.add_argument("--per-token", type=float, default=0.002, help="s per token")
    ap.add_argument("--tokens", type=int, default=20, help="tokens per answer")
    ap.add_argument("--agent", action="store_true", help="also the one-tool agent")
    ap.add_argument("--threads", type=int, default=64, help="waitress threads")
    ap.add_argument("--peers", default="", help="langfuse,langsmith")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also run a do-nothing handler (LangChain's own dispatch cost)",
    )
    ap.add_argument(
        "--harness", default=DEFAULT_HARNESS, help="the peer harness (its stub)"
    )
    ap.add_argument("--tmpdir", help="where the stores and server logs go")
    ap.add_argument("--json", dest="json_out", help="write the full results here")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, both frameworks, ~30 s: checks the script runs (CI)",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.concurrency, args.rounds, args.duration, args.warmup = "4", 1, 1.0, 0.5
        args.ttft, args.per_token, args.tokens, args.peers = 0.02, 0.004, 5, ""
        args.threads = 8
    args.frameworks = _csv(args.frameworks)
    args.responses = _csv(args.responses)
    args.concurrency = [int(c) for c in _csv(args.concurrency)]
    args.peers = _csv(args.peers)
    for name in args.frameworks:
        if name not in ("flask", "fastapi"):
            ap.error(f"--frameworks: unknown framework {name!r}")
    for name in args.responses:
        if name not in ("invoke", "stream"):
            ap.error(f"--responses: unknown response kind {name!r}")
    for name in args.peers:
        if name not in PEER_PACKAGES:
            ap.error(f"--peers: unknown peer {name!r} (langfuse, langsmith)")
    if not args.concurrency or min(args.concurrency) < 1:
        ap.error("--concurrency: at least one level, each >= 1")
    if args.rounds < 1 or args.threads < 1 or args.tokens < 1:
        ap.error("--rounds, --threads and --tokens must be >= 1")
    if args.duration <= 0 or args.warmup < 0 or args.ttft < 0 or args.per_token < 0:
        ap.error("--duration must be > 0; --warmup, --ttft, --per-token >= 0")
    args.stub_url = None
    return args


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a CI timeout) unwinds like Ctrl-C, so the servers are stopped."""
    raise KeyboardInterrupt


@dataclass
class Run:
    """One benchmark run: its servers, its blocks and what went wrong."""

    args: argparse.Namespace
    tmp: str
    modes: list[str] = field(default_factory=lambda: ["bare", "tracked"])
    started: float = field(default_factory=time.perf_counter)
    stub: Child | None = None
    live: list[Server] = field(default_factory=list)
    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)
    stores: list[dict[str, Any]] = field(default_factory=list)
    peer_stats: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add_peers(self) -> None:
        """Add the peers that import as modes, with the stub they send to."""
        wanted = []
        for peer in self.args.peers:
            if importlib.util.find_spec(PEER_PACKAGES[peer]) is None:
                print(f"peer {peer} skipped: {PEER_PACKAGES[peer]} is not installed")
            else:
                wanted.append(peer)
        if wanted:
            stub = start_stub(self.args.harness, self.tmp)
            if stub is not None:
                self.stub, self.args.stub_url = stub
                self.modes += wanted

    def grid(self) -> list[tuple[str, str, int]]:
        kinds = ["chain", "agent"] if self.args.agent else ["chain"]
        return [
            (kind, response, users)
            for kind in kinds
            for response in self.args.responses
            for users in self.args.concurrency
        ]

    def run_framework(self, framework: str) -> None:
        """Every round of every cell on this framework's servers, then stop them."""
        args = self.args
        servers = start_servers(framework, self.modes, args, self.tmp)
        self.live.extend(servers.values())
        info = servers[self.modes[0]].info
        details = [str(info.get("server"))]
        if "threads" in info:
            details.append(f"{info['threads']} threads")
        if "loop" in info:
            details.append(f"{info['loop']} loop, {info.get('http')}")
        print(f"{framework}: {', '.join(details)}", flush=True)
        for rnd in range(args.rounds):
            for index, (kind, response, users) in enumerate(self.grid()):
                # Alternate which mode goes first, cell to cell and round to round.
                order = self.modes[::-1] if (rnd + index) % 2 else list(self.modes)
                label = response if kind == "chain" else f"{response}/agent"
                key = f"{framework}|{label}|{users}"
                for mode in order:
                    block = run_block(
                        servers[mode],
                        f"/{response}/{kind}",
                        users,
                        args,
                        tag=f"r{rnd}c{index}{mode}",
                    )
                    self.cells.setdefault(key, {}).setdefault(mode, Cell())
                    self.cells[key][mode].blocks.append(block)
                    if block["errors"]:
                        self.problems.append(
                            f"{key} {mode}: {block['errors']} failed requests,"
                            f" e.g. {block['error_samples'][:2]}"
                        )
            print(
                f"  round {rnd + 1}/{args.rounds} done"
                f" ({time.perf_counter() - self.started:.0f} s, load {loadavg()})",
                flush=True,
            )
        stop_servers(servers.values())

    def execute(self) -> None:
        """Run everything; servers are always shut down, also on errors and Ctrl-C."""
        try:
            if self.args.floor:
                self.modes.insert(1, "noop")
            if self.args.peers:
                self.add_peers()
            args = self.args
            print(
                f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs,"
                f" load {loadavg()}; modes {','.join(self.modes)}; {args.rounds}"
                f" rounds of {args.warmup:g} s warm-up + {args.duration:g} s per"
                f" block; model: first token {args.ttft * 1000:g} ms,"
                f" {args.tokens} tokens, {args.per_token * 1000:g} ms each after it",
                flush=True,
            )
            for framework in args.frameworks:
                self.run_framework(framework)
            self.stores, stores_ok = check_stores(self.live)
            if not stores_ok:
                self.problems.append(
                    "a tracked server's store does not hold what it served"
                )
            if self.stub is not None and args.stub_url:
                try:
                    self.peer_stats = stub_stats(args.stub_url)
                except OSError as exc:
                    # The figures are still good: only the peers' delivery check is lost.
                    self.problems.append(
                        f"the peers' stub did not answer ({exc}); its log:"
                        f" {self.stub.log_tail()}"
                    )
        except BenchError as exc:
            self.problems.append(str(exc))
        except KeyboardInterrupt:
            self.problems.append("interrupted")
        finally:
            for server in self.live:
                server.child.kill()
            if self.stub is not None:
                self.stub.stop(10)

    def results(self) -> dict[str, dict[str, Any]]:
        """Each cell's summary per mode; checks that streams came in pieces."""
        results: dict[str, dict[str, Any]] = {}
        for key, by_mode in self.cells.items():
            results[key] = {mode: cell.summary() for mode, cell in by_mode.items()}
            if "|stream" not in key:
                continue
            for mode, row in results[key].items():
                if not row["ttfb_p50_ms"] < row["p50_ms"]:
                    self.problems.append(
                        f"{key} {mode}: the streamed body came in one piece"
                    )
        return results

    def report(self, results: dict[str, dict[str, Any]]) -> None:
        if results:
            print()
            print(table(results, self.modes))
            print(
                "\nlatency: request sent -> last byte; TTFB: -> first body byte"
                " (streamed); req/s: completed in the measured window;\nCPU ms/req:"
                " the server process (all threads) over the window; RSS: at the end"
                " of the last block; (x): / bare."
            )
        for row in self.stores:
            verdict = "OK" if row["ok"] else "MISMATCH"
            print(
                f"store check, {row['framework']}/tracked: served {row['served']:,},"
                f" stored {row.get('stored', 0):,} (no user: {row.get('no_user', '?')},"
                f" errors: {row.get('errors', '?')}; dropped:"
                f" {row['stats'].get('dropped', '?')}, clean stop:"
                f" {row['clean_stop']}): {verdict}"
            )
        for tenant, stats in self.peer_stats.items():
            if tenant not in self.args.peers:
                continue
            # One request, one root run (LangSmith) or one trace (Langfuse's OTLP).
            served = sum(s.served for s in self.live if s.mode == tenant)
            print(
                f"peer check, {tenant}: served {served:,}; the stub received"
                f" {stats.get('requests', 0):,} requests holding"
                f" {stats.get('ls_root_ended_count', 0):,} ended LangSmith root runs"
                f" and {stats.get('otlp_trace_count', 0):,} OTLP traces"
            )
        print(
            f"total {time.perf_counter() - self.started:.0f} s; load at the end"
            f" {loadavg()} ({os.cpu_count()} CPUs)"
        )

    def write_json(self, path: str, results: dict[str, dict[str, Any]]) -> None:
        """Everything but the raw latency samples."""
        blocks = {
            key: {
                mode: [
                    {k: v for k, v in b.items() if k not in ("latency", "ttfb")}
                    for b in cell.blocks
                ]
                for mode, cell in by_mode.items()
            }
            for key, by_mode in self.cells.items()
        }
        with open(path, "w") as f:
            json.dump(
                {
                    "args": vars(self.args),
                    "results": results,
                    "blocks": blocks,
                    "stores": self.stores,
                    "peers": self.peer_stats,
                    "problems": self.problems,
                },
                f,
                indent=2,
                default=str,
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = tempfile.mkdtemp(prefix="ct-server-bench-", dir=args.tmpdir)
    try:
        run = Run(args, tmp)
        run.execute()
        results = run.results()
        run.report(results)
        if args.json_out:
            run.write_json(args.json_out, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for problem in run.problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if run.problems else 0


if __name__ == "__main__":
    sys.exit(main())
