"""The public surface: exactly what __all__ says, importable without extras."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import context_trace


def test_exported_members():
    """__all__ lists every public name of the package, sorted, and nothing else."""
    lazy = {"asgi", "flask", "testing"}  # PEP 562 attributes, loaded on first use
    public = sorted(
        name
        for name, value in vars(context_trace).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and name != "annotations"  # from __future__
    )

    assert sorted(context_trace.__all__) == context_trace.__all__
    assert sorted(set(context_trace.__all__) - lazy) == public


def test_import_does_not_pull_optional_frameworks():
    """`import context_trace` loads neither Flask, Starlette nor pytest."""
    code = (
        "import sys, context_trace; "
        "print(','.join(m for m in ('flask', 'starlette', 'fastapi', 'pytest') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert "" == out.stdout.strip()


def test_version_is_a_string_literal():
    """The version setuptools reads is the package's __version__."""
    assert isinstance(context_trace.__version__, str)
    assert context_trace.__version__.count(".") == 2


def test_lazy_submodules_resolve():
    """ct.testing resolves on first access; unknown attributes raise AttributeError."""
    import pytest

    assert callable(context_trace.testing.capture)
    with pytest.raises(AttributeError, match="no_such_thing"):
        context_trace.no_such_thing  # noqa: B018
