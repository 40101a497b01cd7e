"""
OTLP protobuf, written directly: an ``ExportTraceServiceRequest`` as bytes.

Why not build ``opentelemetry-proto`` message objects: constructing one Python
object per attribute and value cost about 150 µs per 3-span turn, most of the
export worker's time, and made 5,000 turns/s out of reach. Writing the wire
format is a few byte concatenations per attribute, and what a turn's spans
share (user, session, the app's metadata: one attribute block on every span)
is encoded once per turn. The tests decode every request this writes with
``opentelemetry-proto`` itself.

Field numbers follow ``opentelemetry/proto/trace/v1/trace.proto``,
``common/v1/common.proto`` and ``resource/v1/resource.proto``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

from .genai import AttributeValue, SpanData

__all__ = ["encode_spans"]

_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_SMALL = [bytes([n]) for n in range(128)]
_KEYS: dict[str, bytes] = {}  # attribute key -> its encoded KeyValue.key field
# (key, short value) -> the whole encoded KeyValue: most attributes repeat from
# turn to turn (operation names, span kinds, models, providers, token counts).
_PAIRS: dict[tuple[str, object], bytes] = {}
_PAIRS_MAX = 8192
_SHORT = 48  # longer values (transcripts, ids) are not worth keeping

_KIND_INTERNAL = b"\x30\x01"  # Span.kind = SPAN_KIND_INTERNAL
_KIND_CLIENT = b"\x30\x03"  # SPAN_KIND_CLIENT
_FLAGS_SAMPLED = b"\x85\x01\x01\x00\x00\x00"  # Span.flags (fixed32) = sampled
_STATUS_ERROR = b"\x18\x02"  # Status.code = STATUS_CODE_ERROR


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(payload)) + payload


def _text(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode("utf-8", "replace"))


def _any_value(value: AttributeValue) -> bytes:
    if isinstance(value, str):
        return _text(b"\x0a", value)
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    values = b"".join(_field(b"\x0a", _any_value(str(v))) for v in value)
    return _field(b"\x2a", values)


def _key(key: str) -> bytes:
    encoded = _KEYS.get(key)
    if encoded is None:
        encoded = _text(b"\x0a", key)
        if len(_KEYS) < 4096:  # the key set is small; never grow without bound
            _KEYS[key] = encoded
    return encoded


def key_values(tag: bytes, attributes: Mapping[str, AttributeValue]) -> bytes:
    """Each attribute as a repeated ``KeyValue`` field *tag*."""
    # The hot loop of the exporter: string values (most of them) are written
    # inline, without the helper calls, since Python call overhead dominates.
    keys = _KEYS
    small = _SMALL
    pairs = _PAIRS
    out = []
    for k, v in attributes.items():
        text = v if type(v) is str else None
        short = (text is not None and len(text) <= _SHORT) or type(v) is int
        if short:
            cached = pairs.get((k, v))
            if cached is not None:
                out.append(tag + cached)
                continue
        key = keys.get(k) or _key(k)
        if text is not None:
            raw = text.encode("utf-8", "replace")
            n = len(raw)
            if n < 124:
                # KeyValue.value = AnyValue{string_value}: both lengths fit a byte.
                kv = key + b"\x12" + small[n + 2] + b"\x0a" + small[n] + raw
            else:
                kv = key + _field(b"\x12", _field(b"\x0a", raw))
        else:
            kv = key + _field(b"\x12", _any_value(v))
        m = len(kv)
        field = (small[m] if m < 128 else _varint(m)) + kv
        if short:
            if len(pairs) >= _PAIRS_MAX:
                pairs.clear()  # many distinct values: start over, stay bounded
            pairs[(k, v)] = field
        out.append(tag + field)
    return b"".join(out)


def _span(span: SpanData, shared: bytes) -> bytes:
    parts = [
        b"\x0a\x10" + span.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + span.span_id.to_bytes(8, "big"),
    ]
    if span.parent_id is not None:
        parts.append(b"\x22\x08" + span.parent_id.to_bytes(8, "big"))
    parts += [
        _text(b"\x2a", span.name),
        _KIND_CLIENT if span.client else _KIND_INTERNAL,
        b"\x39" + _pack_q(span.start_ns),
        b"\x41" + _pack_q(span.end_ns),
        shared,
        key_values(b"\x4a", span.attributes),
    ]
    for name, at, attributes in span.events:
        event = b"\x09" + _pack_q(at) + _text(b"\x12", name)
        parts.append(_field(b"\x5a", event + key_values(b"\x1a", attributes)))
    if span.error is not None:
        parts.append(_field(b"\x7a", _text(b"\x12", span.error[1]) + _STATUS_ERROR))
    parts.append(_FLAGS_SAMPLED)
    return b"".join(parts)


def encode_spans(
    spans: Iterable[SpanData],
    resource: Mapping[str, str],
    scope_name: str,
    scope_version: str,
) -> bytes:
    """
    One ``ExportTraceServiceRequest``: one resource, one scope, *spans*.

    A span's ``shared`` attributes (the same dict object on every span of a
    turn) are encoded once and reused.
    """
    shared_cache: dict[int, tuple[object, bytes]] = {}
    encoded: list[bytes] = []
    for span in spans:
        shared = span.shared
        hit = shared_cache.get(id(shared))
        if hit is None or hit[0] is not shared:
            hit = (shared, key_values(b"\x4a", shared))
            shared_cache[id(shared)] = hit
        encoded.append(_field(b"\x12", _span(span, hit[1])))
    scope = _field(b"\x0a", _text(b"\x0a", scope_name) + _text(b"\x12", scope_version))
    scope_spans = _field(b"\x12", scope + b"".join(encoded))
    resource_field = _field(b"\x0a", key_values(b"\x0a", resource))
    return _field(b"\x0a", resource_field + scope_spans)
