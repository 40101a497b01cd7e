"""
Turning raw turns into records: runs on the export thread, never on the app's.

Everything that costs anything happens here: extracting text from LangChain
messages (content-block lists included), picking the final answer out of
whatever the root run returned, summing token usage, de-duplicating the history
a session's prompt re-sends, and redaction.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult

from ._log import log_once
from ._record import (
    Conversation,
    Feedback,
    Message,
    Record,
    Role,
    remember,
    strip_seen,
)
from ._turn import Turn

__all__ = [
    "answer_text",
    "content_text",
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
_ANSWER_KEYS = ("answer", "output", "text", "content", "result", "response")
_INPUT_KEYS = ("input", "question", "query", "q", "message", "prompt", "text")

# Where a model's invocation params carry HTTP headers, most specific first:
# per-call ``extra_headers`` (OpenAI), the model's ``headers`` (what LangChain's
# Context docs show: ``ChatOpenAI(headers={"user_id": "123"})``, which lands in
# ``model_kwargs`` and from there in the params), then ``default_headers``.
_HEADER_PARAMS = ("extra_headers", "headers", "default_headers")
# Header names after lower-casing and "_" -> "-": user_id, X-User-Id, ...
_USER_HEADERS = frozenset({"user-id", "x-user-id"})
_SESSION_HEADERS = frozenset({"session-id", "x-session-id"})
# Header-only sessions have no Session object to hold their de-dup state; keep
# the seen-sets of this many recent ones (least recently used dropped first).
_HEADER_SESSIONS_MAX = 10_000


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


def _message(msg: BaseMessage) -> Message:
    kind = msg.type
    role: Role = _ROLES.get(kind, "user")
    if kind == "chat":
        role = _ROLES.get(str(getattr(msg, "role", "user")).lower(), "user")
    text = content_text(msg.content)
    if role == "tool":
        return Message("tool", text, name=getattr(msg, "name", None))
    if role == "assistant" and not text:
        calls = getattr(msg, "tool_calls", None)
        if calls:
            text = _compact(
                [{"name": c.get("name"), "args": c.get("args")} for c in calls]
            )
    return Message(role, text)


def _generation_text(gen: Generation) -> str:
    if isinstance(gen, ChatGeneration):
        return answer_text(gen.message)
    return gen.text


def answer_text(output: Any) -> str:
    """
    The assistant's text from whatever a root run returned.

    An ``AIMessage`` gives its content; a str is itself; a dict gives its
    ``messages`` list's last message (LangGraph), else its ``answer``/``output``/
    ``text``/... value; anything else becomes compact JSON.
    """
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, BaseMessage):
        text = content_text(output.content)
        calls = getattr(output, "tool_calls", None)
        if not text and calls:
            text = _compact(
                [{"name": c.get("name"), "args": c.get("args")} for c in calls]
            )
        return text
    if isinstance(output, LLMResult):
        if output.generations and output.generations[0]:
            return _generation_text(output.generations[0][0])
        return ""
    if isinstance(output, Generation):
        return _generation_text(output)
    if isinstance(output, Mapping):
        messages = output.get("messages")
        if (
            isinstance(messages, Sequence)
            and messages
            and isinstance(messages[-1], BaseMessage)
        ):
            return answer_text(messages[-1])
        for key in _ANSWER_KEYS:
            if key in output:
                return answer_text(output[key])
        if len(output) == 1:
            return answer_text(next(iter(output.values())))
    if isinstance(output, Sequence) and output and isinstance(output[-1], BaseMessage):
        return answer_text(output[-1])
    return _compact(output)


def _message_list(turn: Turn) -> Sequence[BaseMessage] | None:
    """The turn's input as LangChain messages, when it is a message list."""
    if turn.messages is not None:
        return turn.messages
    inputs = turn.chain_inputs
    if isinstance(inputs, Mapping):
        messages = inputs.get("messages")
        if (
            isinstance(messages, Sequence)
            and messages
            and isinstance(messages[-1], BaseMessage)
        ):
            return messages
    return None


