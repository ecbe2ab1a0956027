"""What a call cost: the price table of the settings (`pricing`) applied to a call's usage.

Owns: finding a model's prices (its exact name, else the longest family name it starts with:
`gpt-realtime-2025-08-28` is priced as `gpt-realtime`, `gpt-realtime-mini-2025-10-06` as
`gpt-realtime-mini`), the cost in USD of a usage (relay/history/usage.py: cached tokens are part
of the input tokens and are priced at the cached price), and the warning, once per model per
process, that a model has no prices (its calls' cost is null). No I/O but that log line.
"""

from __future__ import annotations

import logging
from typing import Mapping, Optional

log = logging.getLogger(__name__)

PER_TOKENS = 1_000_000          # the table's prices are per 1M tokens
_warned: set[str] = set()


Prices = Mapping[str, float]       # PRICE_KEYS (relay/config.py) -> USD per 1M tokens


def prices_for(model: str, models: Mapping[str, Prices]) -> Optional[Prices]:
    """The prices of `model` in `models` (pricing.models), or None when it is not there."""
    if model in models:
        return models[model]
    family = max((name for name in models if model.startswith(name + "-")), key=len,
                 default=None)
    return None if family is None else models[family]


def cost_usd(usage: Mapping[str, int], prices: Optional[Prices]) -> Optional[float]:
    """USD for a call's usage totals at `prices` (None: no prices, no cost)."""
    if prices is None:
        return None
    cached_text = min(usage.get("input_cached_text", 0), usage.get("input_text", 0))
    cached_audio = min(usage.get("input_cached_audio", 0), usage.get("input_audio", 0))
    total = ((usage.get("input_text", 0) - cached_text) * prices["text_in"]
             + cached_text * prices["cached_text_in"]
             + (usage.get("input_audio", 0) - cached_audio) * prices["audio_in"]
             + cached_audio * prices["cached_audio_in"]
             + usage.get("output_text", 0) * prices["text_out"]
             + usage.get("output_audio", 0) * prices["audio_out"])
    return round(total / PER_TOKENS, 6)


def warn_if_unpriced(tree: Mapping) -> bool:
    """Log a warning (once per model per process) when the configured model (openai.model)
    has no prices in the table; True when it has."""
    model = tree["openai"]["model"]
    if prices_for(model, tree["pricing"]["models"]) is not None:
        return True
    if model not in _warned:
        _warned.add(model)
        log.warning("pricing: no prices for the model %r in the settings' pricing.models "
                    "(known: %s): the history records no cost (null) for its calls; add its "
                    "prices in a site config (docs/HISTORY.md, Cost)", model,
                    ", ".join(sorted(tree["pricing"]["models"])))
    return False
