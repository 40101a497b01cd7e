"""OpenTelemetry export; skipped without the ``otel`` extra."""

import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.proto")
