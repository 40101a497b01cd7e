"""A real OTLP/HTTP traces receiver on 127.0.0.1 that decodes what it gets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def value(v: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class Received:
    """One decoded span, with its resource's attributes."""

    def __init__(self, span: Any, resource: dict[str, Any]) -> None:
        self.name: str = span.name
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.parent_id = span.parent_span_id.hex() or None
        self.start_ns: int = span.start_time_unix_nano
        self.end_ns: int = span.end_time_unix_nano
        self.kind: int = span.kind
        self.status: int = span.status.code
        self.attributes = {kv.key: value(kv.value) for kv in span.attributes}
        self.events = [
            (e.name, {kv.key: value(kv.value) for kv in e.attributes})
            for e in span.events
        ]
        self.resource = resource

    def __repr__(self) -> str:
        return f"<Received {self.name!r}>"


class OTLPReceiver:
    """
    ``POST /v1/traces`` answered from a script of ``(status, headers)``, then 200.

    Every request's headers and decoded spans are kept, accepted or not.
    """

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.requests: list[tuple[int, dict[str, str], list[Received]]] = []
        self.times: list[float] = []  # time.monotonic() of each request
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                spans = [
                    Received(
                        span,
                        {kv.key: value(kv.value) for kv in rs.resource.attributes},
                    )
                    for rs in request.resource_spans
                    for ss in rs.scope_spans
                    for span in ss.spans
                ]
                with receiver.changed:
                    status, headers = (
                        receiver.script.pop(0) if receiver.script else (200, {})
                    )
                    receiver.requests.append(
                        (status, {k.lower(): v for k, v in self.headers.items()}, spans)
                    )
                    receiver.times.append(time.monotonic())
                    receiver.changed.notify_all()
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                for name, text in headers.items():
                    self.send_header(name, text)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1/traces"

    def respond(self, statuses: Iterable[int | tuple[int, dict[str, str]]]) -> None:
        with self.lock:
            for item in statuses:
                self.script.append(item if isinstance(item, tuple) else (item, {}))

    def accepted(self) -> list[Received]:
        """Spans of the requests answered with 2xx."""
        with self.lock:
            return [s for st, _, spans in self.requests if st < 300 for s in spans]

    def wait_requests(self, n: int, timeout: float = 30.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.requests) >= n, timeout)

    def wait_accepted(self, spans: int, timeout: float = 30.0) -> bool:
        with self.changed:
            return self.changed.wait_for(
                lambda: sum(len(s) for st, _, s in self.requests if st < 300) >= spans,
                timeout,
            )

    def __enter__(self) -> OTLPReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
