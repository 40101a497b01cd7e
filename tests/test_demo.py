"""
``context-trace demo``: a real Flask app, real HTTP clients, the real store.

The default run happens once per module in a subprocess, with a home directory
of its own, a Context token and an app's store in ``CONTEXT_TRACE_DB`` (which
the demo must both ignore); the tests then check what it printed, exactly what
it stored, and that every command it suggests works.
"""

from __future__ import annotations

import configparser
import csv
import datetime
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from context_trace import _demo, _demo_app, _satisfaction, cli
from context_trace._record import Conversation, Message
from context_trace._store.reader import SQLiteReader
from tests.stores import write_records

from .exporters.context_server import free_port

REPO = Path(__file__).resolve().parent.parent
USERS = ["ava", "ben", "chloe", "dev", "emma", "farid"]
FAILED_TURN = "TimeoutError: order service did not answer within 2.0 s"
# Where the console scripts of this environment are (the first README command
# puts `context-trace` there).
BIN = Path(sys.executable).parent


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
    home: Path
    app_store: Path
    app_store_digest: str
    result: subprocess.CompletedProcess[str]

    @property
    def path(self) -> Path:
        return self.home / ".context_trace" / "demo.db"

    @property
    def lines(self) -> list[str]:
        return self.result.stdout.splitlines()


