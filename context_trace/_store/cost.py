"""
Cost: the recorded token counts priced when read, per model, user, day,
session or segment.

The store keeps tokens and model names, never money, so a new price (a newer
``genai-prices``, an override) re-prices all history. The dashboard's sidecar
index (see :mod:`.ui_index`) keeps each turn's token counts per model that
answered in it (``ui_cost_turn``: one row per turn and model, its calls
summed), and their sums per UTC day, per user and per segment and day; the
topics file keeps the same sums per topic and day (``topic_costs``, see
``context_trace.analytics.topic_schema``). A question is one SQL aggregate over
those sums, grouped by what it asks (user, day...) and by model; each distinct
model is priced once in Python (:class:`context_trace.analytics.pricing.Pricer`),
and the prices go back into the same statement as a ``VALUES`` table, so the
arithmetic runs in SQL over the sums, never per turn in Python. The tables and
the statements that fill them are in :mod:`.cost_index`; :mod:`.cost_sources`
picks the table that answers a question; this module prices and reports.

A call is *unpriced* when its model has no price, when it names no model, or
when it reported no input and output counts: counted (``unpriced_calls``),
never guessed. A turn that made no model call (no model, no usage) is no call.

The token counts come from the store's ``metadata`` column, where the writer
puts the measurements (see :func:`context_trace._record.measured_metadata`):
``model_calls`` for a turn of several calls, else the turn's ``model`` and
counts. Cache-read, cache-write and reasoning counts are there from 0.3 on;
older turns have none (they price at the plain input and output prices).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .cost_index import COST_SCHEMA, COST_TABLES, apply_cost_chunk
from .cost_priced import priced_for
from .cost_sources import (
    COST_SQL,
    UNPRICED_SQL,
    Segment,
    SegmentSource,
    _day_start,
    _model_source,
    _one_pass,
    _rows_source,
    _sessions_from,
    segment_sessions,
)
from .cost_users import costliest_segment_users, costliest_users

if TYPE_CHECKING:
    from context_trace.analytics.pricing import Pricer

__all__ = [
    "COST_BY",
    "COST_SCHEMA",
    "COST_SQL",
    "COST_TABLES",
    "UNPRICED_SQL",
    "CostReport",
    "CostRow",
    "ModelPriceRow",
    "apply_cost_chunk",
    "cost_report",
    "price_table",
    "turn_cost",
    "user_costs_sql",
]

#: What a cost report can group by (``topic`` needs the topics file attached
#: as ``topics``: see ``Analytics.attach_topics``).
COST_BY = ("model", "user", "day", "session", "topic")


@dataclass(frozen=True, slots=True)
class CostRow:
    """
    The cost of one group (a model, user, day or session; the total: None).

    ``turns`` counts the turns that made a model call; a turn whose calls
    used several models counts once, under the first of them by name.

    ``cost`` is in US dollars over the priced calls; ``unpriced_calls``
    counts the calls it leaves out (see the module docstring). Token counts
    are over all the calls, priced or not; the cache and reasoning counts are
    part of the input and output counts.
    """

    key: str | None
    turns: int
    calls: int
    unpriced_calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost: float


@dataclass(frozen=True, slots=True)
class ModelPriceRow:
    """
    A model seen and the price used, in dollars per million tokens (None:
    unpriced); ``source`` is ``override``, ``genai-prices`` or None.
    """

    model: str
    source: str | None
    matched: str | None
    input: float | None
    output: float | None
    cache_read: float | None
    cache_write: float | None
    reasoning: float | None


@dataclass(frozen=True, slots=True)
class CostReport:
    """
    Cost for a range and segment, grouped by ``by``: ``rows`` by cost, the
    highest first (by day: in day order), ``total`` over everything, and
    the price of every model seen.
    """

    by: str
    range: str
    segment: dict[str, str]
    total: CostRow
    rows: tuple[CostRow, ...]
    models: tuple[ModelPriceRow, ...]
    unpriced_models: tuple[str, ...]


def price_table(
    conn: sqlite3.Connection, pricer: Pricer
) -> tuple[str, list[Any], list[ModelPriceRow]]:
    """
    (a ``price(model, p_in, p_out, p_cr, p_cw, p_r)`` CTE, its parameters,
    the models and their prices): every model of the index, each priced once.
    """
    models = [r[0] for r in conn.execute("SELECT DISTINCT model FROM ui_cost_day")]
    rows: list[ModelPriceRow] = []
    values: list[Any] = []
    for model in models:
        price = pricer.price(model)
        if price is None:
            rows.append(ModelPriceRow(model, None, None, None, None, None, None, None))
            continue
        rows.append(
            ModelPriceRow(model, price.source, price.matched, price.input,
                          price.output, price.cache_read, price.cache_write,
                          price.reasoning)
        )  # fmt: skip
        values += [model, price.input, price.output, price.cache_read,
                   price.cache_write, price.reasoning]  # fmt: skip
    count = len(values) // 6
    if not count:  # a CTE needs one row: a model no row has
        return (
            "price(model, p_in, p_out, p_cr, p_cw, p_r) AS"
            " (SELECT NULL, 0, 0, 0, 0, 0 WHERE false)",
            [],
            rows,
        )
    marks = ",".join(["(?, ?, ?, ?, ?, ?)"] * count)
    return (
        f"price(model, p_in, p_out, p_cr, p_cw, p_r) AS (VALUES {marks})",
        values,
        rows,
    )


def cost_report(
    conn: sqlite3.Connection,
    pricer: Pricer,
    *,
    by: str,
    range_: str,
    segment: Segment,
    since: float | None,
    first_day: str | None,
    limit: int | None = None,
    segment_source: SegmentSource | None = None,
) -> CostReport:
    """
    The cost of the turns from *since* (epoch; None: all) or, with
    *first_day*, of whole UTC days from it (``""``: all time), in *segment*,
    grouped *by* one of :data:`COST_BY`; at most *limit* rows (the costliest;
    by day: all days). *conn* is the store with the index attached;
    *segment_source* gives the segment's turn rows from an epoch
    (``segments._source``).

    Raises:
        ValueError: For an unknown *by*.
    """
    if by not in COST_BY:
        raise ValueError(f"by must be one of {', '.join(COST_BY)}, got {by!r}")
    prices, params, models = price_table(conn, pricer)
    source, more = _rows_source(conn, by, segment, since, first_day, segment_source)
    sums = (
        f"sum(x.turns), sum(x.calls), sum({UNPRICED_SQL}), sum(x.input),"
        " sum(x.output), sum(x.cache_read), sum(x.cache_write), sum(x.reasoning),"
        f" total({COST_SQL}) AS cost FROM x LEFT JOIN price p ON p.model = x.model"
    )
    found = _model_source(segment, first_day, since)

    def models_of(model_source: str, model_params: Sequence[Any]) -> list[Any]:
        """The report's total and models used: one row per model of *model_source*."""
        return conn.execute(
            f"WITH {prices}, x AS ({model_source}) SELECT x.model, {sums}"
            " GROUP BY x.model ORDER BY cost DESC, x.model",
            [*params, *model_params],
        ).fetchall()

    if (
        found is not None
        and first_day == ""
        and not segment
        and by in ("user", "session")
        and priced_for(conn, models)
    ):
        # All time per user or session: the index's priced cache (.cost_priced).
        per_model = models_of(*found)
        key = "user_key" if by == "user" else "session_n"
        cached = conn.execute(
            f"SELECT {key}, turns, calls, unpriced, input, output, cache_read,"
            f" cache_write, reasoning, cost FROM ui_cost_{by}_priced WHERE calls > 0"
            f" ORDER BY cost DESC, {key}" + (" LIMIT ?" if limit is not None else ""),
            [] if limit is None else [limit],
        ).fetchall()
        if by == "session":
            cached = [(r[0] or None, *r[1:]) for r in cached]
        return _report(conn, by, range_, segment, per_model, cached, models)
    if (
        by == "session"
        and not segment
        and first_day != ""
        and (since is not None or first_day is not None)
        and priced_for(conn, models)
    ):
        start = _day_start(first_day) if first_day else since
        assert start is not None  # one of them, by the test above
        model_source, model_params = found or _rows_source(
            conn, "model", segment, since, first_day, None
        )
        per_model = models_of(model_source, model_params)
        grouped = _sessions_from(conn, prices, params, sums, start, limit)
        return _report(conn, by, range_, segment, per_model, grouped, models)
    if (
        by == "user"
        and not segment
        and limit is not None
        and found is not None
        and (first_day or since is not None)
    ):
        # Over a range: ranked by a bound, priced exactly a batch at a time.
        per_model = models_of(*found)
        kept = priced_for(conn, models)
        grouped = costliest_users(
            conn, prices, params, sums, first_day, since, limit, kept
        )
        return _report(conn, by, range_, segment, per_model, grouped, models)
    if (
        by == "user"
        and len(segment) == 1
        and limit is not None
        and found is not None
        and (first_day or since is not None)
        and priced_for(conn, models)
    ):
        # A segment over a range: walked by the users' kept bounds, when it pays.
        start = _day_start(first_day) if first_day else since
        assert start is not None  # one of them, by the test above
        per_model = models_of(*found)
        walked = costliest_segment_users(
            conn, prices, params, sums, start, limit, segment
        )
        if walked is not None:
            return _report(conn, by, range_, segment, per_model, walked, models)
    if by == "session" and segment and limit is not None and priced_for(conn, models):
        model_source, model_params = found or (source, more)
        per_model = models_of(model_source, model_params)
        # Nothing priced in the segment: no cost bounds the walk.
        if any(r[9] for r in per_model):
            start = _day_start(first_day) if first_day else (since or 0.0)
            walked = segment_sessions(conn, prices, params, sums, start, limit, segment)
            if walked is not None:
                return _report(conn, by, range_, segment, per_model, walked, models)
    if found is None and by != "model":
        # No per-day sums answer: one pass over the rows gives both the groups
        # and the models (reading the turns twice was most of the time).
        per_model, grouped = _one_pass(conn, prices, params, source, more, by, limit)
        return _report(conn, by, range_, segment, per_model, grouped, models)
    # Per model (the total, and the models used): from the per-day sums when
    # they answer, else from the same rows.
    model_source, model_params = found or (source, more)
    per_model = models_of(model_source, model_params)
    if by == "model":
        grouped = per_model[:limit] if limit is not None else per_model
    else:
        order = "x.grp" if by == "day" else "cost DESC, x.grp"
        cap = " LIMIT ?" if limit is not None and by != "day" else ""
        grouped = conn.execute(
            f"WITH {prices}, x AS ({source}) SELECT x.grp, {sums}"
            f" GROUP BY x.grp ORDER BY {order}{cap}",
            [*params, *more, *([limit] if cap else [])],
        ).fetchall()
    return _report(conn, by, range_, segment, per_model, grouped, models)


