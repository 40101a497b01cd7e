"""
Per-invoke overhead of recording, as ratios against the bare chain (same run).

    python benchmarks/overhead.py [--ops 300] [--rounds 15] [--mem-turns 20000]
                                  [--mem-session-turns N] [--mem-only] [--rows A,B]

Chain: ``ChatPromptTemplate | ParrotFakeChatModel | StrOutputParser``. Rows, run
interleaved in a freshly shuffled order every round so machine noise hits all
of them alike:

- ``bare``: no callbacks at all.
- ``noop``: a do-nothing inline callback handler passed in ``config`` (what
  LangChain's callback dispatch costs: the floor for any callback recorder).
- ``noop+meta``: the same handler, with ``user_id`` in the run metadata (what
  LangChain's metadata propagation adds: the floor for a recorder that gives every
  run the user's id, as ``track_user`` does by default).
- ``decorator``: a function decorated with ``@track_user(lambda user_id, **_: ...)``
  (the resolver bound by name on every call), otherwise as ``track_user``.
- ``track_user``: inside ``with context_trace.track_user(...)``, exporting to a
  SQLite file in a temp dir (the default sink) on the background thread, with
  ``user_id`` in every run's metadata (``run_metadata=True``, the default).
- ``track_user:auto``: the same with ``run_metadata="auto"`` (the opt-out: no
  run metadata unless LangSmith or ``collect_runs()`` reads it).
- ``track_user:no-export``: the same scope, with the finished turns discarded
  instead of queued (no export thread work): what recording costs on the request
  path alone. The gap to ``track_user`` is the export thread's share of the GIL.
- ``dropin``: ``context_trace.ContextCallbackHandler`` passed explicitly.
- ``seed``: langchain_community's ``ContextCallbackHandler`` pointed at a loopback
  server (only when langchain_community is installed).

Each row is measured for ``invoke`` and ``ainvoke``. The report prints the
median µs per call, the ratio to bare (median over rounds of per-round ratios),
and how much the recorder adds compared with what the no-op handler adds.
``--rows`` times only the rows named (``bare`` and ``noop`` always run):
``--rows noop+meta,track_user:no-export --mem-turns 0`` measures the request
path against LangChain's own floor with more calls in the same time.
Finally a child process runs ``--mem-turns`` turns in one long-lived scope, and
another with a ``context_session`` every 5 turns, and each prints its RSS growth
after 500 warm-up turns (the target is <= 3 MiB for 20,000 turns) and its live
objects per checkpoint (flat means no leak).

Run by hand; not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

QUESTION = {"q": "What is the capital of France? Answer in one word."}


def build_chain() -> Any:
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are helpful."), ("human", "{q}")]
    )
    return prompt | ParrotFakeChatModel() | StrOutputParser()


class _Sink(BaseHTTPRequestHandler):
    """A loopback server answering every Context API call with 200 {}."""

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PATCH = do_PUT = _reply

    def log_message(self, *args: Any) -> None:
        pass


class _Discard:
    """A stand-in pipeline that drops every turn (the ``:no-export`` row)."""

    def emit(self, item: Any) -> None:
        pass

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        return {}


def contenders(chain: Any) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """name -> (sync call, async call factory)."""
    from langchain_core.callbacks import BaseCallbackHandler

    import context_trace as ct

    class Noop(BaseCallbackHandler):
        run_inline = True

    noop_cfg = {"callbacks": [Noop()]}
    meta_cfg = {"callbacks": [Noop()], "metadata": {"user_id": "bench-user"}}
    out: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "bare": (lambda: chain.invoke(QUESTION), lambda: chain.ainvoke(QUESTION)),
        "noop": (
            lambda: chain.invoke(QUESTION, config=noop_cfg),
            lambda: chain.ainvoke(QUESTION, config=noop_cfg),
        ),
        "noop+meta": (
            lambda: chain.invoke(QUESTION, config=meta_cfg),
            lambda: chain.ainvoke(QUESTION, config=meta_cfg),
        ),
    }

    def scoped() -> Any:
        with ct.track_user("bench-user"):
            return chain.invoke(QUESTION)

    async def ascoped() -> Any:
        async with ct.track_user("bench-user"):
            return await chain.ainvoke(QUESTION)

    out["track_user"] = (scoped, ascoped)
    out["track_user:auto"] = (scoped, ascoped)  # run under run_metadata="auto"
    out["track_user:no-export"] = (scoped, ascoped)  # turns discarded (see settle)

    # The decorator with a resolver bound by name (the binding runs per call).
    @ct.track_user(lambda user_id, **_: user_id)
    def decorated(user_id: str, question: dict[str, str]) -> Any:
        return chain.invoke(question)

    @ct.track_user(lambda user_id, **_: user_id)
    async def adecorated(user_id: str, question: dict[str, str]) -> Any:
        return await chain.ainvoke(question)

    out["decorator"] = (
        lambda: decorated("bench-user", QUESTION),
        lambda: adecorated("bench-user", QUESTION),
    )

    if hasattr(ct, "ContextCallbackHandler"):
        sys.path.insert(0, HERE)
        from _dropin import make_dropin_ainvoke, make_dropin_invoke

        dropin_sync = make_dropin_invoke(chain)
        dropin_async = make_dropin_ainvoke(chain)
        out["dropin"] = (lambda: dropin_sync(QUESTION), lambda: dropin_async(QUESTION))

    try:
        import getcontext
        from getcontext.token import Credential
        from langchain_community.callbacks.context_callback import (
            ContextCallbackHandler,
        )
    except ImportError:
        return out
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seed = ContextCallbackHandler(token="bench-token")
    seed.client = getcontext.ContextAPI(
        credential=Credential("bench-token"),
        endpoint=f"http://127.0.0.1:{server.server_port}",
    )
    upsert = seed.client.log.conversation_upsert

    def insecure_upsert(*a: Any, **kw: Any) -> Any:
        return upsert(*a, enforce_https=False, **kw)

    seed.client.log.conversation_upsert = insecure_upsert
    seed_cfg = {"callbacks": [seed]}
    out["seed"] = (
        lambda: chain.invoke(QUESTION, config=seed_cfg),
        lambda: chain.ainvoke(QUESTION, config=seed_cfg),
    )
    return out


def time_sync(call: Callable[[], Any], n: int) -> float:
    pc = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = pc()
        call()
        samples.append(pc() - t0)
    return statistics.median(samples) / 1000.0


async def time_async(factory: Callable[[], Any], n: int) -> float:
    pc = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = pc()
        await factory()
        samples.append(pc() - t0)
    return statistics.median(samples) / 1000.0


def mem_child(turns: int, session_turns: int) -> None:
    """
    Run *turns* turns in one process; print JSON with RSS and live objects.

    500 warm-up turns first (imports, the store's schema, the worker), then a
    baseline, then five checkpoints, each after a fifth of the turns, a flush and
    a gc. ``growth`` is the RSS at the last checkpoint minus the baseline (what a
    long-lived web worker pays); retained memory that grows with the number of
    turns shows as a rising trend from the second checkpoint on. With
    *session_turns*, every that many turns share one ``context_session``.
    """
    import contextlib
    import gc

    import context_trace as ct

    chain = build_chain()

    def rss() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    session: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()

    def turn(i: int) -> None:
        nonlocal session
        if session_turns and i % session_turns == 0:
            session.__exit__(None, None, None)
            session = ct.context_session()
            session.__enter__()
        chain.invoke(QUESTION)

    marks: list[dict[str, int]] = []
    flushed = True
    with ct.track_user("mem-user") as scope:
        for i in range(500):
            turn(i)
        flushed = ct.flush(60) and flushed
        gc.collect()
        base = rss()
        done = 500
        for _checkpoint in range(5):
            for i in range(turns // 5):
                turn(done)
                done += 1
                if i % 2000 == 1999:
                    flushed = ct.flush(60) and flushed  # keep the queue short
            flushed = ct.flush(60) and flushed
            gc.collect()
            marks.append({"rss_kib": rss(), "objects": len(gc.get_objects())})
        session.__exit__(None, None, None)
        active = scope.handler.active_turns if scope.handler is not None else 0
    stats = ct.stats()
    ct.shutdown(30)
    print(
        json.dumps(
            {
                "base_rss_kib": base,
                "growth_kib": marks[-1]["rss_kib"] - base,
                "marks": marks,
                "active_turns": active,
                "stats": stats,
                "flushed": flushed,
            }
        )
    )


def run_mem(turns: int, session_turns: int) -> dict[str, Any]:
    """Run :func:`mem_child` in a fresh process and print its checkpoints."""
    out = subprocess.run(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--mem-child",
            str(turns),
            "--mem-session-turns",
            str(session_turns),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    )
    mem: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    marks = mem["marks"]
    step = turns // 5
    shape = f"sessions of {session_turns} turns" if session_turns else "one scope"
    print(f"memory: {turns} turns ({shape}) after 500 warm-up turns:")
    print(f"  baseline: RSS {mem['base_rss_kib']:>7} KiB")
    for n, mark in enumerate(marks, 1):
        print(
            f"  after {n * step:>7} turns: RSS {mark['rss_kib']:>7} KiB, live objects {mark['objects']:>8}"
        )
    print(
        f"  growth over the {turns} turns: RSS {mem['growth_kib']} KiB"
        f" ({mem['growth_kib'] / 1024:.1f} MiB); from checkpoint 2 to 5:"
        f" RSS {marks[-1]['rss_kib'] - marks[1]['rss_kib']} KiB, "
        f"objects {marks[-1]['objects'] - marks[1]['objects']}; active turns left {mem['active_turns']}; "
        f"exported {mem['stats']['exported']}, dropped {mem['stats']['dropped']}"
    )
    return mem


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ops", type=int, default=300, help="calls per row per round")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument(
        "--mem-turns", type=int, default=20_000, help="0 skips the memory check"
    )
    ap.add_argument(
        "--mem-session-turns",
        type=int,
        default=None,
        help="turns per context_session in the memory check (default: both"
        " without sessions and with sessions of 5 turns; 0: without only)",
    )
    ap.add_argument("--mem-only", action="store_true", help="skip the timing rows")
    ap.add_argument(
        "--rows",
        help="comma-separated rows to time (bare and noop always run), e.g."
        " noop+meta,track_user:no-export for the request path alone",
    )
    ap.add_argument("--mem-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", dest="json_out")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, seconds in all: checks the script runs (CI), measures nothing",
    )
    args = ap.parse_args()
    if args.smoke:
        args.ops, args.rounds, args.warmup, args.mem_turns = 20, 1, 5, 500

    tmp = tempfile.mkdtemp(prefix="ct-overhead-")
    os.environ.setdefault("CONTEXT_TRACE_DB", os.path.join(tmp, "bench.db"))
    for var in ("CONTEXT_TOKEN", "GETCONTEXT_TOKEN"):
        os.environ.pop(var, None)
    if args.mem_child:
        mem_child(args.mem_child, args.mem_session_turns or 0)
        return
    shapes = [0, 5] if args.mem_session_turns is None else [args.mem_session_turns]
    if args.mem_only:
        for session_turns in shapes:
            run_mem(args.mem_turns, session_turns)
        return

    import context_trace as ct

    chain = build_chain()
    rows = contenders(chain)
    if args.rows:
        wanted = {"bare", "noop", *args.rows.split(",")}
        unknown = wanted - set(rows)
        if unknown:
            ap.error(f"--rows: unknown rows {sorted(unknown)}; known: {sorted(rows)}")
        rows = {name: calls for name, calls in rows.items() if name in wanted}
    loop = asyncio.new_event_loop()
    units = [(name, mode) for name in rows for mode in ("invoke", "ainvoke")]
    run_metadata: bool | str = "unset"  # rows ending ":auto" opt out; others True

    from context_trace import _runtime

    state = _runtime._STATE
    exporting: list[Any] = []  # the real pipeline while a no-export row runs

    def settle(name: str) -> None:
        nonlocal run_metadata
        if exporting:
            with state.lock:
                state.pipeline = exporting.pop()
        wanted: bool | str = "auto" if name.endswith(":auto") else True
        if wanted != run_metadata:
            ct.configure(run_metadata=wanted)
            run_metadata = wanted
        if name.endswith(":no-export"):
            ct.flush(60)  # the real pipeline's backlog is not this row's
            with state.lock:
                exporting.append(state.pipeline)
                state.pipeline = _Discard()  # type: ignore[assignment]

    for name, mode in units:  # warm-up
        settle(name)
        if mode == "invoke":
            time_sync(rows[name][0], args.warmup)
        else:
            loop.run_until_complete(time_async(rows[name][1], args.warmup))
    results: dict[tuple[str, str], list[float]] = {u: [] for u in units}
    for _ in range(args.rounds):
        random.shuffle(units)
        for name, mode in units:
            settle(name)
            if mode == "invoke":
                results[(name, mode)].append(time_sync(rows[name][0], args.ops))
            else:
                results[(name, mode)].append(
                    loop.run_until_complete(time_async(rows[name][1], args.ops))
                )
        settle("bare")  # the real pipeline back before flushing
        ct.flush(60)
    loop.close()

    report: dict[str, Any] = {"rows": {}, "ops": args.ops, "rounds": args.rounds}
    print(
        f"{'row':<22}{'mode':<9}{'median µs':>11}{'x bare':>9}{'added µs':>10}{'vs noop':>9}"
    )
    for mode in ("invoke", "ainvoke"):
        bare = results[("bare", mode)]
        noop_added = statistics.median(
            n - b for n, b in zip(results[("noop", mode)], bare, strict=True)
        )
        for name in rows:
            vals = results[(name, mode)]
            ratio = statistics.median(v / b for v, b in zip(vals, bare, strict=True))
            added = statistics.median(v - b for v, b in zip(vals, bare, strict=True))
            vs_noop = added / noop_added if noop_added > 0 else float("nan")
            print(
                f"{name:<22}{mode:<9}{statistics.median(vals):>11.1f}{ratio:>9.3f}{added:>10.1f}{vs_noop:>9.2f}"
            )
            report["rows"][f"{name}/{mode}"] = {
                "median_us": statistics.median(vals),
                "ratio": ratio,
                "added_us": added,
                "vs_noop": vs_noop,
            }
    print(f"stats after timing: {ct.stats()}")
    ct.shutdown(30)

    if args.mem_turns:
        report["memory"] = {
            str(session_turns): run_mem(args.mem_turns, session_turns)
            for session_turns in shapes
        }
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
