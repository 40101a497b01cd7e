"""
Record (de)serialisation: records and message lists to and from JSON text.

Record format 2 (0.3) writes the typed measurements of a :class:`Conversation`
in keys of their own, each only when present: ``model``, ``usage`` (``[input,
output, total, cache_read, cache_write, reasoning]``, null where not reported),
``tags``, ``run_name``, ``calls`` (``[[model, usage], ...]``), ``abandoned``,
``model_input``; ``metadata`` is the app's own. Format 1 (0.1 and 0.2) kept the
measurements as strings in ``metadata``: they are read into the typed fields
and left out of the app's metadata, so outbox rows queued by 0.2 still deliver
what 0.2 would have sent.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from context_trace._record import (
    MEASURED_KEYS,
    ROLES,
    Conversation,
    Feedback,
    Message,
    ModelCall,
    Record,
    Role,
    Span,
    Usage,
    measurements_from_metadata,
)

_orjson: Any
try:  # orjson: JSON in C, ~5x the standard library's speed on these rows
    import orjson as _orjson
except ImportError:  # pragma: no cover - PyPy, or an install without it
    _orjson = None

_RECORD_FORMAT = 2
_FORMATS = (1, 2)
# One encoder: json.dumps() with options builds a new encoder per call.
JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_json_decode = json.JSONDecoder().decode


def encode(value: Any) -> str:
    """
    *value* as compact JSON text, non-ASCII kept: the store's one encoder.

    orjson when installed (it comes with ``langsmith``, which ``langchain-core``
    requires), else the standard library; both write the same text for the
    store's rows (lists and str-keyed dicts of str, None, bool and int; a float
    may differ in exponent form, ``1e-7`` for ``1e-07``, and reads back equal). What
    orjson refuses (a lone surrogate, an integer beyond 64 bits) goes through
    the standard library, which writes it as before (the SQLite exporter then
    stores a batch with lone surrogates replaced).
    """
    if _orjson is not None:
        try:
            text: str = _orjson.dumps(value).decode()
            return text
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
    return JSON.encode(value)


def decode(text: str) -> Any:
    """JSON *text* read back (orjson when installed, see :func:`encode`)."""
    if _orjson is not None:
        try:
            return _orjson.loads(text)
        except ValueError:  # orjson.JSONDecodeError is a ValueError
            pass
    return _json_decode(text)


def record_to_json(record: Record) -> str:
    """
    Serialise a record to compact JSON; :func:`record_from_json` reverses it.

    The outbox stores records this way. Every field round-trips exactly,
    including float timestamps and metadata.

    Args:
        record: A :class:`Conversation` or :class:`Feedback`.

    Returns:
        A JSON object as text, with ``"type"`` ``"conversation"`` or ``"feedback"``.

    Raises:
        TypeError: If *record* is neither.

    .. versionadded:: 0.1.0
    """
    data: dict[str, Any]
    if isinstance(record, Conversation):
        data = {
            "v": _RECORD_FORMAT,
            "type": "conversation",
            "id": record.id,
            "user_id": record.user_id,
            "session_id": record.session_id,
            "started_at": record.started_at,
            "ended_at": record.ended_at,
            "messages": [message_row(m) for m in record.messages],
            "metadata": dict(record.metadata),
            "error": record.error,
        }
        # Written only when present, so records without spans read as before.
        if record.spans:
            data["spans"] = [span_row(s) for s in record.spans]
        if record.trace_id is not None:
            data["trace"] = [record.trace_id, record.parent_span_id]
        if record.model is not None:
            data["model"] = record.model
        if record.usage is not None:
            data["usage"] = _usage_row(record.usage)
        if record.tags:
            data["tags"] = list(record.tags)
        if record.run_name is not None:
            data["run_name"] = record.run_name
        if record.model_calls:
            data["calls"] = [
                [c.model, None if c.usage is None else _usage_row(c.usage)]
                for c in record.model_calls
            ]
        if record.stream_abandoned:
            data["abandoned"] = True
        if record.model_input is not None:
            data["model_input"] = record.model_input
    elif isinstance(record, Feedback):
        data = {
            "v": _RECORD_FORMAT,
            "type": "feedback",
            "id": record.id,
            "session_id": record.session_id,
            "user_id": record.user_id,
            "rating": record.rating,
            "conversation_id": record.conversation_id,
            "created_at": record.created_at,
        }
        if record.trace_id is not None:
            data["trace_id"] = record.trace_id
    else:
        raise TypeError(f"not a context_trace record: {type(record).__name__}")
    return JSON.encode(data)


def record_from_json(text: str) -> Record:
    """
    Rebuild a record serialised by :func:`record_to_json`.

    Args:
        text: The JSON text.

    Returns:
        The :class:`Conversation` or :class:`Feedback`, equal to the original.

    Raises:
        ValueError: If *text* is not a serialised record.

    .. versionadded:: 0.1.0
    """
    try:
        data = json.loads(text)
        kind = data["type"]
        version = data.get("v", 1)
        if version not in _FORMATS:
            raise ValueError(f"record format {version!r} is not one this version reads")
        if kind == "conversation":
            metadata = {_str(k): _str(v) for k, v in data["metadata"].items()}
            if version == 1:
                # The measurements were strings among the app's keys.
                measured = measurements_from_metadata(metadata)
                metadata = {k: v for k, v in metadata.items() if k not in _OURS}
            else:
                measured = _measurements(data)
            return Conversation(
                id=_str(data["id"]),
                user_id=_opt_str(data["user_id"]),
                session_id=_opt_str(data["session_id"]),
                started_at=float(data["started_at"]),
                ended_at=float(data["ended_at"]),
                messages=tuple(
                    Message(
                        _role(row[0]),
                        _str(row[1]),
                        _opt_str(row[2]),
                        _opt_str(row[3]),
                        row[4:] == [True],  # a failed tool (written only when so)
                    )
                    for row in data["messages"]
                ),
                metadata=metadata,
                error=_opt_str(data["error"]),
                spans=tuple(_span(row) for row in data.get("spans", ())),
                trace_id=_opt_str(data.get("trace", (None, None))[0]),
                parent_span_id=_opt_str(data.get("trace", (None, None))[1]),
                **measured,  # type: ignore[arg-type]
            )
        if kind == "feedback":
            return Feedback(
                id=_str(data["id"]),
                session_id=_str(data["session_id"]),
                user_id=_opt_str(data["user_id"]),
                rating=int(data["rating"]),
                conversation_id=_opt_str(data["conversation_id"]),
                created_at=float(data["created_at"]),
                trace_id=_opt_str(data.get("trace_id")),
            )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a serialised context_trace record: {exc!r}") from exc
    raise ValueError(f"not a serialised context_trace record: type {kind!r}")


_OURS = frozenset(MEASURED_KEYS)


def _usage_row(usage: Usage) -> list[int | None]:
    return [
        usage.input_tokens,
        usage.output_tokens,
        usage.total_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    ]


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _usage(row: object) -> Usage | None:
    if row is None:
        return None
    if not isinstance(row, list) or len(row) != 6:
        raise ValueError(f"not a stored usage: {row!r}")
    return Usage(*(_opt_int(count) for count in row))


def _measurements(data: dict[str, Any]) -> dict[str, Any]:
    """The typed measurements of a format-2 record, by field name."""
    out: dict[str, Any] = {}
    if "model" in data:
        out["model"] = _opt_str(data["model"])
    if "usage" in data:
        out["usage"] = _usage(data["usage"])
    if "tags" in data:
        out["tags"] = tuple(_str(t) for t in data["tags"])
    if "run_name" in data:
        out["run_name"] = _opt_str(data["run_name"])
    if "calls" in data:
        out["model_calls"] = tuple(
            ModelCall(_opt_str(model), _usage(usage)) for model, usage in data["calls"]
        )
    if data.get("abandoned") is True:
        out["stream_abandoned"] = True
    if "model_input" in data:
        out["model_input"] = _opt_str(data["model_input"])
    return out


def span_row(s: Span) -> list[Any]:
    """A span as stored: its fields in order (see :class:`Span`)."""
    return list(s)


_SPAN_FIELDS = len(Span._fields)


def _span(row: list[Any]) -> Span:
    if (
        len(row) != _SPAN_FIELDS
        or row[2] not in ("chat", "tool")
        or not isinstance(row[0], str)
        or not isinstance(row[3], str)
    ):
        raise ValueError(f"not a stored span: {row!r}")
    row[4] = float(row[4])
    row[5] = float(row[5])
    row[11] = tuple(_str(r) for r in row[11])
    return Span._make(row)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _role(value: object) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise ValueError(f"unknown message role {value!r}")


def message_row(m: Message) -> list[Any]:
    """
    A message as stored: ``[role, content, name, tool_input]``, then ``true``.

    The ``true`` marks a failed tool and is omitted otherwise, so rows written by
    0.1 read the same.
    """
    row: list[Any] = [m.role, m.content, m.name, m.tool_input]
    if m.error:
        row.append(True)
    return row


def messages_json(messages: Iterable[Message]) -> str:
    """A turn's messages as stored (see :func:`message_row`)."""
    return encode(
        [
            [m.role, m.content, m.name, m.tool_input, True]
            if m.error
            else [m.role, m.content, m.name, m.tool_input]
            for m in messages
        ]
    )


