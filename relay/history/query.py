"""The history's search question and its page cursor (docs/HISTORY.md, "The read side's shapes").

Owns: `HistoryQuery` (every filter of a search, checked when built: a bad value raises
ValueError saying which and why), the parsing of its full-text `text` into phrases, the
normalising of `number` into digits, and the opaque keyset cursor of a page (newest first:
`started_at` descending, then `id` descending). Both stores (SQLite, PostgreSQL) read these.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Optional

DIRECTIONS = ("inbound", "outbound")
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_TEXT_CHARS = 500
MAX_TERMS = 16
# Characters people write in phone numbers besides the digits; anything else is a mistake.
NUMBER_PUNCTUATION = re.compile(r"[\s+\-().]")
WORD = re.compile(r"\w+")
CURSOR_TAG = "v1"


@dataclass(frozen=True)
class HistoryQuery:
    """Filters of a history search; every one optional, all of them ANDed.

    number: digits; a call matches when its number's digits end with them.
    text: words and "quoted phrases", every one must be said in the call (full text).
    agent: exact. since/until: epoch seconds on started_at (since inclusive, until exclusive).
    end_reason: a prefix. min/max_duration_s: bounds on duration_s (inclusive). direction.
    """

    number: Optional[str] = None
    text: Optional[str] = None
    agent: Optional[str] = None
    since: Optional[float] = None
    until: Optional[float] = None
    end_reason: Optional[str] = None
    min_duration_s: Optional[float] = None
    max_duration_s: Optional[float] = None
    direction: Optional[str] = None

    def fields(self) -> dict[str, Any]:
        """The filters that are set."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __post_init__(self) -> None:
        if self.number is not None:
            object.__setattr__(self, "number", number_digits(self.number))
        if self.text is not None:
            text_phrases(self.text)   # raises on a text that cannot be searched
        for name in ("agent", "end_reason"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value or len(value) > 200):
                raise ValueError(f"{name} must be a non-empty string of at most 200 characters, "
                                 f"not {value!r}")
        for name in ("since", "until", "min_duration_s", "max_duration_s"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _non_negative_number(name, value))
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError(f"since ({self.since}) must be before until ({self.until})")
        if (self.min_duration_s is not None and self.max_duration_s is not None
                and self.min_duration_s > self.max_duration_s):
            raise ValueError(f"min_duration_s ({self.min_duration_s}) is more than "
                             f"max_duration_s ({self.max_duration_s})")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, "
                             f"not {self.direction!r}")

    @property
    def phrases(self) -> list[list[str]]:
        """The full-text terms: each a list of lower-case words said in that order."""
        return text_phrases(self.text) if self.text is not None else []


def _non_negative_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number (epoch seconds or seconds), not {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
    return value


def number_digits(number: object) -> str:
    """The digits of a phone number as typed (`+1 (555) 010-2000` -> `15550102000`)."""
    if not isinstance(number, str):
        raise ValueError(f"number must be a string of digits, not {number!r}")
    digits = NUMBER_PUNCTUATION.sub("", number)
    if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > 32:
        raise ValueError(f"number must be digits (1 to 32, spaces + - ( ) . allowed), "
                         f"not {number!r}")
    return digits


def reversed_digits(number: str) -> str:
    """The digits of a stored number, last first: a number ending with d is a prefix range."""
    return "".join(ch for ch in reversed(number or "") if "0" <= ch <= "9")


def text_phrases(text: object) -> list[list[str]]:
    """Split a search text into phrases: `"late delivery" refund` -> [[late, delivery], [refund]].

    Words are runs of letters/digits (punctuation separates them, as both full-text engines do),
    lower-cased. A quote left open, a text without any word, or too long a text: ValueError.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, not {text!r}")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text is longer than {MAX_TEXT_CHARS} characters")
    if text.count('"') % 2:
        raise ValueError(f"text has an unclosed quote: {text!r}")
    phrases: list[list[str]] = []
    for index, chunk in enumerate(text.split('"')):
        words = [w.lower() for w in WORD.findall(chunk)]
        if index % 2:          # inside quotes: one phrase
            if words:
                phrases.append(words)
        else:
            phrases.extend([w] for w in words)
    if not phrases:
        raise ValueError(f"text has no word to search for: {text!r}")
    if len(phrases) > MAX_TERMS:
        raise ValueError(f"text has more than {MAX_TERMS} words and phrases")
    return phrases


def check_limit(limit: object) -> int:
    """A page size: an int in 1..MAX_LIMIT."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit!r}")
    return limit


def encode_cursor(started_at: float, call_id: str) -> str:
    """The opaque cursor after the row (started_at, id)."""
    raw = json.dumps([CURSOR_TAG, started_at, call_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: object) -> tuple[float, str]:
    """(started_at, id) of the row a cursor points after; ValueError when it is not one of ours."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > 1000:
        raise ValueError(f"bad cursor {cursor!r}")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        tag, started_at, call_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError(f"bad cursor {cursor!r}") from None
    if (tag != CURSOR_TAG or isinstance(started_at, bool)
            or not isinstance(started_at, (int, float)) or not math.isfinite(started_at)
            or not isinstance(call_id, str)):
        raise ValueError(f"bad cursor {cursor!r}")
    return float(started_at), call_id
