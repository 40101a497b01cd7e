"""The public surface: exactly what __all__ says, importable without extras."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import context_trace


def test_exported_members():
    """__all__ lists every public name of the package, sorted, and nothing else."""
    lazy = {
        "asgi",
        "celery",
        "flask",
        "testing",
    }  # PEP 562 attributes, loaded on first use
    listed = sorted(
        name
        for name in dir(context_trace)
        if name.isidentifier()  # pytest's assertion rewriting adds "@py_builtins"
        and not name.startswith("_")
        and name not in lazy
        and not isinstance(vars(context_trace).get(name), ModuleType)  # submodules
        and name != "annotations"
    )
    for name in listed:  # the recording machinery's names resolve on first use
        getattr(context_trace, name)
    public = sorted(
        name
        for name, value in vars(context_trace).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and name != "annotations"  # from __future__
    )

    assert sorted(context_trace.__all__) == context_trace.__all__
    assert sorted(set(context_trace.__all__) - lazy) == public == listed


def test_lazy_names_are_the_defining_modules_objects():
    """A name resolved on first use is the very object of the module defining it."""
    from context_trace import _compat, _runtime, _scopes

    assert context_trace.track_user is _scopes.track_user
    assert context_trace.Session is _scopes.Session
    assert context_trace.configure is _runtime.configure
    assert context_trace.ContextCallbackHandler is _compat.ContextCallbackHandler


def test_import_does_not_load_the_recording_machinery():
    """`import context_trace` loads no LangChain until a recording name is used."""
    code = (
        "import sys, context_trace as ct; "
        "print(','.join(m for m in ('langchain_core', 'langsmith') if m in sys.modules)); "
        "ct.track_user; "
        "print(','.join(m for m in ('langchain_core', 'langsmith') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert ["", "langchain_core,langsmith"] == out.stdout.splitlines()


def test_import_does_not_pull_optional_frameworks():
    """`import context_trace` loads neither Flask, Starlette, Celery nor pytest."""
    code = (
        "import sys, context_trace; "
        "print(','.join(m for m in ('flask', 'starlette', 'fastapi', 'celery', 'pytest') if m in sys.modules))"
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
