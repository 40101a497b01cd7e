"""
The dashboard's output: values as JSON, the templates' formatting filters, and
the CSV downloads of the table endpoints.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from typing import Any

from flask import Response
from markupsafe import Markup

from context_trace._store.cost import CostRow, ModelPriceRow
from context_trace._store.retention import ActivePoint, ChurnedUser

from ._params import _table_arg

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# New turns indexed before a request, at most: about 50 ms on a loaded machine.


def _json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _json(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def _fmt_time(value: float | None) -> str:
    if value is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(value))


def _fmt_money(value: float | None) -> str:
    """Dollars: four decimals under $1,000 (a turn costs fractions of a cent)."""
    if value is None:
        return "-"
    return f"${value:,.4f}" if value < 1000 else f"${value:,.0f}"


def _fmt_ms(value: float | None) -> str:
    """
    A latency as people read it: whole ms below a second, then seconds.

    ``412 ms``, ``1.4 s``, ``12.3 s``, ``135 s``: no more digits than the
    measure holds (percentiles over several days come from a histogram that is
    within about 6%).
    """
    if value is None:
        return "-"
    if value < 999.5:
        return f"{round(value)} ms"
    seconds = value / 1000
    return f"{seconds:.1f} s" if seconds < 99.95 else f"{round(seconds)} s"


def _snippet(marked: str) -> Markup:
    """A search snippet as markup: Analytics escaped its text and added <mark> tags."""
    return Markup(marked)


def _heat(share: float) -> str:
    """The cohort table's shade of a share: ``heat-0`` to ``heat-10`` (CSS classes)."""
    return f"heat-{max(0, min(10, round(share * 10)))}"


def _csv_cell(value: Any) -> str:
    """A CSV cell: None empty, lists and objects as JSON, formulas defused."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    return str(value)


def _csv_response(name: str, columns: list[str], rows: list[dict[str, Any]]) -> Any:
    """*rows* (dicts) as a CSV download named *name*.csv, *columns* in order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    response = Response(buffer.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response


def _fields(cls: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _dataclass_csv(name: str, cls: Any, items: Any) -> Any:
    return _csv_response(name, _fields(cls), [_json(i) for i in items])


def _retention_csv(report: Any) -> Any:
    """One table of a retention report (?table=, default cohorts) as CSV."""
    table = _table_arg(("cohorts", "weekly", "monthly", "daily", "churned"), "cohorts")
    if table == "churned":
        return _dataclass_csv("churned", ChurnedUser, report.churned)
    if table != "cohorts":
        return _dataclass_csv(table, ActivePoint, getattr(report, table))
    longest = max((len(c.retained) for c in report.cohorts), default=0)
    later = [f"week {k}" for k in range(1, longest + 1)]
    rows = []
    for c in report.cohorts:
        row: dict[str, Any] = {"week": c.week, "users": c.users}
        for k, (active, share) in enumerate(zip(c.active, c.retained, strict=True)):
            row[later[k]] = active
            row[later[k] + " share"] = round(share, 4)
        rows.append(row)
    columns = ["week", "users"] + [c for k in later for c in (k, k + " share")]
    return _csv_response("cohorts", columns, rows)


def _cost_csv(report: Any) -> Any:
    """A cost report's rows (grouped by its ``by``; ?table=models: the prices)."""
    if _table_arg(("rows", "models"), "rows") == "models":
        return _dataclass_csv("cost_models", ModelPriceRow, report.models)
    rows = [_json(r) for r in report.rows]
    for row in rows:
        row[report.by] = row.pop("key")
    columns = [report.by, *_fields(CostRow)[1:]]
    return _csv_response(f"cost_by_{report.by}", columns, rows)


def _compare_csv(comparison: Any) -> Any:
    """Two segments' figures, a row per measure: value and count on each side."""
    sides = [comparison.a, comparison.b]
    measures = [
        f.name for f in dataclasses.fields(type(next(x for x in sides if x)))
    ][1:] if any(sides) else []  # fmt: skip
    tests = {d.measure: d for d in comparison.differences}
    rows = []
    for measure in measures:
        row: dict[str, Any] = {"measure": measure}
        for label, side in zip(("a", "b"), sides, strict=True):
            figure = getattr(side, measure) if side else None
            row[label] = None if figure is None else figure.value
            row[label + "_count"] = None if figure is None else figure.count
        if measure in tests:
            row["z"] = tests[measure].z
            row["test"] = tests[measure].note
        rows.append(row)
    for label, side in zip(("a", "b"), sides, strict=True):
        if side is not None:
            segment = "; ".join(f"{k}={v}" for k, v in side.segment.items())
            rows.insert(0, {"measure": f"segment {label}", label: segment})
    columns = ["measure", "a", "a_count", "b", "b_count", "z", "test"]
    return _csv_response("compare", columns, rows)
