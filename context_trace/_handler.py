"""
The recording callback handler: the hot path.

One :class:`RecordingHandler` per scope. LangChain calls it for every run in
the scope (it is installed through the configure hook in ``_scopes.py``). It
keeps per-turn state keyed by run id, never a shared message list: every run id
of a tree maps to the :class:`_Turn` of its root, so concurrent turns on one
handler (``batch``, ``RunnableParallel``, threads sharing a scope) never mix.

What the callbacks do is kept tiny: keep *references* to what LangChain hands
over (input messages, outputs, ``LLMResult``), note the time, and when the root
run ends, hand the turn to the pipeline. Text extraction, session
de-duplication and redaction happen on the export thread (``_convert.py``).

Nothing here relies on ContextVar writes made inside a callback: LangChain may
run callbacks in a copied context, so such writes would be lost.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.runnables.config import var_child_runnable_config

from . import _graph_streams, _runtime
from ._log import log_once
from ._state import STATE
from ._turn import RECEIVING, ModelRun, RunNode, ToolRun, Turn, light_result

if TYPE_CHECKING:
    from langchain_core.outputs import ChatGenerationChunk, GenerationChunk, LLMResult

    from ._scopes import Scope

__all__ = ["RecordingHandler"]

_logger = logging.getLogger(__name__)

# Root run id -> the recorder that records it. When two context_trace recorders
# see the same root (a ContextCallbackHandler passed explicitly inside a scope),
# only the first one records it. dict.setdefault and pop are atomic in CPython.
# Keys are ``run_id.int``: UUID's __hash__ and __eq__ are Python-level calls, an
# int's are not, and these maps are touched several times per run.
_CLAIMED: dict[int, RecordingHandler] = STATE.claimed

# Run id -> the drop-in recorder whose turn holds that run. Two drop-in
# ContextCallbackHandler instances on one tree (one on the chain, one on the
# model: the shape the Context docs warn about) each see a "root": the second
# sees the model run, whose parent is already in the first one's turn. Only
# handlers with ``_shares_runs`` write here, so scope recorders pay nothing.
_SHARED_RUNS: dict[int, RecordingHandler] = STATE.shared_runs

# A root with no model call is recorded when it answered in one of these (a
# guardrail's refusal); see _finish.
_TEXT_OUTPUTS = (str, BaseMessage)
# The framework's session ids (RunnableWithMessageHistory's, LangGraph's), in
# the converter's order.
_FRAMEWORK_SESSION_KEYS = ("session_id", "thread_id")


class RecordingHandler(BaseCallbackHandler):
    """
    Records one conversation per root run, attributed to its scope.

    You rarely touch it: scopes install it. ``current_handler()`` returns it for
    code that must pass callbacks by hand.

    .. versionadded:: 0.1.0
    """

    run_inline = True  # async runs call it on the event loop, in the run's context
    raise_error = False  # our own problems never reach the app
    #: register every tracked run in ``_SHARED_RUNS`` (the drop-in handler)
    _shares_runs = False

    def __init__(self, scope: Scope | None) -> None:
        self.scope = scope
        self._turns: dict[int, Turn] = {}  # run_id.int of every tracked run
        if not _graph_streams.installed:
            # LangGraph's streams report what their consumer received (once).
            _graph_streams.install()

    def __repr__(self) -> str:
        scope = self.scope
        user = scope.user_id if scope is not None else None
        return (
            f"<{type(self).__name__} user_id={user!r} active_turns={len(self._turns)}>"
        )

    # ------------------------------------------------------------------ helpers
    def _scope_for_root(self, metadata: dict[str, Any] | None) -> Scope | None:
        """The scope a new root run is attributed to (subclasses may look it up)."""
        return self.scope

    def _enter(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
    ) -> Turn | None:
        """Register *run_id*; return its turn, or None when another recorder has it."""
        turns = self._turns
        key = run_id.int
        if parent_run_id is not None:
            turn = turns.get(parent_run_id.int)
            if turn is not None:
                try:
                    turn.run_ids.append(key)
                except AttributeError:  # its root ended meanwhile (another thread)
                    return None
                turns[key] = turn
                tree = turn.tree
                if tree is not None:  # OTLP export is on: the span tree
                    tree[key] = RunNode(parent_run_id.int, time.time())
                if self._shares_runs:
                    _SHARED_RUNS[key] = self
                return turn
            holder = _SHARED_RUNS.get(parent_run_id.int)
            if holder is not None and holder is not self:
                # A run inside another drop-in's turn: that one records it.
                return None
        # A root, as far as this handler knows.
        owner = _CLAIMED.setdefault(key, self)
        if owner is not self:
            # Another recorder records this root. Follow it as a skipped turn, so
            # the runs below it are not taken for roots and recorded a second time.
            scope = self.scope or owner.scope
            if scope is not None:
                turns[key] = Turn(run_id, scope, tags, True)
            return None
        scope = self._scope_for_root(metadata)
        if scope is None:
            _CLAIMED.pop(key, None)
            return None
        turn = Turn(run_id, scope, tags, False)
        if self._shares_runs:
            _SHARED_RUNS[key] = self
        config = _runtime.active_config()
        if scope.session is None and config.sample_rate < 1.0:
            # Sampled at the end: a framework's session id, known only once the
            # turn has run, samples the turn as that session (see _sampled_in).
            turn.sampling = True
        if config.otlp:
            # Spans need the run tree and times, and the app's current span: a
            # context read, paid only with OTLP export on.
            turn.tree = {}
            turn.trace_parent = _runtime.current_trace_parent()
        turns[key] = turn
        return turn

    @staticmethod
    def _sampled_in(turn: Turn) -> bool:
        """Whether a turn with no ``context_session`` is sampled in (at its end)."""
        config = _runtime.active_config()
        for source in (turn.configurable, turn.run_metadata):
            if source:
                for name in _FRAMEWORK_SESSION_KEYS:
                    value = source.get(name)
                    if isinstance(value, str) and value.strip():
                        # The whole framework session is kept or dropped.
                        return config.keep_session(value.strip())
        return config.keep_turn()

    def _finish(self, turn: Turn, error: BaseException | None) -> None:
        turn.ended = time.time()
        turns = self._turns
        run_ids = turn.run_ids
        for rid in run_ids:
            turns.pop(rid, None)
        if self._shares_runs:
            for rid in run_ids:
                if _SHARED_RUNS.get(rid) is self:
                    del _SHARED_RUNS[rid]
        del turn.run_ids  # freed now, not kept alive while the turn is queued
        if _CLAIMED.get(turn.key) is self:  # not when following another's root
            _CLAIMED.pop(turn.key, None)
        if (
            turn.skip
            or not (
                turn.has_model_call
                or (
                    turn.chain_inputs is not None
                    and (error is not None or isinstance(turn.output, _TEXT_OUTPUTS))
                )
            )
            or (turn.sampling and not self._sampled_in(turn))
        ):
            # Nothing conversational happened (a bare retriever, a tool on its
            # own). A chain that failed before reaching its model is kept, and so
            # is one that answered in text without a model (a guardrail's
            # refusal); the converter drops those whose input carries no user text
            # (a parser on its own).
            return
        turn.error = error
        session = turn.session
        if session is not None and error is None:  # rate() targets answered turns
            session.last_turn_id = turn.run_id.hex
            parent = turn.trace_parent
            session.last_trace_id = None if parent is None else f"{parent[0]:032x}"
        _runtime.emit(turn)

    def _root(self, run_id: UUID) -> Turn | None:
        key = run_id.int
        turn = self._turns.get(key)
        return turn if turn is not None and turn.key == key else None

    def _root_error(self, run_id: UUID, error: BaseException, event: str) -> None:
        """The root run failed: record the turn with its error."""
        try:
            turn = self._root(run_id)
            if turn is not None:
                self._finish(turn, error)
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error(event)

    def _internal_error(self, event: str) -> None:
        log_once(
            _logger,
            f"handler.{event}",
            "context_trace: recorder failed in %s; the turn may be incomplete",
            event,
            exc_info=True,
        )

    # ------------------------------------------------------------------ chains
    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            turn = self._enter(run_id, parent_run_id, tags, metadata)
            if turn is not None and turn.run_id is run_id:  # the root (same object)
                turn.chain_inputs = inputs
                turn.run_metadata = metadata
                turn.name = kwargs.get("name")
                # A LangGraph messages stream starting this root: keep what its
                # consumer receives (see _graph_streams). A read, not a write.
                # Only a run with no parent is the graph's own: a scope opened
                # inside one of its nodes sees the ContextVar too.
                received = RECEIVING.get() if parent_run_id is None else None
                if received is not None and not received.taken:
                    received.taken = True
                    turn.received = received
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error("on_chain_start")

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            key = run_id.int
            turn = self._turns.get(key)
            if turn is not None and turn.key == key:
                turn.output = outputs
                turn.end_inputs = kwargs.get("inputs")
                self._finish(turn, None)
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error("on_chain_end")

    def on_chain_error(
        self, error: BaseException, *, run_id: UUID, **kwargs: Any
    ) -> None:
        turn = self._root(run_id)
        if turn is not None:
            turn.end_inputs = kwargs.get("inputs")
        self._root_error(run_id, error, "on_chain_error")

    # ------------------------------------------------------------------ models
    @staticmethod
    def _model_start(
        turn: Turn,
        run_id: UUID,
        model_input: Any,
        serialized: dict[str, Any],
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        """Keep a model call's references; a model invoked directly is the root."""
        key = run_id.int
        if turn.key == key:
            turn.run_metadata = metadata
            turn.name = kwargs.get("name")
        if not turn.has_model_call:
            # The config the model runs under: its ``configurable`` holds the
            # framework's session id (RunnableWithMessageHistory's session_id is
            # not copied into callback metadata).
            config = var_child_runnable_config.get()
            if config is not None:
                turn.configurable = config.get("configurable")
            turn.has_model_call = True
        # dict.setdefault is atomic: parallel children of one root
        # (RunnableParallel, a ToolNode's executor) must not lose items.
        turn.__dict__.setdefault("steps", []).append(
            ModelRun(
                key, model_input, serialized, metadata, kwargs.get("invocation_params")
            )
        )

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            turn = self._enter(run_id, parent_run_id, tags, metadata)
            if turn is not None:
                model_input = messages[0] if messages else []
                self._model_start(
                    turn, run_id, model_input, serialized, metadata, kwargs
                )
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error("on_chat_model_start")

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            turn = self._enter(run_id, parent_run_id, tags, metadata)
            if turn is not None:
                prompt = prompts[0] if prompts else ""
                self._model_start(turn, run_id, prompt, serialized, metadata, kwargs)
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error("on_llm_start")

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        # Only streamed calls get here. The tokens are what a stream's consumer
        # has received when it stops reading early (see _rules); a LangGraph
        # messages stream is read for that instead (Turn.received).
        # Once per token: read the list once it exists (setdefault would build
        # and drop an empty list on every call).
        try:
            key = run_id.int
            turn = self._turns.get(key)
            if turn is not None:
                tokens = turn.tokens
                if tokens is None:
                    tokens = turn.tokens = []
                tokens.append((key, token if token or chunk is None else chunk))
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error("on_llm_new_token")

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            key = run_id.int
            turn = self._turns.get(key)
            if turn is not None:
                result = light_result(response)
                turn.__dict__.setdefault("results", {})[key] = result
                if turn.tree is not None and key in turn.tree:
                    turn.tree[key].ended = time.time()
                if turn.key == key:  # a model invoked directly: it is the turn
                    turn.output = result
                    self._finish(turn, None)
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error("on_llm_end")

    def on_llm_error(
        self, error: BaseException, *, run_id: UUID, **kwargs: Any
    ) -> None:
        try:
            turn = self._turns.get(run_id.int)
            if turn is not None and turn.tree is not None:
                self._run_ended(turn, run_id.int, error)
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error("on_llm_error")
        self._root_error(run_id, error, "on_llm_error")

    @staticmethod
    def _run_ended(turn: Turn, key: int, error: BaseException | None) -> None:
        """Note a child run's end for its span (OTLP export on)."""
        entry = turn.tree.get(key) if turn.tree is not None else None
        if entry is not None:
            entry.ended = time.time()
            entry.error = error

    # ------------------------------------------------------------------ tools
    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            turn = self._enter(run_id, parent_run_id, tags, metadata)
            if turn is not None:
                name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
                key = run_id.int
                entry = ToolRun(key, name, inputs if inputs is not None else input_str)
                turn.__dict__.setdefault("steps", []).append(entry)
                turn.__dict__.setdefault("tool_runs", {})[key] = entry
                if turn.tree is not None:
                    node = turn.tree.get(key)
                    if node is not None:
                        node.tool_call_id = kwargs.get("tool_call_id")
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error("on_tool_start")

    def _tool_done(self, run_id: UUID, output: Any, is_error: bool) -> None:
        key = run_id.int
        turn = self._turns.get(key)
        if turn is None:
            return
        entry = turn.tool_runs.get(key) if turn.tool_runs else None
        if entry is not None:
            entry.output = output
            entry.is_error = is_error
        if turn.tree is not None:
            self._run_ended(turn, key, output if is_error else None)
        if turn.key == key:  # a tool invoked on its own: not a conversation
            self._finish(turn, output if is_error else None)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._tool_done(run_id, output, False)
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error("on_tool_end")

    def on_tool_error(
        self, error: BaseException, *, run_id: UUID, **kwargs: Any
    ) -> None:
        try:
            self._tool_done(run_id, error, True)
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error("on_tool_error")

    # ------------------------------------------------------------------ retrievers
    # Only tracked so a retriever run as the root releases its state.
    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._enter(run_id, parent_run_id, tags, metadata)
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error("on_retriever_start")

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            turn = self._root(run_id)
            if turn is not None:
                self._finish(turn, None)
        except Exception:  # noqa: BLE001 - never raise into the app
            self._internal_error("on_retriever_end")

    def on_retriever_error(
        self, error: BaseException, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self._root_error(run_id, error, "on_retriever_error")

    @property
    def active_turns(self) -> int:
        """Run ids currently tracked (0 when no turn is running)."""
        return len(self._turns)
