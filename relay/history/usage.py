"""Token usage of one call: the model's `usage` of every response.done, added up.

Owns: `Usage`, the running totals of a call (the keys of the record's `usage`, docs/HISTORY.md),
and reading one GA `response.usage` object without trusting its shape: a missing, null,
negative or wrongly typed count counts as zero, so a strange event never breaks a call. Cheap:
a few dict lookups per response. No I/O.
"""

from __future__ import annotations

import math
from typing import Any

USAGE_KEYS = ("input_text", "input_audio", "input_cached_text", "input_cached_audio",
              "output_text", "output_audio", "responses")


def _count(value: Any) -> int:
    """A token count as the API sends it, or 0 for anything else (null, text, bool, NaN...)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and math.isfinite(value):
        return max(0, int(value))
    return 0


def _object(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


class Usage:
    """Tokens of one call. `input_text`/`input_audio` include the cached ones (as the API
    counts them); `input_cached_*` say how many of them were cached."""

    __slots__ = ("totals",)

    def __init__(self) -> None:
        self.totals: dict[str, int] = dict.fromkeys(USAGE_KEYS, 0)

    def add(self, usage: Any) -> None:
        """Add one response.done's `response.usage` (None or a malformed one: the response is
        still counted, its tokens as zero)."""
        totals = self.totals
        totals["responses"] += 1
        usage = _object(usage)
        given = _object(usage.get("input_token_details"))
        cached = _object(given.get("cached_tokens_details"))
        made = _object(usage.get("output_token_details"))
        totals["input_text"] += _count(given.get("text_tokens"))
        totals["input_audio"] += _count(given.get("audio_tokens"))
        totals["input_cached_text"] += _count(cached.get("text_tokens"))
        totals["input_cached_audio"] += _count(cached.get("audio_tokens"))
        totals["output_text"] += _count(made.get("text_tokens"))
        totals["output_audio"] += _count(made.get("audio_tokens"))

    def as_dict(self) -> dict[str, int]:
        return dict(self.totals)
