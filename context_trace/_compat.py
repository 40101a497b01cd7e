"""
Drop-in replacement for langchain_community's ``ContextCallbackHandler``.

Apps written for ``langchain_community.callbacks.context_callback`` pass a
``ContextCallbackHandler(token)`` by hand in ``callbacks=[...]`` (to the chat
model, to the chain, or both) and tag the user with ``headers={"user_id": ...}``
on the chat model. Changing that one import line to
``from context_trace import ContextCallbackHandler`` keeps the code as it is and
fixes what the community handler gets wrong:

- It keeps one ``messages`` list on the instance, so concurrent requests sharing
  a handler mix their users' messages. Ours is a :class:`RecordingHandler`: all
  state is keyed by run id.
- It reads ``outputs["text"]``, which LCEL chains do not return. Ours extracts
  the answer from whatever the root run returned (``_text.answer_text``).
- It posts to the API inside the callback, blocking the request. Ours hands the
  finished turn to the background pipeline and returns.

Attribution of each root run, first match wins:

1. The active ``track_user`` / ``context_session`` scope. Inside a scope the
   scope's own recorder sees every run too (LangChain's configure hook adds it),
   so the drop-in leaves the turn to it and the turn is recorded exactly once.
2. Otherwise an anonymous scope, whose user and session come from the model's
   ``headers`` / ``default_headers`` (``user_id``, ``X-User-Id``,
   ``session_id``, ``X-Session-Id``) or OpenAI's ``user`` field. That lookup
   runs on the export thread (``_attribution.header_ids``), not in the callback.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
from typing import Any

from . import _activation, _runtime
from ._activation import Scope
from ._handler import RecordingHandler
from ._log import log_once

__all__ = ["ContextCallbackHandler"]

_logger = logging.getLogger(__name__)

# Serialises the one-time "configure with the handler's token" step: many
# handlers may be built at once (one per request, as the community docs show).
_configure_lock = threading.Lock()


def _configure_token(token: str) -> None:
    """
    Configure *token* unless a token or an exporter is already configured.

    Every other setting of the current configuration is kept: ``configure()``
    otherwise starts again from the environment.
    """
    with _configure_lock:
        config = _runtime.active_config()
        if config.exporter is not None or config.token:
            if config.token and config.token != token:
                log_once(
                    _logger,
                    "compat.token",
                    "context_trace: ContextCallbackHandler got a token that differs "
                    "from the configured one; the configured token is used",
                )
            return
        # configure() starts again from the environment: pass every current value
        # it accepts, so only the token changes (Config also holds derived fields
        # that are not configure() arguments).
        accepted = inspect.signature(_runtime.configure).parameters
        current = {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(config)
            if f.name in accepted
        }
        current["token"] = token
        _runtime.configure(**current)


class ContextCallbackHandler(RecordingHandler):
    """
    Drop-in for ``langchain_community``'s ``ContextCallbackHandler``.

    Use it when migrating code that passes the community handler by hand: change
    the import and nothing else. It records one conversation per root run it
    sees, never blocks the caller, and may be shared by concurrent requests (its
    state is keyed by run id). New code needs no handler: use
    :func:`context_trace.track_user`.

    Inside a ``track_user``/``context_session`` scope the turn is attributed to
    the scope (and recorded once, by the scope's recorder). Outside, it is
    attributed to the user and session in the model's ``headers``
    (``{"user_id": ...}``), ``default_headers`` or OpenAI ``user`` field, or
    recorded without a user. A scope's user and session win over header ones;
    header ids fill in only what the scope leaves unset.

    Args:
        token: Context API token. When empty, ``CONTEXT_TOKEN`` or
            ``GETCONTEXT_TOKEN`` is used, as by :func:`context_trace.configure`.
            A token given here while no token and no exporter are configured
            calls ``context_trace.configure(token=token)`` once, keeping the other
            settings (like any ``configure()`` call this flushes and replaces the
            export pipeline, so build the handler at start-up). When a different
            token is already configured, that one is kept and a warning is
            logged. The token is never logged and not shown by ``repr``.
        verbose: Accepted for compatibility; kept as the ``verbose`` attribute
            and otherwise unused.
        **kwargs: Accepted for compatibility with the community signature and
            ignored.

    Raises:
        TypeError: *token* is not a str.

    .. versionadded:: 0.1.0
    """

    _shares_runs = True  # two instances on one run tree record it once

    def __init__(self, token: str = "", verbose: bool = False, **kwargs: Any) -> None:
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, got {type(token).__name__}")
        super().__init__(None)
        self.verbose = verbose
        token = token.strip()
        if token:
            _configure_token(token)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} active_turns={len(self._turns)}>"

    def _scope_for_root(self, metadata: dict[str, Any] | None) -> Scope | None:
        """
        The scope a root run this handler sees is attributed to.

        The handler runs inline in the caller's context, so the caller's scope is
        readable here. When a scope is active its recorder (installed on every
        run by the configure hook) records the turn: returning None leaves it to
        that recorder, which also covers the runs below the root (a drop-in that
        claimed the root would see the scope recorder record each child run as a
        root of its own). A scope without a recorder is disabled or sampled out:
        nothing is recorded either.
        """
        if _activation.ACTIVE.get() is not None:
            return None
        if not _runtime.active_config().enabled:
            return None
        # A fresh anonymous scope per turn: nothing is shared between turns, and
        # the export thread fills user and session from the model's headers.
        return Scope(None, None, {}, None)
