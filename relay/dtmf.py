"""DTMF digit collection for one call: sans-IO, time passed in as a value.

Owns: turning single ChannelDtmfReceived digits into one result, ended by the terminator, by
reaching the maximum count, or by the inter-digit timeout. Nothing here sends anything.
"""

from __future__ import annotations

from typing import Optional

VALID_DIGITS = frozenset("0123456789*#ABCD")


class DtmfCollector:
    """Collects digits until terminator, max_digits or inter_digit_timeout_s of quiet."""

    def __init__(self, inter_digit_timeout_s: float, max_digits: int, terminator: str = "#"):
        self.timeout = inter_digit_timeout_s
        self.max_digits = max_digits
        self.terminator = terminator
        self._digits: list[str] = []
        self._last_at = 0.0

    @property
    def pending(self) -> str:
        return "".join(self._digits)

    def deadline(self) -> Optional[float]:
        """When the collected digits complete by timeout (None when nothing is pending)."""
        return self._last_at + self.timeout if self._digits else None

    def digit(self, digit: str, now: float) -> Optional[str]:
        """Add one digit; returns the complete result when this digit completes it."""
        if digit not in VALID_DIGITS:
            return None
        if self.terminator and digit == self.terminator:
            return self._complete()
        self._digits.append(digit)
        self._last_at = now
        if len(self._digits) >= self.max_digits:
            return self._complete()
        return None

    def poll(self, now: float) -> Optional[str]:
        """The result when the inter-digit timeout has passed, else None."""
        deadline = self.deadline()
        if deadline is not None and now >= deadline:
            return self._complete()
        return None

    def _complete(self) -> Optional[str]:
        result = "".join(self._digits)
        self._digits.clear()
        return result or None
