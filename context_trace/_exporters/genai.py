"""
Records to GenAI spans: the mapping, with no OpenTelemetry import.

:func:`record_spans` turns one :class:`~context_trace._record.Conversation`
(a turn) into its trace: a root span, a ``chat {model}`` span per model call and
an ``execute_tool {name}`` span per tool run, with the runs' own times and
parents, and the turn's user, session and scope metadata on *every* span. A
:class:`~context_trace._record.Feedback` (``Session.rate``) becomes one
zero-length span in the rated turn's trace, carrying a
``gen_ai.evaluation.result`` event. ``otlp.py`` writes these out, as OTLP
protobuf or through the app's tracer provider; the attribute names are in
``semconv.py``. Runs on the export worker only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Union

from context_trace._record import (
    Conversation,
    Feedback,
    Message,
    Record,
    Span,
    app_metadata,
)

from . import semconv as sc

__all__ = ["AttributeValue", "SpanData", "record_spans"]

AttributeValue = Union[str, bool, int, float, Sequence[str]]

_MASK64 = (1 << 64) - 1
_RATING_LABELS = {1: "good", 0: "neutral", -1: "bad"}
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class SpanData:
    """One span, ready to write: ids as ints, times in epoch nanoseconds."""

    __slots__ = (
        "attributes",
        "client",
        "end_ns",
        "error",
        "events",
        "name",
        "parent_id",
        "shared",
        "span_id",
        "start_ns",
        "trace_id",
    )

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent_id: int | None,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, AttributeValue],
        shared: dict[str, AttributeValue],
        *,
        client: bool = False,
    ) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.start_ns = start_ns
        self.end_ns = end_ns
        #: the span's own attributes
        self.attributes = attributes
        #: the attributes every span of the record carries (one dict, shared)
        self.shared = shared
        self.client = client  # SpanKind.CLIENT (a model call), else INTERNAL
        #: (error.type, description) when the span failed
        self.error: tuple[str, str] | None = None
        #: (name, epoch ns, attributes)
        self.events: list[tuple[str, int, dict[str, AttributeValue]]] = []

    def __repr__(self) -> str:
        return f"<SpanData {self.name!r} {self.span_id:016x}>"

    def all_attributes(self) -> dict[str, AttributeValue]:
        """The shared attributes, then the span's own."""
        return {**self.shared, **self.attributes}


def _hex64(text: str | None) -> int | None:
    """A 16-hex-digit span id, or None (also for anything else)."""
    if text is None or len(text) != 16:
        return None
    try:
        return int(text, 16) or None
    except ValueError:
        return None


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _split_error(text: str) -> tuple[str, str]:
    """``"ExcType: message"`` -> ``("ExcType", "message")``."""
    kind, sep, message = text.partition(": ")
    if not sep or not kind.isidentifier():
        return ("Error", text)
    return (kind, message)


def _fail(span: SpanData, text: str, at_ns: int) -> None:
    kind, message = _split_error(text)
    span.error = (kind, message)
    span.attributes[sc.ERROR_TYPE] = kind
    span.events.append(
        (
            sc.EXCEPTION_EVENT,
            at_ns,
            {sc.EXCEPTION_TYPE: kind, sc.EXCEPTION_MESSAGE: message},
        )
    )


def _attribution(
    user_id: str | None, session_id: str | None, metadata: Mapping[str, str]
) -> dict[str, AttributeValue]:
    """What every span of a turn carries: user, session, the app's metadata."""
    common: dict[str, AttributeValue] = dict(metadata)
    if user_id is not None:
        common[sc.USER_ID] = user_id
    if session_id is not None:
        common[sc.SESSION_ID] = session_id
        common[sc.GEN_AI_CONVERSATION_ID] = session_id
    return common


def _parts(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "content": text}]


def _child_span(
    span: Span, trace_id: int, root_id: int, common: dict[str, AttributeValue]
) -> SpanData:
    attributes: dict[str, AttributeValue] = {}
    if span.kind == "chat":
        attributes[sc.GEN_AI_OPERATION_NAME] = "chat"
        attributes[sc.OI_SPAN_KIND] = "LLM"
        if span.request_model is not None:
            attributes[sc.GEN_AI_REQUEST_MODEL] = span.request_model
        if span.response_model is not None:
            attributes[sc.GEN_AI_RESPONSE_MODEL] = span.response_model
        if span.provider is not None:
            attributes[sc.GEN_AI_PROVIDER_NAME] = span.provider
        if span.input_tokens is not None:
            attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] = span.input_tokens
        if span.output_tokens is not None:
            attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = span.output_tokens
        if span.finish_reasons:
            attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] = list(span.finish_reasons)
        name = f"chat {span.name}"
    else:
        attributes[sc.GEN_AI_OPERATION_NAME] = "execute_tool"
        attributes[sc.OI_SPAN_KIND] = "TOOL"
        attributes[sc.GEN_AI_TOOL_NAME] = span.name
        if span.tool_call_id is not None:
            attributes[sc.GEN_AI_TOOL_CALL_ID] = span.tool_call_id
        name = f"execute_tool {span.name}"
    data = SpanData(
        name,
        trace_id,
        _hex64(span.id) or id128(span.id) & _MASK64 or 1,
        _hex64(span.parent_id) or root_id,
        _ns(span.started_at),
        _ns(span.ended_at),
        attributes,
        common,
        client=span.kind == "chat",
    )
    if span.error is not None:
        _fail(data, span.error, data.end_ns)
    return data


