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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Union

__all__ = [
    "ROLES",
    "Conversation",
    "Feedback",
    "Message",
    "Record",
    "Role",
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
            left out, so concatenating a session's turns gives its transcript.
        metadata: ``str -> str`` details: ``model``, ``latency_ms``,
            ``prompt_tokens``/``completion_tokens``/``total_tokens`` when the model
            reports usage, ``tags``, ``error_type``/``error`` for a failed turn, and
            the scope's own metadata.
        error: ``"ExcType: message"`` when the turn failed, else None.
    """

    id: str
    user_id: str | None
    session_id: str | None
    started_at: float
    ended_at: float
    messages: tuple[Message, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None

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
    A rating (-1, 0 or +1) given to a session's last assistant message.

    ``conversation_id`` is the id of the turn that produced that message when it is
    known in this process, else None.
    """

    id: str
    session_id: str
    user_id: str | None
    rating: int
    conversation_id: str | None = None
    created_at: float = field(default_factory=time.time)


Record = Union[Conversation, Feedback]


def message_key(message: Message) -> tuple[str, str]:
    """The identity used to recognise history a prompt re-sends: (role, content)."""
    return (message.role, message.content)


def strip_seen(
    inputs: Iterable[Message], seen: set[tuple[str, str]]
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


def remember(seen: set[tuple[str, str]], messages: Iterable[Message]) -> None:
    """Add *messages* to a session's *seen* set (see :func:`strip_seen`)."""
    seen.update(message_key(m) for m in messages if m.role != "tool")


def _as_metadata(values: Mapping[str, object] | None) -> dict[str, str]:
    """Context's schema is ``str -> str``: stringify keys and values."""
    if not values:
        return {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in values.items()}
