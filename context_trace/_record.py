"""
The records context_trace produces: plain frozen dataclasses, no I/O.

A :class:`Conversation` is one *turn*: everything that happened under one root
LangChain run (the input messages of its first model call, the tool calls and the
final answer). Turns that share a ``session_id`` form one conversation thread.
A :class:`Feedback` is a rating a user gave to a session (``Session.rate``).

Exporters receive sequences of :data:`Record`.

This module also owns the *names* of what the package measures (:data:`MEASURED_KEYS`)
when a destination wants them as flat ``str -> str`` metadata (the Context API, the
store's metadata column, records of format 1): :func:`measured_metadata` renders a
record's typed fields under those names, :func:`exported_metadata` adds the app's
own metadata over them, and :func:`app_metadata` is the app's metadata without the
copies of a measurement a record built by hand may carry. No exporter keeps a list
of its own.

The parts a :class:`Conversation` is made of (:class:`Message`, :class:`Span`,
:class:`Usage`, :class:`ModelCall`) are in ``_record_parts``, importable from here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, Union

from ._record_parts import (
    ROLES,
    Message,
    ModelCall,
    Role,
    Span,
    Usage,
    _quick_init,
    new_id,
)

__all__ = [
    "COLUMN_KEYS",
    "MEASURED_KEYS",
    "ROLES",
    "TURN_KEYS",
    "Conversation",
    "Feedback",
    "Message",
    "ModelCall",
    "Record",
    "Role",
    "SeenSet",
    "Span",
    "Usage",
    "app_metadata",
    "exported_metadata",
    "measured_metadata",
    "message_key",
    "new_id",
    "remember",
    "strip_seen",
]


@_quick_init
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
        metadata: The app's own ``str -> str`` metadata (the scope's, and the
            root run's), as the app gave it: context_trace never writes into it.
            A key that is also one of :data:`MEASURED_KEYS` keeps the app's value
            (the converter logs the clash once); the measurement is in its field.
        error: ``"ExcType: message"`` when the turn failed, else None.
        spans: The turn's model calls and tool runs with their times and
            parents, recorded only while OTLP export is on (else empty).
        trace_id: The trace (32 hex) of the OpenTelemetry span that was current
            when the turn started, if any; the turn's root span is then a
            child of *parent_span_id* in it.
        parent_span_id: That span's id (16 hex).
        model: The model of the call that answered, as its response names it
            (else as it was called), or None.
        usage: The turn's token usage summed over its model calls, or None when
            no call reported any.
        tags: The root run's tags, in order, without repeats.
        run_name: The root run's name (the chain's, the graph's, or the
            ``run_name`` of its config).
        model_calls: Each model call's model and usage, in start order, when the
            turn made more than one call (else empty: ``model`` and ``usage``
            describe the one call).
        stream_abandoned: True when the turn was a stream its consumer stopped
            reading (the answer is then what it had received).
        model_input: What the answering model was given when it differs from
            the user's words (retrieved context, a prompt template), else None.

    A record built by hand with none of the typed measurements set, whose
    ``metadata`` holds them under :data:`MEASURED_KEYS` (as 0.2 wrote them), has
    them read into the fields; ``metadata`` is kept as given.

    .. versionchanged:: 0.3.0 The measurements are typed fields; ``metadata`` is
       the app's own.
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
    model: str | None = None
    usage: Usage | None = None
    tags: tuple[str, ...] = ()
    run_name: str | None = None
    model_calls: tuple[ModelCall, ...] = ()
    stream_abandoned: bool = False
    model_input: str | None = None

    def __post_init__(self) -> None:
        if (
            self.metadata
            and self.run_name is None
            and self.model is None
            and self.usage is None
            and not self.tags
            and not self.model_calls
            and not self.stream_abandoned
            and self.model_input is None
            and not self.metadata.keys().isdisjoint(_LIFTED)
        ):
            for name, value in measurements_from_metadata(self.metadata).items():
                object.__setattr__(self, name, value)

    @property
    def error_type(self) -> str | None:
        """The exception type of a failed turn (``error`` up to ``": "``), or None."""
        if self.error is None:
            return None
        head, sep, _ = self.error.partition(": ")
        return head if sep else None

    @property
    def error_message(self) -> str | None:
        """The message of a failed turn's exception (``error`` after ``": "``), or None."""
        if self.error is None:
            return None
        _, sep, text = self.error.partition(": ")
        return text if sep else self.error

    @property
    def failed_tools(self) -> tuple[str, ...]:
        """The names of the turn's tools that failed, in order."""
        return tuple(
            [m.name or "" for m in self.messages if m.error and m.role == "tool"]
        )

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


