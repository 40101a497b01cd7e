"""The OTLP protobuf written by hand decodes with opentelemetry-proto."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from context_trace._exporters.genai import SpanData
from context_trace._exporters.otlp import encode_request
from context_trace._exporters.otlp_wire import encode_spans
from context_trace._record import Conversation, Feedback, Message

from .receiver import value


def _decode(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


class TestWireFormat:
    def test_every_value_type(self) -> None:
        """Strings short and long, unicode, ints, negative ints, floats, bools, arrays."""
        long = "ü" * 300
        attributes = {
            "s": "short",
            "long": long,
            "i": 7,
            "big": 2**40,
            "neg": -3,
            "f": 0.5,
            "yes": True,
            "no": False,
            "list": ["stop", "length"],
        }
        span = SpanData(
            "x", 1, 2, 3, 10, 20, dict(attributes), {"user.id": "u1"}, client=True
        )
        span.error = ("ValueError", "bad")
        span.events.append(("exception", 15, {"exception.type": "ValueError"}))
        request = _decode(encode_spans([span], {"service.name": "svc"}, "ct", "1.2"))
        (resource_spans,) = request.resource_spans
        (scope_spans,) = resource_spans.scope_spans
        (decoded,) = scope_spans.spans

        assert {"user.id": "u1", **attributes} == {
            kv.key: value(kv.value) for kv in decoded.attributes
        }
        assert (
            "x",
            (1).to_bytes(16, "big"),
            (2).to_bytes(8, "big"),
            (3).to_bytes(8, "big"),
            10,
            20,
            3,
            2,
            "bad",
            1,
        ) == (
            decoded.name,
            decoded.trace_id,
            decoded.span_id,
            decoded.parent_span_id,
            decoded.start_time_unix_nano,
            decoded.end_time_unix_nano,
            decoded.kind,
            decoded.status.code,
            decoded.status.message,
            decoded.flags,
        )
        assert [("exception", 15, {"exception.type": "ValueError"})] == [
            (e.name, e.time_unix_nano, {kv.key: value(kv.value) for kv in e.attributes})
            for e in decoded.events
        ]
        assert ("ct", "1.2", {"service.name": "svc"}) == (
            scope_spans.scope.name,
            scope_spans.scope.version,
            {kv.key: value(kv.value) for kv in resource_spans.resource.attributes},
        )

    def test_hand_made_records(self) -> None:
        """Records whose ids are not run ids still map to valid, stable trace ids."""
        turn = Conversation(
            id="turn-1",
            user_id="u1",
            session_id="s1",
            started_at=1.0,
            ended_at=2.0,
            messages=(Message("user", "hi"), Message("assistant", "hello")),
        )
        rating = Feedback(
            id="rating-1",
            session_id="s1",
            user_id="u1",
            rating=1,
            conversation_id="turn-1",
        )
        spans = _decode(encode_request([turn, rating], {})).resource_spans[0]
        root, evaluation = spans.scope_spans[0].spans

        assert root.trace_id == evaluation.trace_id
        assert root.span_id == evaluation.parent_span_id
        assert 16 == len(root.trace_id)
        assert (1_000_000_000, 2_000_000_000) == (
            root.start_time_unix_nano,
            root.end_time_unix_nano,
        )
