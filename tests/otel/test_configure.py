"""Configuring OTLP export: names, the OpenTelemetry environment, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import context_trace as ct
from context_trace._exporters.otlp import OTLPSender, ProviderSender
from context_trace._exporters.outbox import OutboxExporter


def _exporter() -> OutboxExporter:
    exporter = ct._runtime._pipeline().exporter
    assert isinstance(exporter, OutboxExporter)
    return exporter


class TestEnvironment:
    def test_traces_endpoint_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as is, over the base endpoint."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:2/t")
        config = ct.configure(exporter="otlp")

        assert "http://127.0.0.1:2/t" == config.otlp_endpoint

    def test_base_endpoint_gets_the_traces_path(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """OTEL_EXPORTER_OTLP_ENDPOINT plus /v1/traces."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")
        config = ct.configure(exporter="otlp")

        assert "http://127.0.0.1:4318/v1/traces" == config.otlp_endpoint

    def test_default_endpoint(self) -> None:
        """Nothing set: the local collector's default OTLP/HTTP port."""
        assert "http://localhost:4318/v1/traces" == (
            ct.configure(exporter="otlp").otlp_endpoint
        )

    def test_otel_variables_ignored_without_otlp(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With OTLP export off, even a malformed OTEL_* variable changes nothing."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "garbage")
        config = ct.configure()

        assert (False, ()) == (config.otlp, config.exporters)


class TestNames:
    def test_exporter_variable(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """CONTEXT_TRACE_EXPORTER=otlp: an outbox with one otlp destination, no local copy."""
        monkeypatch.setenv("CONTEXT_TRACE_EXPORTER", "otlp")
        ct.configure(db_path=tmp_path / "x.db")
        exporter = _exporter()

        assert (["otlp"], False) == (
            list(exporter.senders),
            exporter.store._keep_local,
        )
        assert isinstance(exporter.senders["otlp"], OTLPSender)

    def test_sqlite_otlp_and_a_token(self, tmp_path: Path) -> None:
        """sqlite,otlp with a token: local copy, Context API and OTLP side by side."""
        ct.configure(
            exporter="sqlite,otlp",
            token="t0k",
            endpoint="http://127.0.0.1:9",
            db_path=tmp_path / "x.db",
        )
        exporter = _exporter()

        assert (["context", "otlp"], True) == (
            list(exporter.senders),
            exporter.store._keep_local,
        )

    def test_tracer_provider(self, memory: object, tmp_path: Path) -> None:
        """tracer_provider= turns OTLP on through the app's provider."""
        config = ct.configure(tracer_provider=memory[0], db_path=tmp_path / "x.db")  # type: ignore[index]

        assert config.otlp
        assert isinstance(_exporter().senders["otlp"], ProviderSender)


class TestErrors:
    def test_bad_exporter_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bad CONTEXT_TRACE_EXPORTER names the variable and the choices."""
        monkeypatch.setenv("CONTEXT_TRACE_EXPORTER", "sqlite,jaeger")
        with pytest.raises(
            ValueError,
            match="CONTEXT_TRACE_EXPORTER must be a comma list of sqlite, otlp, got 'sqlite,jaeger'",
        ):
            ct.configure()

    def test_bad_exporter_argument(self) -> None:
        """exporter='zipkin' names the argument."""
        with pytest.raises(ValueError, match=r"^exporter must be a comma list"):
            ct.configure(exporter="zipkin")

    def test_bad_endpoint_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A non-http OTEL_EXPORTER_OTLP_ENDPOINT names the variable."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://collector:4317")
        with pytest.raises(
            ValueError, match="OTEL_EXPORTER_OTLP_ENDPOINT must be an http"
        ):
            ct.configure(exporter="otlp")

    def test_bad_capture_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bad content-capture switch names its variable."""
        monkeypatch.setenv(
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "maybe"
        )
        with pytest.raises(
            ValueError, match="OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
        ):
            ct.configure(exporter="otlp")

    def test_bad_tracer_provider(self) -> None:
        """tracer_provider must be a provider."""
        with pytest.raises(
            TypeError,
            match="tracer_provider must be an OpenTelemetry TracerProvider, got str",
        ):
            ct.configure(tracer_provider="yes")
