"""
Prices of model calls: what the recorded token counts cost, in US dollars.

Prices come from ``genai-prices`` (Pydantic's maintained price list of the
model providers, bundled in its wheel), looked up by the model name a turn
recorded; prices given in configuration (``configure(prices=...)``, or a
``--prices FILE`` of the CLI and the dashboard) override it or add models it
does not know. Nothing here reaches the network: ``genai-prices`` can fetch a
newer list at run time, and context_trace never asks it to (it reads the
snapshot its wheel ships; upgrade the package for newer prices).

A price is linear in the token counts, in dollars per million tokens:

- ``input``: the input tokens that were neither read from nor written to a cache;
- ``cache_read``: input tokens read from the provider's prompt cache (default:
  the input price);
- ``cache_write``: input tokens written to it (default: the input price);
- ``output``: output tokens (reasoning tokens included, unless priced apart);
- ``reasoning``: the output tokens spent reasoning (default: the output price).

LangChain's ``input_tokens`` count the cached ones and ``output_tokens`` the
reasoning ones, so a call costs ``input * (in - cache_read - cache_write) +
cache_read * cache_read_tokens + cache_write * cache_write_tokens + output *
(out - reasoning) + reasoning * reasoning_tokens``, over a million. Being
linear, a sum of calls' counts per model is priced as one: the store's
figures sum tokens per model in SQL and price each model once. A price that
``genai-prices`` tiers by the request's size (a long-context surcharge) is
taken at its base tier: a sum of requests has no size of its own.

A model with no price (unknown to ``genai-prices`` and not in the overrides),
and a call that reported no usage, is *unpriced*: counted, never guessed.

This module imports ``genai_prices`` only when a price is first looked up, so
validating prices (``configure``) costs nothing.
"""

from __future__ import annotations

import importlib
import json
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "PRICE_KEYS",
    "Price",
    "Pricer",
    "check_prices",
    "load_prices",
]

#: The keys of one model's price, in dollars per million tokens.
PRICE_KEYS = ("input", "output", "cache_read", "cache_write", "reasoning")
_REQUIRED = ("input", "output")
# genai-prices' attribute for each of our keys (reasoning: its dedicated
# output-reasoning price, which few models have).
_GENAI_KEYS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "reasoning": "output_reasoning_mtok",
}
_MILLION = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Price:
    """
    One model's price in dollars per million tokens (see the module docstring).

    ``source`` is ``"override"`` (configuration) or ``"genai-prices"``;
    ``matched`` the model id it was found under (``genai-prices`` matches
    dated and provider-prefixed names to one model).
    """

    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float
    source: str
    matched: str

    def cost(
        self,
        input_tokens: float,
        output_tokens: float,
        cache_read: float = 0,
        cache_write: float = 0,
        reasoning: float = 0,
    ) -> float:
        """Dollars for these token counts (sums of calls' counts are fine)."""
        plain_in = max(input_tokens - cache_read - cache_write, 0)
        plain_out = max(output_tokens - reasoning, 0)
        return (
            plain_in * self.input
            + cache_read * self.cache_read
            + cache_write * self.cache_write
            + plain_out * self.output
            + reasoning * self.reasoning
        ) / _MILLION


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{where} must be a number of dollars per million tokens,"
            f" got {type(value).__name__}"
        )
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_prices(value: Any, name: str = "prices") -> dict[str, dict[str, float]]:
    """
    Validate price overrides: ``{model: {"input": 0.2, "output": 0.6, ...}}``.

    Each model needs ``input`` and ``output``; ``cache_read``, ``cache_write``
    and ``reasoning`` are optional (see the module docstring). Model names
    match case-insensitively.

    Returns:
        The overrides, model names lower-cased, prices as floats.

    Raises:
        TypeError: Naming *name*, for a value of the wrong type.
        ValueError: Naming *name*, for an empty model name, a missing or
            unknown key, or a negative price.
    """
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a mapping of model name to prices, got"
            f" {type(value).__name__}"
        )
    out: dict[str, dict[str, float]] = {}
    for model, prices in value.items():
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"{name}: a model name must be a non-empty string")
        where = f"{name}[{model!r}]"
        if not isinstance(prices, Mapping):
            raise TypeError(
                f"{where} must be a mapping of {', '.join(PRICE_KEYS)} to dollars"
                f" per million tokens, got {type(prices).__name__}"
            )
        unknown = sorted(str(k) for k in prices if k not in PRICE_KEYS)
        if unknown:
            raise ValueError(
                f"{where}: unknown key {unknown[0]!r}; expected {', '.join(PRICE_KEYS)}"
            )
        missing = [k for k in _REQUIRED if k not in prices]
        if missing:
            raise ValueError(f"{where} must give {' and '.join(missing)}")
        out[model.strip().lower()] = {
            k: _number(v, f"{where}[{k!r}]") for k, v in prices.items()
        }
    return out