def _report(
    conn: sqlite3.Connection,
    by: str,
    range_: str,
    segment: Segment,
    per_model: Sequence[Any],
    grouped: Sequence[Any],
    models: list[ModelPriceRow],
) -> CostReport:
    total = _total(per_model)
    if by == "user":
        grouped = [(None if r[0] == "" else r[0], *r[1:]) for r in grouped]
    if by == "session":
        numbers = [r[0] for r in grouped if r[0] is not None]
        names = dict(
            conn.execute(
                f"SELECT n, id FROM sessions WHERE n IN ({','.join('?' * len(numbers))})",
                numbers,
            ).fetchall()
        )
        grouped = [(names.get(r[0]), *r[1:]) for r in grouped]
    used = {r[0] for r in per_model}
    return CostReport(
        by=by,
        range=range_,
        segment=dict(segment),
        total=total,
        rows=tuple(_row(r) for r in grouped),
        models=tuple(m for m in models if m.model in used),
        unpriced_models=tuple(
            sorted(m.model for m in models if m.input is None and m.model in used)
        ),
    )


def _row(r: Sequence[Any]) -> CostRow:
    return CostRow(
        key=None if r[0] is None else str(r[0]),
        turns=int(r[1] or 0),
        calls=int(r[2] or 0),
        unpriced_calls=int(r[3] or 0),
        input_tokens=int(r[4] or 0),
        output_tokens=int(r[5] or 0),
        cache_read_tokens=int(r[6] or 0),
        cache_write_tokens=int(r[7] or 0),
        reasoning_tokens=int(r[8] or 0),
        cost=float(r[9] or 0.0),
    )


