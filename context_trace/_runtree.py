"""
A finished turn's run tree as span records: runs on the export worker.

The handler notes, while OTLP export is on, each run's parent, start and end
(``Turn.tree``); this module turns the model calls and tool runs among them
into :class:`~._record.Span` values with their real times. A span's parent is
its nearest ancestor that is a span too (a chain in between, such as a
LangGraph node, is not one), else the turn's root span. Nothing here touches
OpenTelemetry; ``_exporters/otlp.py`` maps the records to GenAI spans.
"""

from __future__ import annotations

from typing import Any

from ._measure import finish_reasons, requested_model, response_model, usage
from ._record import Span
from ._turn import ModelRun, Turn

__all__ = ["build_spans", "span_id"]

_MASK64 = (1 << 64) - 1


def span_id(key: int) -> str:
    """The span id (16 hex digits) of the run whose ``run_id.int`` is *key*."""
    return f"{(key & _MASK64) or 1:016x}"


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return str(error)


def build_spans(turn: Turn) -> tuple[Span, ...]:
    """
    The span records of *turn*'s model calls and tool runs, in start order.

    Empty when the turn recorded no tree (OTLP export off).
    """
    tree = turn.tree
    if tree is None:
        return ()
    root = turn.key
    results = turn.results or {}
    # The runs that become spans; a direct model call is the root's own child.
    spans: list[Span] = []
    span_keys: set[int] = set()
    steps = turn.steps or ()
    for step in steps:
        span_keys.add(step.key)

    def parent_of(key: int) -> str | None:
        node = tree.get(key)
        seen = 0
        while node is not None and seen < 10_000:  # a tree, but never loop forever
            parent = node.parent
            if parent == root:
                return None
            if parent in span_keys:
                return span_id(parent)
            node = tree.get(parent)
            seen += 1
        return None

    for step in steps:
        key = step.key
        node = tree.get(key)
        if key == root:  # a model invoked directly: a child of the turn's root
            started, ended, error, call_id = turn.started, turn.ended, turn.error, None
            sid = f"{((key >> 64) & _MASK64) or 1:016x}"
            parent = None
        elif node is not None:
            started, ended = node.started, node.ended
            error, call_id = node.error, node.tool_call_id
            sid = span_id(key)
            parent = parent_of(key)
        else:
            continue
        if not ended:  # never ended (an abandoned stream): ends with the turn
            ended = max(turn.ended, started)
        if isinstance(step, ModelRun):
            result = results.get(key)
            counts = usage(result)
            request = requested_model(step) or "unknown"
            metadata = step.metadata or {}
            provider = metadata.get("ls_provider")
            spans.append(
                Span(
                    id=sid,
                    parent_id=parent,
                    kind="chat",
                    name=request,
                    started_at=started,
                    ended_at=ended,
                    request_model=request,
                    response_model=response_model(result),
                    provider=provider if isinstance(provider, str) else None,
                    input_tokens=None if counts is None else counts.input_tokens,
                    output_tokens=None if counts is None else counts.output_tokens,
                    finish_reasons=finish_reasons(result),
                    error=_error_text(error),
                )
            )
        else:
            spans.append(
                Span(
                    id=sid,
                    parent_id=parent,
                    kind="tool",
                    name=str(step.name),
                    started_at=started,
                    ended_at=ended,
                    tool_call_id=call_id if isinstance(call_id, str) else None,
                    error=_error_text(step.output if step.is_error else error),
                )
            )
    return tuple(spans)
