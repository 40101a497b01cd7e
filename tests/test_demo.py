"""
``context-trace demo``: a real Flask app, real HTTP clients, the real store.

The default run happens once per module in a subprocess (with a Context token
in its environment, which the demo must ignore); the tests then check what it
printed and, exactly, what it stored.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from context_trace import _demo, cli
from context_trace._store.reader import SQLiteReader

from .exporters.context_server import free_port

REPO = Path(__file__).resolve().parent.parent
USERS = ["ava", "ben", "chloe", "dev", "emma", "farid"]
FAILED_TURN = "TimeoutError: order service did not answer within 2.0 s"


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONTEXT_", "GETCONTEXT_", "OPENAI_"))
    }
    env.update(COLUMNS="80", TZ="UTC", PYTHONIOENCODING="utf-8")
    env.update(extra)
    return env


def run_demo_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "context_trace", "demo", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )


@dataclass(frozen=True)
class DemoRun:
    path: Path
    result: subprocess.CompletedProcess[str]

    @property
    def lines(self) -> list[str]:
        return self.result.stdout.splitlines()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The default demo (6 users x 2 sessions x 3 turns), run once."""
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    env = _env(
        CONTEXT_TOKEN="test-token-123",
        CONTEXT_ENDPOINT=f"http://127.0.0.1:{free_port()}",
    )
    return DemoRun(path, run_demo_cli("--db", str(path), env=env))


def _user_rows(lines: list[str]) -> dict[str, tuple[str, ...]]:
    """The users table's rows: user -> (convs, sessions, up, down, errors)."""
    start = lines.index(
        "USER   CONVS  SESSIONS  LAST SEEN         AVG LATENCY  UP  DOWN  ERRORS"
    )
    rows: dict[str, tuple[str, ...]] = {}
    for line in lines[start + 1 :]:
        if not line:
            break
        cells = line.split()
        rows[cells[0]] = (cells[1], cells[2], *cells[-3:])
    return rows


class TestDefaultRun:
    def test_succeeds_quietly_on_stderr(self, demo: DemoRun) -> None:
        """Exit 0; no progress bar (stderr is not a terminal) and no warnings."""
        assert (0, "") == (demo.result.returncode, demo.result.stderr)

    def test_says_where_it_writes(self, demo: DemoRun) -> None:
        """The output names the local store and says the Context token is ignored."""
        text = " ".join(demo.result.stdout.split())

        assert (
            f"Everything goes to the local store {demo.path}; the demo ignores "
            "CONTEXT_TOKEN." in text
        )
        assert re.search(
            r"Demo done in \d+\.\d s: 6 users, 12 sessions, 36 conversations "
            r"\(1 failed\), 6 ratings\.",
            text,
        )

    def test_prints_the_users_report(self, demo: DemoRun) -> None:
        """The users table: 6 turns in 2 sessions each; ben's turn failed."""
        expected = {user: ("6", "2", "1", "0", "0") for user in USERS}
        expected["ben"] = ("6", "2", "0", "1", "1")

        assert expected == _user_rows(demo.lines)

    def test_prints_a_transcript_with_a_tool_call(self, demo: DemoRun) -> None:
        """ava's first session is shown: her order question, the tool, the answer."""
        start = next(
            i
            for i, line in enumerate(demo.lines)
            if line.startswith("$ context-trace") and " show " in line
        )
        shown = demo.lines[start:]

        assert "user ava · 3 turns · rated +1/-0" == shown[2]
        assert [
            "user       Where is my order #4000?",
            "tool       lookup_order",
            '             input: {"order_id":"4000"}',
        ] == shown[8:11]

    def test_ends_with_hints(self, demo: DemoRun) -> None:
        """The output ends with commands to try, and how to point them at this store."""
        lines = demo.lines
        start = max(i for i, line in enumerate(lines) if line.startswith("Try next"))

        assert (
            f"Try next, with CONTEXT_TRACE_DB={demo.path} set (or --db {demo.path}):"
            == " ".join(lines[start:-4])
        )
        assert [
            "  context-trace sessions --user ben",
            "  context-trace stats",
            "  context-trace export --format csv -o demo.csv",
            "  context-trace ui   (the same, in your browser)",
        ] == lines[-4:]

    def test_fits_80_columns(self, demo: DemoRun) -> None:
        """Every line of the output fits an 80-column terminal."""
        assert [] == [line for line in demo.lines if len(line) > 80]

    def test_stores_every_turn(self, demo: DemoRun) -> None:
        """users x sessions x turns conversations, the failed one included."""
        with SQLiteReader(demo.path) as reader:
            users = reader.users()
            sessions = reader.sessions(limit=1000)
            conversations = list(reader.conversations())
            outbox = reader.outbox_counts()

        failed = [c for c in conversations if c.error is not None]
        assert sorted(USERS) == sorted(u.user_id for u in users)
        assert 36 == len(conversations)
        assert [6] * 6 == [u.conversations for u in users]
        assert 12 == len(sessions)
        assert [3] * 12 == [s.turns for s in sessions]
        assert [("ben", FAILED_TURN)] == [(c.user_id, c.error) for c in failed]
        assert (5, 1) == (
            sum(s.rating_up for s in sessions),
            sum(s.rating_down for s in sessions),
        )
        assert {"demo-support-1"} == {c.model for c in conversations if not c.error}
        # Nothing went to the (unreachable) Context endpoint's outbox.
        assert {"pending": 0, "leased": 0, "dropped": 0, "failed": 0} == outbox

    def test_transcripts_are_not_repeated(self, demo: DemoRun) -> None:
        """Each session's transcript holds every message once, history included."""
        with SQLiteReader(demo.path) as reader:
            sessions = reader.sessions(limit=1000)
            transcripts = [reader.session_messages(s.session_id) for s in sessions]

        for messages in transcripts:
            assert 1 == sum(m.role == "system" for m in messages)
            assert 3 == sum(m.role == "user" for m in messages)


