"""
What each record becomes in a Context API request (``context_api`` sends it).

Records go through ``getcontext.ContextAPI``'s generated models, so the wire
format is the client's own. What each record becomes:

=====================================  ==========================================================
context_trace record                   Context API request
=====================================  ==========================================================
``Conversation``, ``session_id=None``  ``POST /api/v1/log/conversation`` (``log.conversation``):
                                       ``{"conversation": {"messages": [...], "metadata": {...}}}``
                                       with the turn's messages and *all* metadata below.
``Conversation`` with a session        ``POST /api/v1/log/conversation/thread``
                                       (``log.conversation_thread``): ``{"conversation": {"id":
                                       <session_id>, "messages": [<this turn's messages>],
                                       "metadata": {<session metadata>}}}``. Context appends the
                                       messages to the thread with that id (created on first use).
``Feedback``                           ``PATCH /api/v1/log/conversation/thread/<session_id>``
                                       (``log.update_conversation_thread``): a ``[ThreadMessage]``
                                       array aligned with the thread's messages, ``{}`` for each
                                       message before the last assistant message and
                                       ``{"rating": -1|0|1}`` for it.
=====================================  ==========================================================

Messages (Context's ``Message`` model):

==================  ==============================================================================
context_trace       Context
==================  ==============================================================================
``system``          ``{"role": "system", "message": content}``
``user``            ``{"role": "user", "message": content}``
``assistant``       ``{"role": "assistant", "message": content}``
``tool``            ``{"role": "assistant", "message": "[tool NAME] INPUT → OUTPUT",
                    "metadata": {"tool": NAME}}`` (``[tool NAME] → OUTPUT`` without input).
                    Context's roles are only system/user/assistant, and its separate tool
                    message type is deprecated, so tool calls are sent as assistant text.
every message       ``"type": "message"``; ``event_timestamp``: the turn's start for system and
                    user messages, its end for assistant and tool messages (UTC, ISO 8601).
==================  ==============================================================================

Metadata (Context's schema is ``str -> str``; every value is sent as a string):

* ``user_id`` (when known) and ``session_id`` (for session turns);
* the turn's own keys: ``turn_id`` (the record id), ``model``, ``latency_ms``,
  ``prompt_tokens``/``completion_tokens``/``total_tokens``, ``tags``,
  ``error_type``/``error`` (from the record when its metadata lacks them);
* every other key of ``Conversation.metadata`` (the scope's metadata).
  ``user_id``/``session_id`` from the record win over same-named metadata keys.

For a plain turn all of it goes in ``conversation.metadata``. A thread is told to
carry the *same* metadata on every request (Context's thread documentation), so for
a session turn ``conversation.metadata`` holds only ``user_id``, ``session_id`` and
the scope's keys, and the per-turn keys (``turn_id`` ... ``error``) go in the
``metadata`` of the turn's last message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from getcontext.generated import models as _models

from context_trace._record import (
    TURN_KEYS,
    Conversation,
    exported_metadata,
)

# Keys that change from turn to turn (see the module docstring): the record's
# id and the measurements named so in the record module.
_TURN_KEYS = ("turn_id", *TURN_KEYS)

_ROLES = {
    "system": _models.MessageParamsRole.SYSTEM,
    "user": _models.MessageParamsRole.USER,
    "assistant": _models.MessageParamsRole.ASSISTANT,
    "tool": _models.MessageParamsRole.ASSISTANT,
}
_LOG_BODY = (
    _models.PathsLi5TynApiV1LogConversationPostRequestbodyContentApplicationJsonSchema
)
_THREAD_BODY = _models.Paths1S2Rf6XApiV1LogConversationThreadPostRequestbodyContentApplicationJsonSchema


def _messages(record: Conversation) -> list[Any]:
    started = datetime.fromtimestamp(record.started_at, tz=timezone.utc)
    ended = datetime.fromtimestamp(record.ended_at, tz=timezone.utc)
    # Up to the turn's last user message (a session-less turn's history, then
    # the question) the messages were there when it started; the rest (tools,
    # the answer) came by its end.
    asked = max(
        (i for i, m in enumerate(record.messages) if m.role == "user"), default=-1
    )
    out: list[Any] = []
    for index, message in enumerate(record.messages):
        when = started if index <= asked or message.role == "system" else ended
        if message.role == "tool":
            name = message.name or "tool"
            text = (
                f"[tool {name}] {message.tool_input} → {message.content}"
                if message.tool_input
                else f"[tool {name}] → {message.content}"
            )
            out.append(
                _models.Message(
                    role=_ROLES["tool"],
                    message=text,
                    event_timestamp=when,
                    metadata={"tool": name},
                )
            )
        else:
            out.append(
                _models.Message(
                    role=_ROLES[message.role],
                    message=message.content,
                    event_timestamp=when,
                )
            )
    return out


def _metadata(record: Conversation) -> dict[str, str]:
    """The record's measurements and the app's metadata, plus user, session and turn id."""
    metadata = {str(k): str(v) for k, v in exported_metadata(record).items()}
    metadata["turn_id"] = record.id
    if record.user_id is not None:
        metadata["user_id"] = record.user_id
    if record.session_id is not None:
        metadata["session_id"] = record.session_id
    return metadata


def _merge(
    first: Mapping[str, str] | None, second: Mapping[str, str] | None
) -> dict[str, str] | None:
    merged = {**(first or {}), **(second or {})}
    return merged or None
