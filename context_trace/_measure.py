"""
What a model call measured: the model's name and the tokens it used.

One home for the rules that read a model call (:class:`~._turn.ModelRun`) and
its result (an ``LLMResult``, or the :class:`~._turn.ModelResult` a turn keeps
of it): the converter (``_convert.py``) reads them for a conversation's model
and usage, the span builder (``_runtree.py``) for a span's request and response
models, token counts and finish reasons. Runs on the export thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.outputs import ChatGeneration

from ._record import Usage
from ._turn import ModelResult, ModelRun

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult

__all__ = [
    "add_usage",
    "field",
    "finish_reasons",
    "model_name",
    "requested_model",
    "response_model",
    "result_message",
    "usage",
]

# The counts of an ``llm_output``'s ``token_usage``, as input, output, total.
_LLM_OUTPUT_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
# Where a response names its model (``response_metadata``, ``llm_output``).
_RESPONSE_MODEL_KEYS = ("model_name", "model")
# Where a call's invocation params name the model it asked for.
_PARAM_MODEL_KEYS = ("model", "model_name", "model_id", "deployment_name")

# (type, attribute name) -> whether the class (or a base) defines it: a
# property such as a custom message's ``tool_calls``. Bounded by the message
# and generation types a process meets times a handful of names.
_CLASS_ATTRS: dict[tuple[type, str], bool] = {}
_MISSING = object()


def field(obj: Any, name: str) -> Any:
    """
    ``getattr(obj, name, None)`` for LangChain's pydantic objects, without the miss.

    ``getattr(message, "tool_calls", None)`` on a message type without that
    field goes through pydantic's ``__getattr__`` and an exception: ~13 µs a
    miss, which was a quarter of a parrot turn's conversion. Fields live in
    the instance ``__dict__``, extra fields (``ChatMessage(..., tool_calls=...)``)
    in ``__pydantic_extra__``; anything else the class defines (a property) is
    read with ``getattr``.
    """
    fields = getattr(obj, "__dict__", None)
    if fields is not None:
        value = fields.get(name, _MISSING)
        if value is not _MISSING:
            return value
        extra = getattr(obj, "__pydantic_extra__", None)
        if extra and name in extra:
            return extra[name]
    kind = type(obj)
    defined = _CLASS_ATTRS.get((kind, name))
    if defined is None:
        defined = any(name in vars(base) for base in kind.__mro__)
        _CLASS_ATTRS[(kind, name)] = defined
    return getattr(obj, name, None) if defined else None


def result_message(result: LLMResult | ModelResult | None) -> BaseMessage | None:
    """The message of a result's first generation (None: not a chat model's)."""
    if type(result) is ModelResult:
        return result.message
    if result is None or not result.generations or not result.generations[0]:
        return None
    gen = result.generations[0][0]
    return gen.message if isinstance(gen, ChatGeneration) else None


def _name_in(source: Mapping[str, Any] | None) -> str | None:
    if not source:
        return None
    for key in _RESPONSE_MODEL_KEYS:
        value = source.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def response_model(result: LLMResult | ModelResult | None) -> str | None:
    """
    The model a response names, if any.

    The ``model_name`` (or ``model``) of a generation's message's
    ``response_metadata``, the first generation first, else of the result's
    ``llm_output``.
    """
    if result is None:
        return None
    if type(result) is ModelResult:  # one generation: no lists to walk
        name = _name_in(getattr(result.message, "response_metadata", None))
        return name if name is not None else _name_in(result.llm_output)
    for gens in result.generations or ():
        for gen in gens:
            message = getattr(gen, "message", None)
            name = _name_in(getattr(message, "response_metadata", None))
            if name is not None:
                return name
    return _name_in(result.llm_output)


def requested_model(call: ModelRun) -> str | None:
    """
    The model a call asked for, as it was called.

    Its invocation params' ``model`` (``model_name``, ``model_id``,
    ``deployment_name``), else the run metadata's ``ls_model_name``, else the
    model class's name (``serialized``), else the params' ``_type``.
    """
    params = call.params or {}
    for key in _PARAM_MODEL_KEYS:
        value = params.get(key)
        if isinstance(value, str) and value:
            return value
    meta = call.metadata or {}
    if isinstance(meta.get("ls_model_name"), str) and meta["ls_model_name"]:
        return str(meta["ls_model_name"])
    serialized = call.serialized or {}
    if isinstance(serialized.get("name"), str):
        return str(serialized["name"])
    ident = serialized.get("id")
    if isinstance(ident, list) and ident:
        return str(ident[-1])
    if isinstance(params.get("_type"), str):
        return str(params["_type"])
    return None


def model_name(call: ModelRun, result: LLMResult | ModelResult | None) -> str | None:
    """The model a call used: as the response names it, else as it was called."""
    return response_model(result) or requested_model(call)


def finish_reasons(result: LLMResult | ModelResult | None) -> tuple[str, ...]:
    """Each generation's ``finish_reason`` (or ``stop_reason``), where reported."""
    if result is None:
        return ()
    reasons: list[str] = []
    for gens in result.generations or ():
        for gen in gens:
            info = getattr(gen, "generation_info", None) or {}
            meta = getattr(getattr(gen, "message", None), "response_metadata", None)
            for source in (info, meta or {}):
                value = source.get("finish_reason") or source.get("stop_reason")
                if isinstance(value, str) and value:
                    reasons.append(value)
                    break
    return tuple(reasons)


