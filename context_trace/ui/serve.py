"""
Run the dashboard for ``context-trace ui``: checks, the dashboard index brought
level with the store (built whole the first time), then waitress on the chosen
address until Ctrl-C. The store is only ever read.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading
import time
import webbrowser
from datetime import tzinfo
from pathlib import Path
from typing import Any, TextIO

try:
    import waitress
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "context_trace.ui requires Flask and waitress; install 'context-trace[ui]'"
    ) from exc

from context_trace._exporters.http_policy import is_loopback
from context_trace._sigterm import block_process_signals
from context_trace._store.ui_index import UIIndex

from .app import create_app

__all__ = [
    "ENV_UI_TOKEN",
    "UIError",
    "is_loopback",
    "main",
    "make_server",
    "open_index",
]

ENV_UI_TOKEN = "CONTEXT_TRACE_UI_TOKEN"
_THREADS = 8
# Opening an index takes longer than this only when an earlier version made it
# (its new tables are filled once): then say so, rather than seem to hang.
_SLOW_OPEN = 3.0


class UIError(Exception):
    """A problem found before serving (bad host, missing store): one line for the user."""


def open_index(
    path: Path, out: TextIO, index_path: Path | None = None, cache: Any = None
) -> UIIndex:
    """
    Open the store's dashboard index and bring it level with the store.

    The first run indexes every stored turn (about a minute per million,
    progress on *out*); later runs only the turns added since. With *cache*
    (a PostgreSQL store's local cache, whose file is *path*), each refresh
    copies the store's new rows into the cache first.

    Raises:
        UIError: If the store is missing or unreadable, or the index cannot be
            written.

    .. versionadded:: 0.2.0
    """
    if not path.exists():
        raise UIError(f"no database at {path} (run 'context-trace demo' to make one)")
    if path.is_dir():
        raise UIError(f"{path} is a directory, not a database")
    opened = threading.Event()

    def notice() -> None:
        block_process_signals()  # Ctrl-C goes to the main thread
        if not opened.wait(_SLOW_OPEN):
            print(
                f"Opening the dashboard index {index_path or 'beside the store'}: one"
                " made by an earlier version of context-trace is brought up to date"
                " once (about two minutes per million turns) ...",
                file=out,
            )
            out.flush()

    threading.Thread(target=notice, name="context-trace-ui-open", daemon=True).start()
    try:
        if cache is not None:
            from context_trace._store.postgres.cache import SyncedIndex

            index: UIIndex = SyncedIndex(cache, index_path)
        else:
            index = UIIndex(path, index_path)
    except (sqlite3.Error, OSError, ValueError) as exc:
        raise UIError(f"cannot index {path}: {exc}") from None
    finally:
        opened.set()
    try:
        done, total = index.counts()
        if total - done > 50_000:
            print(f"Indexing {total - done:,} turns into {index.path} ...", file=out)
            out.flush()
        shown = [time.monotonic()]

        def progress(indexed: int, stored: int) -> None:
            if time.monotonic() - shown[0] >= 5:
                shown[0] = time.monotonic()
                print(f"  {indexed:,} / {stored:,}", file=out)
                out.flush()

        index.build(progress)
    except (sqlite3.Error, OSError) as exc:
        index.close()
        raise UIError(f"cannot index {path} into {index.path}: {exc}") from None
    return index


def make_server(
    db: str | os.PathLike[str],
    host: str,
    port: int,
    token: str | None,
    index: UIIndex | None = None,
    tz: tzinfo | None = None,
    prices: Any = None,
) -> waitress.server.BaseWSGIServer:
    """
    Build (and bind) the waitress server for the dashboard over *db*.

    Args:
        index: The store's dashboard index (default: one at the default path).
        tz: The time zone of retention's days and weeks (default: UTC).
        prices: Price overrides for the cost figures (see ``create_app``).

    Raises:
        UIError: If *host* is not loopback and *token* is empty.

    .. versionadded:: 0.2.0
    """
    if not is_loopback(host) and not token:
        raise UIError(
            f"--host {host} is reachable from other machines; set a token with"
            f" --token or {ENV_UI_TOKEN} to serve it"
        )
    app = create_app(db, token=token or None, index=index, tz=tz, prices=prices)
    server: waitress.server.BaseWSGIServer = waitress.create_server(
        app, host=host, port=port, threads=_THREADS, ident="context-trace"
    )
    return server


def main(
    db: Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    open_browser: bool = False,
    out: TextIO = sys.stdout,
    index_path: Path | None = None,
    tz: tzinfo | None = None,
    prices_path: Path | None = None,
    cache: Any = None,
) -> int:
    """
    Serve the dashboard until Ctrl-C; the ``context-trace ui`` command.

    Args:
        db: The store.
        host: Address to bind; other than loopback only with a token.
        port: TCP port (0: any free port).
        token: Required from every request when set (default:
            ``$CONTEXT_TRACE_UI_TOKEN``).
        open_browser: Open the URL in a web browser.
        out: Where the URL is printed.
        index_path: The dashboard's index file (default:
            :func:`context_trace._store.ui_index.default_index_path`).
        tz: The time zone of retention's days and weeks (default: UTC).
        prices_path: A JSON or TOML file of price overrides (``--prices``).
        cache: A PostgreSQL store's local cache
            (:class:`context_trace._store.postgres.cache.PostgresCache`) whose
            file is *db*: kept in step with the store while serving.

    Returns:
        0 after Ctrl-C.

    Raises:
        UIError: If the host, token or store is unusable.

    .. versionadded:: 0.2.0
    """
    token = token or os.environ.get(ENV_UI_TOKEN) or None
    if not is_loopback(host) and not token:
        make_server(db, host, port, token)  # raises UIError
    prices = None
    if prices_path is not None:  # checked before the index is built
        from context_trace.analytics.pricing import load_prices

        try:
            prices = load_prices(prices_path, "--prices")
        except ValueError as exc:
            raise UIError(str(exc)) from None
    try:
        index = open_index(db, out, index_path, cache)
    except BaseException:
        if cache is not None:
            cache.close()
        raise
    try:
        server = make_server(db, host, port, token, index, tz, prices)
    except OSError as exc:
        index.close()
        raise UIError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None

    def _stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM (a service manager) stops it as cleanly as Ctrl-C. Both are
    # handled from before the URL is printed: a Ctrl-C the moment the URL
    # appears is still a clean stop, not a traceback or status 130.
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        bound = server.effective_port
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}/"
        served = f"{cache.location} (local cache {db})" if cache is not None else db
        print(f"context-trace ui: serving {served} read-only at {url}", file=out)
        if token:
            print("A token is required: open the URL and enter it.", file=out)
        print("Press Ctrl-C to stop.", file=out)
        out.flush()
        if open_browser:
            webbrowser.open(url)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C while closing must not leave the index open.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            server.close()
            index.close()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)
    print("context-trace ui: stopped", file=out)
    return 0