def load_prices(
    path: str | Path, name: str = "--prices"
) -> dict[str, dict[str, float]]:
    """
    Price overrides from a JSON or TOML file (by its suffix: ``.toml`` is TOML),
    validated as :func:`check_prices` does.

    Raises:
        ValueError: Naming *name*, for a missing or unreadable file, text that
            does not parse, or bad prices.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{name}: cannot read {file}: {exc}") from None
    try:
        if file.suffix.lower() == ".toml":
            try:
                tomllib = importlib.import_module("tomllib")
            except ImportError:  # Python 3.10
                raise ValueError(
                    f"{name}: TOML needs Python 3.11 or later; give a .json file"
                ) from None
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        if str(exc).startswith(name):
            raise
        raise ValueError(f"{name}: {file} does not parse: {exc}") from None
    try:
        return check_prices(data, f"{name} {file}")
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _base(value: Any) -> float | None:
    """A genai-prices price as a float: a tiered one at its base tier."""
    if value is None:
        return None
    base = getattr(value, "base", value)
    try:
        return float(base)
    except (TypeError, ValueError):
        return None


class Pricer:
    """
    Looks up each model's :class:`Price` once (thread-safe), overrides first.

    Args:
        overrides: Validated overrides (:func:`check_prices`), or None.
        when: The time whose prices ``genai-prices`` applies (default: now);
            its price list changes its prices at given dates.
    """

    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, float]] | None = None,
        when: datetime | None = None,
    ) -> None:
        self._overrides = check_prices(overrides or {})
        self._when = when
        self._cache: dict[str, Price | None] = {}
        self._lock = threading.Lock()

    @property
    def overrides(self) -> dict[str, dict[str, float]]:
        """The overrides, as validated."""
        return {k: dict(v) for k, v in self._overrides.items()}

    def price(self, model: str | None) -> Price | None:
        """*model*'s price, or None when nothing prices it (or *model* is None)."""
        if not model:
            return None
        key = model.strip().lower()
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        found = self._lookup(key)
        with self._lock:
            self._cache[key] = found
        return found

    def _lookup(self, key: str) -> Price | None:
        given = self._overrides.get(key)
        if given is not None:
            return _price(given, "override", key)
        values = _genai_price(key, self._when)
        if values is None:
            return None
        matched, prices = values
        return _price(prices, "genai-prices", matched)

    def cost(
        self,
        model: str | None,
        input_tokens: float,
        output_tokens: float,
        cache_read: float = 0,
        cache_write: float = 0,
        reasoning: float = 0,
    ) -> float | None:
        """Dollars for these counts of *model*, None when it has no price."""
        price = self.price(model)
        if price is None:
            return None
        return price.cost(
            input_tokens, output_tokens, cache_read, cache_write, reasoning
        )


def _price(values: Mapping[str, float], source: str, matched: str) -> Price:
    input_ = values["input"]
    output = values["output"]
    return Price(
        input=input_,
        output=output,
        cache_read=values.get("cache_read", input_),
        cache_write=values.get("cache_write", input_),
        reasoning=values.get("reasoning", output),
        source=source,
        matched=matched,
    )


def _genai_price(
    model: str, when: datetime | None
) -> tuple[str, dict[str, float]] | None:
    """
    *model*'s prices from the snapshot bundled with ``genai-prices``, or None.

    Its bundled snapshot only: ``genai_prices.UpdatePrices`` (which fetches a
    newer list over the network) is never started.
    """
    try:
        from genai_prices import data_snapshot
    except ImportError:  # pragma: no cover - the analytics extra is missing
        raise RuntimeError(
            "pricing needs the genai-prices package: pip install"
            " 'context-trace[analytics]'"
        ) from None
    snapshot = data_snapshot.get_snapshot()
    try:
        _, info = snapshot.find_provider_model(model, None, None, None)
    except LookupError:
        return None
    prices = info.get_prices(when or datetime.now(tz=timezone.utc))
    found: dict[str, float] = {}
    for ours, theirs in _GENAI_KEYS.items():
        value = _base(getattr(prices, theirs, None))
        if value is not None:
            found[ours] = value
    if "input" not in found or "output" not in found:
        return None  # priced per request, per image... not per token
    return info.id, found