def _input_messages(turn: Turn) -> list[Message]:
    messages = _message_list(turn)
    if messages is not None:
        return [_message(m) for m in messages]
    if turn.prompt is not None:
        return [Message("user", turn.prompt)]
    inputs = turn.chain_inputs
    if inputs is None:
        return []
    if isinstance(inputs, str):
        return [Message("user", inputs)]
    if isinstance(inputs, BaseMessage):
        return [_message(inputs)]
    if isinstance(inputs, Mapping):
        for key in _INPUT_KEYS:
            if isinstance(inputs.get(key), str):
                return [Message("user", inputs[key])]
    return [Message("user", _compact(inputs))]


def _without_past_tool_calls(turn: Turn, inputs: list[Message]) -> list[Message]:
    """
    *inputs* without the tool-call requests and tool results of earlier turns.

    A LangGraph agent with a checkpointer (or an app re-sending its message
    list) sends the whole thread to the model again: earlier questions and
    answers interleaved with earlier tool-call requests and tool results. In a
    session those were recorded by the earlier turns (as their tool messages),
    and they would stop the history de-duplication, which only skips the
    leading run of already recorded messages. So inside a session, tool
    messages and tool-calling assistant messages before the turn's last user
    message are left out; the ones after it belong to this turn.
    """
    messages = _message_list(turn)
    if messages is None:
        return inputs
    past = [
        m.type in ("tool", "function")
        or (isinstance(m, AIMessage) and bool(m.tool_calls))
        for m in messages
    ]
    if not any(past):
        return inputs
    last_user = max((i for i, m in enumerate(inputs) if m.role == "user"), default=-1)
    return [m for i, m in enumerate(inputs) if not (i < last_user and past[i])]


def _text_or_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        return content_text(value.content)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return _compact(value)


def _model_name(turn: Turn) -> str | None:
    params = turn.invocation_params or {}
    for key in ("model", "model_name", "model_id", "deployment_name"):
        value = params.get(key)
        if isinstance(value, str) and value:
            return value
    meta = turn.model_metadata or {}
    if isinstance(meta.get("ls_model_name"), str):
        return str(meta["ls_model_name"])
    serialized = turn.serialized or {}
    if isinstance(serialized.get("name"), str):
        return str(serialized["name"])
    ident = serialized.get("id")
    if isinstance(ident, list) and ident:
        return str(ident[-1])
    if isinstance(params.get("_type"), str):
        return str(params["_type"])
    return None


def _usage(results: Iterable[LLMResult]) -> dict[str, int]:
    totals = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    seen = False
    for result in results:
        found = False
        for gens in result.generations:
            for gen in gens:
                usage = getattr(getattr(gen, "message", None), "usage_metadata", None)
                if usage:
                    found = seen = True
                    totals["prompt_tokens"] += int(usage.get("input_tokens", 0) or 0)
                    totals["completion_tokens"] += int(
                        usage.get("output_tokens", 0) or 0
                    )
                    totals["total_tokens"] += int(usage.get("total_tokens", 0) or 0)
        if not found and result.llm_output:
            usage = result.llm_output.get("token_usage") or result.llm_output.get(
                "usage"
            )
            if isinstance(usage, Mapping):
                seen = True
                for key in totals:
                    value = usage.get(key)
                    if isinstance(value, int):
                        totals[key] += value
    return totals if seen else {}


def _header_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
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


