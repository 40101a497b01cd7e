"""
The ``context-trace`` command, run for real in a subprocess.

The store is filled once per module through the real pipeline: scopes around
LangChain runs (fake chat models) plus a few records with fixed timestamps
emitted into the same pipeline, so dates, latencies and transcripts can be
checked exactly. Every command runs at least once as ``python -m context_trace``
or through the installed ``context-trace`` script, with a clean environment,
``COLUMNS=80`` and ``TZ=UTC``. Each run costs a new interpreter (importing
LangChain), so variants of a command already covered that way (other
arguments, other error paths) call ``cli.main(argv)`` in this process, under the
same environment.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import StructuredTool

import context_trace
from context_trace import _runtime, cli
from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Message
from context_trace._store.models import StoredConversation
from context_trace._store.reader import SQLiteReader
from context_trace.cli import _format, commands

from .exporters.context_server import ROUTE_LOG, ROUTE_UPSERT, FakeContextServer
from .failures import (
    AFTER_ERROR,
    FAILED_SESSION,
    MODEL_ERROR,
    TOOL_ANSWER,
    TOOL_ERROR,
    TOOL_QUESTION,
    TOOL_SESSION,
    USER,
    record_failures,
)
from .read_only import assert_read_only, no_write_override, read_only
from .stores import record_store, write_records

REPO = Path(__file__).resolve().parent.parent
TOKEN = "test-token-123"
HINT = "(run 'context-trace demo' or record something first)"

# Fixed-time records (UTC): carol's session spans two days.
C1 = "c1" + "0" * 30
C2 = "c2" + "0" * 30
C1_START = datetime(2024, 1, 15, 10, 0, tzinfo=timezone.utc).timestamp()
C2_START = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc).timestamp()
LONG_ANSWER = (
    "Your export is on its way. We will email you a download link as soon as "
    "the file is ready, usually within a few minutes for small accounts."
)


def _env(**extra: str) -> dict[str, str]:
    """The environment for a CLI run: no CONTEXT_* variables, 80 columns, UTC."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONTEXT_", "GETCONTEXT_"))
    }
    env.update(COLUMNS="80", LINES="24", TZ="UTC", PYTHONIOENCODING="utf-8")
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, script: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m context_trace ARGS`` (or the console script) to completion."""
    command = [_script()] if script else [sys.executable, "-m", "context_trace"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=REPO,
        env=env if env is not None else _env(),
        timeout=60,
        check=False,
    )


def _script() -> str:
    """The installed console script: on PATH, or next to this interpreter."""
    found = shutil.which("context-trace")
    if found is None:
        candidate = Path(sys.executable).parent / "context-trace"
        found = str(candidate) if candidate.exists() else None
    assert found is not None, "the context-trace console script is not installed"
    return found


# --------------------------------------------------------------------------- the store
@dataclass(frozen=True)
class Store:
    """The populated store and what the tests need to know about it."""

    path: Path
    rows: tuple[StoredConversation, ...]  # oldest first
    bob_error_id: str
    #: When each user, and each session, was last rated (from the feedback table).
    user_rated: dict[str, float]
    session_rated: dict[str, float]

    def of(self, user: str | None) -> list[StoredConversation]:
        return [c for c in self.rows if c.user_id == user]

    def last_seen(self, user: str) -> float:
        """A user's last activity: their latest turn's end, or rating."""
        ends = [c.ended_at for c in self.of(user)]
        return max([*ends, self.user_rated.get(user, 0.0)])

    def last_at(self, session: str) -> float:
        """A session's last activity: its latest turn's end, or rating."""
        ends = [c.ended_at for c in self.rows if c.session_id == session]
        return max([*ends, self.session_rated.get(session, 0.0)])


def _lookup(order_id: str) -> str:
    """Look up an order."""
    return f"order {order_id}: shipped"


def _fail(_: object) -> object:
    raise ValueError("bad input")


def _populate(path: Path) -> None:
    """Record through the real pipeline: scopes, LangChain runs, emitted records."""
    _runtime.configure(db_path=path, token=None)
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are helpful."),
            MessagesPlaceholder("history", optional=True),
            ("human", "{q}"),
        ]
    )
    chain = prompt | ParrotFakeChatModel() | StrOutputParser()
    lookup = StructuredTool.from_function(_lookup, name="lookup_order")

    def with_lookup(inputs: dict[str, Any]) -> dict[str, Any]:
        lookup.invoke({"order_id": "42"})
        return inputs

    with context_trace.track_user("alice"):
        with context_trace.context_session("sess-alice-1") as session:
            chain.invoke({"q": "hello"})
            chain.invoke({"q": "how are you?"})
            session.rate(1)
        with context_trace.context_session("sess-alice-2") as session:
            chain.invoke({"q": "bye"})
            session.rate(-1)
    with context_trace.track_user("bob"), context_trace.context_session("sess-bob-1"):
        (RunnableLambda(with_lookup) | chain).invoke({"q": "where is order 42?"})
        with pytest.raises(ValueError, match="bad input"):
            (prompt | RunnableLambda(_fail)).invoke({"q": "break it"})
    with context_trace.context_session("sess-anon"):
        chain.invoke({"q": "anonymous question"})
    _runtime.emit(
        Conversation(
            id=C1,
            user_id="carol",
            session_id="sess-carol",
            started_at=C1_START,
            ended_at=C1_START + 0.1,
            messages=(
                Message("user", "How do I export my data?"),
                Message(
                    "tool",
                    "job 17 queued",
                    name="export_job",
                    tool_input='{"format":"csv"}',
                ),
                Message("assistant", LONG_ANSWER),
            ),
            metadata={
                "model": "gpt-test",
                "latency_ms": "100",
                "prompt_tokens": "12",
                "completion_tokens": "30",
                "total_tokens": "42",
            },
        )
    )
    _runtime.emit(
        Conversation(
            id=C2,
            user_id="carol",
            session_id="sess-carol",
            started_at=C2_START,
            ended_at=C2_START + 0.3,
            messages=(Message("user", "Thanks!"), Message("assistant", "Anytime.")),
            metadata={"latency_ms": "300"},
        )
    )
    assert _runtime.flush(10.0)
    # Two records waiting for the Context API (not in the report tables).
    outbox = SQLiteExporter(path, keep_local=False)
    outbox.outbox_put(
        [
            Conversation(
                id=f"ob{n}" + "0" * 29,
                user_id="dave",
                session_id=None,
                started_at=C2_START,
                ended_at=C2_START + 1,
                messages=(Message("user", "q"), Message("assistant", "a")),
            )
            for n in range(2)
        ]
    )
    outbox.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A store filled once for the module (clean env and state around it)."""
    path = record_store(tmp_path_factory.mktemp("cli") / "traces.db", _populate)
    with SQLiteReader(path) as reader:
        rows = tuple(reader.conversations())
    conn = sqlite3.connect(path)
    try:
        by_user, by_session = (
            dict(
                conn.execute(
                    f"SELECT {key}, max(created_at) FROM feedback GROUP BY {key}"
                )
            )
            for key in ("user_id", "session_id")
        )
    finally:
        conn.close()
    [bob_error] = [c for c in rows if c.user_id == "bob" and c.error is not None]
    return Store(path, rows, bob_error.id, by_user, by_session)