def _app_store(path: Path) -> str:
    """An app's store with one turn of its own, written by the real writer; its digest."""
    turn = Conversation(
        id="app-turn-1",
        user_id="alice",
        session_id="app-session",
        started_at=1_765_000_000.0,
        ended_at=1_765_000_001.0,
        messages=(Message("user", "hi"), Message("assistant", "hello")),
        metadata={},
    )
    write_records(path, [turn])
    return _digest(path)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    for suffix in ("", "-wal"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            digest.update(part.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The default demo (6 users x 4 sessions x 3 turns), run once, with no --db."""
    home = tmp_path_factory.mktemp("home")
    app_store = tmp_path_factory.mktemp("app") / "traces.db"
    digest = _app_store(app_store)
    env = _env(
        HOME=str(home),
        CONTEXT_TRACE_DB=str(app_store),
        CONTEXT_TOKEN="test-token-123",
        CONTEXT_ENDPOINT=f"http://127.0.0.1:{free_port()}",
    )
    return DemoRun(home, app_store, digest, run_demo_cli(env=env))


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


def _cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    """Run ``context-trace ARGS --json`` in process; its JSON output."""
    capsys.readouterr()
    code = cli.main([*args, "--json"])
    captured = capsys.readouterr()
    assert (0, "") == (code, captured.err)
    return json.loads(captured.out)


class TestDefaultRun:
    def test_succeeds_quietly_on_stderr(self, demo: DemoRun) -> None:
        """Exit 0; no progress bar (stderr is not a terminal) and no warnings."""
        assert (0, "") == (demo.result.returncode, demo.result.stderr)

    def test_says_where_it_writes(self, demo: DemoRun) -> None:
        """The output names the demo's own store and what it leaves alone."""
        text = " ".join(demo.result.stdout.split())

        assert (
            "Everything goes to the demo's own store ~/.context_trace/demo.db, "
            "replacing the last demo's; your store (CONTEXT_TRACE_DB, "
            "~/.context_trace/traces.db) and CONTEXT_TOKEN are left alone." in text
        )
        assert re.search(
            r"Demo done in \d+\.\d s: 6 users, 24 sessions, 72 conversations "
            r"\(1 failed\), 12 ratings\.",
            text,
        )

    def test_prints_the_users_report(self, demo: DemoRun) -> None:
        """The users table: 12 turns in 4 sessions each; ben's turn failed, farid 👎."""
        expected = {user: ("12", "4", "2", "0", "0") for user in USERS}
        expected["ben"] = ("12", "4", "1", "1", "1")
        expected["farid"] = ("12", "4", "1", "1", "0")

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
        """The output ends with commands to try, each pointed at the demo's store."""
        assert [
            "Try next, on the demo's store:",
            "  context-trace sessions --user ben --db ~/.context_trace/demo.db",
            "  context-trace stats --db ~/.context_trace/demo.db",
            "  context-trace export --format csv -o demo.csv --db "
            "~/.context_trace/demo.db",
            "  context-trace ui --db ~/.context_trace/demo.db  # the dashboard",
        ] == demo.lines[-5:]

    def test_leaves_the_apps_store_alone(self, demo: DemoRun) -> None:
        """CONTEXT_TRACE_DB's store is unchanged; only the demo's store is written."""
        written = sorted(p.name for p in (demo.home / ".context_trace").iterdir())

        assert demo.app_store_digest == _digest(demo.app_store)
        # (A reader, the demo's own report, may leave -wal and -shm files.)
        assert ["demo.db"] == [n for n in written if not n.endswith(("-wal", "-shm"))]
        assert [".context_trace"] == [p.name for p in demo.home.iterdir()]

    def test_suggested_commands_work(self, demo: DemoRun, tmp_path: Path) -> None:
        """Each "Try next" command, run by a shell as printed, reads the demo's data."""
        commands = demo.lines[-4:]
        env = _env(HOME=str(demo.home), PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")

        def shell(command: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                command, shell=True, capture_output=True, text=True, cwd=tmp_path,
                env=env, timeout=120, check=False,
            )  # fmt: skip

        sessions, stats, export = (shell(c) for c in commands[:3])

        assert [(0, ""), (0, ""), (0, "exported 72 conversations to demo.csv\n")] == [
            (r.returncode, r.stderr) for r in (sessions, stats, export)
        ]
        assert 4 == sum(
            line.split()[1] == "ben" for line in sessions.stdout.splitlines()[1:]
        )
        # A row per day the demo's calendar has turns on, then the total.
        days = stats.stdout.splitlines()[1:]
        assert ["total", "72"] == days[-1].split()[:2]
        assert 72 == sum(int(line.split()[1]) for line in days[:-1])
        with (tmp_path / "demo.csv").open(newline="", encoding="utf-8") as f:
            assert 72 == len(list(csv.DictReader(f)))
        # The dashboard serves until Ctrl-C: run it on a free port, read one page.
        ui = subprocess.Popen(
            f"exec {commands[3]} --port {free_port()}".replace("  # the dashboard", ""),
            shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        try:
            assert ui.stdout is not None
            line = ui.stdout.readline()
            url = line[line.index("http://") :].split()[0].rstrip("/")
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url + "/api/users", timeout=60) as response:
                users = json.load(response)["items"]
        finally:
            ui.send_signal(signal.SIGINT)
            ui.communicate(timeout=30)
        assert sorted(USERS) == sorted(u["user_id"] for u in users)

    def test_no_path_hint_when_context_trace_is_on_path(self, demo: DemoRun) -> None:
        """Run where PATH finds context-trace, the demo suggests no activation."""
        assert not any("activate" in line for line in demo.lines)

    def test_readme_cli_examples_work_on_the_demo(self, demo: DemoRun) -> None:
        """The README's CLI examples, on the demo's store, find the users they name."""
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        block = re.search(
            r"The `context-trace` command reads it.*?```\n(.*?)```", readme, re.DOTALL
        )
        assert block is not None
        commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
        with SQLiteReader(demo.path) as reader:
            ben = [s.session_id for s in reader.sessions() if s.user_id == "ben"]
            # The README exports the turns since a fixed day: the demo's calendar
            # ends today.
            since = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
            recent = sum(
                c.started_at >= since.timestamp() for c in reader.conversations()
            )
        # replay asks for the token its comment names (nothing is sent: the
        # demo's outbox is empty, and the endpoint is a closed loopback port).
        token = {
            "CONTEXT_TOKEN": "test-token-123",
            "CONTEXT_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        }
        runs = {}
        for command in commands:
            args = shlex.split(command.replace("SESSION_OR_ID", ben[0]))
            if args[1] == "demo":
                continue  # the fixture's own run
            env = _env(HOME=str(demo.home), **(token if args[1] == "replay" else {}))
            runs[args[1]] = subprocess.run(
                [sys.executable, "-m", "context_trace", *args[1:], "--db", str(demo.path)],
                capture_output=True, text=True, encoding="utf-8", env=env,
                timeout=120, check=False,
            )  # fmt: skip

        assert {name: (0, "") for name in runs} == {
            name: (r.returncode, r.stderr) for name, r in runs.items()
        }
        assert sorted(ben) == sorted(
            line.split()[0] for line in runs["sessions"].stdout.splitlines()[1:]
        )
        assert runs["show"].stdout.splitlines()[1].startswith("user ben · 3 turns · ")
        assert "--since 2026-11-01" in readme
        assert recent == len(runs["export"].stdout.splitlines())

    def test_fits_80_columns(self, demo: DemoRun) -> None:
        """Every line of the output, the suggested commands too, fits 80 columns."""
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
        assert 72 == len(conversations)
        assert [12] * 6 == [u.conversations for u in users]
        assert 24 == len(sessions)
        assert [3] * 24 == [s.turns for s in sessions]
        assert [("ben", FAILED_TURN)] == [(c.user_id, c.error) for c in failed]
        # ben's failed session and farid's unhappy one are rated -1.
        assert (10, 2) == (
            sum(s.rating_up for s in sessions),
            sum(s.rating_down for s in sessions),
        )
        assert {"gpt-4o-mini", "gpt-4o", "acme-support-8b"} == {
            c.model for c in conversations if not c.error
        }
        # Nothing went to the (unreachable) Context endpoint's outbox.
        assert {"pending": 0, "leased": 0, "dropped": 0, "failed": 0} == outbox

    def test_has_unhappy_users_with_visible_reasons(self, demo: DemoRun) -> None:
        """farid, dev and ben are unhappy: a rephrase, frustration, a non-answer, a failure."""
        report = _satisfaction.analyze(demo.path, now=time.time())
        unhappy = {u["key"]: u for u in report.unhappy()}

        assert ["farid", "dev", "ben"] == list(unhappy)
        assert {"rephrase", "negative", "no_answer", "rating_down"} <= set(
            unhappy["farid"]["signals"]
        )
        assert {"rephrase", "negative", "not_helped", "no_answer"} <= set(
            unhappy["dev"]["signals"]
        )
        assert {"error", "rating_down"} <= set(unhappy["ben"]["signals"])
        reasons = [r for e in unhappy["dev"]["evidence"] for r in e["reasons"]]
        assert any(r.startswith("rephrases the previous question") for r in reasons)
        # The other users' turns went well: no flagged turn.
        assert all(not t.flagged for t in report.turns if t.user_id not in unhappy)

    def test_has_several_clear_topics(self, demo: DemoRun, tmp_path: Path) -> None:
        """The questions fall into several topics, most of them in a topic (not misc)."""
        from context_trace.analytics.topic_index import TopicIndex

        with TopicIndex(demo.path, tmp_path / "demo.topics") as index:
            index.build()
            rows = index.summary()
        misc = sum(r.share for r in rows if r.id == "misc")
        assert len([r for r in rows if r.id != "misc"]) >= 5
        assert misc < 0.3

    def test_transcripts_are_not_repeated(self, demo: DemoRun) -> None:
        """Each session's transcript holds every message once, history included."""
        with SQLiteReader(demo.path) as reader:
            sessions = reader.sessions(limit=1000)
            transcripts = [reader.session_messages(s.session_id) for s in sessions]

        for messages in transcripts:
            assert 1 == sum(m.role == "system" for m in messages)
            assert 3 == sum(m.role == "user" for m in messages)

    def test_spans_several_weeks(
        self, demo: DemoRun, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The users are active in six or more of the last eight ISO weeks."""
        report = _cli_json(capsys, "retention", "--weeks", "8", "--db", str(demo.path))

        active = [w["period"] for w in report["weekly"] if w["active"]]
        assert len(active) >= 6, active

    def test_two_cohorts_retain_differently(
        self, demo: DemoRun, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Two signup cohorts: the early one comes back in week 1 more than the later
        one, whose users who left are listed as churned."""
        report = _cli_json(capsys, "retention", "--weeks", "8", "--db", str(demo.path))

        cohorts = [
            (c["week"], c["retained"][:1]) for c in report["cohorts"] if c["users"]
        ]
        assert 2 == len(cohorts), cohorts
        (early, early_w1), (later, later_w1) = cohorts
        assert early < later
        assert early_w1[0] > later_w1[0]
        assert report["churned_total"] >= 1

    def test_variants_differ_in_cost_and_ratings(
        self, demo: DemoRun, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Variants A and B (metadata set by the app's scope) differ in cost per
        conversation (cost report) and in the share of helpful ratings."""
        per_turn = {}
        for variant in "AB":
            total = _cli_json(
                capsys, "cost", "--meta", f"variant:{variant}", "--db", str(demo.path)
            )["total"]
            per_turn[variant] = total["cost"] / total["turns"]
        compare = _cli_json(
            capsys, "compare", "--segment-a", "variant=A", "--segment-b",
            "variant=B", "--db", str(demo.path),
        )  # fmt: skip

        assert 0 < per_turn["A"] < per_turn["B"]
        helpful = [compare[s]["rating_up_share"] for s in "ab"]
        assert all(h["count"] > 0 for h in helpful)
        assert helpful[0]["value"] < helpful[1]["value"]

    def test_counts_an_unpriced_model(
        self, demo: DemoRun, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Variant A's and B's models are priced; the self-hosted one is counted
        as unpriced."""
        report = _cli_json(capsys, "cost", "--by", "model", "--db", str(demo.path))

        rows = {r["key"]: (r["calls"], r["unpriced_calls"]) for r in report["rows"]}
        assert {"gpt-4o-mini", "gpt-4o", "acme-support-8b"} == set(rows)
        assert 0 == rows["gpt-4o-mini"][1] == rows["gpt-4o"][1]
        assert rows["acme-support-8b"][0] == rows["acme-support-8b"][1] > 0
        assert rows["acme-support-8b"][1] == report["total"]["unpriced_calls"]
        assert report["total"]["cache_read_tokens"] > 0


class TestOtherRuns:
    def test_a_rerun_replaces_the_demo(self, tmp_path: Path) -> None:
        """--quiet prints one line naming the store; a rerun replaces the demo's data."""
        path = tmp_path / "small.db"
        args = ("--db", str(path), "-q", "--users", "2", "--sessions-per-user", "1")

        first = run_demo_cli(*args, "--turns", "2", env=_env(COLUMNS="200"))
        with SQLiteReader(path) as reader:
            first_sessions = {s.session_id for s in reader.sessions()}
        second = run_demo_cli(*args, "--turns", "2", env=_env(COLUMNS="200"))

        for result in (first, second):
            assert (0, "") == (result.returncode, result.stderr)
            assert re.fullmatch(
                r"Demo done in \d+\.\d s: 2 users, 2 sessions, 4 conversations "
                rf"\(1 failed\), 2 ratings, in {re.escape(str(path))}\.\n",
                result.stdout,
            )
        with SQLiteReader(path) as reader:
            users = reader.users()
            sessions = {s.session_id for s in reader.sessions()}
            errors = [c.error for c in reader.conversations() if c.error]
        assert [("ava", 2), ("ben", 2)] == sorted(
            (u.user_id, u.conversations) for u in users
        )
        assert 2 == len(sessions)
        assert set() == sessions & first_sessions
        assert [FAILED_TURN] == errors
        assert ["small.db"] == [
            p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))
        ]

    def test_refuses_a_store_with_other_turns(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--db naming an app's store: one line, exit 1, the store untouched."""
        path = tmp_path / "traces.db"
        digest = _app_store(path)

        code = cli.main(["demo", "--db", str(path), "--quiet"])

        captured = capsys.readouterr()
        assert (1, "") == (code, captured.out)
        assert (
            f"context-trace: error: {path} holds conversations the demo did not "
            "record; the demo replaces its store, so it leaves this one alone: "
            "choose another file\n"
        ) == captured.err
        assert digest == _digest(path)

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
            f"context-trace: error: {path} is not a context_trace database (file is "
            "not a database; the file is corrupt or not SQLite)\n"
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


class TestFirstCommand:
    def test_installs_what_the_demo_and_dashboard_need(self) -> None:
        """The README's first command installs Flask (the demo) and waitress (the ui)."""
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        first = re.search(r"```bash\n(.*?)\n```", readme, re.DOTALL)
        assert first is not None
        extras = re.search(r'pip install -e "\.\[([\w,]+)\]"', first.group(1))
        assert extras is not None
        setup = configparser.ConfigParser()
        setup.read(REPO / "setup.cfg", encoding="utf-8")
        installed = {
            re.split(r"[<>=!~\[ ;]", requirement.strip())[0].lower()
            for extra in extras.group(1).split(",")
            for requirement in setup["options.extras_require"][extra].splitlines()
            if requirement.strip()
        }

        assert first.group(1).endswith(" && .venv/bin/context-trace demo")
        assert {"flask", "waitress"} <= installed


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
        tool = json.loads(_demo_app._LOOKUP_ORDER.invoke({"order_id": "4037"}))

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
            chain.invoke({"history": [], "message": _demo_app._ERROR_TURN_TEXT})


class TestInactiveVirtualenv:
    def test_says_how_to_put_the_commands_on_path(self, tmp_path: Path) -> None:
        """Started as .venv/bin/context-trace from a virtualenv that is not
        active, the demo first suggests activating it, and the suggested
        commands then work as printed."""
        script = BIN / "context-trace"
        if not script.is_file():
            pytest.fail(f"no console script at {script}: install the package first")
        env = _env(HOME=str(tmp_path), PATH=os.defpath)
        env.pop("VIRTUAL_ENV", None)
        cwd = BIN.parent.parent  # the virtualenv's parent, as in the README
        result = subprocess.run(
            [str(script.relative_to(cwd)), "demo", "--users", "1",
             "--sessions-per-user", "1"],
            capture_output=True, text=True, encoding="utf-8", cwd=cwd, env=env,
            timeout=120, check=False,
        )  # fmt: skip
        assert (0, "") == (result.returncode, result.stderr.split("\r")[-1].strip())
        lines = result.stdout.splitlines()
        hint = lines[lines.index("Try next, on the demo's store:") + 1].strip()
        activate = BIN.relative_to(cwd) / "activate"

        assert f"source {activate}  # puts context-trace on your PATH" == hint
        stats = subprocess.run(
            f"{hint.split('#')[0]} && {lines[-3].strip()}", shell=True,
            executable="/bin/bash", capture_output=True, text=True, cwd=cwd,
            env=env, timeout=120, check=False,
        )  # fmt: skip
        assert (0, "") == (stats.returncode, stats.stderr)
        assert stats.stdout.splitlines()[1].split()[0][:4].isdigit()
