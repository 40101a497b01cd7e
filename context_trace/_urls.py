"""
URLs for messages: :func:`safe_url`, the only form of a URL that is shown.

A leaf (standard library only), so both the exporters (endpoints) and the
stores (a PostgreSQL URL with its password) mask URLs the same way without
importing each other.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["safe_url"]


def safe_url(url: str) -> str:
    """*url* for messages: user info, query and fragment masked, never shown."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        if parts.username or parts.password:
            host = f"***@{host}"
        query = "?***" if parts.query else ""
        return f"{parts.scheme}://{host}{parts.path}{query}"
    except ValueError:
        return "<unparseable URL>"