def _detail(details: Any, key: str) -> int | None:
    value = details.get(key) if isinstance(details, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _plus(total: int | None, value: int | None) -> int | None:
    if value is None:
        return total
    return value if total is None else total + value


def usage(result: LLMResult | ModelResult | None) -> Usage | None:
    """
    One call's token usage, or None when the model reports none.

    LangChain's ``usage_metadata`` of each generation (with the cache-read,
    cache-write and reasoning counts of its ``input_token_details`` and
    ``output_token_details`` where reported), else the ``token_usage`` of the
    result's ``llm_output``.
    """
    if result is None:
        return None
    found = False
    prompt = completion = total = 0
    cache_read = cache_write = reasoning = None
    # A ModelResult is its own one generation: no lists built or walked.
    generations: Any = (
        ((result,),) if type(result) is ModelResult else result.generations
    )
    for gens in generations:
        for gen in gens:
            message = gen.message if type(gen) is ModelResult else field(gen, "message")
            counts = field(message, "usage_metadata")
            if counts:
                found = True
                prompt += int(counts.get("input_tokens", 0) or 0)
                completion += int(counts.get("output_tokens", 0) or 0)
                total += int(counts.get("total_tokens", 0) or 0)
                details = counts.get("input_token_details")
                cache_read = _plus(cache_read, _detail(details, "cache_read"))
                cache_write = _plus(cache_write, _detail(details, "cache_creation"))
                details = counts.get("output_token_details")
                reasoning = _plus(reasoning, _detail(details, "reasoning"))
    if not found and result.llm_output:
        reported = result.llm_output.get("token_usage") or result.llm_output.get(
            "usage"
        )
        if isinstance(reported, Mapping):
            found = True
            values = [reported.get(k) for k in _LLM_OUTPUT_KEYS]
            prompt, completion, total = (v if isinstance(v, int) else 0 for v in values)
    if not found:
        return None
    return Usage(prompt, completion, total, cache_read, cache_write, reasoning)


def add_usage(total: Usage | None, usage: Usage | None) -> Usage | None:
    """Two usages summed, count by count (None where neither reports one)."""
    if usage is None:
        return total
    if total is None:
        return usage
    return Usage(
        _plus(total.input_tokens, usage.input_tokens),
        _plus(total.output_tokens, usage.output_tokens),
        _plus(total.total_tokens, usage.total_tokens),
        _plus(total.cache_read_tokens, usage.cache_read_tokens),
        _plus(total.cache_write_tokens, usage.cache_write_tokens),
        _plus(total.reasoning_tokens, usage.reasoning_tokens),
    )
