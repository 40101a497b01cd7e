"""
Turning raw turns into records: runs on the export thread, never on the app's.

Everything that costs anything happens here: extracting text from LangChain
messages (content-block lists included), picking the final answer out of
whatever the root run returned, summing token usage, de-duplicating the history
a session's prompt re-sends (a turn with no session keeps it), and redaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.messages import BaseMessage, BaseMessageChunk
from langchain_core.outputs import ChatGeneration, Generation, LLMResult
from langchain_core.prompt_values import PromptValue

from ._log import log_once
from ._measure import add_usage, field, model_name, result_message, usage
from ._record import (
    MEASURED_KEYS,
    Conversation,
    Feedback,
    Message,
    ModelCall,
    Record,
    Role,
    Usage,
    message_key,
)
from ._runtree import build_spans
from ._turn import ModelResult, ModelRun, Received, Turn

__all__ = [
    "answer_text",
    "content_text",
    "convert",
    "header_ids",
    "prepare",
    "reset_header_sessions",
    "to_conversation",
]

_logger = logging.getLogger(__name__)

Redactor = Callable[[str], str]

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "AIMessageChunk": "assistant",
    "tool": "tool",
    "function": "tool",
}
# A dict's answer is under one of these keys; any other dict is kept whole (JSON).
_ANSWER_KEYS = ("answer", "output", "text")
# Conventional keys of the user's text in an input dict, most specific first.
_INPUT_KEYS = ("question", "input", "query", "message", "q", "prompt", "text")
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


def _compact(value: Any) -> str:
    try:
        return json.dumps(
            value, default=_json_default, ensure_ascii=False, separators=(",", ":")
        )
    except (TypeError, ValueError):
        return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseMessage):
        return content_text(value.content)
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return str(value)


def content_text(content: Any) -> str:
    """Text of a message ``content``: a str, or a list of str / content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping):
                kind = block.get("type")
                if kind in ("text", "output_text", "input_text") or (
                    kind is None and "text" in block
                ):
                    parts.append(str(block.get("text", "")))
                elif kind in ("image", "image_url", "input_image"):
                    parts.append("[image]")
                elif kind in ("audio", "input_audio", "file"):
                    parts.append(f"[{kind}]")
        return "".join(parts)
    if content is None:
        return ""
    return _compact(content)


def _is_sequence(value: Any) -> bool:
    """A list, tuple or other non-str sequence (the ABC check only when needed)."""
    kind = type(value)
    if kind is list or kind is tuple:
        return True
    return kind is not str and isinstance(value, Sequence)


def _role(msg: BaseMessage) -> Role:
    kind = msg.type
    if kind == "chat":
        return _ROLES.get(str(field(msg, "role") or "user").lower(), "user")
    return _ROLES.get(kind, "user")


def _message(msg: BaseMessage) -> Message:
    role = _role(msg)
    text = content_text(msg.content)
    if role == "tool":
        return Message("tool", text, name=field(msg, "name"))
    if role == "assistant" and not text:
        calls = field(msg, "tool_calls")
        if calls:
            text = _compact(
                [{"name": c.get("name"), "args": c.get("args")} for c in calls]
            )
    return Message(role, text)


def _generation_text(gen: Generation | ModelResult) -> str:
    if isinstance(gen, ChatGeneration):
        return answer_text(gen.message)
    if type(gen) is ModelResult and gen.message is not None:
        return answer_text(gen.message)
    return gen.text