def _db(store: Store) -> tuple[str, str]:
    return ("--db", str(store.path))


@pytest.fixture(autouse=True)
def _terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process runs see what subprocesses see: 80 columns, UTC local time."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@dataclass(frozen=True)
class Run:
    """What ``cli.main`` returned and printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def main(capsys: pytest.CaptureFixture[str]) -> Any:
    """``main(*args)``: run the CLI in this process, capture its output."""

    def run(*args: str) -> Run:
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


def assert_one_line_error(result: Any, code: int, message: str) -> None:
    """Exit *code*, nothing on stdout, exactly ``context-trace: error: MESSAGE``."""
    assert "Traceback" not in result.stderr
    assert (code, "", f"context-trace: error: {message}\n") == (
        result.returncode,
        result.stdout,
        result.stderr,
    )


# --------------------------------------------------------------------------- basics
class TestProgram:
    def test_version_from_the_installed_script(self) -> None:
        """The console script prints the package version."""
        result = run_cli("--version", script=True)

        assert (0, f"context-trace {context_trace.__version__}\n", "") == (
            result.returncode,
            result.stdout,
            result.stderr,
        )

    def test_help_lists_every_command(self, main: Any) -> None:
        """--help names all eight commands and fits 80 columns."""
        result = main("--help")

        assert 0 == result.returncode
        for command in (
            "users",
            "sessions",
            "show",
            "export",
            "stats",
            "outbox",
            "replay",
            "demo",
        ):
            assert f"    {command} " in result.stdout
        assert [] == [line for line in result.stdout.splitlines() if len(line) > 80]

    @pytest.mark.parametrize(
        ("option", "commands"),
        [
            ("--range", ("cost", "compare")),
            ("--meta", ("cost", "retention")),
            ("--prices", ("cost", "users", "ui")),
        ],
    )
    def test_an_option_of_several_commands_reads_alike_in_each(
        self, option: str, commands: tuple[str, ...]
    ) -> None:
        """An option several commands take has one form, default, choices and
        help (a command may add a note) in each; --meta names its two forms."""
        parser = cli._parser()
        (sub,) = [a for a in parser._actions if a.dest == "command"]
        found = [
            next(a for a in sub.choices[name]._actions if option in a.option_strings)
            for name in commands
        ]
        forms = [(a.metavar, a.default, a.choices, a.type, a.nargs) for a in found]
        helps = [a.help or "" for a in found]

        assert [forms[0]] * len(forms) == forms
        assert [shortest := min(helps, key=len)] * len(helps) == [
            h[: len(shortest)] for h in helps
        ]
        if option == "--meta":
            assert {"KEY=VALUE"} == {a.metavar for a in found}
            assert all("KEY:VALUE too" in h for h in helps)

    def test_read_commands_do_not_import_the_recording_machinery(
        self, store: Store
    ) -> None:
        """python -m context_trace with a read command never imports LangChain or LangSmith."""
        code = (
            "import contextlib, io, runpy, sys\n"
            "db, commands = sys.argv[1], sys.argv[2:]\n"
            "for argv in commands:\n"
            "    sys.argv = ['context-trace', *argv.split(), '--db', db]\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n"
            "            runpy.run_module('context_trace', run_name='__main__')\n"
            "        except SystemExit as exc:\n"
            "            assert exc.code == 0, (argv, exc.code)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules\n"
            "      if m.split('.')[0] in ('langchain_core', 'langsmith')}))\n"
            "print(sorted(m for m in sys.modules if m.startswith('context_trace.')))\n"
        )
        commands = [
            "users",
            "users --json",
            "sessions",
            "sessions --json",
            f"show {store.bob_error_id}",
            "show sess-bob-1",
            "export",
            "stats",
            "outbox",
        ]
        result = subprocess.run(
            [sys.executable, "-c", code, str(store.path), *commands],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=_env(),
            timeout=60,
            check=False,
        )

        assert (0, "") == (result.returncode, result.stderr)
        heavy, loaded = result.stdout.splitlines()
        assert "[]" == heavy
        for module in ("_scopes", "_handler", "_runtime", "_compat", "_convert"):
            assert f"context_trace.{module}" not in loaded

    def test_no_command_is_a_usage_error(self, main: Any) -> None:
        """Without a command the exit status is 2 and the usage is shown."""
        result = main()

        assert 2 == result.returncode
        assert result.stderr.startswith("usage: context-trace")
        assert "error: the following arguments are required: COMMAND" in result.stderr


# --------------------------------------------------------------------------- users
class TestUsers:
    def test_json_has_exact_totals(self, store: Store) -> None:
        """users --json: counts, ratings and errors per user; times match the rows."""
        result = run_cli("users", "--json", *_db(store))

        expected = [
            {
                "user_id": user,
                "conversations": convs,
                "sessions": sessions,
                "last_seen": store.last_seen(user),
                "avg_latency_ms": sum(c.latency_ms for c in store.of(user))
                / len(store.of(user)),
                "ratings_up": up,
                "ratings_down": down,
                "errors": errors,
                "tool_errors": 0,
            }
            for user, convs, sessions, up, down, errors in (
                ("bob", 2, 1, 0, 0, 1),
                ("alice", 3, 2, 1, 1, 0),
                ("carol", 2, 1, 0, 0, 0),
            )
        ]
        anonymous = store.of(None)
        expected.append(
            {
                "user_id": None,
                "conversations": len(anonymous),
                "sessions": len({c.session_id for c in anonymous if c.session_id}),
                "last_seen": max(c.ended_at for c in anonymous),
                "avg_latency_ms": sum(c.latency_ms for c in anonymous) / len(anonymous),
                "ratings_up": 0,
                "ratings_down": 0,
                "errors": 0,
                "tool_errors": 0,
            }
        )
        assert (0, "") == (result.returncode, result.stderr)
        assert expected == json.loads(result.stdout)
        assert (C2_START + 0.3, 200.0) == (
            expected[2]["last_seen"],
            expected[2]["avg_latency_ms"],
        )

    def test_table_from_the_installed_script(self, store: Store) -> None:
        """The users table has one aligned row per user, then the turns with no user."""
        result = run_cli("--db", str(store.path), "users", script=True)

        lines = result.stdout.splitlines()
        assert (0, "") == (result.returncode, result.stderr)
        assert (
            "USER       CONVS  SESSIONS  LAST SEEN         AVG LATENCY  UP  DOWN  ERRORS"
            == lines[0]
        )
        assert ["bob", "alice", "carol", "(no user)"] == [
            line[:9].strip() for line in lines[1:]
        ]
        assert ["3", "2", "1", "1", "0"] == lines[2].split()[1:3] + lines[2].split()[
            -3:
        ]
        assert (
            "carol          2         1  2024-03-01 12:00       200 ms   0     0       0"
            == lines[3]
        )
        assert [] == [line for line in lines if len(line) > 80]

    def test_db_from_the_environment(
        self, store: Store, main: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without --db the store named by CONTEXT_TRACE_DB is read."""
        monkeypatch.setenv("CONTEXT_TRACE_DB", str(store.path))

        result = main("users", "--json")

        assert 0 == result.returncode
        assert ["bob", "alice", "carol", None] == [
            u["user_id"] for u in json.loads(result.stdout)
        ]

    def test_db_after_the_command(self, store: Store, main: Any) -> None:
        """--db may also follow the command."""
        result = main("users", "--json", "--db", str(store.path))

        assert 4 == len(json.loads(result.stdout))

    def test_long_user_ids_are_printed_whole(self, tmp_path: Path, main: Any) -> None:
        """A user id too long for 80 columns is printed whole, never cut."""
        path = tmp_path / "long.db"
        write_records(
            path,
            [
                Conversation(
                    id="a" * 32,
                    user_id="user-" + "x" * 100,
                    session_id=None,
                    started_at=C1_START,
                    ended_at=C1_START + 0.05,
                    messages=(Message("user", "q"),),
                )
            ],
        )

        result = main("users", "--db", str(path))

        row = result.stdout.splitlines()[1]
        assert 0 == result.returncode
        assert "user-" + "x" * 100 == row.split()[0]
        assert "…" not in result.stdout
        assert row.endswith(
            "1         0  2024-01-15 10:00        50 ms   0     0       0"
        )

    def test_turns_without_a_user_are_one_labelled_row(
        self, tmp_path: Path, main: Any
    ) -> None:
        """A store holding only turns with no user lists them as one "(no user)" row."""
        path = tmp_path / "anonymous.db"
        write_records(
            path,
            [
                Conversation(
                    id=f"{i:032d}",
                    user_id=None,
                    session_id=None,
                    started_at=C1_START + i,
                    ended_at=C1_START + i + 0.05,
                    messages=(Message("user", "q"),),
                )
                for i in range(3)
            ],
        )

        result = main("users", "--db", str(path))
        as_json = main("users", "--json", "--db", str(path))

        assert 0 == result.returncode
        assert "(no user)" == result.stdout.splitlines()[1][:9]
        assert "3" == result.stdout.splitlines()[1][9:].split()[0]
        assert [(None, 3)] == [
            (u["user_id"], u["conversations"]) for u in json.loads(as_json.stdout)
        ]

    def test_store_without_users(self, tmp_path: Path, main: Any) -> None:
        """A valid store with nothing recorded yet is not an error."""
        path = tmp_path / "fresh.db"
        writer = SQLiteExporter(path)
        writer.check()
        writer.shutdown()

        result = main("users", "--db", str(path))
        as_json = main("users", "--json", "--db", str(path))

        assert (0, f"no users recorded yet in {path}\n", "") == (
            result.returncode,
            result.stdout,
            result.stderr,
        )
        assert (0, []) == (as_json.returncode, json.loads(as_json.stdout))