class _HeaderSessions:
    """
    Per-session seen-sets, keyed by session id: a bounded LRU, locked.

    Keyed by id, not kept on the ``Session`` object: web integrations (and
    ``context_session(session_id=...)`` on a request handler) open a fresh
    ``Session`` for every request of the same conversation, and header-only
    sessions have no object at all.
    """

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, set[tuple[str, str]]] = OrderedDict()

    def dedup(
        self, session_id: str, inputs: Sequence[Message], rest: Sequence[Message]
    ) -> tuple[Message, ...]:
        with self._lock:
            seen = self._seen.get(session_id)
            if seen is None:
                seen = self._seen[session_id] = set()
                if len(self._seen) > self._maxsize:
                    self._seen.popitem(last=False)
            else:
                self._seen.move_to_end(session_id)
            kept = strip_seen(inputs, seen)
            remember(seen, kept)
            remember(seen, rest)
            return kept

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


_HEADER_SESSIONS = _HeaderSessions(_HEADER_SESSIONS_MAX)


def reset_header_sessions() -> None:
    """Forget the de-dup state of header-only sessions (tests, ``reset()``)."""
    _HEADER_SESSIONS.clear()


def to_conversation(turn: Turn, redact: Redactor | None = None) -> Conversation:
    """
    Build the :class:`Conversation` of a finished *turn*.

    The scope's user and session win; where the scope has none, the ids in the
    model's headers (see :func:`header_ids`) are used.
    """
    scope = turn.scope
    session = scope.session
    user_id = scope.user_id
    session_id = session.id if session is not None else None
    if user_id is None or session is None:
        header_user, header_session = header_ids(turn.invocation_params)
        if user_id is None:
            user_id = header_user
        if session is None:
            session_id = header_session
    inputs = _input_messages(turn)
    rest: list[Message] = []
    for name, tool_input, output, _is_error in turn.tools or ():
        rest.append(
            Message(
                "tool",
                _text_or_json(output),
                name=str(name),
                tool_input=_text_or_json(tool_input),
            )
        )
    answer = answer_text(turn.output)
    if not answer and turn.llm_results:
        answer = answer_text(turn.llm_results[-1])
    if answer or turn.error is None:
        rest.append(Message("assistant", answer))

    if session_id is not None:
        inputs = _without_past_tool_calls(turn, inputs)
    if session_id is not None:
        inputs_t = _HEADER_SESSIONS.dedup(session_id, inputs, rest)
    else:
        inputs_t = tuple(inputs)
    messages = inputs_t + tuple(rest)

    metadata: dict[str, str] = dict(scope.metadata)
    model = _model_name(turn)
    if model:
        metadata["model"] = model
    metadata["latency_ms"] = str(round((turn.ended - turn.started) * 1000))
    for key, value in _usage(turn.llm_results or ()).items():
        metadata[key] = str(value)
    if turn.tags:
        metadata["tags"] = ",".join(dict.fromkeys(str(t) for t in turn.tags))
    error: str | None = None
    if turn.error is not None:
        metadata["error_type"] = type(turn.error).__name__
        metadata["error"] = str(turn.error)
        error = f"{type(turn.error).__name__}: {turn.error}"

    if redact is not None:
        messages = tuple(
            Message(
                m.role,
                redact(m.content),
                m.name,
                redact(m.tool_input) if m.tool_input is not None else None,
            )
            for m in messages
        )
        if error is not None:
            error = redact(error)
            metadata["error"] = redact(metadata["error"])
    return Conversation(
        id=turn.run_id.hex,
        user_id=user_id,
        session_id=session_id,
        started_at=turn.started,
        ended_at=turn.ended,
        messages=messages,
        metadata=metadata,
        error=error,
    )


def prepare(items: Sequence[Any], redact: Redactor | None = None) -> list[Record]:
    """Convert queued items into records; an item that fails is logged and skipped."""
    out: list[Record] = []
    for item in items:
        try:
            if isinstance(item, Turn):
                out.append(to_conversation(item, redact))
            elif isinstance(item, (Conversation, Feedback)):
                out.append(item)
        except Exception:  # noqa: BLE001 - one bad turn must not stop the batch
            # Once per process at WARNING: a converter bug would fail every turn.
            log_once(
                _logger,
                "convert",
                "context_trace: could not convert a turn",
                exc_info=True,
            )
    return out
