"""
Turning raw turns into records: runs on the export thread, never on the app's.

Everything that costs anything happens on that thread: extracting text from
LangChain messages (``_text.py``), model names and token usage
(``_measure.py``), de-duplicating what a session's prompt re-sends, redaction
and the span records (``_runtree.py``). :func:`to_conversation` is an
orchestrator: it runs the small rules of ``_rules.py`` in order, each of which
reads one thing of the turn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from . import _rules as rules
from ._attribution import header_ids, reset_header_sessions
from ._log import log_once
from ._record import Conversation, Feedback, Message, Record
from ._rules import Redactor
from ._runtree import build_spans
from ._text import answer_text, content_text, user_messages
from ._turn import ModelResult, ModelRun, ToolRun, Turn

__all__ = [
    "CONVERSATION_FIELDS",
    "answer_text",
    "content_text",
    "convert",
    "header_ids",
    "prepare",
    "reset_header_sessions",
    "to_conversation",
]

_logger = logging.getLogger(__name__)

# The order to_conversation passes a Conversation's fields in.
CONVERSATION_FIELDS = (
    "id",
    "user_id",
    "session_id",
    "started_at",
    "ended_at",
    "messages",
    "metadata",
    "error",
    "spans",
    "trace_id",
    "parent_span_id",
    "model",
    "usage",
    "tags",
    "run_name",
    "model_calls",
    "stream_abandoned",
    "model_input",
)


def _one_call(
    turn: Turn, steps: list[ModelRun | ToolRun], results: dict[int, Any]
) -> ModelRun | None:
    """
    The model call of the usual turn, None for any other.

    The usual turn: a chain invoked (or streamed to its end) with a dict, one
    chat model call that ended with one generation, no tool, no error, a
    non-empty str output (a subclass too: ``answer_text`` returns it as it is),
    no span tree. For it
    the general rules' answers are known without running them: not abandoned
    (its call ended), the root's input read as the user's words, the output
    as the answer, the one call as the answering one (it is also the last
    ended), and no step messages (its only step answers). Tested
    against the general rules in ``tests/core/test_convert_fast.py``.
    """
    if len(steps) != 1 or turn.error is not None or turn.tree is not None:
        return None
    call = steps[0]
    if (
        type(call) is not ModelRun
        or type(results.get(call.key)) is not ModelResult
        or not isinstance(turn.output, str)  # a parser's str may be a subclass
        or not turn.output
        # A stream's root gets its inputs at its end (rules.user_input); no
        # chain inputs at all is a model invoked directly.
        or turn.chain_inputs is None
        or type(turn.chain_inputs if turn.end_inputs is None else turn.end_inputs)
        is not dict
    ):
        return None
    return call


def to_conversation(turn: Turn, redact: Redactor | None = None) -> Conversation | None:
    """
    Build the :class:`Conversation` of a finished *turn* (None: not a conversation).

    The rules are the README's "What a conversation holds". Ids: the scope's
    user, else the model's headers (see :func:`header_ids`); the session of
    ``context_session``, else the model's headers, else the framework's
    (``configurable.session_id``, then ``configurable.thread_id``).
    """
    steps = turn.steps or []
    results = turn.results or {}
    one = _one_call(turn, steps, results)
    if one is not None:
        # The usual turn: what the general rules below give for it, read directly.
        calls: list[ModelRun] = [one]
        answering: ModelRun | None = one
        abandoned, error = False, None
        inputs = turn.chain_inputs if turn.end_inputs is None else turn.end_inputs
        users = user_messages(inputs)
        answer: str | None = turn.output
    else:
        calls = rules.model_calls(turn)
        abandoned = rules.abandoned(turn, calls, results)
        error = None if abandoned else turn.error
        inputs, users = rules.user_input(turn, calls)
        answer, answering = rules.final_answer(turn, calls, results, abandoned)
        if (
            not calls
            and turn.error is None
            and not rules.answers_user(turn, users, answer)
        ):
            return None  # a parser or a lambda on its own
    users = rules.fallback_users(users, answering, inputs)
    user_id, session_id = rules.attribution(turn, calls)

    messages: list[Message] = []
    system = rules.system_prompt(answering, session_id)
    if system is not None:
        messages.append(system)
    messages.extend(rules.kept_history(inputs, users, calls, session_id))
    messages.extend(users)
    if one is None:
        messages.extend(rules.step_messages(steps, results, answering))
    if answer or error is None:
        messages.append(Message("assistant", answer or ""))

    model, usage, model_calls = rules.models_and_usage(calls, results, answering)
    messages, error_text, prompt = rules.redacted(
        redact,
        messages,
        rules.error_text(error),
        rules.model_input(answering, users),
    )
    trace_id, parent_span_id = rules.trace_ids(turn)
    # Positional, in the order of CONVERSATION_FIELDS (a test pins it to the
    # dataclass's): 18 keywords cost ~1 µs more per turn to match.
    return Conversation(
        turn.run_id.hex,  # id
        user_id,
        session_id,
        turn.started,  # started_at
        turn.ended,  # ended_at
        tuple(messages),
        rules.app_metadata(turn),  # metadata
        error_text,  # error
        # OTLP export on: the run tree as span records, and the app's span.
        build_spans(turn) if turn.tree is not None else (),  # spans
        trace_id,
        parent_span_id,
        model,
        usage,
        tuple(dict.fromkeys(str(t) for t in turn.tags)) if turn.tags else (),  # tags
        turn.name or None,  # run_name
        model_calls,
        abandoned,  # stream_abandoned
        prompt,  # model_input
    )


def prepare(items: Sequence[Any], redact: Redactor | None = None) -> list[Record]:
    """Convert queued items into records; an item that fails is logged and skipped."""
    return convert(items, redact)[0]


def convert(
    items: Sequence[Any], redact: Redactor | None = None
) -> tuple[list[Record], int]:
    """
    Convert queued items into records, counting the items that failed.

    Returns:
        ``(records, failed)``: the records, and how many items raised while being
        converted (logged). The rest of the items gave no record by design: runs
        that were not conversations, which the pipeline counts as skipped.
    """
    out: list[Record] = []
    failed = 0
    for item in items:
        try:
            if isinstance(item, Turn):
                record = to_conversation(item, redact)
                if record is not None:
                    out.append(record)
            elif isinstance(item, (Conversation, Feedback)):
                out.append(item)
        except Exception:  # noqa: BLE001 - one bad turn must not stop the batch
            failed += 1
            # Once per process at WARNING: a converter bug would fail every turn.
            log_once(
                _logger,
                "convert",
                "context_trace: could not convert a turn",
                exc_info=True,
            )
    return out, failed