# --------------------------------------------------------------------------- sessions
class TestWholeIds:
    USER = "dd0039ed20-alice-" + "u" * 40
    SESSION = "dd0039ed20-session-" + "s" * 45

    def _store(self, tmp_path: Path) -> Path:
        path = tmp_path / "ids.db"
        write_records(
            path,
            [
                Conversation(
                    id="c" * 32,
                    user_id=self.USER,
                    session_id=self.SESSION,
                    started_at=C1_START,
                    ended_at=C1_START + 0.05,
                    messages=(Message("user", "q"), Message("assistant", "a")),
                )
            ],
        )
        return path

    def test_ids_printed_by_one_command_work_in_the_next(self, tmp_path: Path) -> None:
        """Through a pipe, users and sessions print ids whole, so scripts can use them."""
        path = self._store(tmp_path)

        users = run_cli("users", "--db", str(path))
        user_id = users.stdout.splitlines()[1].split()[0]
        sessions = run_cli("sessions", "--user", user_id, "--db", str(path))
        session_id = sessions.stdout.splitlines()[1].split()[0]
        show = run_cli("show", session_id, "--db", str(path))

        assert self.USER == user_id
        assert self.SESSION == session_id
        assert 0 == show.returncode
        assert f"session {self.SESSION}" == show.stdout.splitlines()[0]

    def test_ids_are_whole_on_a_narrow_terminal(self, tmp_path: Path) -> None:
        """On a terminal narrower than the row, ids still print whole."""
        path = self._store(tmp_path)
        out = _TTY()
        args = cli._parser().parse_args(["sessions", "--db", str(path)])

        commands._cmd_sessions(args, out)

        assert self.SESSION in out.getvalue()
        assert self.USER in out.getvalue()


