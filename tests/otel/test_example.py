"""``examples/otel_export.py`` runs as written against a real OTLP receiver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .receiver import OTLPReceiver

REPO = Path(__file__).resolve().parents[2]


def test_example_sends_the_agent_trace(receiver: OTLPReceiver, tmp_path: Path) -> None:
    """The example's turn arrives inside the request's trace, user and session on every span."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONTEXT_", "GETCONTEXT_", "OTEL_"))
    }
    env.update(
        CONTEXT_TRACE_DB=str(tmp_path / "example.db"),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url.removesuffix("/v1/traces"),
        OTEL_SERVICE_NAME="travel-bot",
        PYTHONPATH=str(REPO),
    )
    result = subprocess.run(
        [sys.executable, "examples/otel_export.py"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    spans = receiver.accepted()
    lines = result.stdout.splitlines()
    trace_id = lines[2].rsplit(" ", 1)[1]

    assert (0, "") == (result.returncode, result.stderr)
    assert [
        "alice: Weather in Lisbon?",
        "bot:   It is sunny in Lisbon.",
    ] == lines[:2]
    assert [
        "LangGraph",
        "chat WeatherModel",
        "execute_tool get_weather",
        "chat WeatherModel",
        "evaluate user_rating",
    ] == [
        s.name
        for s in sorted(spans, key=lambda s: (s.start_ns, s.parent_id is not None))
    ]
    assert {trace_id} == {s.trace_id for s in spans}
    assert {("alice", "trip-lisbon", "travel-bot")} == {
        (
            s.attributes["user.id"],
            s.attributes["session.id"],
            s.resource["service.name"],
        )
        for s in spans
    }
