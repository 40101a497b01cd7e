"""Four app servers, one PostgreSQL store, a restart in the middle: exact results."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from context_trace._store.postgres import PostgresReads
from tests.exporters.test_sqlite import texts

from . import _hosts
from .server import Server
from .test_faults import one, run

_STOP_AFTER = 12  # rounds recorded before PostgreSQL stops
_START_AFTER = 28  # rounds recorded before it starts again
_TIMEOUT = 600.0


def test_four_hosts_one_store(
    pg_server: Server, pg_url: str, pg_reader_url: str, tmp_path: Path
) -> None:
    """Every turn stored once, each session's transcript in order, CLI counts exact."""
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(_hosts.HOSTS + 1, timeout=_TIMEOUT)
    hosts = [
        spawn.Process(
            target=_hosts.serve,
            args=(i, pg_url, str(tmp_path / f"outbox{i}.db"), barrier),
        )
        for i in range(_hosts.HOSTS)
    ]
    for host in hosts:
        host.start()
    try:
        for turn in range(_hosts.ROUNDS):
            if turn == _STOP_AFTER:
                pg_server.stop()
            if turn == _START_AFTER:
                pg_server.start()
            barrier.wait()  # the round starts
            barrier.wait()  # every host served its turns of the round
    finally:
        if turn < _START_AFTER:
            pg_server.start()
        for host in hosts:
            host.join(_TIMEOUT)
    assert [0] * _hosts.HOSTS == [host.exitcode for host in hosts]

    total = _hosts.HOSTS * _hosts.SESSIONS * _hosts.ROUNDS // _hosts.HOSTS
    per_host = total // _hosts.HOSTS
    assert (total, total, _hosts.SESSIONS, _hosts.USERS) == one(
        pg_url,
        "SELECT (SELECT count(*) FROM turns), (SELECT count(DISTINCT id) FROM turns),"
        " (SELECT count(*) FROM sessions), (SELECT count(*) FROM users)",
    )
    assert (_hosts.HOSTS, per_host, per_host) == one(
        pg_url,
        "SELECT count(*), min(n), max(n) FROM"
        " (SELECT host, count(*) AS n FROM turns GROUP BY host) AS per",
    )
    with PostgresReads(pg_reader_url) as reads:
        for session in range(_hosts.SESSIONS):
            expected = [("system", _hosts.SYSTEM)]
            for turn in range(_hosts.ROUNDS):
                words = _hosts.question(session, turn)
                expected += [("user", words), ("assistant", words)]
            assert expected == texts(reads.session_messages(f"session{session}"))

    users = json.loads(run("users", "--json", "--store", pg_reader_url)[1])
    stats = json.loads(run("stats", "--json", "--store", pg_reader_url)[1])
    sessions_per_user = _hosts.SESSIONS // _hosts.USERS
    assert [(sessions_per_user * _hosts.ROUNDS, sessions_per_user)] * _hosts.USERS == [
        (u["conversations"], u["sessions"]) for u in users
    ]
    assert total == sum(day["conversations"] for day in stats)