class TestSessions:
    def test_json_exact(self, store: Store) -> None:
        """sessions --json: every session, most recently active first, exactly."""
        result = run_cli("sessions", "--json", *_db(store))

        def row(
            sid: str, user: str | None, turns: int, up: int, down: int, errors: int = 0
        ) -> Any:
            started = min(c.started_at for c in store.rows if c.session_id == sid)
            return {
                "session_id": sid,
                "user_id": user,
                "started_at": started,
                "last_at": store.last_at(sid),
                "turns": turns,
                "rating_up": up,
                "rating_down": down,
                "errors": errors,
                "tool_errors": 0,
            }

        assert (0, "") == (result.returncode, result.stderr)
        assert [
            row("sess-anon", None, 1, 0, 0),
            row("sess-bob-1", "bob", 2, 0, 0, errors=1),
            row("sess-alice-2", "alice", 1, 0, 1),
            row("sess-alice-1", "alice", 2, 1, 0),
            {
                "session_id": "sess-carol",
                "user_id": "carol",
                "started_at": C1_START,
                "last_at": C2_START + 0.3,
                "turns": 2,
                "rating_up": 0,
                "rating_down": 0,
                "errors": 0,
                "tool_errors": 0,
            },
        ] == json.loads(result.stdout)

    def test_table_for_a_user_with_limit(self, store: Store) -> None:
        """--user and --limit narrow the table; session ids are shown whole."""
        result = run_cli("sessions", "--user", "alice", "--limit", "1", *_db(store))

        lines = result.stdout.splitlines()
        assert (0, "") == (result.returncode, result.stderr)
        assert (
            "SESSION       USER   LAST ACTIVE       TURNS  UP  DOWN  ERRORS" == lines[0]
        )
        assert 2 == len(lines)
        assert ["sess-alice-2", "alice", "1", "0", "1", "0"] == (
            lines[1].split()[:2] + lines[1].split()[-4:]
        )

    def test_anonymous_session_shows_a_dash(self, store: Store, main: Any) -> None:
        """A session without a user shows '-' in the USER column."""
        result = main("sessions", "--limit", "1", *_db(store))

        assert ["sess-anon", "-"] == result.stdout.splitlines()[1].split()[:2]

    def test_unknown_user_has_no_sessions(self, store: Store, main: Any) -> None:
        """An unknown user is not an error: the listing says there is nothing."""
        result = main("sessions", "--user", "nobody", *_db(store))

        assert (0, f"no sessions recorded for user 'nobody' in {store.path}\n") == (
            result.returncode,
            result.stdout,
        )

    @pytest.mark.parametrize(
        ("limit", "problem"),
        [
            ("0", "expected a number of at least 1, got 0"),
            ("many", "expected a whole number, got 'many'"),
        ],
    )
    def test_bad_limit_is_a_usage_error(
        self, store: Store, main: Any, limit: str, problem: str
    ) -> None:
        """--limit must be a whole number of at least 1 (exit status 2)."""
        result = main("sessions", "--limit", limit, *_db(store))

        assert 2 == result.returncode
        assert (
            f"context-trace sessions: error: argument --limit: {problem}"
            == result.stderr.splitlines()[-1]
        )


# --------------------------------------------------------------------------- show
class TestShow:
    def test_session_transcript(self, store: Store) -> None:
        """show SESSION: header, then each role aligned beside its wrapped text."""
        result = run_cli("show", "sess-carol", *_db(store))

        assert (0, "") == (result.returncode, result.stderr)
        assert [
            "session sess-carol",
            "user carol · 2 turns · rated +0/-0",
            "from 2024-01-15 10:00 to 2024-03-01 12:00",
            "─" * 60,
            "user       How do I export my data?",
            "tool       export_job",
            '             input: {"format":"csv"}',
            "             output: job 17 queued",
            "assistant  Your export is on its way. We will email you a download link as soon",
            "           as the file is ready, usually within a few minutes for small",
            "           accounts.",
            "",
            "user       Thanks!",
            "assistant  Anytime.",
        ] == result.stdout.splitlines()

    def test_conversation_wrapped_to_the_terminal(self, store: Store) -> None:
        """show CONVERSATION with COLUMNS=50: header details, text wrapped to 50."""
        result = run_cli("show", C1, *_db(store), env=_env(COLUMNS="50"))

        assert (0, "") == (result.returncode, result.stderr)
        assert [
            f"conversation {C1}",
            "user carol · session sess-carol",
            "2024-01-15 10:00 · gpt-test · 100 ms · tokens 12 in / 30 out",
            "─" * 50,
            "user       How do I export my data?",
            "tool       export_job",
            '             input: {"format":"csv"}',
            "             output: job 17 queued",
            "assistant  Your export is on its way. We will",
            "           email you a download link as soon as",
            "           the file is ready, usually within a few",
            "           minutes for small accounts.",
        ] == result.stdout.splitlines()

    def test_conversation_header_in_full(self, store: Store, main: Any) -> None:
        """At 80 columns the header shows model, latency and token counts whole."""
        result = main("show", C1, *_db(store))

        assert (
            "2024-01-15 10:00 · gpt-test · 100 ms · tokens 12 in / 30 out"
            == result.stdout.splitlines()[2]
        )

    def test_failed_conversation_shows_its_error(self, store: Store, main: Any) -> None:
        """A failed turn's header carries the error; its question is shown."""
        result = main("show", store.bob_error_id, *_db(store))

        lines = result.stdout.splitlines()
        assert 0 == result.returncode
        assert "error: ValueError: bad input" == lines[3]
        assert "user       break it" in lines

    def test_tool_call_inside_a_recorded_session(self, store: Store, main: Any) -> None:
        """A tool the chain called shows its name, input and output."""
        result = main("show", "sess-bob-1", *_db(store))

        lines = result.stdout.splitlines()
        tool = lines.index("tool       lookup_order")
        assert [
            "user       where is order 42?",
            "tool       lookup_order",
            '             input: {"order_id":"42"}',
            "             output: order 42: shipped",
            "assistant  where is order 42?",
        ] == lines[tool - 1 : tool + 4]

    def test_control_characters_are_neutralised(
        self, tmp_path: Path, main: Any
    ) -> None:
        """Escape sequences in stored text are printed as '?', never sent raw."""
        path = tmp_path / "escapes.db"
        write_records(
            path,
            [
                Conversation(
                    id="e" * 32,
                    user_id="eve\rmallory",
                    session_id=None,
                    started_at=C1_START,
                    ended_at=C1_START + 0.01,
                    messages=(
                        Message("user", "hi\tthere"),
                        Message("assistant", "\x1b[2Jwiped\x07 line 1\r\nline 2"),
                    ),
                )
            ],
        )

        shown = main("show", "e" * 32, "--db", str(path))
        users = main("users", "--db", str(path))

        assert [
            "user       hi  there",
            "assistant  ?[2Jwiped? line 1",
            "           line 2",
        ] == shown.stdout.splitlines()[4:]
        assert "eve mallory" == users.stdout.splitlines()[1][:11]
        assert not any(c in shown.stdout + users.stdout for c in ("\x1b", "\x07", "\r"))

    def test_unknown_id(self, store: Store) -> None:
        """An id that is neither a session nor a conversation: one line, exit 1."""
        result = run_cli("show", "no-such-id", *_db(store))

        assert_one_line_error(
            result,
            1,
            f"no session or conversation with id 'no-such-id' in {store.path}",
        )


