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

from collections.abc import Callable
from typing import Any

from ._record import Span, Usage
from ._turn import ModelRun, Turn

__all__ = ["build_spans", "span_id"]

_MASK64 = (1 << 64) - 1

# The converter's model-name and usage rules, passed in (it imports this module).
ModelName = Callable[[Any, Any], "str | None"]
UsageOf = Callable[[Any], "Usage | None"]


def span_id(key: int) -> str:
    """The span id (16 hex digits) of the run whose ``run_id.int`` is *key*."""
    return f"{(key & _MASK64) or 1:016x}"


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return str(error)


def _response_model(result: Any) -> str | None:
    """The model a response names (``response_metadata``, ``llm_output``)."""
    if result is None:
        return None
    for gens in result.generations or ():
        for gen in gens:
            meta = getattr(getattr(gen, "message", None), "response_metadata", None)
            for key in ("model_name", "model"):
                value = (meta or {}).get(key)
                if isinstance(value, str) and value:
                    return value
    output = result.llm_output or {}
    value = output.get("model_name") or output.get("model")
    return value if isinstance(value, str) and value else None


def _finish_reasons(result: Any) -> tuple[str, ...]:
    if result is None:
        return ()
    reasons: list[str] = []
    for gens in result.generations or ():
        for gen in gens:
            info = getattr(gen, "generation_info", None) or {}
            meta = getattr(getattr(gen, "message", None), "response_metadata", None)
            for source in (info, meta or {}):
                value = source.get("finish_reason") or source.get("stop_reason")
                if isinstance(value, str) and value:
                    reasons.append(value)
                    break
    return tuple(reasons)


def build_spans(turn: Turn, model_name: ModelName, usage: UsageOf) -> tuple[Span, ...]:
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
            request = model_name(step, None) or "unknown"
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
                    response_model=_response_model(result),
                    provider=provider if isinstance(provider, str) else None,
                    input_tokens=None if counts is None else counts.input_tokens,
                    output_tokens=None if counts is None else counts.output_tokens,
                    finish_reasons=_finish_reasons(result),
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