def answer_text(output: Any) -> str:
    """
    The assistant's text from whatever a root run returned.

    An ``AIMessage`` gives its content; a str is itself; a dict gives its
    ``messages`` list's last message (LangGraph), else its ``answer``, ``output``
    or ``text`` value, or a one-key dict's value; anything else (any other
    dict too) becomes compact JSON.
    """
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, BaseMessage):
        text = content_text(output.content)
        calls = field(output, "tool_calls")
        if not text and calls:
            text = _compact(
                [{"name": c.get("name"), "args": c.get("args")} for c in calls]
            )
        return text
    if type(output) is ModelResult:
        return _generation_text(output)
    if isinstance(output, LLMResult):
        if output.generations and output.generations[0]:
            return _generation_text(output.generations[0][0])
        return ""
    if isinstance(output, Generation):
        return _generation_text(output)
    if isinstance(output, Mapping):
        messages = output.get("messages")
        if (
            _is_sequence(messages)
            and messages
            and isinstance(messages[-1], BaseMessage)
        ):
            return answer_text(messages[-1])
        for key in _ANSWER_KEYS:
            if key in output:
                return answer_text(output[key])
        if len(output) == 1:  # RunnableParallel(reply=chain): nothing is lost
            return answer_text(next(iter(output.values())))
    if _is_sequence(output) and output and isinstance(output[-1], BaseMessage):
        return answer_text(output[-1])
    return _compact(output)


def _is_message_list(value: Any) -> bool:
    return (
        _is_sequence(value)
        and bool(value)
        and all(_as_message(m) is not None for m in value)
    )