# --------------------------------------------------------------------------- export
# --------------------------------------------------------------------------- failures
@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dana's store: a turn whose tool failed (handled by the agent), failed turns."""
    path = tmp_path_factory.mktemp("failures") / "traces.db"
    record_failures(path)
    return path


class TestFailures:
    def test_show_session_prints_each_failed_turn_in_place(
        self, failures: Path
    ) -> None:
        """show SESSION: a failed turn's error where it happened; an undelivered answer marked."""
        result = run_cli("show", FAILED_SESSION, "--db", str(failures))

        assert (0, "") == (result.returncode, result.stderr)
        assert [
            f"user {USER} · 4 turns · rated +0/-0 · 2 failed",
            "user       hello",
            "assistant  hello",
            "",
            "user       is it down?",
            f"error      the turn failed: {MODEL_ERROR}",
            "",
            "user       format it",
            "assistant  format it",
            "           (not delivered: the turn failed after this answer)",
            f"error      the turn failed: {AFTER_ERROR}",
            "",
            "user       thanks",
            "assistant  thanks",
        ] == [result.stdout.splitlines()[1], *result.stdout.splitlines()[4:]]

    def test_show_turn_marks_an_answer_it_did_not_deliver(
        self, failures: Path, main: Any
    ) -> None:
        """show TURN_ID of a turn that failed after the model answered marks the answer."""
        session = main("show", "--json", FAILED_SESSION, "--db", str(failures))
        turn = json.loads(session.stdout)["turns"][2]["conversation_id"]

        result = main("show", turn, "--db", str(failures))

        lines = result.stdout.splitlines()
        assert f"error: {AFTER_ERROR}" == lines[3]
        assert [
            "user       format it",
            "assistant  format it",
            "           (not delivered: the turn failed after this answer)",
        ] == lines[5:]

    def test_show_session_marks_the_failed_tool(self, failures: Path) -> None:
        """A tool the agent recovered from: marked failed, its error shown, the turn counted."""
        result = run_cli("show", TOOL_SESSION, "--db", str(failures))

        lines = result.stdout.splitlines()
        assert (0, "") == (result.returncode, result.stderr)
        assert f"user {USER} · 2 turns · rated +0/-0 · 1 with a failed tool" == lines[1]
        assert [
            f"user       {TOOL_QUESTION}",
            "tool       lookup_order (failed)",
            '             input: {"order_id":"42"}',
            f"             error: {TOOL_ERROR}",
            f"assistant  {TOOL_ANSWER}",
            "",
            "user       thanks anyway",
            "assistant  thanks anyway",
        ] == lines[4:]

    def test_users_and_sessions_count_tool_errors_apart_from_errors(
        self, failures: Path
    ) -> None:
        """users and sessions count turns whose tool failed apart from failed turns."""
        users = run_cli("users", "--json", "--db", str(failures))
        sessions = run_cli("sessions", "--json", "--db", str(failures))
        table = run_cli("users", "--db", str(failures))

        assert [(USER, 6, 2, 1)] == [
            (u["user_id"], u["conversations"], u["errors"], u["tool_errors"])
            for u in json.loads(users.stdout)
        ]
        assert {FAILED_SESSION: (4, 2, 0), TOOL_SESSION: (2, 0, 1)} == {
            s["session_id"]: (s["turns"], s["errors"], s["tool_errors"])
            for s in json.loads(sessions.stdout)
        }
        header, row = table.stdout.splitlines()
        assert header.endswith("ERRORS  TOOL ERR")  # shown: a tool failed
        assert ["2", "1"] == row.split()[-2:]

    def test_show_json_session(self, failures: Path) -> None:
        """show --json SESSION: the dashboard's session shape, each turn's error and tool error."""
        result = run_cli("show", "--json", TOOL_SESSION, "--db", str(failures))

        shown = json.loads(result.stdout)
        session, turns = shown["session"], shown["turns"]
        assert (0, "") == (result.returncode, result.stderr)
        assert {
            "session_id": TOOL_SESSION,
            "user_id": USER,
            "turns": 2,
            "errors": 0,
            "tool_errors": 1,
            "rating_up": 0,
            "rating_down": 0,
            "metadata": {},
        } == {k: v for k, v in session.items() if k not in ("started_at", "last_at")}
        assert [(None, True), (None, False)] == [
            (t["error"], t["tool_error"]) for t in turns
        ]
        assert {
            "role": "tool",
            "content": TOOL_ERROR,
            "name": "lookup_order",
            "tool_input": '{"order_id":"42"}',
            "error": True,
        } == turns[0]["messages"][1]
        assert "lookup_order" == turns[0]["metadata"]["failed_tools"]
        assert {
            "conversation_id",
            "started_at",
            "latency_ms",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "error",
            "messages",
        } <= set(turns[0])

    def test_show_json_conversation(self, failures: Path, main: Any) -> None:
        """show --json TURN_ID: the turn as a session lists it, under "conversation"."""
        session = json.loads(
            main("show", "--json", FAILED_SESSION, "--db", str(failures)).stdout
        )
        failed = session["turns"][1]

        result = main(
            "show", "--json", failed["conversation_id"], "--db", str(failures)
        )

        assert {"conversation": failed} == json.loads(result.stdout)
        assert (MODEL_ERROR, False) == (failed["error"], failed["tool_error"])

    def test_show_json_unknown_id(self, failures: Path, main: Any) -> None:
        """show --json of an unknown id: one line on stderr, exit 1, no JSON."""
        result = main("show", "--json", "nope", "--db", str(failures))

        assert_one_line_error(
            result, 1, f"no session or conversation with id 'nope' in {failures}"
        )


