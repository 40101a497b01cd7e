"""
The scripts in ``examples/`` run as written and record what they say they do.

Each example runs with this interpreter from the repository root, with no
Context token or API key and ``CONTEXT_TRACE_DB`` pointing into a temporary
directory; the test checks its output and then the store it wrote.
``examples/test_with_context_trace.py`` is run through pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from context_trace._store.reader import SQLiteReader

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def _env(db: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONTEXT_", "GETCONTEXT_", "OPENAI_"))
    }
    env.update(
        CONTEXT_TRACE_DB=str(db), COLUMNS="80", TZ="UTC", PYTHONIOENCODING="utf-8"
    )
    return env


def run(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=REPO,
        env=_env(db),
        timeout=120,
        check=False,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "examples.db"


class TestQuickstart:
    def test_records_both_users(self, db: Path) -> None:
        """The decorator and the context manager attribute each turn to its user."""
        result = run("examples/quickstart.py", db=db)

        assert (0, "") == (result.returncode, result.stderr)
        assert [
            "alice asked, got: LangChain is a framework for building apps on top of "
            "language models.",
            "inside the block, current_user() is 'bob'",
            "bob asked, got:   A retriever fetches the documents most relevant to a "
            "question.",
            "bob asked, got:   Yes: streaming works the same way, chunk by chunk.",
            "outside, current_user() is None",
            "",
            f"Recorded in {db}:",
        ] == result.stdout.splitlines()[:7]
        with SQLiteReader(db) as reader:
            users = {u.user_id: u.conversations for u in reader.users()}
            plans = [c.metadata.get("plan") for c in reader.conversations()]
        assert {"alice": 1, "bob": 2} == users
        assert [None, "pro", "pro"] == plans
        assert ["bob", "alice"] == [
            line.split()[0] for line in result.stdout.splitlines()[8:]
        ]


class TestSessionChatbot:
    def test_one_session_with_every_message_once(self, db: Path) -> None:
        """Three turns in one rated session; the stored transcript has no repeats."""
        result = run("examples/session_chatbot.py", db=db)

        with SQLiteReader(db) as reader:
            [session] = reader.sessions()
            transcript = reader.session_messages(session.session_id)
        assert (0, "") == (result.returncode, result.stderr)
        assert (
            f"session {session.session_id}: 3 turns, rated [1]"
            in result.stdout.splitlines()
        )
        assert ("alice", 3, 1, 0) == (
            session.user_id,
            session.turns,
            session.rating_up,
            session.rating_down,
        )
        assert [
            ("system", "You are a friendly travel assistant."),
            ("user", "Hi! I'd like to plan a weekend in Lisbon."),
            (
                "assistant",
                "Great choice! Lisbon is lovely in spring. How do you like to travel?",
            ),
            ("user", "What should I see on the first day?"),
            (
                "assistant",
                "Start in Alfama: the castle in the morning, then tram 28 to Baixa.",
            ),
            ("user", "And where can I eat well in the evening?"),
            ("assistant", "Try a tasca in Bairro Alto, and book ahead on Saturdays."),
        ] == [(m.role, m.content) for m in transcript]
        assert "user alice · 3 turns · rated +1/-0" in result.stdout.splitlines()


class TestThreadsAndAsync:
    def test_each_turn_is_attributed_to_its_user(self, db: Path) -> None:
        """propagate, the context pool and asyncio tasks keep the right user."""
        result = run("examples/threads_and_async.py", db=db)

        lines = result.stdout.splitlines()
        with SQLiteReader(db) as reader:
            users = {u.user_id: u.conversations for u in reader.users()}
            conversations = list(reader.conversations())
        assert (0, "") == (result.returncode, result.stderr)
        assert {"alice": 1, "bob": 3, "carol": 2, "dave": 1, "erin": 1} == users
        assert 8 == len(conversations)
        assert [] == [c for c in conversations if c.user_id is None]
        assert 1 == sum("user='alice': alice's question" in line for line in lines)
        assert 3 == sum("user='bob': bob's question" in line for line in lines)
        assert 1 == sum("user=None: this turn has no user" in line for line in lines)
        assert 2 == sum(
            "[task carol] user='carol': carol's async question" in line
            for line in lines
        )
        for conversation in conversations:
            question = conversation.messages[0].content
            assert question.startswith(f"{conversation.user_id}'s ")


class TestUserTestFile:
    def test_passes_under_pytest(self, db: Path) -> None:
        """The example test file passes when a user runs it with pytest."""
        result = run(
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "examples/test_with_context_trace.py",
            db=db,
        )

        assert 0 == result.returncode, result.stdout + result.stderr
        assert "4 passed" in result.stdout.splitlines()[-1]
        assert not db.exists()  # the fixture records in memory only
