"""Exporters: where finished records go (see :mod:`.base` for the interface)."""

from .base import Exporter, ExportResult
from .memory import InMemoryExporter

__all__ = ["ExportResult", "Exporter", "InMemoryExporter"]