class TestUsersOrder:
    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            ((), ["bob", "alice", "carol", None]),
            (("--sort", "user"), ["alice", "bob", "carol", None]),
            (("--sort", "conversations", "--limit", "2"), ["alice", "bob", None]),
            (("--sort", "errors", "--limit", "1"), ["bob", None]),
            (("--sort", "ratings_down"), ["alice", "bob", "carol", None]),
            (("--limit", "1"), ["bob", None]),
        ],
    )
    def test_sort_and_limit(
        self, store: Store, main: Any, argv: tuple[str, ...], expected: list[Any]
    ) -> None:
        """users --sort KEY --limit N: that order, N users, then the (no user) row."""
        as_json = main("users", "--json", *argv, *_db(store))
        table = main("users", *argv, *_db(store))

        assert expected == [u["user_id"] for u in json.loads(as_json.stdout)]
        assert [u or "(no user)" for u in expected] == [
            line[:9].strip() for line in table.stdout.splitlines()[1:]
        ]

    @pytest.mark.parametrize(
        ("argv", "problem"),
        [
            (
                ("--sort", "newest"),
                "argument --sort: invalid choice: 'newest' (choose from"
                " 'last_seen', 'conversations', 'sessions', 'latency', 'errors',"
                " 'tool_errors', 'ratings_up', 'ratings_down', 'user', 'cost')",
            ),
            (
                ("--limit", "0"),
                "argument --limit: expected a number of at least 1, got 0",
            ),
            (
                ("--limit", "all"),
                "argument --limit: expected a whole number, got 'all'",
            ),
        ],
    )
    def test_bad_values_are_usage_errors(
        self, store: Store, main: Any, argv: tuple[str, ...], problem: str
    ) -> None:
        """A bad --sort or --limit: exit 2, the option and what it takes named."""
        result = main("users", *argv, *_db(store))

        assert (2, "") == (result.returncode, result.stdout)
        assert (
            f"context-trace users: error: {problem}" == result.stderr.splitlines()[-1]
        )


def _jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _as_dict(c: Any) -> dict[str, Any]:
    return {
        "id": c.id,
        "user_id": c.user_id,
        "session_id": c.session_id,
        "started_at": c.started_at,
        "ended_at": c.ended_at,
        "latency_ms": c.latency_ms,
        "model": c.model,
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.total_tokens,
        "error": c.error,
        "metadata": c.metadata,
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "name": m.name,
                "tool_input": m.tool_input,
                "error": m.error,
            }
            for m in c.messages
        ],
        "rating": c.rating,
    }


C1_JSON = {
    "id": C1,
    "user_id": "carol",
    "session_id": "sess-carol",
    "started_at": C1_START,
    "ended_at": C1_START + 0.1,
    "latency_ms": 100,
    "model": "gpt-test",
    "prompt_tokens": 12,
    "completion_tokens": 30,
    "total_tokens": 42,
    "error": None,
    "metadata": {
        "model": "gpt-test",
        "latency_ms": "100",
        "prompt_tokens": "12",
        "completion_tokens": "30",
        "total_tokens": "42",
    },
    "messages": [
        {
            "role": "user",
            "content": "How do I export my data?",
            "name": None,
            "tool_input": None,
            "error": False,
        },
        {
            "role": "tool",
            "content": "job 17 queued",
            "name": "export_job",
            "tool_input": '{"format":"csv"}',
            "error": False,
        },
        {
            "role": "assistant",
            "content": LONG_ANSWER,
            "name": None,
            "tool_input": None,
            "error": False,
        },
    ],
    "rating": None,
}


class TestExport:
    def test_jsonl_holds_every_conversation(self, store: Store) -> None:
        """export (JSON lines on stdout) round-trips every stored conversation."""
        result = run_cli("export", *_db(store))

        exported = _jsonl(result.stdout)
        assert (0, "") == (result.returncode, result.stderr)
        assert [_as_dict(c) for c in store.rows] == exported
        assert C1_JSON == exported[0]
        assert 8 == len(exported)

    def test_csv_file_matches_jsonl(self, store: Store, tmp_path: Path) -> None:
        """export --format csv -o FILE writes the same conversations as JSON lines."""
        target = tmp_path / "out.csv"

        result = run_cli(
            "export", "--format", "csv", "--output", str(target), *_db(store)
        )

        assert (0, "", f"exported 8 conversations to {target}\n") == (
            result.returncode,
            result.stdout,
            result.stderr,
        )
        rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
        expected = [_as_dict(c) for c in store.rows]
        assert [e["id"] for e in expected] == [r["id"] for r in rows]
        for want, got in zip(expected, rows, strict=True):
            assert want["messages"] == json.loads(got["messages"])
            assert want["metadata"] == json.loads(got["metadata"])
            assert want["started_at"] == float(got["started_at"])
            assert want["ended_at"] == float(got["ended_at"])
            assert ("" if want["error"] is None else want["error"]) == got["error"]
            assert str(want["latency_ms"]) == got["latency_ms"]
            assert ("" if want["model"] is None else want["model"]) == got["model"]
        assert ("Thanks!", "Anytime.") == (rows[1]["question"], rows[1]["answer"])
        assert ("12", "30", "42") == (
            rows[0]["prompt_tokens"],
            rows[0]["completion_tokens"],
            rows[0]["total_tokens"],
        )

    def test_since(self, store: Store) -> None:
        """--since keeps the conversations started at or after the moment."""
        result = run_cli("export", "--since", "2024-03-01T13:00:00+01:00", *_db(store))

        assert 0 == result.returncode
        assert [c.id for c in store.rows if c.started_at >= C2_START] == [
            r["id"] for r in _jsonl(result.stdout)
        ]
        assert C2 == _jsonl(result.stdout)[0]["id"]

    @pytest.mark.parametrize(
        ("since", "includes_c2"),
        [
            ("2024-02-01", True),
            ("2024-03-01T12:00:00Z", True),
            ("2024-03-01T12:00:00", True),
            ("2024-03-01T12:00:00.000001", False),
            ("2024-03-01T12:00:01+00:00", False),
        ],
    )
    def test_since_forms(
        self, store: Store, main: Any, since: str, includes_c2: bool
    ) -> None:
        """Dates and datetimes are UTC unless they carry an offset; the bound is inclusive."""
        result = main("export", "--since", since, *_db(store))

        expected = [c.id for c in store.rows if c.started_at >= C2_START]
        assert 0 == result.returncode
        assert (expected if includes_c2 else expected[1:]) == [
            r["id"] for r in _jsonl(result.stdout)
        ]

    def test_bad_since_is_a_usage_error(self, store: Store) -> None:
        """An unparseable --since: exit 2 with the argument named."""
        result = run_cli("export", "--since", "last tuesday", *_db(store))

        assert 2 == result.returncode
        assert "Traceback" not in result.stderr
        assert (
            "context-trace export: error: argument --since: expected YYYY-MM-DD or "
            "an ISO datetime, got 'last tuesday'"
        ) == result.stderr.splitlines()[-1]

    def test_unwritable_output(self, store: Store, tmp_path: Path, main: Any) -> None:
        """An output file that cannot be created: one line, exit 1."""
        target = tmp_path / "missing-dir" / "out.jsonl"

        result = main("export", "-o", str(target), *_db(store))

        assert_one_line_error(
            result, 1, f"cannot write {target}: No such file or directory"
        )


