"""
Write ``store_0_2.sqlite``, the 0.2 store file the compatibility tests read.

The committed file was written by context_trace 0.2.0 (commit f60b6c5, the
code just before the typed record), with that release on the path::

    git archive f60b6c5 context_trace | tar -x -C /tmp/ct02
    PYTHONPATH=/tmp/ct02 python tests/exporters/data/write_store_0_2.py OUT

In 0.2 the measurements travelled in ``Conversation.metadata`` as strings, mixed
with the app's own keys, and outbox payloads were record format 1. The file
holds a session of two turns (one with two model calls and a failed tool), a
failed turn without a session, an abandoned stream, a rating, and a turn (with
spans and a trace) and a rating left in the outbox.
"""

from __future__ import annotations

import sys

from context_trace._exporters.sqlite import SQLiteExporter
from context_trace._record import Conversation, Feedback, Message, Span

T0 = 1_700_000_000.0

FIRST = Conversation(
    id="a" * 32,
    user_id="alice",
    session_id="s1",
    started_at=T0,
    ended_at=T0 + 1.5,
    messages=(Message("user", "hi"), Message("assistant", "hello")),
    metadata={
        "plan": "pro",
        "run_name": "RunnableSequence",
        "model": "fake-model",
        "latency_ms": "1500",
        "prompt_tokens": "7",
        "completion_tokens": "5",
        "total_tokens": "12",
        "tags": "beta,search",
    },
)
SECOND = Conversation(
    id="b" * 32,
    user_id="alice",
    session_id="s1",
    started_at=T0 + 10,
    ended_at=T0 + 11,
    messages=(
        Message("user", "weather?"),
        Message("tool", "no city", name="weather", tool_input="{}", error=True),
        Message("assistant", "sunny"),
    ),
    metadata={
        "plan": "pro",
        "model": "fake-model",
        "latency_ms": "1000",
        "prompt_tokens": "20",
        "completion_tokens": "4",
        "total_tokens": "24",
        "model_calls": '[{"model":"router","prompt_tokens":8,"completion_tokens":1,'
        '"total_tokens":9},{"model":"fake-model","prompt_tokens":12,'
        '"completion_tokens":3,"total_tokens":15}]',
        "failed_tools": "weather",
        "model_input": "Context: it is sunny\n\nweather?",
    },
)
LONE = Conversation(
    id="c" * 32,
    user_id="bob",
    session_id=None,
    started_at=T0 + 86_400,
    ended_at=T0 + 86_400.25,
    messages=(Message("user", "ping"),),
    metadata={
        "model": "fake-model",
        "latency_ms": "250",
        "error_type": "TimeoutError",
        "error": "slow",
    },
    error="TimeoutError: slow",
)
ABANDONED = Conversation(
    id="d" * 32,
    user_id="bob",
    session_id="s3",
    started_at=T0 + 90_000,
    ended_at=T0 + 90_001,
    messages=(Message("user", "tell me"), Message("assistant", "Once")),
    metadata={"model": "fake-model", "latency_ms": "1000", "stream_abandoned": "true"},
)
RATING = Feedback(
    id="f1",
    session_id="s1",
    user_id="alice",
    rating=1,
    conversation_id="b" * 32,
    created_at=T0 + 12,
)
QUEUED = (
    Conversation(
        id="e" * 32,
        user_id="bob",
        session_id="s2",
        started_at=T0 + 100,
        ended_at=T0 + 101,
        messages=(Message("user", "queued"), Message("assistant", "later")),
        metadata={
            "tenant": "acme",
            "run_name": "agent",
            "model": "fake-model",
            "latency_ms": "1000",
            "prompt_tokens": "3",
            "completion_tokens": "2",
            "total_tokens": "5",
            "tags": "queued",
        },
        spans=(
            Span(
                "1" * 16,
                None,
                "chat",
                "fake-model",
                T0 + 100.1,
                T0 + 100.9,
                request_model="fake-model",
                input_tokens=3,
                output_tokens=2,
                finish_reasons=("stop",),
            ),
        ),
        trace_id="f" * 32,
        parent_span_id="2" * 16,
    ),
    Feedback(
        id="q2",
        session_id="s2",
        user_id="bob",
        rating=-1,
        conversation_id="e" * 32,
        created_at=T0 + 102,
        trace_id="f" * 32,
    ),
)


def main(path: str) -> None:
    """Write the records into a new store at *path*."""
    store = SQLiteExporter(path)
    result = store.export([FIRST, SECOND, LONE, ABANDONED, RATING])
    if result.failed:
        raise SystemExit(f"export failed: {result}")
    store.outbox_put(QUEUED, ("context", "otlp"))
    store.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
