"""``python -m context_trace``: the ``context-trace`` command line."""

from __future__ import annotations

from context_trace.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