# --------------------------------------------------------------------------- stats/outbox
class TestStatsAndOutbox:
    def test_stats_json_per_day(self, store: Store) -> None:
        """stats --json: one exact row per UTC day, oldest first."""
        result = run_cli("stats", "--json", *_db(store))

        days: dict[str, list[Any]] = {}
        for c in store.rows:
            day = datetime.fromtimestamp(c.started_at, timezone.utc).strftime(
                "%Y-%m-%d"
            )
            days.setdefault(day, []).append(c)
        expected = [
            {
                "day": day,
                "conversations": len(rows),
                "users": len({c.user_id for c in rows if c.user_id is not None}),
                "sessions": len(
                    {c.session_id for c in rows if c.session_id is not None}
                ),
                "errors": sum(c.error is not None for c in rows),
                "avg_latency_ms": sum(c.latency_ms for c in rows) / len(rows),
            }
            for day, rows in sorted(days.items())
        ]
        assert 0 == result.returncode
        assert expected == json.loads(result.stdout)
        assert [
            {
                "day": "2024-01-15",
                "conversations": 1,
                "users": 1,
                "sessions": 1,
                "errors": 0,
                "avg_latency_ms": 100.0,
            },
            {
                "day": "2024-03-01",
                "conversations": 1,
                "users": 1,
                "sessions": 1,
                "errors": 0,
                "avg_latency_ms": 300.0,
            },
        ] == expected[:2]
        assert (6, 1) == (
            sum(d["conversations"] for d in expected[2:]),
            sum(d["errors"] for d in expected[2:]),
        )

    def test_stats_table(self, store: Store, main: Any) -> None:
        """The stats table lists each day and a total row."""
        result = main("stats", *_db(store))

        lines = result.stdout.splitlines()
        assert 0 == result.returncode
        assert (
            "DAY (UTC)   CONVERSATIONS  USERS  SESSIONS  ERRORS  AVG LATENCY"
            == lines[0]
        )
        assert (
            "2024-01-15              1      1         1       0       100 ms"
            == lines[1]
        )
        assert ["total", "8", "1"] == lines[-1].split()[:3]

    def test_outbox_json(self, store: Store) -> None:
        """outbox --json: the two waiting records, nothing dropped or failed."""
        result = run_cli("outbox", "--json", *_db(store))

        assert (0, {"pending": 2, "leased": 0, "dropped": 0, "failed": 0}) == (
            result.returncode,
            json.loads(result.stdout),
        )

    def test_outbox_table(self, store: Store, main: Any) -> None:
        """outbox prints one labelled line per counter."""
        result = main("outbox", *_db(store))

        assert [
            "pending         2  waiting for delivery",
            "leased          0  being delivered now",
            "dropped         0  dropped (outbox full), since the file was created",
            "failed          0  rejected by the API, since the file was created",
        ] == result.stdout.splitlines()


# --------------------------------------------------------------------------- replay
def _outbox_store(path: Path, n: int) -> None:
    exporter = SQLiteExporter(path, keep_local=False)
    exporter.check()
    exporter.outbox_put(
        [
            Conversation(
                id=f"{k:032x}",
                user_id="dave",
                session_id=None,
                started_at=C2_START + k,
                ended_at=C2_START + k + 0.5,
                messages=(
                    Message("user", f"question {k}"),
                    Message("assistant", "answer"),
                ),
            )
            for k in range(n)
        ]
    )
    exporter.shutdown()


