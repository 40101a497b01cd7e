"""A crashed or exited process never parks the outbox: its leases and backoffs free at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .context_server import ROUTE_LOG, FakeContextServer

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-recovery"

# A process that records N turns for user u1 into the outbox, then flushes.
RECORD = textwrap.dedent(
    """
    import json, sys, time
    import context_trace as ct
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
    from langchain_core.prompts import ChatPromptTemplate

    db, endpoint, n, flush_timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    started = time.monotonic()
    ct.configure(token=__TOKEN__, endpoint=endpoint, db_path=db, allow_insecure=True)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | ParrotFakeChatModel()
    with ct.track_user("u1"):
        for i in range(n):
            chain.invoke({"q": f"question {i}"})
    print("recorded", flush=True)
    ok = ct.flush(flush_timeout)
    print(json.dumps({"flushed": ok, "seconds": time.monotonic() - started,
                      "stats": ct.stats()}), flush=True)
    """
).replace("__TOKEN__", repr(TOKEN))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTEXT")}
    env["PYTHONPATH"] = str(REPO)
    return env


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "context_trace", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )


def _questions(server: FakeContextServer) -> list[str]:
    found = []
    for conversation in server.conversations:
        for message in conversation.get("messages", []):
            if message.get("role") == "user":
                found.append(message["message"])
    return sorted(found)


@pytest.fixture
def server() -> Any:
    with FakeContextServer(token=TOKEN) as s:
        yield s


def test_sigkill_during_delivery_frees_the_leases(
    server: FakeContextServer, tmp_path: Path
):
    """After SIGKILL mid-delivery, the CLI shows the rows pending and a new process delivers each once."""
    db = str(tmp_path / "outbox.db")
    server.script(ROUTE_LOG, [503] * 1000)  # the backend is down: delivery retries
    crashed = subprocess.Popen(
        [sys.executable, "-c", RECORD, db, server.url, "7", "60"],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert crashed.stdout is not None
        assert "recorded" == crashed.stdout.readline().strip()
        server.wait_for(2, timeout=30)  # it is delivering (and retrying) now
    finally:
        crashed.send_signal(signal.SIGKILL)
        crashed.wait(timeout=30)
        if crashed.stdout is not None:
            crashed.stdout.close()

    outbox = _run_cli("outbox", "--json", "--db", db)
    server.reset()  # the backend is back
    survivor = subprocess.run(
        [sys.executable, "-c", RECORD, db, server.url, "0", "5"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    report = json.loads(survivor.stdout.splitlines()[-1])

    assert 0 == outbox.returncode, outbox.stderr
    assert 7 == json.loads(outbox.stdout)["pending"]
    assert 0 == json.loads(outbox.stdout)["leased"]
    assert True is report["flushed"]
    assert [f"question {i}" for i in range(7)] == _questions(server)
    assert 0 == json.loads(_run_cli("outbox", "--json", "--db", db).stdout)["pending"]


FORK = textwrap.dedent(
    """
    import json, os, sys, time
    import context_trace as ct
    from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
    from langchain_core.prompts import ChatPromptTemplate

    db, endpoint = sys.argv[1], sys.argv[2]
    ct.configure(token=__TOKEN__, endpoint=endpoint, db_path=db, allow_insecure=True)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | ParrotFakeChatModel()
    with ct.track_user("parent"):
        chain.invoke({"q": "from the parent"})
    ct.flush(5)
    print("parent delivered", flush=True)
    sys.stdin.readline()  # the test takes the backend down
    pid = os.fork()
    if pid == 0:
        with ct.track_user("child"):
            chain.invoke({"q": "from the child"})
        # The backend is down: the child leaves once its turn is on disk, while
        # it is still trying to deliver it.
        for _ in range(50):
            ct.flush(0.2)
            if ct.stats()["pending"] >= 1:
                break
        os._exit(0)
    os.waitpid(pid, 0)
    print("child exited", flush=True)
    sys.stdin.readline()  # the test brings the backend back
    # The parent may itself have met the down backend while waiting (its worker
    # retries the freed row and backs off, at most 5 s): flush until the outbox
    # is empty, within a bound the child's 120 s lease would not meet.
    for _ in range(40):
        flushed = ct.flush(5)
        if ct.stats()["pending"] == 0:
            break
        time.sleep(0.25)
    print(json.dumps({"flushed": flushed, "pending": ct.stats()["pending"]}), flush=True)
    """
).replace("__TOKEN__", repr(TOKEN))


def test_a_fork_child_that_exits_mid_delivery_leaves_nothing_behind(
    server: FakeContextServer, tmp_path: Path
):
    """A turn a fork child leased and left is delivered by the parent, exactly once."""
    db = str(tmp_path / "fork.db")
    proc = subprocess.Popen(
        [sys.executable, "-c", FORK, db, server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert "parent delivered" == proc.stdout.readline().strip()
        server.script(ROUTE_LOG, [503] * 1000)  # the child meets a down backend
        proc.stdin.write("fork\n")
        proc.stdin.flush()
        assert "child exited" == proc.stdout.readline().strip()
        server.reset()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        report = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    assert (True, 0) == (report["flushed"], report["pending"])
    assert ["from the child"] == _questions(server)
