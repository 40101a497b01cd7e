"""
The converter's rules: each reads one thing of a finished turn.

``_convert.to_conversation`` runs them in order on the export thread. Each is
small and tested on its own, on hand-built turn parts
(``tests/core/test_convert_rules.py``): which steps are model calls
(:func:`model_calls`), whether the turn is an abandoned stream
(:func:`abandoned`), the user's words (:func:`user_input`), the final answer and
the call that gave it (:func:`final_answer`), whether a turn with no model call
is a conversation at all (:func:`answers_user`), attribution (:func:`attribution`)
and the system prompt, recorded when it changes (:func:`system_prompt`), both
from ``_attribution.py`` (with the per-session memory they need), the
history a turn with no session keeps (:func:`kept_history`), what the steps said
(:func:`step_messages`), the app's metadata (:func:`app_metadata`), model names
and usage (:func:`models_and_usage`), what the model saw (:func:`model_input`),
redaction (:func:`redacted`) and the trace the turn belongs to
(:func:`trace_ids`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.messages import BaseMessage, BaseMessageChunk

from ._attribution import (
    FRAMEWORK_SESSION_KEYS,
    attribution,
    header_ids,
    reset_header_sessions,
    system_prompt,
)
from ._log import log_once
from ._measure import add_usage, field, model_name, result_message, usage
from ._record import MEASURED_KEYS, Message, ModelCall, Usage
from ._text import (
    ROLES,
    answer_text,
    content_text,
    history,
    model_prompt,
    text_or_json,
    user_messages,
)
from ._turn import ModelResult, ModelRun, Received, ToolRun, Turn

if TYPE_CHECKING:
    from langchain_core.outputs import LLMResult

__all__ = [
    "abandoned",
    "answers_user",
    "app_metadata",
    "attribution",
    "error_text",
    "fallback_users",
    "final_answer",
    "header_ids",
    "kept_history",
    "model_calls",
    "model_input",
    "models_and_usage",
    "redacted",
    "reset_header_sessions",
    "step_messages",
    "system_prompt",
    "trace_ids",
    "user_input",
]

_logger = logging.getLogger(__name__)

Redactor = Callable[[str], str]

_INTERNAL_PREFIXES = ("ls_", "langgraph_", "checkpoint_", "__")
_RECORD_FIELDS = frozenset({"user_id"})


def _run_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """The root run's own metadata as ``str -> str`` (LangChain's keys left out)."""
    out: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if (
            key.startswith(_INTERNAL_PREFIXES)
            or key in FRAMEWORK_SESSION_KEYS
            or key in _RECORD_FIELDS
        ):
            continue
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = str(value)
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
    return out


def _log_clash(metadata: Mapping[str, str]) -> None:
    """Warn once per name that the app's metadata uses a measurement's name."""
    for key in MEASURED_KEYS:
        if key in metadata:
            log_once(
                _logger,
                f"metadata-clash:{key}",
                "context_trace: the app's metadata key %r is also the name of a"
                " measurement; the app's value is kept in Conversation.metadata and"
                " sent in its place, the measurement is in its own field",
                key,
            )


def abandoned(
    turn: Turn, calls: Sequence[ModelRun], results: Mapping[int, Any]
) -> bool:
    """
    Whether the turn is a stream its consumer stopped reading.

    An async stream closed early ends its root with ``GeneratorExit`` (or, under
    ``astream_events``, ``CancelledError`` after some tokens); a sync one ends it
    normally but before its model call has ended.
    """
    error = turn.error
    if error is not None:
        if isinstance(error, GeneratorExit):
            return True
        if isinstance(error, asyncio.CancelledError):
            return bool(turn.tokens)  # not a cancelled ainvoke that streamed nothing
        return False
    return any(c.key not in results for c in calls)


def answers_user(turn: Turn, users: Sequence[Message], answer: str | None) -> bool:
    """
    Whether a root with no model call answered the user (a guardrail's refusal).

    Its input must carry the user's text, and it must have returned other text
    or a message: a parser or a pass-through returns what it was given.
    """
    if not users or not answer or not isinstance(turn.output, (str, BaseMessage)):
        return False
    if (turn.name or "").endswith("Parser"):
        return False
    return answer != "\n\n".join(m.content for m in users)


def _token_text(token: Any) -> str:
    """A streamed token's text (a str, content blocks, or a generation chunk)."""
    message = field(token, "message")
    if isinstance(message, BaseMessage):
        return content_text(message.content)
    return content_text(token)


def _received_message(item: Any, shape: str) -> BaseMessage | None:
    """The AI message (or chunk) a LangGraph stream *item* carries, if any."""
    payload: Any = None
    if shape == "bare":
        payload = item
    elif shape == "v2":
        if isinstance(item, Mapping) and item.get("type") == "messages":
            payload = item.get("data")
    elif isinstance(item, tuple):
        if len(item) == 2 and (
            shape == "ns" or (shape == "mode" and item[0] == "messages")
        ):
            payload = item[1]
        elif shape == "ns_mode" and len(item) == 3 and item[1] == "messages":
            payload = item[2]
    # A messages payload is ``(message, metadata)``.
    if isinstance(payload, tuple) and len(payload) == 2:
        message = payload[0]
        if isinstance(message, BaseMessage) and ROLES.get(message.type) == "assistant":
            return message
    return None


def _received_answer(received: Received) -> tuple[Any, str]:
    """
    The id and text of the last AI message a stream handed its consumer.

    Its chunks' text joined (a whole message is its own text); ``(None, "")``
    when the consumer got no AI message.
    """
    texts: dict[Any, list[str]] = {}
    last: Any = None
    for item in received.items:
        message = _received_message(item, received.shape)
        if message is None:
            continue
        last = message.id
        text = content_text(message.content)
        if isinstance(message, BaseMessageChunk):
            texts.setdefault(last, []).append(text)
        else:
            texts[last] = [text]
    return last, "".join(texts.get(last, ()))


def _message_call(
    calls: Sequence[ModelRun],
    results: Mapping[int, LLMResult | ModelResult],
    message_id: Any,
) -> ModelRun | None:
    """The model call whose message has *message_id* (its result's, or its run's)."""
    if not isinstance(message_id, str) or not message_id:
        return None
    for call in reversed(calls):
        message = result_message(results.get(call.key))
        if message is not None and message.id == message_id:
            return call
        run = str(UUID(int=call.key))
        if message_id in (f"lc_run--{run}", f"run-{run}"):  # an unfinished call
            return call
    return None


def _answering_call(
    calls: Sequence[ModelRun],
    results: Mapping[int, LLMResult | ModelResult],
    answer: str,
) -> ModelRun | None:
    """The call that produced *answer*: the last one whose text is the answer."""
    last_ended: ModelRun | None = None
    for call in reversed(calls):
        result = results.get(call.key)
        if result is None and call.key not in results:
            continue
        if last_ended is None:
            last_ended = call
        message = result_message(result)
        text = answer_text(message) if message is not None else answer_text(result)
        if text == answer:
            return call
    if last_ended is not None:
        return last_ended
    return calls[-1] if calls else None


# ------------------------------------------------------------------ the rules
Results = Mapping[int, "LLMResult | ModelResult"]


def model_calls(turn: Turn) -> list[ModelRun]:
    """The turn's model calls in start order (its other steps are tool runs)."""
    return [s for s in turn.steps or () if isinstance(s, ModelRun)]


def user_input(turn: Turn, calls: Sequence[ModelRun]) -> tuple[Any, list[Message]]:
    """
    The root's inputs and the user's words read from them.

    The inputs are those at the root's end (a stream defers them), else at its
    start; a model invoked directly was asked its own input.
    """
    inputs = turn.end_inputs if turn.end_inputs is not None else turn.chain_inputs
    if turn.chain_inputs is None and calls:  # a model invoked directly
        inputs = calls[0].input
    return inputs, user_messages(inputs)


def final_answer(
    turn: Turn, calls: Sequence[ModelRun], results: Results, is_abandoned: bool
) -> tuple[str | None, ModelRun | None]:
    """
    The final answer and the model call that gave it.

    The answer follows the root's output; an empty one falls back to the
    answering call's own text (unless it asked for tools). An abandoned stream's
    answer is what its consumer received: a LangGraph messages stream's last AI
    message, else the streamed tokens of its last unfinished call (None when the
    turn failed, so no answer is recorded).
    """
    answer: str | None
    if is_abandoned:
        answer = None
    else:
        answer = answer_text(turn.output) if turn.output is not None else ""
    answering = _answering_call(calls, results, answer or "")
    if is_abandoned:
        open_calls = [c for c in calls if c.key not in results]
        answering = open_calls[-1] if open_calls else answering
        if turn.received is not None:
            # A LangGraph messages stream: what its consumer got, not what the
            # model generated (the stream runs the model's step to its end).
            message_id, answer = _received_answer(turn.received)
            answering = _message_call(calls, results, message_id) or answering
        else:
            key = answering.key if answering is not None else None
            answer = "".join(_token_text(t) for k, t in turn.tokens or () if k == key)
    elif not answer and answering is not None:
        message = result_message(results.get(answering.key))
        if message is not None and not field(message, "tool_calls"):
            answer = answer_text(message)
        elif message is None and answering.key in results:
            answer = answer_text(results[answering.key])
    return answer, answering


def fallback_users(
    users: list[Message], answering: ModelRun | None, inputs: Any
) -> list[Message]:
    """
    The user's words when the root's inputs named none.

    What the answering model was asked (its trailing human messages or its
    prompt), else the whole input as text.
    """
    if not users and answering is not None:
        users = model_prompt(answering.input)
    if not users and inputs is not None:
        users = [Message("user", text_or_json(inputs))]
    return users


def kept_history(
    inputs: Any,
    users: Sequence[Message],
    calls: Sequence[ModelRun],
    session_id: str | None,
) -> list[Message]:
    """What the input re-sent before the user's words, kept only with no session."""
    if session_id is not None:
        return []  # the session's earlier turns hold it
    return history(inputs, users, calls)


def step_messages(
    steps: Sequence[ModelRun | ToolRun],
    results: Results,
    answering: ModelRun | None,
) -> list[Message]:
    """
    What the turn's steps said, in order: each tool run, and the text a model
    call said beside its tool calls (the answering call's is the answer).
    """
    messages: list[Message] = []
    for step in steps:
        if isinstance(step, ModelRun):
            if step is answering:
                continue
            message = result_message(results.get(step.key))
            if message is not None and field(message, "tool_calls"):
                text = content_text(message.content)
                if text:  # what the assistant said beside its tool calls
                    messages.append(Message("assistant", text))
            continue
        messages.append(
            Message(
                "tool",
                text_or_json(step.output),
                name=str(step.name),
                tool_input=text_or_json(step.input),
                error=bool(step.is_error),
            )
        )
    return messages


def app_metadata(turn: Turn) -> dict[str, str]:
    """
    The app's own metadata: the root run's, then the scope's (which wins).

    A name that is also a measurement's is kept as the app's value and logged
    once.
    """
    metadata: dict[str, str] = _run_metadata(turn.run_metadata)
    metadata.update(turn.scope_metadata)
    if metadata and not metadata.keys().isdisjoint(MEASURED_KEYS):
        _log_clash(metadata)
    return metadata


def models_and_usage(
    calls: Sequence[ModelRun], results: Results, answering: ModelRun | None
) -> tuple[str | None, Usage | None, tuple[ModelCall, ...]]:
    """
    The answering call's model, the usage summed over every call, and each
    call's model and usage (only when there were several calls).
    """
    if len(calls) == 1:  # the common case: no per-call list
        call = calls[0]
        result = results.get(call.key)
        model = model_name(call, result)
        return (model or None) if call is answering else None, usage(result), ()
    total: Usage | None = None
    answering_model: str | None = None
    per_call: list[ModelCall] = []
    for call in calls:
        result = results.get(call.key)
        counts = usage(result)
        total = add_usage(total, counts)
        model = model_name(call, result)
        if call is answering and model:
            answering_model = model
        per_call.append(ModelCall(model, counts))
    return answering_model, total, tuple(per_call) if len(per_call) > 1 else ()


def model_input(answering: ModelRun | None, users: Sequence[Message]) -> str | None:
    """
    What the answering model saw as the user's text, when it is not the user's
    own words (retrieved context, a template).
    """
    if answering is None:
        return None
    prompt = model_prompt(answering.input)
    if len(prompt) == 1 and len(users) == 1:  # the usual case: no joins
        seen, said = prompt[0].content, users[0].content
    else:
        seen = "\n\n".join([m.content for m in prompt])
        said = "\n\n".join([m.content for m in users])
    return seen if seen and seen != said else None


def error_text(error: BaseException | None) -> str | None:
    """The error as ``"Type: message"``."""
    return None if error is None else f"{type(error).__name__}: {error}"


def redacted(
    redact: Redactor | None,
    messages: list[Message],
    error: str | None,
    prompt: str | None,
) -> tuple[list[Message], str | None, str | None]:
    """The messages' text and tool inputs, the error and the model input, redacted."""
    if redact is None:
        return messages, error, prompt
    messages = [
        Message(
            m.role,
            redact(m.content),
            m.name,
            redact(m.tool_input) if m.tool_input is not None else None,
            m.error,
        )
        for m in messages
    ]
    return (
        messages,
        redact(error) if error is not None else None,
        redact(prompt) if prompt is not None else None,
    )


def trace_ids(turn: Turn) -> tuple[str | None, str | None]:
    """The trace id and parent span id of the app's span the turn started in."""
    parent = turn.trace_parent
    if parent is None:
        return None, None
    return f"{parent[0]:032x}", f"{parent[1]:016x}"
