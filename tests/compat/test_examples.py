"""The compatibility examples run as written and record what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from context_trace._store.reader import SQLiteReader

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(name: str, db: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTEXT_")}
    env["CONTEXT_TRACE_DB"] = str(db)
    return subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _blocks(stdout: str) -> dict[str, list[str]]:
    """``user=...`` / ``session ...`` headings mapped to the lines below them."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith(("user=", "session ")):
            current = blocks.setdefault(line, [])
        elif current is not None and line.strip():
            current.append(line.strip())
    return blocks


class TestMigrateExample:
    def test_runs_and_records_every_user(self, tmp_path: Path) -> None:
        """The migration example exits 0 and records one turn per user, each its own."""
        db = tmp_path / "migrate.db"

        result = _run("migrate_from_community_handler.py", db)

        assert (0, "") == (result.returncode, result.stderr)
        assert f"Recorded 6 conversations in {db}" == result.stdout.splitlines()[0]
        assert {
            "user=123": [
                "system: You are a helpful assistant.",
                "user: I'd like to know the weather.",
                "assistant: I'd like to know the weather.",
            ],
            "user=456": [
                "system: You are a helpful assistant.",
                "user: What can you do?",
                "assistant: What can you do?",
            ],
            **{
                f"user={name}": [
                    "system: You are a helpful assistant.",
                    f"user: Hello from user {name}",
                    f"assistant: Hello from user {name}",
                ]
                for name in ("alice", "bob", "carol")
            },
            "user=789": [
                "system: You are a helpful assistant.",
                "user: And without passing callbacks?",
                "assistant: And without passing callbacks?",
            ],
        } == _blocks(result.stdout)
        with SQLiteReader(db) as reader:
            stored = sorted(str(c.user_id) for c in reader.conversations())
        assert ["123", "456", "789", "alice", "bob", "carol"] == stored


class TestLangGraphExample:
    def test_runs_and_prints_each_session_once(self, tmp_path: Path) -> None:
        """The agent example exits 0; each thread's transcript has no repeated turn."""
        db = tmp_path / "agent.db"

        result = _run("langgraph_agent.py", db)

        assert (0, "") == (result.returncode, result.stderr)
        assert [
            "agent: It is sunny in Paris.",
            "agent: It is sunny in Tokyo.",
            "agent: It is sunny in Rome.",
        ] == result.stdout.splitlines()[:3]
        assert {
            "session thread-alice (user=alice)": [
                "user: What's the weather in Paris?",
                'tool: get_weather({"city":"Paris"}) sunny in Paris',
                "assistant: It is sunny in Paris.",
                "user: And in Rome?",
                'tool: get_weather({"city":"Rome"}) sunny in Rome',
                "assistant: It is sunny in Rome.",
            ],
            "session thread-bob (user=bob)": [
                "user: What's the weather in Tokyo?",
                'tool: get_weather({"city":"Tokyo"}) sunny in Tokyo',
                "assistant: It is sunny in Tokyo.",
            ],
        } == _blocks(result.stdout)
