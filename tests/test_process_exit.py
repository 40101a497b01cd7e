"""Nothing that returned is lost when a process ends: SIGTERM and multiprocessing children."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import context_trace as ct

from .conftest import echo_chain

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork"), reason="needs POSIX signals and os.fork"
)

# Writes TURNS turns (every invoke() returns), says "done" on stdout, then waits to
# be killed. HANDLER is "none" (Python's default disposition), "before" or "after"
# (the app's own SIGTERM handler, installed before configure() or after the turns).
SIGTERM_CHILD = textwrap.dedent(
    """
    import faulthandler, signal, sys, time
    import context_trace as ct
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel

    db, turns, handler, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

    def app_handler(signum, frame):
        print("app handler", flush=True)
        sys.exit(7)

    if handler == "before":
        signal.signal(signal.SIGTERM, app_handler)
    ct.configure(db_path=db, flush_interval=60.0, **eval(extra))
    model = ParrotFakeChatModel()
    for i in range(turns):
        with ct.track_user(f"user-{i % 7}"):
            model.invoke(f"hello {i}")
    if handler == "after":
        signal.signal(signal.SIGTERM, app_handler)
    # Still alive 90 s after "done" (the test sends SIGTERM at once): print every
    # thread's stack and end, so a hang fails the test with its cause.
    faulthandler.dump_traceback_later(90, exit=True)
    print("done", flush=True)
    # Short sleeps, not one long wait: a signal that lands after Python last
    # checked for signals but before the thread enters its wait (CPython's own
    # race, most likely here, where the test sends SIGTERM the moment "done" is
    # read) is handled only when that wait ends, as in a server's polling loop.
    for _ in range(3000):
        time.sleep(0.1)
    print("not killed", flush=True)
    """
)

# An exporter that never returns: the SIGTERM flush must still end in time. One
# turn hangs in export(), five more wait in the queue behind it.
HUNG_CHILD = textwrap.dedent(
    """
    import threading, time
    import context_trace as ct
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel

    started = threading.Event()

    class Hung:
        def export(self, batch):
            started.set()
            threading.Event().wait()

        def shutdown(self, timeout=None):
            pass

    ct.configure(exporter=Hung(), flush_interval=0.01, shutdown_timeout=0.5)
    model = ParrotFakeChatModel()
    with ct.track_user("u"):
        model.invoke("hello")
        started.wait(60)
        for i in range(5):
            model.invoke(f"queued {i}")
    print("done", flush=True)
    for _ in range(3000):  # short sleeps: see SIGTERM_CHILD
        time.sleep(0.1)
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTEXT_")}
    env.update(extra)
    return env