def _total(rows: Sequence[Sequence[Any]]) -> CostRow:
    sums = [sum(r[i] or 0 for r in rows) for i in range(1, 10)]
    return _row([None, *sums])


def user_costs_sql(priced: bool = False) -> str:
    """
    A ``user_cost(user_key, cost, unpriced)`` CTE over ui_cost_user, to follow
    the ``price`` CTE of :func:`price_table`; *priced*: over the index's priced
    cache instead (when :func:`.cost_priced.priced_for` says it answers).
    """
    if priced:
        return (
            "user_cost(user_key, cost, unpriced) AS (SELECT user_key, cost,"
            " unpriced FROM ui_cost_user_priced)"
        )
    return (
        "user_cost(user_key, cost, unpriced) AS (SELECT x.user_key,"
        f" total({COST_SQL}), sum({UNPRICED_SQL}) FROM ui_cost_user x"
        " LEFT JOIN price p ON p.model = x.model GROUP BY x.user_key)"
    )


def turn_cost(
    pricer: Pricer,
    model: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    metadata: dict[str, str],
) -> tuple[float | None, int, int]:
    """
    One turn's (cost, calls, unpriced calls) from its stored row: its
    ``model_calls`` when it made several, else its model and counts. The
    cost is None when no call of it could be priced.
    """
    import json

    calls: list[tuple[str | None, Any, Any, Any, Any, Any]] = []
    raw = metadata.get("model_calls")
    entries: Any = None
    if raw:
        try:
            entries = json.loads(raw)
        except ValueError:
            entries = None
    if isinstance(entries, list):
        for e in entries:
            if isinstance(e, dict):
                calls.append((e.get("model"), e.get("prompt_tokens"),
                              e.get("completion_tokens"), e.get("cache_read_tokens"),
                              e.get("cache_write_tokens"), e.get("reasoning_tokens")))  # fmt: skip
    elif (
        model is not None or prompt_tokens is not None or completion_tokens is not None
    ):
        calls.append((model, prompt_tokens, completion_tokens,
                      metadata.get("cache_read_tokens"),
                      metadata.get("cache_write_tokens"),
                      metadata.get("reasoning_tokens")))  # fmt: skip
    cost: float | None = None
    unpriced = 0
    for name, *counts in calls:
        price = pricer.price(name if isinstance(name, str) else None)
        if price is None or (counts[0] is None and counts[1] is None):
            unpriced += 1
            continue
        n = [_int(c) for c in counts]
        cost = (cost or 0.0) + price.cost(*n)
    return cost, len(calls), unpriced


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