def _as_message(value: Any) -> Message | None:
    """A LangChain message, a ``(role, text)`` pair or a ``{"role", "content"}`` dict."""
    if isinstance(value, BaseMessage):
        return _message(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        role = _ROLES.get(value[0].lower())
        return Message(role, content_text(value[1])) if role is not None else None
    if isinstance(value, Mapping) and isinstance(value.get("role"), str):
        role = _ROLES.get(str(value["role"]).lower())
        if role is not None:
            return Message(role, content_text(value.get("content")))
    return None


def _trailing_user(messages: Sequence[Any]) -> list[Message]:
    """The user messages after the last non-user one: what this turn's user said."""
    out: list[Message] = []
    for raw in reversed(messages):
        message = _as_message(raw)
        if message is None or message.role != "user":
            if out or message is None or message.role != "system":
                break
            continue  # a trailing system message does not end the user's words
        out.append(message)
    out.reverse()
    return out


def _user_messages(inputs: Any) -> list[Message]:
    """
    What the user sent, read from a root run's *inputs* (empty when unclear).

    A str, the trailing human messages of a message list (or of a ``messages``
    field), or one text field of an input dict: a conventional key
    (``question``, ``input``, ...) or the dict's only str field.
    """
    if inputs is None:
        return []
    if isinstance(inputs, str):
        return [Message("user", inputs)] if inputs else []
    if isinstance(inputs, BaseMessage):
        message = _message(inputs)
        return [message] if message.role == "user" else []
    if isinstance(inputs, PromptValue):
        return _trailing_user(inputs.to_messages())
    if _is_message_list(inputs):
        return _trailing_user(inputs)
    if isinstance(inputs, Mapping):
        if "messages" in inputs:
            return _user_messages(inputs["messages"])
        for key in _INPUT_KEYS:
            if key in inputs:
                found = _user_messages(inputs[key])
                if found:
                    return found
        texts = [v for v in inputs.values() if isinstance(v, str) and v]
        if len(texts) == 1:
            return [Message("user", texts[0])]
    return []


def _earlier(messages: Sequence[Any]) -> list[Message]:
    """
    The messages of a list before its trailing user words (see :func:`_trailing_user`).

    Empty when the list ends with no user message: then the user's words came
    from elsewhere and what is before them is unclear. System messages are left
    out: the system prompt is recorded from the answering call.
    """
    converted = [_as_message(m) for m in messages]
    end = len(converted)
    found = False
    while end:
        message = converted[end - 1]
        if message is None:
            break
        if message.role == "user":
            found = True
        elif found or message.role != "system":
            break
        end -= 1
    if not found:
        return []
    return [m for m in converted[:end] if m is not None and m.role != "system"]


def _input_history(inputs: Any, users: Sequence[Message]) -> list[Message]:
    """
    The history a root run's *inputs* carry before this turn's *users* words.

    The messages before the user's words in a message list (or a ``messages``
    field), and the message lists an input dict carries beside the user's text
    (a ``MessagesPlaceholder`` the app fills: ``history``, ``chat_history``).
    """
    history: list[Message] = []
    if isinstance(inputs, PromptValue):
        history = _earlier(inputs.to_messages())
    elif _is_message_list(inputs):
        history = _earlier(inputs)
    elif isinstance(inputs, Mapping):
        if "messages" in inputs:
            return _input_history(inputs["messages"], users)
        for value in inputs.values():
            if not _is_message_list(value):
                continue
            if _trailing_user(value) == users:  # the user's words are its end
                history.extend(_earlier(value))
            else:
                converted = (_as_message(m) for m in value)
                history.extend(
                    m for m in converted if m is not None and m.role != "system"
                )
    # The user's words are recorded after the history, never twice.
    if users and history[-len(users) :] == list(users):
        del history[-len(users) :]
    return history


def _input_messages(inputs: Any) -> list[Message]:
    """Every message of the message lists in a root run's *inputs*."""
    if isinstance(inputs, PromptValue):
        inputs = inputs.to_messages()
    if _is_message_list(inputs):
        return [m for m in map(_as_message, inputs) if m is not None]
    out: list[Message] = []
    if isinstance(inputs, Mapping):
        for value in inputs.values():
            if _is_message_list(value):
                out.extend(m for m in map(_as_message, value) if m is not None)
    return out


def _history(
    inputs: Any, users: Sequence[Message], calls: Sequence[ModelRun]
) -> list[Message]:
    """
    The history a turn with no session keeps: what its input re-sent before the
    user's words (no earlier turn of a session holds it).

    Read from the first model call that saw it, keeping only messages that came
    from the root's input (not a template's few-shot examples): the call's
    message list is LangChain's own, while the input's lists are the app's and
    are often appended to after the call returns, before the worker reads
    them. A turn with no model call reads its input.
    """
    if not calls:
        return _input_history(inputs, users)
    sent = {message_key(m) for m in _input_messages(inputs)}
    if not sent:
        return []
    for call in calls:
        if _is_sequence(call.input):
            earlier = [m for m in _earlier(call.input) if message_key(m) in sent]
            if earlier:
                return earlier
    return []


def _system_text(model_input: Any) -> str | None:
    """The system prompt a chat model saw (its system messages joined), if any."""
    if not _is_sequence(model_input):
        return None
    texts = [
        content_text(m.content)
        for m in model_input
        if isinstance(m, BaseMessage) and _role(m) == "system"
    ]
    return "\n\n".join(texts) if texts else None


def _model_prompt(model_input: Any) -> list[Message]:
    """The user text a model call saw: its trailing human messages, or its prompt."""
    if isinstance(model_input, str):
        return [Message("user", model_input)]
    if _is_sequence(model_input):
        return _trailing_user(model_input)
    return []


def _text_or_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        return content_text(value.content)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return _compact(value)


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


def _abandoned(
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


def _answers_user(turn: Turn, users: Sequence[Message], answer: str | None) -> bool:
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
        if isinstance(message, BaseMessage) and _ROLES.get(message.type) == "assistant":
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


def to_conversation(turn: Turn, redact: Redactor | None = None) -> Conversation | None:
    """
    Build the :class:`Conversation` of a finished *turn* (None: not a conversation).

    The rules are the README's "What a conversation holds". Ids: the scope's
    user, else the model's headers (see :func:`header_ids`); the session of
    ``context_session``, else the model's headers, else the framework's
    (``configurable.session_id``, then ``configurable.thread_id``).
    """
    steps = turn.steps or []
    calls = [s for s in steps if type(s) is ModelRun]
    results = turn.results or {}
    abandoned = _abandoned(turn, calls, results)
    error = None if abandoned else turn.error

    # The user's own words: the root's input, else what the model was asked.
    inputs = turn.end_inputs if turn.end_inputs is not None else turn.chain_inputs
    if turn.chain_inputs is None and calls:  # a model invoked directly
        inputs = calls[0].input
    users = _user_messages(inputs)

    # The final answer follows the root's output (or the stream as received).
    answer: str | None
    if abandoned:
        answer = None
    else:
        answer = answer_text(turn.output) if turn.output is not None else ""
    answering = _answering_call(calls, results, answer or "")
    if abandoned:
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

    if not calls and turn.error is None and not _answers_user(turn, users, answer):
        return None  # a parser or a lambda on its own
    if not users and answering is not None:
        users = _model_prompt(answering.input)
    if not users and inputs is not None:
        users = [Message("user", _text_or_json(inputs))]

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

    messages: list[Message] = []
    system = _system_text(answering.input) if answering is not None else None
    if system is not None and (
        session_id is None or _SESSION_SYSTEMS.changed(session_id, system)
    ):
        messages.append(Message("system", system))
    if session_id is None:
        # No session holds the earlier turns: keep the history the input re-sent.
        messages.extend(_history(inputs, users, calls))
    messages.extend(users)
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
                _text_or_json(step.output),
                name=str(step.name),
                tool_input=_text_or_json(step.input),
                error=bool(step.is_error),
            )
        )
    if answer or error is None:
        messages.append(Message("assistant", answer or ""))

    # The app's own metadata: the root run's, then the scope's (which wins).
    metadata: dict[str, str] = _run_metadata(turn.run_metadata)
    metadata.update(turn.scope_metadata)
    if metadata and not metadata.keys().isdisjoint(MEASURED_KEYS):
        _log_clash(metadata)
    total: Usage | None = None
    answering_model: str | None = None
    model_calls: list[ModelCall] = []
    for call in calls:
        result = results.get(call.key)
        counts = usage(result)
        total = add_usage(total, counts)
        model = model_name(call, result)
        if call is answering and model:
            answering_model = model
        model_calls.append(ModelCall(model, counts))
    tags = tuple(dict.fromkeys(str(t) for t in turn.tags)) if turn.tags else ()
    prompt: str | None = None
    if answering is not None:
        seen = "\n\n".join(m.content for m in _model_prompt(answering.input))
        if seen and seen != "\n\n".join(m.content for m in users):
            prompt = seen  # what the model saw (retrieved context, a template)
    error_text: str | None = None
    if error is not None:
        error_text = f"{type(error).__name__}: {error}"

    if redact is not None:
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
        if error_text is not None:
            error_text = redact(error_text)
        if prompt is not None:
            prompt = redact(prompt)
    return Conversation(
        id=turn.run_id.hex,
        user_id=user_id,
        session_id=session_id,
        started_at=turn.started,
        ended_at=turn.ended,
        messages=tuple(messages),
        metadata=metadata,
        error=error_text,
        model=answering_model,
        usage=total,
        tags=tags,
        run_name=turn.name or None,
        model_calls=tuple(model_calls) if len(model_calls) > 1 else (),
        stream_abandoned=abandoned,
        model_input=prompt,
        # OTLP export on: the run tree as span records, and the app's span.
        spans=build_spans(turn) if turn.tree is not None else (),
        trace_id=None if turn.trace_parent is None else f"{turn.trace_parent[0]:032x}",
        parent_span_id=(
            None if turn.trace_parent is None else f"{turn.trace_parent[1]:016x}"
        ),
    )


def prepare(items: Sequence[Any], redact: Redactor | None = None) -> list[Record]:
    """Convert queued items into records; an item that fails is logged and skipped."""
    return convert(items, redact)[0]


def convert(
    items: Sequence[Any], redact: Redactor | None = None
) -> tuple[list[Record], int]:
    """
    Convert queued items into records, counting the items that failed.

    Returns:
        ``(records, failed)``: the records, and how many items raised while being
        converted (logged). The rest of the items gave no record by design: runs
        that were not conversations, which the pipeline counts as skipped.
    """
    out: list[Record] = []
    failed = 0
    for item in items:
        try:
            if isinstance(item, Turn):
                record = to_conversation(item, redact)
                if record is not None:
                    out.append(record)
            elif isinstance(item, (Conversation, Feedback)):
                out.append(item)
        except Exception:  # noqa: BLE001 - one bad turn must not stop the batch
            failed += 1
            # Once per process at WARNING: a converter bug would fail every turn.
            log_once(
                _logger,
                "convert",
                "context_trace: could not convert a turn",
                exc_info=True,
            )
    return out, failed
