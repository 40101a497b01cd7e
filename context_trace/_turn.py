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
    from collections.abc import Mapping

    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult

    from ._scopes import Scope, Session

__all__ = [
    "RECEIVING",
    "ModelResult",
    "ModelRun",
    "Received",
    "RunNode",
    "ToolRun",
    "Turn",
    "light_result",
]


# The turn's parts below are slotted with a positional ``__init__``: each is one
# object (as the tuple or list it replaces was), and the handler builds them on
# the app's thread.


class ModelRun:
    """
    A model call as the handler keeps it (references only).

    ``key`` is its run id's ``int``; ``input`` the messages (chat model) or the
    prompt str (LLM) it was called with; ``serialized``, ``metadata`` and
    ``params`` (invocation params) as LangChain handed them over.
    """

    __slots__ = ("input", "key", "metadata", "params", "serialized")

    def __init__(
        self,
        key: int,
        input: Any,
        serialized: dict[str, Any] | None,
        metadata: dict[str, Any] | None,
        params: dict[str, Any] | None,
    ) -> None:
        self.key = key
        self.input = input
        self.serialized = serialized
        self.metadata = metadata
        self.params = params


class ToolRun:
    """A tool run: its name and input at its start, its output when it ends."""

    __slots__ = ("input", "is_error", "key", "name", "output")

    def __init__(self, key: int, name: Any, input: Any) -> None:
        self.key = key
        self.name = name
        self.input = input
        self.output: Any = None  # its result, or the exception it raised
        self.is_error = False


class RunNode:
    """
    A run below the root in the span tree (kept only while OTLP export is on).

    ``ended`` is 0.0 until the run ends; ``tool_call_id`` is a tool run's.
    """

    __slots__ = ("ended", "error", "parent", "started", "tool_call_id")

    def __init__(self, parent: int, started: float) -> None:
        self.parent = parent
        self.started = started
        self.ended = 0.0
        self.error: BaseException | None = None
        self.tool_call_id: Any = None


class ModelResult:
    """
    A model call's result with one generation, kept without its ``LLMResult``.

    A queued turn waits for the export worker, and every container object it
    keeps alive counts towards the garbage collector's thresholds: kept past a
    young collection it is promoted, and promoted objects trigger full
    collections (measured: ~70 ms each, one per ~2,000 parrot turns, against
    none for the bare chain). An ``LLMResult`` with its generation lists and
    ``ChatGeneration`` is ~9 such objects; this is one. It answers the
    attributes the converter and the span builder read from both an
    ``LLMResult`` (``generations``, ``llm_output``) and its generation
    (``message``, ``text``, ``generation_info``).
    """

    __slots__ = ("generation_info", "llm_output", "message", "text")

    def __init__(
        self,
        message: BaseMessage | None,
        text: str,
        generation_info: dict[str, Any] | None,
        llm_output: dict[str, Any] | None,
    ) -> None:
        self.message = message
        self.text = text
        self.generation_info = generation_info
        self.llm_output = llm_output

    @property
    def generations(self) -> list[list[ModelResult]]:
        return [[self]]


def light_result(response: LLMResult) -> LLMResult | ModelResult:
    """
    What a turn keeps of a model call's *response* (runs on the request path).

    One generation (the usual case): a :class:`ModelResult` holding references
    to its message, text and info. Several (``n > 1``, batched prompts): the
    response itself.
    """
    generations = response.generations
    if len(generations) != 1 or len(generations[0]) != 1:
        return response
    fields = generations[0][0].__dict__
    message = fields.get("message")
    return ModelResult(
        message,
        # A chat generation's text is derived from its message (a str subclass
        # of its own): not kept.
        "" if message is not None else fields.get("text", ""),
        fields.get("generation_info"),
        response.llm_output,
    )


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
    # Model calls and tool runs in start order.
    steps: list[ModelRun | ToolRun] | None = None
    # Model run key -> its result (see light_result).
    results: dict[int, LLMResult | ModelResult] | None = None
    tokens: list[tuple[int, Any]] | None = None  # (model run key, streamed token)
    # What a LangGraph messages stream handed its consumer (``_graph_streams``):
    # an abandoned stream's answer is read from it, not from ``tokens``.
    received: Received | None = None
    tool_runs: dict[int, ToolRun] | None = None
    tags: list[str] | None = None  # the root run's tags
    output: Any = None
    error: BaseException | None = None
    ended: float = 0.0
    # Only while OTLP export is on: every run below the root, by key;
    # ``_runtree.build_spans`` turns it into span records on the worker.
    tree: dict[int, RunNode] | None = None
    # The OpenTelemetry span current when the turn started: (trace id, span id).
    trace_parent: tuple[int, int] | None = None

    def __init__(
        self, run_id: UUID, scope: Scope, tags: list[str] | None, skip: bool
    ) -> None:
        self.run_id = run_id
        self.key = run_id.int
        # The scope's attribution, not the scope: a scope and its handler form a
        # reference cycle, which a queued turn would keep alive past young
        # collections (see ModelResult). ``scope.metadata`` is a str -> str dict.
        self.user_id: str | None = scope.user_id
        self.session: Session | None = scope.session
        self.scope_metadata: Mapping[str, str] = scope.metadata
        if tags:  # an empty list is one more object kept alive
            self.tags = tags
        self.skip = skip
        self.started = time.time()
        self.run_ids: list[int] = [self.key]
