"""What a model call costs, from a price table the user can override.

Prices are US dollars per million tokens (input, output), matched on the longest prefix of
the `provider:model` name. Providers change prices; set `TED_PRICES` to a JSON file of
`{"provider:model-prefix": [input, output]}` to correct or extend this table. A model with
no price gets no cost (reported as unknown), never a guessed one.
"""

import json
import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from ted.errors import ConfigError

DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "anthropic:claude-opus-4": (15.0, 75.0),
    "anthropic:claude-sonnet-4": (3.0, 15.0),
    "anthropic:claude-haiku-4": (1.0, 5.0),
    "anthropic:claude-3-5-haiku": (0.8, 4.0),
    "openai:gpt-5-mini": (0.25, 2.0),
    "openai:gpt-5-nano": (0.05, 0.4),
    "openai:gpt-5": (1.25, 10.0),
    "openai:gpt-4.1-mini": (0.4, 1.6),
    "openai:gpt-4.1-nano": (0.1, 0.4),
    "openai:gpt-4.1": (2.0, 8.0),
    "openai:gpt-4o-mini": (0.15, 0.6),
    "openai:gpt-4o": (2.5, 10.0),
    "scripted:": (0.0, 0.0),
}


@cache
def _table(path: str | None) -> dict[str, tuple[float, float]]:
    table = dict(DEFAULT_PRICES)
    if path:
        try:
            overrides = json.loads(Path(path).read_text())
            table.update({name: (float(p[0]), float(p[1])) for name, p in overrides.items()})
        except (OSError, ValueError, TypeError, IndexError, AttributeError) as e:
            raise ConfigError(
                f"TED_PRICES={path} is not a readable price table ({e}); it must be a JSON object like "
                '{"openai:gpt-4.1-mini": [0.4, 1.6]} in dollars per million input and output tokens.'
            ) from e
    return table


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float | None:
    table = _table(os.environ.get("TED_PRICES"))
    matches = [prefix for prefix in table if model.startswith(prefix)]
    if not matches:
        return None
    price_in, price_out = table[max(matches, key=len)]
    return (input_tokens * price_in + output_tokens * price_out) / 1_000_000


def unpriced_models(models: Iterable[str]) -> list[str]:
    """The models, each once, that have no price: their calls cost "unknown"."""
    return [m for m in dict.fromkeys(models) if cost_usd(m, 0, 0) is None]


def format_cost(value: float | None) -> str:
    """A cost as people read it: dollars, or `unknown` when a model has no price (never $0)."""
    return "unknown" if value is None else f"${value:,.4f}"