def _count(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        (count,) = con.execute("select count(*) from conversations").fetchone()
    finally:
        con.close()
    return int(count)


def _run_and_terminate(
    script: str, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run *script*, wait for its "done" line, SIGTERM it; (returncode, out, err)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=env if env is not None else _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line == "done\n":
                break
        else:
            proc.wait(60)
            raise AssertionError(f"the child never got done: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines) + out, err


def _blocked_signals(native_id: int | None) -> set[int]:
    """The signals the thread *native_id* of this process blocks (Linux /proc)."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("SigBlk:"))
    mask = int(line.split()[1], 16)
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


class TestSignalsReachTheMainThread:
    """
    Python runs signal handlers on the main thread only. A SIGTERM the kernel
    gives to a background thread leaves a main thread asleep in a C wait
    (``Event.wait``, ``join``) asleep: the app's handler, or our flush, waits
    as long as that sleep. The package's own threads block such signals, so
    the kernel can only give them to the main thread.
    """

    def test_the_export_worker_blocks_the_process_signals(self, tmp_path: Path):
        """The export worker blocks SIGTERM, SIGINT and the other process signals;
        the main thread still takes them."""
        ct.configure(db_path=tmp_path / "t.db", flush_interval=60.0)
        with ct.track_user("u"):
            echo_chain().invoke({"q": "hi"})
        (worker,) = [
            t for t in threading.enumerate() if t.name == "context-trace-exporter"
        ]

        blocked = _blocked_signals(worker.native_id)
        main = _blocked_signals(threading.main_thread().native_id)

        assert {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1} <= blocked
        assert set() == {signal.SIGTERM, signal.SIGINT} & main
        assert ct.flush(10.0)

    def test_the_dashboards_refresh_thread_blocks_them(self, tmp_path: Path):
        """The dashboard's index refresh thread blocks SIGTERM and SIGINT (Ctrl-C
        and ``docker stop`` wake the server's main thread)."""
        from context_trace.ui.app import create_app

        ct.configure(db_path=tmp_path / "t.db", flush_interval=60.0)
        with ct.track_user("u"):
            echo_chain().invoke({"q": "hi"})
        assert ct.flush(10.0)
        before = set(threading.enumerate())
        app = create_app(tmp_path / "t.db", refresh_interval=30.0)
        try:
            (refresher,) = [
                t
                for t in set(threading.enumerate()) - before
                if t.name == "context-trace-ui-index"
            ]
            # The thread blocks them as it starts: give it until then.
            deadline = time.monotonic() + 10.0
            blocked = _blocked_signals(refresher.native_id)
            while signal.SIGTERM not in blocked and time.monotonic() < deadline:
                time.sleep(0.01)
                blocked = _blocked_signals(refresher.native_id)
        finally:
            app.extensions["context_trace_ui"].stop()

        assert {signal.SIGTERM, signal.SIGINT} <= blocked


class TestSigterm:
    def test_turns_that_returned_survive_sigterm(self, tmp_path: Path):
        """SIGTERM on a plain script stores every returned turn, then dies by the signal."""
        db = tmp_path / "term.db"

        code, out, err = _run_and_terminate(
            SIGTERM_CHILD, str(db), "1500", "none", "{}"
        )

        assert -signal.SIGTERM == code, err
        assert "not killed" not in out
        assert 1500 == _count(db)

    def test_a_hung_exporter_does_not_keep_the_process_alive(self):
        """With an export that never returns, SIGTERM still ends the process by the signal."""
        code, _, err = _run_and_terminate(HUNG_CHILD)

        assert -signal.SIGTERM == code, err
        assert "5 turns were not exported within shutdown_timeout (0.5 s)" in err

    @pytest.mark.parametrize("when", ["before", "after"])
    def test_the_apps_own_handler_stays_in_charge(self, tmp_path: Path, when: str):
        """An app's SIGTERM handler (set before or after configure) runs, not ours."""
        db = tmp_path / "app.db"

        code, out, err = _run_and_terminate(SIGTERM_CHILD, str(db), "300", when, "{}")

        assert 7 == code, err
        assert "app handler" in out
        assert 300 == _count(db)  # its sys.exit() runs the exit-time flush

    def test_configure_installs_only_over_the_default(self):
        """configure() takes SIGTERM only from SIG_DFL and gives it back on opt-out."""
        previous = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            ct.configure(flush_on_sigterm=True)
            ours = signal.getsignal(signal.SIGTERM)
            ct.configure(flush_on_sigterm=False)
            after_opt_out = signal.getsignal(signal.SIGTERM)

            def app_handler(signum: int, frame: object) -> None:
                """Stands for the app's own handler."""

            signal.signal(signal.SIGTERM, app_handler)
            ct.configure(flush_on_sigterm=True)
            kept = signal.getsignal(signal.SIGTERM)
        finally:
            signal.signal(signal.SIGTERM, previous)

        assert callable(ours)
        assert signal.SIG_DFL == after_opt_out
        assert app_handler == kept

    def test_the_first_turn_takes_it_without_configure(self):
        """With no configure() call, the first turn on the main thread takes SIGTERM."""
        previous = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            with ct.track_user("u"):
                echo_chain().invoke({"q": "hi"})
            disposition = signal.getsignal(signal.SIGTERM)
        finally:
            signal.signal(signal.SIGTERM, previous)

        assert callable(disposition)

    def test_environment_opt_out(self, monkeypatch: pytest.MonkeyPatch):
        """CONTEXT_TRACE_FLUSH_ON_SIGTERM=0 leaves SIGTERM's default disposition."""
        monkeypatch.setenv("CONTEXT_TRACE_FLUSH_ON_SIGTERM", "0")
        previous = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            with ct.track_user("u"):
                echo_chain().invoke({"q": "hi"})
            disposition = signal.getsignal(signal.SIGTERM)
        finally:
            signal.signal(signal.SIGTERM, previous)

        assert False is ct.get_config().flush_on_sigterm
        assert signal.SIG_DFL == disposition


# Each multiprocessing child writes PER_CHILD turns and returns normally; the parent
# writes some before it starts them. Settings come from the environment, as a
# forkserver child, which never runs the parent's configure(), would see them.
MP_SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing, sys
    import context_trace as ct
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel

    def work(name, turns):
        model = ParrotFakeChatModel()
        for i in range(turns):
            with ct.track_user(f"{name}-{i}"):
                model.invoke(f"hello {i}")
        return turns

    if __name__ == "__main__":
        method, kind = sys.argv[1], sys.argv[2]
        children, per_child, in_parent = 6, 150, 10
        for i in range(in_parent):
            work("parent", 1)
        ctx = multiprocessing.get_context(method)
        jobs = [(f"child{k}", per_child) for k in range(children)]
        if kind == "process":
            procs = [ctx.Process(target=work, args=job) for job in jobs]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            returned = [p.exitcode for p in procs]
        else:
            pool = ctx.Pool(3)
            returned = pool.starmap(work, jobs)
            pool.close()
            pool.join()
        print(json.dumps({"returned": returned, "expected": in_parent + children * per_child}))
    """
)


class TestMultiprocessingChildren:
    @pytest.mark.parametrize("kind", ["process", "pool"])
    @pytest.mark.parametrize("method", ["fork", "forkserver"])
    def test_children_that_return_lose_nothing(
        self, tmp_path: Path, method: str, kind: str
    ):
        """Process and Pool children (fork, forkserver) store every turn before os._exit."""
        db = tmp_path / "mp.db"
        script = tmp_path / "mp_script.py"
        script.write_text(MP_SCRIPT, encoding="utf-8")

        done = subprocess.run(
            [sys.executable, str(script), method, kind],
            env=_env(CONTEXT_TRACE_DB=str(db), CONTEXT_TRACE_FLUSH_INTERVAL="60"),
            capture_output=True,
            text=True,
            timeout=300,
        )

        assert 0 == done.returncode, done.stderr
        result = json.loads(done.stdout)
        expected = [0] * 6 if kind == "process" else [150] * 6
        assert expected == result["returned"]
        assert result["expected"] == _count(db)
