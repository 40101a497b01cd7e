"""
The load client of ``benchmarks/server.py``: closed-loop virtual users on loopback.

    python benchmarks/_load_client.py SPEC_JSON

``benchmarks/server.py`` runs this once per block, in its own process so that it
never shares the server's GIL; run by hand only to debug it. *SPEC_JSON* holds
``port``, ``path``, ``users`` (concurrency), ``warmup`` and ``duration``
(seconds), ``server_pid`` (whose CPU time and RSS we read from ``/proc``) and
``tag`` (makes the user and session ids unique to the block).

Each virtual user keeps one HTTP/1.1 keep-alive connection (raw asyncio streams:
a few µs of client CPU per request, where an HTTP library would cost the shared
2 cores far more) and sends its next request as soon as the last one's final
byte arrived. Every request carries ``X-User-Id: u<i>`` and ``X-Session-Id``
(one session per virtual user per block), in every mode, so the traffic is the
same whether the server records it or not.

The clock: the warm-up is not measured. It lasts ``warmup`` seconds, and longer
if need be, until every virtual user has had one answer (at saturation a
request takes longer than the warm-up: the window must not start while the
first burst is still queued). Then the measured window of ``duration`` seconds. Latency (request sent to last body byte) and,
for chunked bodies, time to the first body byte are kept for the requests that
*started* in the window; throughput counts the requests *completed* in it; the
server's CPU (utime + stime of every thread, ``/proc/<pid>/stat``) is read at
the window's start and end, and its ``VmRSS`` at the end. After the window no
new request is sent and the ones in flight are read to the end, so ``served``
(every 200 response read in full, warm-up included) is what the server answered.
One JSON line on stdout holds the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")
_REQUEST_TIMEOUT = 120.0  # seconds; a request slower than this counts as an error
_MESSAGE = json.dumps({"message": "What is the capital of France?"}).encode()


def server_cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process, all threads (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def server_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class BadResponse(Exception):
    """A status other than 200, or a response we cannot parse."""


async def read_response(reader: asyncio.StreamReader) -> tuple[float | None, bool]:
    """
    Read one response to its last byte.

    Returns:
        The time (perf_counter) of the first body byte of a chunked body (None for
        a body with a Content-Length), and whether the server will close.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    closing = headers.get("connection", "").lower() == "close"
    first: float | None = None
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                break
            await reader.readexactly(size + 2)
            if first is None:
                first = time.perf_counter()
    elif "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    else:
        await reader.read()  # to the end of the connection
        closing = True
    if len(status) < 2 or status[1] != "200":
        raise BadResponse(lines[0])
    return first, closing


class Clock:
    """The measured window: unknown (infinitely far) until the warm-up is over."""

    def __init__(self, users: int) -> None:
        self.start = self.end = math.inf
        self._waiting = set(range(users))  # virtual users with no answer yet
        self.all_answered = asyncio.Event()

    def answered(self, index: int) -> None:
        if self._waiting:
            self._waiting.discard(index)
            if not self._waiting:
                self.all_answered.set()

    def open(self, duration: float) -> float:
        self.start = time.perf_counter()
        self.end = self.start + duration
        return self.start


async def virtual_user(
    spec: dict[str, Any], index: int, clock: Clock, out: dict[str, Any]
) -> None:
    host = "127.0.0.1"
    request = (
        f"POST {spec['path']} HTTP/1.1\r\nHost: {host}:{spec['port']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(_MESSAGE)}\r\n"
        f"X-User-Id: u{index}\r\nX-Session-Id: {spec['tag']}-s{index}\r\n\r\n"
    ).encode() + _MESSAGE
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    try:
        while time.perf_counter() < clock.end:
            sent = time.perf_counter()
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, spec["port"])
                    sent = time.perf_counter()
                writer.write(request)
                first, closing = await asyncio.wait_for(
                    read_response(reader), _REQUEST_TIMEOUT
                )
            except (
                OSError,
                ValueError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                asyncio.TimeoutError,
                BadResponse,
            ) as exc:
                # Count it, start over on a new connection (the old one may be
                # mid-response), and do not spin if the server is gone.
                out["errors"] += 1
                out["error_samples"].append(f"{type(exc).__name__}: {exc}"[:200])
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.05)
                continue
            done = time.perf_counter()
            out["served"] += 1
            clock.answered(index)
            if clock.start <= done <= clock.end:
                out["completed_in_window"] += 1
            if clock.start <= sent < clock.end:
                out["latency"].append(done - sent)
                if first is not None:
                    out["ttfb"].append(first - sent)
            if closing:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    pid = int(spec["server_pid"])
    clock = Clock(spec["users"])
    out: dict[str, Any] = {
        "served": 0,
        "errors": 0,
        "error_samples": [],
        "completed_in_window": 0,
        "latency": [],
        "ttfb": [],
    }
    began = time.perf_counter()
    users = [
        asyncio.create_task(virtual_user(spec, i, clock, out))
        for i in range(spec["users"])
    ]
    await asyncio.sleep(spec["warmup"])
    # If some user never gets an answer (a broken server), measure anyway: its
    # errors are counted and reported.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(clock.all_answered.wait(), _REQUEST_TIMEOUT)
    warmup_s = time.perf_counter() - began
    cpu0 = server_cpu_seconds(pid)
    t0 = clock.open(spec["duration"])
    await asyncio.sleep(spec["duration"])
    t1, cpu1 = time.perf_counter(), server_cpu_seconds(pid)
    rss = server_rss_kib(pid)
    await asyncio.gather(*users)  # the requests in flight, to their last byte
    out["error_samples"] = out["error_samples"][:5]
    out.update(
        {
            "window_s": t1 - t0,
            "cpu_s": cpu1 - cpu0,
            "rss_kib": rss,
            "warmup_s": warmup_s,
            "drain_s": time.perf_counter() - t1,
        }
    )
    return out


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].startswith("{"):
        # Not a benchmark of its own: a loop that runs every benchmarks/*.py with
        # --smoke finds nothing to do here, as with _dropin.py.
        print("the load client of benchmarks/server.py; run that", file=sys.stderr)
        sys.exit(0 if sys.argv[1:] == ["--smoke"] else 2)
    spec: dict[str, Any] = json.loads(sys.argv[1])
    result = asyncio.run(run(spec))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
