"""Shared fixtures: every test starts from a clean configuration and environment."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from context_trace import _config, _runtime
from context_trace._scopes import current_scope
from tests.postgres.fixtures import (  # noqa: F401 - one PostgreSQL server for all
    pg_reader_url,
    pg_server,
    pg_url,
)

# The tests stop the servers they start (``context-trace ui``, the demo) with
# Ctrl-C. A suite launched in the background (``nohup``, ``cmd &`` in a script)
# inherits SIGINT as ignored, and an ignored signal stays ignored across exec:
# those servers would never stop. Handle it here, so children get the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def echo_chain(system: str = "You are helpful.") -> Any:
    """``prompt | ParrotFakeChatModel | StrOutputParser``: answers with the question."""
    prompt = ChatPromptTemplate.from_messages([("system", system), ("human", "{q}")])
    return prompt | ParrotFakeChatModel() | StrOutputParser()


@pytest.fixture(autouse=True)
def _clean_context_trace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """Clean env (no CONTEXT_* variables, a per-test SQLite file) and fresh state."""
    for name in list(os.environ):
        if name.startswith(("CONTEXT_", "GETCONTEXT_", "LANGSMITH_", "LANGCHAIN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv(_config.ENV_DB, str(tmp_path / "traces.db"))
    _runtime.reset()
    yield
    leaked = current_scope()
    _runtime.reset()
    assert leaked is None, "a test leaked an active scope"
