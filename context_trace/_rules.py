"""
The converter's rules: each reads one thing of a finished turn.

``_convert.to_conversation`` runs them in order on the export thread. Each is
small and tested on its own, on hand-built turn parts
(``tests/core/test_convert_rules.py``): which steps are model calls
(:func:`model_calls`), whether the turn is an abandoned stream
(:func:`abandoned`), the user's words (:func:`user_input`), the final answer and
the call that gave it (:func:`final_answer`), whether a turn with no model call
is a conversation at all (:func:`answers_user`), attribution (:func:`attribution`),
the system prompt, recorded when it changes (:func:`system_prompt`), the
history a turn with no session keeps (:func:`kept_history`), what the steps said
(:func:`step_messages`), the app's metadata (:func:`app_metadata`), model names
and usage (:func:`models_and_usage`), what the model saw (:func:`model_input`),
redaction (:func:`redacted`) and the trace the turn belongs to
(:func:`trace_ids`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.messages import BaseMessage, BaseMessageChunk

from ._log import log_once
from ._measure import add_usage, field, model_name, result_message, usage
from ._record import MEASURED_KEYS, Message, ModelCall, Usage
from ._text import (
    ROLES,
    answer_text,
    content_text,
    history,
    model_prompt,
    system_text,
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

# The framework's session ids: ``configurable.session_id``
# (RunnableWithMessageHistory) and ``configurable.thread_id`` (LangGraph, which
# also copies it to the run metadata).
_FRAMEWORK_SESSION_KEYS = ("session_id", "thread_id")
# Root-run metadata that is LangChain's or LangGraph's own, not the app's.
_INTERNAL_PREFIXES = ("ls_", "langgraph_", "checkpoint_", "__")
_RECORD_FIELDS = frozenset({"user_id"})

# Where a model's invocation params carry HTTP headers, most specific first:
# per-call ``extra_headers`` (OpenAI), the model's ``headers`` (what LangChain's
# Context docs show: ``ChatOpenAI(headers={"user_id": "123"})``, which lands in
# ``model_kwargs`` and from there in the params), then ``default_headers``.
_HEADER_PARAMS = ("extra_headers", "headers", "default_headers")
# Header names after lower-casing and "_" -> "-": user_id, X-User-Id, ...
_USER_HEADERS = frozenset({"user-id", "x-user-id"})
_SESSION_HEADERS = frozenset({"session-id", "x-session-id"})
# The last system prompt of this many recent sessions is kept (least recently
# used dropped first) to record a system prompt only when it changes, within
# _SESSIONS_MAX_BYTES of memory (~900 sessions with 32-character ids): every
# web worker pays it.
_SESSIONS_MAX = 10_000
_SESSIONS_MAX_BYTES = 256 * 1024
# What an entry costs besides its id: the hash and the OrderedDict entry (and
# its share of the table), measured with tracemalloc.
_SESSION_ENTRY_BYTES = 200


def _header_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, UUID)):
        return None
    text = str(value).strip()
    return text or None


def header_ids(params: Any) -> tuple[str | None, str | None]:
    """
    The ``(user_id, session_id)`` a model's invocation params carry, if any.

    Looked up in the ``extra_headers``, ``headers`` and ``default_headers``
    mappings (also inside ``model_kwargs``), in that order, under the names
    ``user_id``/``X-User-Id`` and ``session_id``/``X-Session-Id`` (any case,
    ``_`` or ``-``); the user falls back to OpenAI's ``user`` parameter.
    """
    if not isinstance(params, Mapping):
        return None, None
    sources: list[Mapping[str, Any]] = [params]
    model_kwargs = params.get("model_kwargs")
    if isinstance(model_kwargs, Mapping):
        sources.append(model_kwargs)
    user: str | None = None
    session: str | None = None
    for source in sources:
        for key in _HEADER_PARAMS:
            headers = source.get(key)
            if not isinstance(headers, Mapping):
                continue
            for name, value in headers.items():
                if not isinstance(name, str):
                    continue
                norm = name.strip().lower().replace("_", "-")
                if user is None and norm in _USER_HEADERS:
                    user = _header_id(value)
                elif session is None and norm in _SESSION_HEADERS:
                    session = _header_id(value)
    if user is None:
        for source in sources:
            user = _header_id(source.get("user"))
            if user is not None:
                break
    return user, session


class _SessionSystems:
    """
    The last system prompt recorded per session id: an LRU bounded in bytes, locked.

    Keyed by id, not kept on the ``Session`` object: web integrations (and
    ``context_session(session_id=...)`` on a request handler) open a fresh
    ``Session`` for every request of the same conversation, and framework or
    header sessions have no object at all. The prompt's 64-bit hash is kept,
    not the text (one process only, so the hash seed does not matter). A
    session evicted records its system prompt once more on its next turn (the
    local store's history de-duplication then drops it again).

    Args:
        maxsize: The most sessions kept.
        max_bytes: The most memory the entries may hold (each counted as its
            id plus a fixed overhead).
    """

    def __init__(self, maxsize: int, max_bytes: int = _SESSIONS_MAX_BYTES) -> None:
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self._last: OrderedDict[str, int] = OrderedDict()

    @property
    def nbytes(self) -> int:
        """The estimated bytes the entries hold now."""
        return self._bytes

    def changed(self, session_id: str, text: str) -> bool:
        """Whether *text* differs from the session's last system prompt (then keep it)."""
        value = hash(text)
        with self._lock:
            last = self._last.get(session_id)
            if last is not None:
                self._last.move_to_end(session_id)
                if last == value:
                    return False
            else:
                self._bytes += sys.getsizeof(session_id) + _SESSION_ENTRY_BYTES
            self._last[session_id] = value
            while self._last and (
                len(self._last) > self._maxsize or self._bytes > self._max_bytes
            ):
                evicted, _ = self._last.popitem(last=False)
                self._bytes -= sys.getsizeof(evicted) + _SESSION_ENTRY_BYTES
            return True

    def clear(self) -> None:
        with self._lock:
            self._last.clear()
            self._bytes = 0


_SESSION_SYSTEMS = _SessionSystems(_SESSIONS_MAX)


def reset_header_sessions() -> None:
    """Forget the per-session system prompts seen so far (tests, ``reset()``)."""
    _SESSION_SYSTEMS.clear()


def _framework_session(metadata: Mapping[str, Any] | None) -> str | None:
    """``session_id`` / ``thread_id`` of a run's ``configurable`` or metadata."""
    if not metadata:
        return None
    for key in _FRAMEWORK_SESSION_KEYS:
        value = _header_id(metadata.get(key))
        if value is not None:
            return value
    return None


def _run_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """The root run's own metadata as ``str -> str`` (LangChain's keys left out)."""
    out: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if (
            key.startswith(_INTERNAL_PREFIXES)
            or key in _FRAMEWORK_SESSION_KEYS
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
    if isinstance(turn.error, GeneratorExit):
        return True
    if isinstance(turn.error, asyncio.CancelledError):
        return bool(turn.tokens)  # not a cancelled ainvoke that streamed nothing
    return turn.error is None and any(c.key not in results for c in calls)


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
    ended = [c for c in calls if c.key in results]
    for call in reversed(ended):
        message = result_message(results[call.key])
        text = answer_text(message) if message is not None else None
        if text is None:
            text = answer_text(results[call.key])
        if text == answer:
            return call
    if ended:
        return ended[-1]
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


def attribution(turn: Turn, calls: Sequence[ModelRun]) -> tuple[str | None, str | None]:
    """
    The turn's ``(user_id, session_id)``.

    The scope's user, else the models' headers (see :func:`header_ids`); the
    scope's session, else the headers', else the framework's
    (``configurable.session_id``, then ``thread_id``; then the run metadata's).
    """
    user_id = turn.user_id
    session = turn.session
    session_id = session.id if session is not None else None
    if user_id is None or session_id is None:
        header_user = header_session = None
        for call in calls:
            header_user, header_session = header_ids(call.params)
            if header_user is not None or header_session is not None:
                break
        if user_id is None:
            user_id = header_user
        if session_id is None:
            session_id = header_session
    if session_id is None:
        session_id = _framework_session(turn.configurable) or _framework_session(
            turn.run_metadata
        )
    return user_id, session_id


def system_prompt(answering: ModelRun | None, session_id: str | None) -> Message | None:
    """
    The answering model's system prompt, when it is to be recorded.

    Always for a turn with no session; in a session only when it differs from
    the one last recorded for that session (kept per id, see
    :class:`_SessionSystems`).
    """
    text = system_text(answering.input) if answering is not None else None
    if text is not None and (
        session_id is None or _SESSION_SYSTEMS.changed(session_id, text)
    ):
        return Message("system", text)
    return None


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
    seen = "\n\n".join(m.content for m in model_prompt(answering.input))
    if seen and seen != "\n\n".join(m.content for m in users):
        return seen
    return None


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