# The names of the measurements in flat ``str -> str`` metadata, in the order
# the converter of 0.2 wrote them.
MEASURED_KEYS: tuple[str, ...] = (
    "run_name",
    "model",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "model_calls",
    "tags",
    "failed_tools",
    "stream_abandoned",
    "error_type",
    "error",
    "model_input",
)
# The measurements that change from one turn of a session to the next (the
# Context API sends them with the turn's last message, not the thread's).
TURN_KEYS: tuple[str, ...] = (
    "model",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "tags",
    "error_type",
    "error",
)
# The measurements the store and the CLI's export keep in columns of their own.
COLUMN_KEYS: tuple[str, ...] = (
    "latency_ms",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
)
# The flat names of the usage counts, by Usage field. The cache and reasoning
# counts are written too (the store's cost figures price them); each is part
# of the input or output count, not in addition to it.
_USAGE_KEYS = (
    ("input_tokens", "prompt_tokens"),
    ("output_tokens", "completion_tokens"),
    ("total_tokens", "total_tokens"),
    ("cache_read_tokens", "cache_read_tokens"),
    ("cache_write_tokens", "cache_write_tokens"),
    ("reasoning_tokens", "reasoning_tokens"),
)
# Derived from the record's times, error and messages: never read back.
_DERIVED = frozenset({"latency_ms", "error_type", "error", "failed_tools"})
_LIFTED = frozenset(MEASURED_KEYS) - _DERIVED
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _usage_items(usage: Usage) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, key in _USAGE_KEYS:
        value = getattr(usage, name)
        if value is not None:
            out[key] = value
    return out


def measured_metadata(record: Conversation, *, derived: bool = True) -> dict[str, str]:
    """
    *record*'s measurements as flat ``str -> str`` metadata under :data:`MEASURED_KEYS`.

    Only what the record holds is written. With *derived* (the default), also
    ``latency_ms`` (from its times) and ``error_type``/``error`` (from ``error``),
    which the store keeps in columns of their own.
    """
    out: dict[str, str] = {}
    if record.run_name is not None:
        out["run_name"] = record.run_name
    if record.model is not None:
        out["model"] = record.model
    if derived:
        out["latency_ms"] = str(record.latency_ms)
    if record.usage is not None:
        for key, count in _usage_items(record.usage).items():
            out[key] = str(count)
    if record.model_calls:
        out["model_calls"] = _JSON.encode(
            [
                {
                    "model": call.model,
                    **(_usage_items(call.usage) if call.usage is not None else {}),
                }
                for call in record.model_calls
            ]
        )
    if record.tags:
        out["tags"] = ",".join(record.tags)
    failed = record.failed_tools
    if failed:
        out["failed_tools"] = ",".join(failed)
    if record.stream_abandoned:
        out["stream_abandoned"] = "true"
    if derived and record.error is not None:
        error_type, _, error = record.error.partition(": ")
        out["error_type"] = error_type
        out["error"] = error or record.error
    if record.model_input is not None:
        out["model_input"] = record.model_input
    return out


def exported_metadata(record: Conversation, *, derived: bool = True) -> dict[str, str]:
    """
    The flat metadata a destination of ``str -> str`` metadata gets: the
    measurements (:func:`measured_metadata`), then the app's own metadata,
    whose value wins on a clash.
    """
    out = measured_metadata(record, derived=derived)
    if record.metadata:
        out.update(record.metadata)
    return out


def app_metadata(record: Conversation) -> dict[str, str]:
    """
    The app's own metadata without the copies of a measurement (a key of
    :data:`MEASURED_KEYS` whose value is the record's own), which a record
    built by hand, or read from format 1, carries. A clashing key whose value
    differs is the app's, and kept.
    """
    metadata = record.metadata
    if not metadata or metadata.keys().isdisjoint(MEASURED_KEYS):
        return dict(metadata)
    ours = measured_metadata(record)
    return {k: v for k, v in metadata.items() if ours.get(k, _MISSING) != v}


_MISSING = object()


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _usage_from(values: Mapping[str, object]) -> Usage | None:
    counts = {name: _int_or_none(values.get(key)) for name, key in _USAGE_KEYS}
    if all(count is None for count in counts.values()):
        return None
    return Usage(**counts)


def measurements_from_metadata(metadata: Mapping[str, str]) -> dict[str, object]:
    """
    The typed measurements that flat metadata (as 0.2 wrote it) holds, by field
    name; a value that does not parse is left out. The inverse of
    :func:`measured_metadata` for records of format 1 and records built by hand.
    """
    out: dict[str, object] = {}
    model = metadata.get("model")
    if model:
        out["model"] = model
    usage = _usage_from(metadata)
    if usage is not None:
        out["usage"] = usage
    tags = metadata.get("tags")
    if tags:
        out["tags"] = tuple(tags.split(","))
    run_name = metadata.get("run_name")
    if run_name:
        out["run_name"] = run_name
    calls = metadata.get("model_calls")
    if calls:
        try:
            rows = json.loads(calls)
            out["model_calls"] = tuple(
                ModelCall(
                    row["model"] if isinstance(row.get("model"), str) else None,
                    _usage_from(row),
                )
                for row in rows
            )
        except (ValueError, TypeError, AttributeError):
            pass
    if metadata.get("stream_abandoned") == "true":
        out["stream_abandoned"] = True
    model_input = metadata.get("model_input")
    if model_input is not None:
        out["model_input"] = model_input
    return out


def _as_metadata(values: Mapping[str, object] | None) -> dict[str, str]:
    """Context's schema is ``str -> str``: stringify keys and values."""
    if not values:
        return {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in values.items()}