class TestOtherRuns:
    def test_quiet_runs_add_up(self, tmp_path: Path) -> None:
        """--quiet prints one line; a second run adds new sessions to the store."""
        path = tmp_path / "small.db"
        args = ("--db", str(path), "-q", "--users", "2", "--sessions-per-user", "1")

        first = run_demo_cli(*args, "--turns", "2", env=_env(COLUMNS="120"))
        second = run_demo_cli(*args, "--turns", "2", env=_env(COLUMNS="120"))

        for result in (first, second):
            assert (0, "") == (result.returncode, result.stderr)
            assert re.fullmatch(
                r"Demo done in \d+\.\d s: 2 users, 2 sessions, 4 conversations "
                r"\(1 failed\), 2 ratings\.\n",
                result.stdout,
            )
        with SQLiteReader(path) as reader:
            users = reader.users()
            sessions = reader.sessions()
            errors = [c.error for c in reader.conversations() if c.error]
        assert [("ava", 4), ("ben", 4)] == sorted(
            (u.user_id, u.conversations) for u in users
        )
        assert 4 == len(sessions)
        assert [FAILED_TURN] * 2 == errors

    def test_in_process_reports_progress(self, tmp_path: Path) -> None:
        """run_demo calls progress once per turn, in order, and returns the plan."""
        calls: list[tuple[int, int]] = []

        result = _demo.run_demo(
            tmp_path / "p.db",
            users=3,
            sessions_per_user=2,
            turns=2,
            progress=lambda done, total: calls.append((done, total)),
        )

        assert [(n, 12) for n in range(1, 13)] == calls
        assert (["ava", "ben", "chloe"], 12, 1, "ben") == (
            result.users,
            result.conversations,
            result.errors,
            result.error_user,
        )
        assert 6 == len({session for _, session in result.sessions})
        assert result.showcase_session == result.sessions[0][1]

    @pytest.mark.parametrize(
        ("args", "problem"),
        [
            (["--users", "0"], "argument --users: expected a number of at least 1"),
            (["--turns", "x"], "argument --turns: expected a whole number"),
        ],
    )
    def test_bad_sizes_are_usage_errors(
        self, args: list[str], problem: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Sizes must be whole numbers of at least 1 (exit status 2)."""
        code = cli.main(["demo", *args])

        assert 2 == code
        assert problem in capsys.readouterr().err.splitlines()[-1]

    def test_unusable_store(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A database that is not a context_trace store: one line, exit 1."""
        path = tmp_path / "garbage.db"
        path.write_bytes(b"definitely not sqlite" * 100)

        code = cli.main(["demo", "--db", str(path), "--quiet"])

        captured = capsys.readouterr()
        assert (1, "") == (code, captured.out)
        assert (
            f"context-trace: error: cannot use SQLite store at {path}: file is not a "
            "database\n"
        ) == captured.err

    def test_cli_defaults_match_the_demo(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The CLI's documented defaults are run_demo's defaults."""
        assert 0 == cli.main(["demo", "--help"])

        text = " ".join(capsys.readouterr().out.split())
        assert f"simulated users (default {_demo.DEFAULT_USERS})" in text
        assert f"sessions per user (default {_demo.DEFAULT_SESSIONS_PER_USER})" in text
        assert f"questions per session (default {_demo.DEFAULT_TURNS})" in text


class TestApp:
    @pytest.fixture
    def client(self) -> Any:
        return _demo.build_app().test_client()

    def test_chat_answers_with_user_and_session(self, client: Any) -> None:
        """POST /chat answers and echoes the user and session from the headers."""
        response = client.post(
            "/chat",
            json={"message": "Is there a phone number I can call?"},
            headers={"X-User-Id": "zoe", "X-Session-Id": "s-1"},
        )

        assert 200 == response.status_code
        assert {"user": "zoe", "session": "s-1"} == {
            k: response.json[k] for k in ("user", "session")
        }
        assert response.json["answer"].startswith("Our phone line is open")

    @pytest.mark.parametrize("body", [{}, {"message": ""}, {"message": 3}, None])
    def test_chat_rejects_a_missing_message(self, client: Any, body: Any) -> None:
        """A body without a non-empty message string is a 400."""
        response = client.post("/chat", json=body)

        assert (400, {"error": "message must be a non-empty string"}) == (
            response.status_code,
            response.json,
        )

    def test_feedback_needs_a_session(self, client: Any) -> None:
        """Rating without X-Session-Id is a 400; a bad rating too."""
        no_session = client.post("/feedback", json={"rating": 1})
        bad_rating = client.post(
            "/feedback", json={"rating": 5}, headers={"X-Session-Id": "s-1"}
        )

        assert [400, 400] == [no_session.status_code, bad_rating.status_code]
        assert "rating must be -1, 0 or 1, got 5" == bad_rating.json["error"]


class TestModel:
    def test_answers_are_deterministic_with_usage(self) -> None:
        """The same question gets the same answer, with token usage reported."""
        model = _demo.DemoChatModel(latency=False)

        first = model.invoke("How do I return a pair of shoes?")
        second = model.invoke("How do I return a pair of shoes?")

        assert first.content == second.content
        assert str(first.content).startswith("Start a return from your order page")
        assert first.usage_metadata is not None
        assert (13, 13 + first.usage_metadata["output_tokens"]) == (
            first.usage_metadata["input_tokens"],
            first.usage_metadata["total_tokens"],
        )

    def test_order_answer_matches_the_tool(self) -> None:
        """The chain's answer about an order states what lookup_order returns."""
        chain = _demo.build_chain(_demo.DemoChatModel(latency=False))

        answer = chain.invoke({"history": [], "message": "Where is my order #4037?"})
        tool = json.loads(_demo._LOOKUP_ORDER.invoke({"order_id": "4037"}))

        assert {
            "order": "4037",
            "status": "out for delivery",
            "eta": "2 business days",
        } == tool
        assert (
            "Order #4037 is out for delivery and should arrive in 2 business days."
            == answer
        )

    def test_the_reserved_order_times_out(self) -> None:
        """The demo's failing turn: lookup_order raises for the reserved order."""
        chain = _demo.build_chain(_demo.DemoChatModel(latency=False))

        with pytest.raises(TimeoutError, match="order service did not answer"):
            chain.invoke({"history": [], "message": _demo._ERROR_TURN_TEXT})
