"""
A turn while it runs: the raw state the handler collects for one root run.

The handler (``_handler.py``) fills it on the request path with references and
timestamps only; the converter (``_convert.py``) reads it on the export worker.
Both import it from here, so neither imports the other.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from langchain_core.outputs import LLMResult

    from ._scopes import Scope

__all__ = ["RECEIVING", "Received", "Turn"]


class Received:
    """
    What a LangGraph messages stream handed its consumer: its items, by reference.

    ``_graph_streams`` fills ``items`` on the consumer's side (one append per
    item); the converter reads the text out of them on the export thread, for an
    abandoned stream's answer. ``shape`` says how an item holds its payload:
    ``"bare"`` (the payload), ``"ns"`` (``(namespace, payload)``), ``"mode"``
    (``(mode, payload)``), ``"ns_mode"`` (``(namespace, mode, payload)``) or
    ``"v2"`` (a ``{"type", "ns", "data"}`` dict).
    """

    __slots__ = ("items", "shape", "taken")

    def __init__(self, shape: str) -> None:
        self.items: list[Any] = []
        self.shape = shape
        self.taken = False  # a turn holds it (the first root run that saw it)


# Set by a LangGraph messages stream while it takes its first step, the step
# that starts its root run; the handler hands it to that root's turn.
RECEIVING: ContextVar[Received | None] = ContextVar(
    "context_trace.receiving", default=None
)


class Turn:
    """
    The raw state of one turn while it runs (references only, no copies).

    ``_convert.to_conversation`` turns it into a ``Conversation`` on the export
    thread.
    """

    # Class-level defaults: a new turn sets only what every turn has (this runs
    # once per root run on the app's thread, so fewer attribute writes matter).
    chain_inputs: Any = None  # the root's inputs at its start
    end_inputs: Any = None  # the root's inputs at its end (streams defer them)
    name: str | None = None  # the root run's name (``run_name``)
    run_metadata: dict[str, Any] | None = None  # the root run's metadata
    has_model_call: bool = False  # a chat model or LLM ran in this turn
    sampling: bool = False  # no context_session under sample_rate < 1: decide at end
    configurable: dict[str, Any] | None = None  # the first model call's
    # Model calls and tool runs in start order. A model call is a tuple
    # ``(run key, input messages or prompt str, serialized, metadata,
    # invocation params)``; a tool run is a list ``[name, input, output, is_error]``.
    steps: list[Any] | None = None
    results: dict[int, LLMResult] | None = None  # model run key -> its result
    tokens: list[tuple[int, Any]] | None = None  # (model run key, streamed token)
    # What a LangGraph messages stream handed its consumer (``_graph_streams``):
    # an abandoned stream's answer is read from it, not from ``tokens``.
    received: Received | None = None
    tool_runs: dict[int, list[Any]] | None = None
    output: Any = None
    error: BaseException | None = None
    ended: float = 0.0
    # Only while OTLP export is on (#12): every run below the root, by key, as
    # ``[parent key, start, end (0.0 until it ends), error, tool_call_id]``;
    # ``_runtree.build_spans`` turns it into span records on the worker.
    tree: dict[int, list[Any]] | None = None
    # The OpenTelemetry span current when the turn started: (trace id, span id).
    trace_parent: tuple[int, int] | None = None

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
