"""
The records context_trace produces: plain frozen dataclasses, no I/O.

A :class:`Conversation` is one *turn*: everything that happened under one root
LangChain run (the input messages of its first model call, the tool calls and the
final answer). Turns that share a ``session_id`` form one conversation thread.
A :class:`Feedback` is a rating a user gave to a session (``Session.rate``).

Exporters receive sequences of :data:`Record`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, Union

__all__ = [
    "ROLES",
    "Conversation",
    "Feedback",
    "Message",
    "Record",
    "Role",
    "SeenSet",
    "Span",
    "message_key",
    "new_id",
    "remember",
    "strip_seen",
]

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")


def new_id() -> str:
    """A fresh random id: 32 lowercase hex characters."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Message:
    """
    One message of a transcript.

    ``role`` is ``system``, ``user``, ``assistant`` or ``tool``. For a tool message
    ``name`` is the tool's name, ``tool_input`` what it was called with (text or
    compact JSON) and ``content`` what it returned; ``error`` is True when the
    tool failed (``content`` is then the error).
    """

    role: Role
    content: str
    name: str | None = None
    tool_input: str | None = None
    error: bool = False


class Span(NamedTuple):
    """
    One model call or tool run of a turn, as the OTLP exporter needs it.

    Recorded only while OTLP export is on. The exporter builds a GenAI span
    from it on the export worker; nothing here depends on OpenTelemetry. A
    named tuple rather than a frozen dataclass: the outbox decodes every span
    it delivers, and a tuple is built in one step (``Span._make(row)``).

    Attributes:
        id: The span id, 16 hex digits (from the run id).
        parent_id: The enclosing span's id; None when it is the turn's root span.
        kind: ``"chat"`` (a chat model or LLM call) or ``"tool"``.
        name: The model (as requested) or the tool's name.
        started_at: Epoch seconds when the run started.
        ended_at: Epoch seconds when it ended (its start when it never ended).
        request_model: The model the call asked for.
        response_model: The model the response names, when it names one.
        provider: The provider LangChain reports (``ls_provider``), if any.
        input_tokens: Prompt tokens, when the model reports usage.
        output_tokens: Completion tokens, when reported.
        finish_reasons: Why each generation stopped, when reported.
        tool_call_id: The model's id for this tool call, if any.
        error: ``"ExcType: message"`` when the run failed.
    """

    id: str
    parent_id: str | None
    kind: Literal["chat", "tool"]
    name: str
    started_at: float
    ended_at: float
    request_model: str | None = None
    response_model: str | None = None
    provider: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reasons: tuple[str, ...] = ()
    tool_call_id: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    """
    One recorded turn (one root LangChain run).

    Attributes:
        id: The turn's id (the root run id, hex).
        user_id: Who talked, or None when no user was known.
        session_id: The conversation thread the turn belongs to, or None.
        started_at: Epoch seconds when the root run started.
        ended_at: Epoch seconds when it ended.
        messages: The turn's messages in order. Inside a session, messages already
            recorded earlier in the same session (history the prompt re-sends) are
            left out, so concatenating a session's turns gives its transcript. A
            turn with no session keeps the history its input re-sent, before the
            user's words.
        metadata: ``str -> str`` details: ``model``, ``latency_ms``,
            ``prompt_tokens``/``completion_tokens``/``total_tokens`` when the model
            reports usage, ``tags``, ``error_type``/``error`` for a failed turn, and
            the scope's own metadata.
        error: ``"ExcType: message"`` when the turn failed, else None.
        spans: The turn's model calls and tool runs with their times and
            parents, recorded only while OTLP export is on (else empty).
        trace_id: The trace (32 hex) of the OpenTelemetry span that was current
            when the turn started, if any; the turn's root span is then a
            child of *parent_span_id* in it.
        parent_span_id: That span's id (16 hex).
    """

    id: str
    user_id: str | None
    session_id: str | None
    started_at: float
    ended_at: float
    messages: tuple[Message, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    spans: tuple[Span, ...] = ()
    trace_id: str | None = None
    parent_span_id: str | None = None

    @property
    def latency_ms(self) -> int:
        """Wall-clock duration of the turn in whole milliseconds."""
        return round((self.ended_at - self.started_at) * 1000)

    @property
    def answer(self) -> str | None:
        """The text of the last assistant message, if any."""
        for message in reversed(self.messages):
            if message.role == "assistant":
                return message.content
        return None


@dataclass(frozen=True, slots=True)
class Feedback:
    """
    A rating (-1, 0 or +1) of one turn of a session (see ``Session.rate``).

    ``conversation_id`` is the rated turn: the one named to ``rate``, else the
    session's last answered turn when this process knows it, else None, and the
    local store resolves it where the rating is written (its last answered turn
    at ``created_at``). ``trace_id`` is that turn's trace when it ran inside an
    OpenTelemetry trace of the app's (else the trace is the turn's own, whose id
    is ``conversation_id``).
    """

    id: str
    session_id: str
    user_id: str | None
    rating: int
    conversation_id: str | None = None
    created_at: float = field(default_factory=time.time)
    trace_id: str | None = None


Record = Union[Conversation, Feedback]


def message_key(message: Message) -> tuple[str, str]:
    """The identity used to recognise history a prompt re-sends: (role, content)."""
    return (message.role, message.content)


class SeenSet(Container[tuple[str, str]], Protocol):
    """What :func:`strip_seen` and :func:`remember` need of a session's seen-set:
    a ``set`` of message keys, or the local store's compact fingerprints."""

    def update(self, keys: Iterable[tuple[str, str]], /) -> None: ...


def strip_seen(
    inputs: Iterable[Message], seen: Container[tuple[str, str]]
) -> tuple[Message, ...]:
    """
    Drop the leading *inputs* already in *seen* (history the prompt re-sends).

    A chat prompt re-sends the session's history (system prompt, earlier user and
    assistant messages) before the new user message. Skipping the leading run of
    known messages keeps what is new, also when a window-memory prompt re-sends
    only the last few turns. The last input message is always kept, so asking the
    same question twice is recorded twice. *seen* is not changed: call
    :func:`remember` with everything the turn recorded.
    """
    items = list(inputs)
    start = 0
    while start < len(items) - 1 and message_key(items[start]) in seen:
        start += 1
    return tuple(items[start:])


def remember(seen: SeenSet, messages: Iterable[Message]) -> None:
    """Add *messages* to a session's *seen* set (see :func:`strip_seen`)."""
    seen.update(message_key(m) for m in messages if m.role != "tool")


def _as_metadata(values: Mapping[str, object] | None) -> dict[str, str]:
    """Context's schema is ``str -> str``: stringify keys and values."""
    if not values:
        return {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in values.items()}
