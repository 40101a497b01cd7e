"""
The parts of a record (see ``_record``): :class:`Message`, :class:`Span`,
:class:`Usage`, :class:`ModelCall`, the roles and ids, and the fast
``__init__`` every frozen record dataclass gets (:func:`_quick_init`).
Plain frozen values, no I/O; all importable from ``_record``.
"""

from __future__ import annotations

import uuid
from dataclasses import MISSING, dataclass, fields
from typing import Any, Literal, NamedTuple, TypeVar

_T = TypeVar("_T")


class _Factory:
    """The default of a field with a default factory: "not given"."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def _quick_init(cls: type[_T]) -> type[_T]:
    """
    Give a frozen, slotted dataclass an ``__init__`` that sets its slots directly.

    The generated one calls ``object.__setattr__`` per field (frozen classes
    forbid plain assignment): ~0.9 µs for a ``Message``, ~3.7 µs for a
    ``Conversation``, on the export thread several times per turn. This one
    calls each slot's descriptor instead, about twice as fast, with the same
    parameters, defaults, default factories and ``__post_init__``.
    """
    namespace: dict[str, Any] = {"_FACTORY": _FACTORY}
    params: list[str] = []
    body: list[str] = []
    for f in fields(cls):  # type: ignore[arg-type]
        name = f.name
        namespace[f"_set_{name}"] = cls.__dict__[name].__set__
        value = name
        if f.default is not MISSING:
            namespace[f"_default_{name}"] = f.default
            params.append(f"{name}=_default_{name}")
        elif f.default_factory is not MISSING:
            namespace[f"_factory_{name}"] = f.default_factory
            params.append(f"{name}=_FACTORY")
            value = f"_factory_{name}() if {name} is _FACTORY else {name}"
        else:
            params.append(name)
        body.append(f"    _set_{name}(self, {value})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body)
    exec(source, namespace)  # generated from the fields, as dataclass does
    init = namespace["__init__"]
    generated = cls.__init__
    init.__qualname__ = generated.__qualname__
    init.__annotations__ = generated.__annotations__
    init.__doc__ = generated.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 - mypy forbids assigning a method
    return cls


Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")


def new_id() -> str:
    """A fresh random id: 32 lowercase hex characters."""
    return uuid.uuid4().hex


@_quick_init
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


@_quick_init
@dataclass(frozen=True, slots=True)
class Usage:
    """
    Token usage as the model reported it; a count it did not report is None.

    Read from LangChain's ``usage_metadata`` (``input_tokens``, ``output_tokens``,
    ``total_tokens``; ``input_token_details.cache_read`` and ``.cache_creation``;
    ``output_token_details.reasoning``), else from the ``token_usage`` of the
    model's ``llm_output``. A turn's usage is the sum over its model calls.

    .. versionadded:: 0.3.0
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None


@_quick_init
@dataclass(frozen=True, slots=True)
class ModelCall:
    """
    One model call of a turn: the model it used and what it reported of usage.

    .. versionadded:: 0.3.0
    """

    model: str | None
    usage: Usage | None = None