def id128(text: str) -> int:
    """
    A record id as a 128-bit trace id: the id itself when it is 32 hex digits
    (a run id, ``new_id()``), else a digest of it (a record made by hand).
    """
    if len(text) == 32:
        try:
            return int(text, 16) or 1
        except ValueError:
            pass
    digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16)
    return int.from_bytes(digest.digest(), "big") or 1


def root_span_id(conversation_id: str) -> int:
    """The root span id of a turn: the low 64 bits of its id (the run id)."""
    return (id128(conversation_id) & _MASK64) or 1


def _turn_inputs(messages: Sequence[Message]) -> tuple[list[Message], list[str]]:
    """
    What the turn's model was given, and the user's own words this turn.

    The inputs are the system, user and assistant messages up to the turn's
    last run of user messages (a turn with no session keeps the history its
    prompt re-sent before it); the words are that run's texts.
    """
    end = start = None
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            if end is None:
                end = index + 1
            start = index
        elif start is not None:
            break
    if start is None or end is None:
        return [m for m in messages if m.role == "system"], []
    inputs = [m for m in messages[:end] if m.role != "tool"]
    return inputs, [m.content for m in messages[start:end]]


def _conversation_spans(record: Conversation, capture_content: bool) -> list[SpanData]:
    trace_id = id128(record.trace_id) if record.trace_id else id128(record.id)
    parent = _hex64(record.parent_span_id)
    root_id = root_span_id(record.id)
    metadata = app_metadata(record)
    common = _attribution(record.user_id, record.session_id, metadata)
    attributes: dict[str, AttributeValue] = {sc.OI_SPAN_KIND: "CHAIN"}
    if metadata:
        attributes[sc.OI_METADATA] = _JSON.encode(metadata)
    tools = [m for m in record.messages if m.role == "tool"]
    if capture_content:
        inputs, users = _turn_inputs(record.messages)
        answer = record.answer
        attributes[sc.GEN_AI_INPUT_MESSAGES] = _JSON.encode(
            [{"role": m.role, "parts": _parts(m.content)} for m in inputs]
        )
        attributes[sc.OI_INPUT_VALUE] = "\n\n".join(users)
        attributes[sc.OI_INPUT_MIME_TYPE] = "text/plain"
        if answer is not None:
            attributes[sc.GEN_AI_OUTPUT_MESSAGES] = _JSON.encode(
                [{"role": "assistant", "parts": _parts(answer)}]
            )
            attributes[sc.OI_OUTPUT_VALUE] = answer
            attributes[sc.OI_OUTPUT_MIME_TYPE] = "text/plain"
    root = SpanData(
        record.run_name or "turn",
        trace_id,
        root_id,
        parent,
        _ns(record.started_at),
        _ns(record.ended_at),
        attributes,
        common,
    )
    if record.error is not None:
        _fail(root, record.error, root.end_ns)
    out = [root]
    tool_index = 0
    for span in record.spans:
        child = _child_span(span, trace_id, root_id, common)
        if span.kind == "tool":
            # Tool messages are recorded in start order, as tool spans are.
            if capture_content and tool_index < len(tools):
                message = tools[tool_index]
                if message.tool_input is not None:
                    child.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = message.tool_input
                child.attributes[sc.GEN_AI_TOOL_CALL_RESULT] = message.content
            tool_index += 1
        out.append(child)
    return out


def _feedback_span(record: Feedback) -> SpanData:
    if record.conversation_id:
        trace_id = id128(record.trace_id or record.conversation_id)
        parent: int | None = root_span_id(record.conversation_id)
    else:  # the rated turn is not known here: a trace of its own
        trace_id = id128(record.id)
        parent = None
    shared = _attribution(record.user_id, record.session_id, {})
    evaluation: dict[str, AttributeValue] = {
        sc.EVALUATION_NAME: "user_rating",
        sc.EVALUATION_SCORE_VALUE: float(record.rating),
        sc.EVALUATION_SCORE_LABEL: _RATING_LABELS.get(
            record.rating, str(record.rating)
        ),
    }
    attributes = dict(evaluation)
    attributes[sc.OI_SPAN_KIND] = "EVALUATOR"
    at = _ns(record.created_at)
    span = SpanData(
        "evaluate user_rating",
        trace_id,
        root_span_id(record.id),
        parent,
        at,
        at,
        attributes,
        shared,
    )
    span.events.append((sc.EVALUATION_EVENT, at, dict(evaluation)))
    return span


def record_spans(record: Record, capture_content: bool = True) -> list[SpanData]:
    """
    The spans of one record, root (or the rating's span) first.

    Args:
        record: A turn or a rating.
        capture_content: Put the transcript (input, answer, tool arguments and
            results) on the spans; the turn's structure, models, usage and
            attribution are always there.
    """
    if isinstance(record, Conversation):
        return _conversation_spans(record, capture_content)
    return [_feedback_span(record)]


def new_random_id() -> int:
    """A random non-zero 64-bit id."""
    return int.from_bytes(os.urandom(8), "big") or 1
