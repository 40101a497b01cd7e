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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult

from ._handler import Turn
from ._record import Conversation, Feedback, Message, Record, Role, remember, strip_seen

__all__ = ["answer_text", "content_text", "prepare", "to_conversation"]

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
        if not text and getattr(output, "tool_calls", None):
            text = _compact(
                [
                    {"name": c.get("name"), "args": c.get("args")}
                    for c in output.tool_calls
                ]
            )  # type: ignore[attr-defined]
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


def _input_messages(turn: Turn) -> list[Message]:
    if turn.messages is not None:
        return [_message(m) for m in turn.messages]
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
        messages = inputs.get("messages")
        if (
            isinstance(messages, Sequence)
            and messages
            and isinstance(messages[-1], BaseMessage)
        ):
            return [_message(m) for m in messages]
        for key in _INPUT_KEYS:
            if isinstance(inputs.get(key), str):
                return [Message("user", inputs[key])]
    return [Message("user", _compact(inputs))]


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


def to_conversation(turn: Turn, redact: Redactor | None = None) -> Conversation:
    """Build the :class:`Conversation` of a finished *turn*."""
    scope = turn.scope
    inputs = _input_messages(turn)
    rest: list[Message] = []
    for name, tool_input, output, _is_error in turn.tools:
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

    session = scope.session
    if session is not None:
        with session._lock:
            inputs_t = strip_seen(inputs, session._seen)
            remember(session._seen, inputs_t)
            remember(session._seen, rest)
    else:
        inputs_t = tuple(inputs)
    messages = inputs_t + tuple(rest)

    metadata: dict[str, str] = dict(scope.metadata)
    model = _model_name(turn)
    if model:
        metadata["model"] = model
    metadata["latency_ms"] = str(round((turn.ended - turn.started) * 1000))
    for key, value in _usage(turn.llm_results).items():
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
        user_id=scope.user_id,
        session_id=session.id if session is not None else None,
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
        except Exception:
            _logger.warning("context_trace: could not convert a turn", exc_info=True)
    return out
