"""
A turn while it runs: the raw state the handler collects for one root run.

The handler (``_handler.py``) fills it on the request path with references and
timestamps only; the converter (``_convert.py``) reads it on the export worker.
Both import it from here, so neither imports the other.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult

    from ._scopes import Scope

__all__ = ["Turn"]


class Turn:
    """
    The raw state of one turn while it runs (references only, no copies).

    ``_convert.to_conversation`` turns it into a ``Conversation`` on the export
    thread.
    """

    # Class-level defaults: a new turn sets only what every turn has (this runs
    # once per root run on the app's thread, so fewer attribute writes matter).
    chain_inputs: Any = None
    messages: Sequence[BaseMessage] | None = None
    prompt: str | None = None
    invocation_params: dict[str, Any] | None = None
    model_metadata: dict[str, Any] | None = None
    serialized: dict[str, Any] | None = None
    llm_results: list[LLMResult] | None = None
    tools: list[list[Any]] | None = None  # [name, input, output, is_error]
    tool_runs: dict[int, list[Any]] | None = None
    output: Any = None
    error: BaseException | None = None
    ended: float = 0.0

    def __init__(
        self, run_id: UUID, scope: Scope, tags: list[str] | None, skip: bool
    ) -> None:
        self.run_id = run_id
        self.key = run_id.int
        self.scope = scope
        self.tags = tags
        self.skip = skip
        self.started = time.time()
        self.run_ids: list[int] = [self.key]

    @property
    def has_model_call(self) -> bool:
        """Whether a chat model or LLM ran in this turn."""
        return self.messages is not None or self.prompt is not None
