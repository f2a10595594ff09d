"""What a model call costs, from a price table the user can override.

Prices are US dollars per million tokens, matched on the longest prefix of the `provider:model`
name: input, output, and the two prompt-cache prices, reading a cached prefix and writing one.
Anthropic bills a cache read at a tenth of the input price and a (five-minute) cache write at
1.25 times it; OpenAI caches prompts by itself, bills no write, and bills a read at a share of
the input price that depends on the model family. Providers change prices; set `TED_PRICES` to a
JSON file of `{"provider:model-prefix": [input, output]}` (or `[input, output, cache_read,
cache_write]`) to correct or extend this table. A model with no price gets no cost (reported as
unknown), never a guessed one.
"""

import json
import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import NamedTuple

from ted.errors import ConfigError


class Price(NamedTuple):
    """Dollars per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float


def _anthropic(price_in: float, price_out: float) -> Price:
    return Price(price_in, price_out, price_in * 0.1, price_in * 1.25)


def _openai(price_in: float, price_out: float, read_share: float) -> Price:
    return Price(price_in, price_out, price_in * read_share, price_in)


DEFAULT_PRICES: dict[str, Price] = {
    "anthropic:claude-opus-4": _anthropic(15.0, 75.0),
    "anthropic:claude-sonnet-4": _anthropic(3.0, 15.0),
    "anthropic:claude-haiku-4": _anthropic(1.0, 5.0),
    "anthropic:claude-3-5-haiku": _anthropic(0.8, 4.0),
    "openai:gpt-5-mini": _openai(0.25, 2.0, 0.1),
    "openai:gpt-5-nano": _openai(0.05, 0.4, 0.1),
    "openai:gpt-5": _openai(1.25, 10.0, 0.1),
    "openai:gpt-4.1-mini": _openai(0.4, 1.6, 0.25),
    "openai:gpt-4.1-nano": _openai(0.1, 0.4, 0.25),
    "openai:gpt-4.1": _openai(2.0, 8.0, 0.25),
    "openai:gpt-4o-mini": _openai(0.15, 0.6, 0.5),
    "openai:gpt-4o": _openai(2.5, 10.0, 0.5),
    "scripted:": Price(0.0, 0.0, 0.0, 0.0),
}


def _price(given: list) -> Price:
    if len(given) == 2:  # no cache prices given: a cached token costs what any input token does
        return Price(float(given[0]), float(given[1]), float(given[0]), float(given[0]))
    return Price(*(float(p) for p in given))


@cache
def _table(path: str | None) -> dict[str, Price]:
    table = dict(DEFAULT_PRICES)
    if path:
        try:
            overrides = json.loads(Path(path).read_text())
            table.update({name: _price(p) for name, p in overrides.items()})
        except (OSError, ValueError, TypeError, IndexError, AttributeError) as e:
            raise ConfigError(
                f"TED_PRICES={path} is not a readable price table ({e}); it must be a JSON object like "
                '{"openai:gpt-4.1-mini": [0.4, 1.6]} in dollars per million input and output tokens '
                "(optionally followed by the cache-read and cache-write prices)."
            ) from e
    return table


def price(model: str) -> Price | None:
    table = _table(os.environ.get("TED_PRICES"))
    matches = [prefix for prefix in table if model.startswith(prefix)]
    return table[max(matches, key=len)] if matches else None


def cost_usd(
    model: str, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0, cache_write_tokens: int = 0
) -> float | None:
    """The cost of one call; `input_tokens` counts every prompt token, the cached ones included."""
    if (p := price(model)) is None:
        return None
    uncached = input_tokens - cache_read_tokens - cache_write_tokens
    return (
        uncached * p.input
        + cache_read_tokens * p.cache_read
        + cache_write_tokens * p.cache_write
        + output_tokens * p.output
    ) / 1_000_000


def unpriced_models(models: Iterable[str]) -> list[str]:
    """The models, each once, that have no price: their calls cost "unknown"."""
    return [m for m in dict.fromkeys(models) if price(m) is None]


def format_cost(value: float | None) -> str:
    """A cost as people read it: dollars, or `unknown` when a model has no price (never $0)."""
    return "unknown" if value is None else f"${value:,.4f}"