class TestReplay:
    def test_delivers_the_outbox(self, tmp_path: Path) -> None:
        """replay sends every waiting record to the API and empties the outbox."""
        path = tmp_path / "outbox.db"
        _outbox_store(path, 3)

        with FakeContextServer(token=TOKEN) as server:
            result = run_cli(
                "replay", "--db", str(path), "--token", TOKEN, "--endpoint", server.url
            )
            stored = sorted(
                m["message"] for c in server.conversations for m in c["messages"]
            )

        assert (0, "delivered 3, failed 0, still pending 0\n", "") == (
            result.returncode,
            result.stdout,
            result.stderr,
        )
        assert [] == server.errors
        assert [
            "answer",
            "answer",
            "answer",
            "question 0",
            "question 1",
            "question 2",
        ] == stored
        with SQLiteReader(path) as reader:
            assert 0 == reader.outbox_counts()["pending"]

    def test_token_and_endpoint_from_the_environment(
        self, tmp_path: Path, main: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """CONTEXT_TOKEN and CONTEXT_ENDPOINT stand in for --token and --endpoint."""
        path = tmp_path / "outbox.db"
        _outbox_store(path, 2)

        with FakeContextServer(token=TOKEN) as server:
            monkeypatch.setenv("CONTEXT_TOKEN", TOKEN)
            monkeypatch.setenv("CONTEXT_ENDPOINT", server.url)
            result = main("replay", "--db", str(path))
            delivered = len(server.conversations)

        assert (0, "delivered 2, failed 0, still pending 0\n", 2) == (
            result.returncode,
            result.stdout,
            delivered,
        )

    def test_rejected_records_fail_the_command(self, tmp_path: Path) -> None:
        """Records the API rejects are counted as failed, and the status is 1."""
        path = tmp_path / "outbox.db"
        _outbox_store(path, 1)

        with FakeContextServer(token=TOKEN) as server:
            for route in (ROUTE_LOG, ROUTE_UPSERT):
                server.script(route, [400])
            result = run_cli(
                "replay", "--db", str(path), "--token", TOKEN, "--endpoint", server.url
            )

        assert (1, "delivered 0, failed 1, still pending 0\n") == (
            result.returncode,
            result.stdout,
        )
        with SQLiteReader(path) as reader:
            assert {"pending": 0, "leased": 0, "dropped": 0, "failed": 1} == (
                reader.outbox_counts()
            )

    def test_empty_outbox_needs_no_request(self, tmp_path: Path, main: Any) -> None:
        """With nothing waiting, replay says so and exits 0."""
        path = tmp_path / "outbox.db"
        _outbox_store(path, 0)

        result = main("replay", "--db", str(path), "--token", TOKEN)

        assert (0, f"nothing to deliver: the outbox in {path} is empty\n") == (
            result.returncode,
            result.stdout,
        )

    def test_without_a_token(self, store: Store, main: Any) -> None:
        """No --token and no CONTEXT_TOKEN is a usage error."""
        result = main("replay", *_db(store))

        assert_one_line_error(
            result,
            2,
            "replay needs a Context token: pass --token or set CONTEXT_TOKEN",
        )


# --------------------------------------------------------------------------- bad stores
class TestBadStores:
    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing database: one line, exit 1, and no file is created."""
        path = tmp_path / "nothing-here.db"

        result = run_cli("users", "--db", str(path))

        assert_one_line_error(result, 1, f"no database at {path} {HINT}")
        assert not path.exists()

    @pytest.mark.parametrize(
        "command",
        [
            ["sessions"],
            ["show", "x"],
            ["export"],
            ["stats"],
            ["outbox"],
            ["replay", "--token", TOKEN],
        ],
    )
    def test_missing_file_for_every_command(
        self, tmp_path: Path, main: Any, command: list[str]
    ) -> None:
        """Every command reports a missing database the same way."""
        path = tmp_path / "nothing-here.db"

        result = main(*command, "--db", str(path))

        assert_one_line_error(result, 1, f"no database at {path} {HINT}")
        assert not path.exists()

    def test_garbage_bytes(self, tmp_path: Path) -> None:
        """A file that is not SQLite at all: one line, exit 1."""
        path = tmp_path / "garbage.db"
        path.write_bytes(b"\x00\xffnot a database\x13" * 300)

        result = run_cli("users", "--db", str(path))

        assert_one_line_error(
            result,
            1,
            f"{path} is not a context_trace database (file is not a database; "
            "the file is corrupt or not SQLite)",
        )

    def test_empty_file(self, tmp_path: Path) -> None:
        """A 0-byte file: one line, exit 1."""
        path = tmp_path / "empty.db"
        path.touch()

        result = run_cli("sessions", "--db", str(path))

        assert_one_line_error(result, 1, f"database at {path} is empty {HINT}")

    def test_other_sqlite_database(self, tmp_path: Path) -> None:
        """A SQLite database of some other program: one line, exit 1."""
        path = tmp_path / "other.db"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
        conn.close()

        result = run_cli("stats", "--db", str(path))

        assert_one_line_error(
            result, 1, f"{path} is a SQLite file but not a context_trace database"
        )

    def test_locked_database(self, store: Store, tmp_path: Path) -> None:
        """A store another connection holds exclusively: one line, exit 1."""
        path = tmp_path / "locked.db"
        shutil.copyfile(store.path, path)
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            # In WAL mode BEGIN EXCLUSIVE alone still lets readers in; the
            # exclusive locking mode keeps them out until the holder is done.
            holder.execute("PRAGMA locking_mode = EXCLUSIVE")
            holder.execute("BEGIN EXCLUSIVE")
            result = run_cli("users", "--db", str(path))
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        assert_one_line_error(
            result,
            1,
            f"database at {path} is locked by another process; try again later",
        )

    def test_directory(self, tmp_path: Path, main: Any) -> None:
        """A directory given as the database: one line, exit 1."""
        result = main("users", "--db", str(tmp_path))

        assert_one_line_error(result, 1, f"{tmp_path} is a directory, not a database")


class TestReadOnlyStore:
    def test_every_command_reads_a_store_in_a_read_only_directory(
        self, store: Store, tmp_path: Path
    ) -> None:
        """A store copied into a directory nobody may write reads as the original."""
        with sqlite3.connect(store.path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        handed = tmp_path / "handed-over"
        handed.mkdir()
        copy = handed / "traces.db"
        shutil.copyfile(store.path, copy)
        commands = [
            ["users", "--json"],
            ["sessions", "--json"],
            ["show", "sess-alice-1"],
            ["export"],
            ["stats", "--json"],
            ["outbox", "--json"],
        ]
        expected = [run_cli(*command, *_db(store)).stdout for command in commands]

        with read_only(handed):
            assert_read_only(handed)
            results = [
                subprocess.run(
                    [sys.executable, "-m", "context_trace", *command, "--db", str(copy)],
                    capture_output=True, text=True, encoding="utf-8", cwd=REPO,
                    env=_env(), timeout=60, check=False,
                    preexec_fn=no_write_override,
                )
                for command in commands
            ]  # fmt: skip

        assert [(0, "", out) for out in expected] == [
            (r.returncode, r.stderr, r.stdout) for r in results
        ]
        assert ["traces.db"] == sorted(p.name for p in handed.iterdir())


# --------------------------------------------------------------------------- helpers
class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestHelpers:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2024-03-01", datetime(2024, 3, 1, tzinfo=timezone.utc)),
            ("2024-03-01T12:30", datetime(2024, 3, 1, 12, 30, tzinfo=timezone.utc)),
            ("2024-03-01T12:30:00Z", datetime(2024, 3, 1, 12, 30, tzinfo=timezone.utc)),
            (
                "2024-03-01T12:30:00-02:00",
                datetime(2024, 3, 1, 14, 30, tzinfo=timezone.utc),
            ),
        ],
    )
    def test_parse_since(self, text: str, expected: datetime) -> None:
        """--since takes dates and ISO datetimes, UTC unless an offset is given."""
        assert expected.timestamp() == commands._parse_since(text)

    def test_progress_bar_draws_on_a_terminal(self) -> None:
        """The progress bar redraws one line on a TTY and erases it at the end."""
        stream = _TTY()
        bar = _format._ProgressBar(stream, "sending")

        bar.update(5, 10)
        bar.update(10, 10)
        bar.close()

        frames = stream.getvalue().split("\r")
        assert 5 == len(frames)
        assert frames[1].startswith("sending [")
        assert frames[1].rstrip().endswith("] 5/10")
        assert frames[2].rstrip().endswith("] 10/10")
        assert "." not in frames[2].split("[")[1]
        assert ("", "") == (frames[3].strip(), frames[4])

    def test_progress_bar_is_silent_off_a_terminal(self) -> None:
        """Nothing is written when the stream is not a terminal."""
        stream = io.StringIO()
        bar = _format._ProgressBar(stream, "sending")

        bar.update(1, 2)
        bar.close()

        assert "" == stream.getvalue()