def messages_from_json(text: str) -> list[Message]:
    return [Message(*item) for item in decode(text)]


def tool_error_sql(table: str = "") -> str:
    """
    SQL true for a stored turn whose tool failed while the turn itself did not.

    A tool error the agent handled (``ToolNode(handle_tool_errors=True)``, an
    error returned to the model) leaves the turn answered: a state of its own,
    told apart from a failed turn (``error IS NOT NULL``), which it never
    counts. The converter names the failed tools in the ``failed_tools``
    metadata; ``instr`` skips the JSON parse for the turns without one.

    Args:
        table: The alias of the conversations table in the query (``"c"``), if any.
    """
    col = f"{table}." if table else ""
    return (
        f"({col}error IS NULL AND instr({col}metadata, '\"failed_tools\"') > 0"
        f" AND json_extract({col}metadata, '$.failed_tools') IS NOT NULL)"
    )


def is_tool_error(error: str | None, metadata: Mapping[str, str]) -> bool:
    """The same test as :func:`tool_error_sql`, on a turn already read."""
    return error is None and "failed_tools" in metadata


def _clean(text: str) -> str:
    """*text* with lone surrogates (not encodable as UTF-8) replaced by ``?``."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _clean_opt(text: str | None) -> str | None:
    return None if text is None else _clean(text)


def scrubbed(batch: Sequence[Record]) -> list[Record]:
    """*batch* with every string made storable (see :func:`_clean`)."""
    out: list[Record] = []
    for record in batch:
        if isinstance(record, Conversation):
            out.append(
                dataclasses.replace(
                    record,
                    id=_clean(record.id),
                    user_id=_clean_opt(record.user_id),
                    session_id=_clean_opt(record.session_id),
                    messages=tuple(
                        Message(
                            m.role,
                            _clean(m.content),
                            _clean_opt(m.name),
                            _clean_opt(m.tool_input),
                            m.error,
                        )
                        for m in record.messages
                    ),
                    metadata={_clean(k): _clean(v) for k, v in record.metadata.items()},
                    error=_clean_opt(record.error),
                    model=_clean_opt(record.model),
                    tags=tuple(_clean(t) for t in record.tags),
                    run_name=_clean_opt(record.run_name),
                    model_input=_clean_opt(record.model_input),
                )
            )
        else:
            out.append(
                dataclasses.replace(
                    record,
                    id=_clean(record.id),
                    session_id=_clean(record.session_id),
                    user_id=_clean_opt(record.user_id),
                    conversation_id=_clean_opt(record.conversation_id),
                )
            )
    return out
