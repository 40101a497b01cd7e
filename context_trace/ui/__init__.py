"""
``context-trace ui``: a local, read-only dashboard over the SQLite store.

:func:`context_trace.ui.app.create_app` builds the Flask app (pages and the JSON
API); :func:`context_trace.ui.serve.main` runs it on waitress for the CLI.
Needs the ``ui`` extra: ``pip install 'context-trace[ui]'``.
"""

__all__: list[str] = []
