"""
Reading text out of LangChain values: runs on the export thread.

Message contents (content-block lists included), the answer in whatever a root
run returned, the user's words in a root run's inputs or a model call's
messages, the history an input re-sends and the system prompt a model saw. The
converter's rules (``_rules.py``) are built on these.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult
from langchain_core.prompt_values import PromptValue

from ._measure import field
from ._record import Message, Role, message_key
from ._turn import ModelResult, ModelRun

__all__ = [
    "ROLES",
    "answer_text",
    "compact",
    "content_text",
    "history",
    "is_sequence",
    "model_prompt",
    "system_text",
    "text_or_json",
    "user_messages",
]

ROLES: dict[str, Role] = {
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


def compact(value: Any) -> str:
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
    return compact(content)


def is_sequence(value: Any) -> bool:
    """A list, tuple or other non-str sequence (the ABC check only when needed)."""
    kind = type(value)
    if kind is list or kind is tuple:
        return True
    if kind is str or kind is dict:
        return False
    return isinstance(value, Sequence)


def _role(msg: BaseMessage) -> Role:
    kind = msg.type
    if kind == "chat":
        return ROLES.get(str(field(msg, "role") or "user").lower(), "user")
    return ROLES.get(kind, "user")


def _message(msg: BaseMessage) -> Message:
    role = _role(msg)
    text = content_text(msg.content)
    if role == "tool":
        return Message("tool", text, name=field(msg, "name"))
    if role == "assistant" and not text:
        calls = field(msg, "tool_calls")
        if calls:
            text = compact(
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
            text = compact(
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
        if is_sequence(messages) and messages and isinstance(messages[-1], BaseMessage):
            return answer_text(messages[-1])
        for key in _ANSWER_KEYS:
            if key in output:
                return answer_text(output[key])
        if len(output) == 1:  # RunnableParallel(reply=chain): nothing is lost
            return answer_text(next(iter(output.values())))
    if is_sequence(output) and output and isinstance(output[-1], BaseMessage):
        return answer_text(output[-1])
    return compact(output)


def _is_message_list(value: Any) -> bool:
    return (
        is_sequence(value)
        and bool(value)
        and all(_as_message(m) is not None for m in value)
    )


def _as_message(value: Any) -> Message | None:
    """A LangChain message, a ``(role, text)`` pair or a ``{"role", "content"}`` dict."""
    if isinstance(value, BaseMessage):
        return _message(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        role = ROLES.get(value[0].lower())
        return Message(role, content_text(value[1])) if role is not None else None
    if isinstance(value, Mapping) and isinstance(value.get("role"), str):
        role = ROLES.get(str(value["role"]).lower())
        if role is not None:
            return Message(role, content_text(value.get("content")))
    return None


def _trailing_user(messages: Sequence[Any]) -> list[Message]:
    """The user messages after the last non-user one: what this turn's user said."""
    out: list[Message] = []
    for raw in reversed(messages):
        if isinstance(raw, BaseMessage):  # only a user message is built
            role = _role(raw)
            if role == "user":
                out.append(Message("user", content_text(raw.content)))
                continue
        else:
            message = _as_message(raw)
            if message is None:
                break
            role = message.role
            if role == "user":
                out.append(message)
                continue
        if out or role != "system":
            break
        # a trailing system message does not end the user's words
    out.reverse()
    return out


def user_messages(inputs: Any) -> list[Message]:
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
    # A dict (the usual input) skips the checks below: pydantic's and the ABCs'
    # isinstance answer in Python code, ~0.5-1 µs each.
    if type(inputs) is not dict:
        if isinstance(inputs, BaseMessage):
            message = _message(inputs)
            return [message] if message.role == "user" else []
        if isinstance(inputs, PromptValue):
            return _trailing_user(inputs.to_messages())
        if _is_message_list(inputs):
            return _trailing_user(inputs)
        if not isinstance(inputs, Mapping):
            return []
    if "messages" in inputs:
        return user_messages(inputs["messages"])
    for key in _INPUT_KEYS:
        if key in inputs:
            found = user_messages(inputs[key])
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
    if type(inputs) is not dict:  # a dict skips two slow "no" answers
        if isinstance(inputs, PromptValue):
            inputs = inputs.to_messages()
        if _is_message_list(inputs):
            return [m for m in map(_as_message, inputs) if m is not None]
    out: list[Message] = []
    if type(inputs) is dict or isinstance(inputs, Mapping):
        for value in inputs.values():
            if _is_message_list(value):
                out.extend(m for m in map(_as_message, value) if m is not None)
    return out


def history(
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
        if is_sequence(call.input):
            earlier = [m for m in _earlier(call.input) if message_key(m) in sent]
            if earlier:
                return earlier
    return []


def system_text(model_input: Any) -> str | None:
    """The system prompt a chat model saw (its system messages joined), if any."""
    if not is_sequence(model_input):
        return None
    texts = [
        content_text(m.content)
        for m in model_input
        if isinstance(m, BaseMessage) and _role(m) == "system"
    ]
    return "\n\n".join(texts) if texts else None


def model_prompt(model_input: Any) -> list[Message]:
    """The user text a model call saw: its trailing human messages, or its prompt."""
    if isinstance(model_input, str):
        return [Message("user", model_input)]
    if is_sequence(model_input):
        return _trailing_user(model_input)
    return []


def text_or_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        return content_text(value.content)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return compact(value)
